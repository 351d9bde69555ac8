//! Nesting sentri into an existing axum app: `cargo run --example nest`.
//!
//! A tiny notes API with its own state and routes gets authentication in five lines:
//! build `ServerAuth`, `migrate()`, `.nest("/auth", auth.router())`, `protect()` on the
//! app's routes and `error_handler()` around everything (marked `// sentri` below).
//!
//! Environment: `PORT` (default 3001, on 127.0.0.1), `JWT_SECRET` (HS256, at least 32
//! bytes; a dev default with a warning), `DATABASE_URL` (default: the SQLite file
//! `sentri-nest-example.db` in the temp directory). Ctrl-C stops it.
//!
//! ```sh
//! curl -s -X POST localhost:3001/auth/register -H 'content-type: application/json' \
//!   -d '{"identifier":"ada@example.com","password":"correct horse"}'
//! curl -s -X POST localhost:3001/auth/login -H 'content-type: application/json' \
//!   -d '{"identifier":"ada@example.com","password":"correct horse"}'   # copy data.accessToken
//! curl -s -X POST localhost:3001/notes -H "authorization: Bearer $TOKEN" \
//!   -H 'content-type: application/json' -d '{"text":"buy milk"}'
//! curl -s localhost:3001/notes -H "authorization: Bearer $TOKEN"
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use sentri::db::Database;
use sentri::token::SigningKey;
use sentri::{CurrentUser, ServerConfig, create_auth};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

const DEV_SECRET: &str = "dev-only-secret-dev-only-secret-dev-only-secret";

/// The app's own state: notes per user id, in memory.
#[derive(Clone, Default)]
struct Notes(Arc<Mutex<HashMap<String, Vec<String>>>>);

#[derive(Deserialize)]
struct NewNote {
    text: String,
}

async fn list_notes(State(notes): State<Notes>, user: CurrentUser) -> Json<Value> {
    let notes = notes.0.lock().await;
    let mine = notes.get(&user.user.id).cloned().unwrap_or_default();
    Json(json!({ "user": user.user.identifier, "notes": mine }))
}

async fn add_note(
    State(notes): State<Notes>,
    user: CurrentUser,
    Json(note): Json<NewNote>,
) -> (StatusCode, Json<Value>) {
    let mut notes = notes.0.lock().await;
    let mine = notes.entry(user.user.id).or_default();
    mine.push(note.text);
    (StatusCode::CREATED, Json(json!({ "count": mine.len() })))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("PORT").map_or(Ok(3001), |p| p.parse())?;
    let secret = std::env::var("JWT_SECRET").unwrap_or_else(|_| {
        eprintln!("warning: JWT_SECRET is not set; using a public dev secret");
        DEV_SECRET.to_owned()
    });
    // A file, not `sqlite::memory:`: each pooled connection would get its own memory DB.
    let db_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        let file = std::env::temp_dir().join("sentri-nest-example.db");
        format!("sqlite://{}", file.display())
    });

    let db = Database::connect(&db_url).await?;
    let auth = create_auth(ServerConfig::new(db, SigningKey::hs256(secret)?, ["user"]))?; // sentri
    auth.migrate().await?; // sentri

    // The existing app, with sentri's three touch points.
    let notes = Router::new()
        .route("/notes", get(list_notes).post(add_note))
        .route_layer(auth.protect()); // sentri
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .merge(notes)
        .nest("/auth", auth.router()) // sentri
        .with_state(Notes::default())
        .layer(auth.error_handler()); // sentri

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
