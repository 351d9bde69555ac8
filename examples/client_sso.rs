//! Client-mode SSO: `cargo run --example client_sso --features client`.
//!
//! One process, two apps. The auth server (`ServerAuth`, `AUTH_PORT`, default 3002)
//! signs access tokens with a freshly generated ES256 key and publishes the public half
//! at `/auth/keys`. The API (`ClientAuth`, `API_PORT`, default 3003) has no database and
//! no secret: it verifies those tokens against that JWKS (plain http is accepted on
//! loopback only). Users live in `DATABASE_URL` (default: the SQLite file
//! `sentri-sso-example.db` in the temp directory). The curl commands are printed at
//! start-up; Ctrl-C stops both apps.

use axum::Router;
use axum::routing::get;
use axum::{Json, response::IntoResponse};
use sentri::db::Database;
use sentri::token::{Algorithm, SigningKey};
use sentri::{ClientConfig, CurrentUser, ServerConfig, create_auth};
use serde_json::json;
use tokio::net::TcpListener;

async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
}

async fn profile(user: CurrentUser) -> impl IntoResponse {
    Json(json!({ "verifiedBy": "api (JWKS)", "user": user.user, "sessionId": user.session_id }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port = |name: &str, default: u16| std::env::var(name).map_or(Ok(default), |p| p.parse());
    let (auth_port, api_port) = (port("AUTH_PORT", 3002)?, port("API_PORT", 3003)?);
    let db_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        let file = std::env::temp_dir().join("sentri-sso-example.db");
        format!("sqlite://{}", file.display())
    });

    // 1. The auth server: users, sessions, and the JWKS of an asymmetric key.
    let key = SigningKey::generate(Algorithm::ES256).await?;
    let db = Database::connect(&db_url).await?;
    let server = create_auth(ServerConfig::new(db, key, ["user", "admin"]))?;
    server.migrate().await?;
    let auth_app: Router = Router::new()
        .nest("/auth", server.router())
        .layer(server.error_handler());
    let auth_listener = TcpListener::bind(("127.0.0.1", auth_port)).await?;
    let auth_addr = auth_listener.local_addr()?;
    let auth_task = tokio::spawn(async move {
        axum::serve(auth_listener, auth_app)
            .with_graceful_shutdown(ctrl_c())
            .await
    });

    // 2. The API: trusts whatever the auth server's keys verify.
    let client = create_auth(
        ClientConfig::new(format!("http://{auth_addr}/auth/keys")).valid_roles(["user", "admin"]),
    )?;
    client.prefetch().await?; // fail fast if the JWKS cannot be read
    let api_app = Router::new()
        .route("/api/profile", get(profile).route_layer(client.protect()))
        .route(
            "/api/admin",
            get(|| async { "hello, admin" }).route_layer(client.authorize(["admin"])),
        )
        .layer(client.error_handler());
    let api_listener = TcpListener::bind(("127.0.0.1", api_port)).await?;
    let api_addr = api_listener.local_addr()?;

    println!("auth server on http://{auth_addr} (JWKS: http://{auth_addr}/auth/keys)");
    println!("api on http://{api_addr}\n\ntry:");
    let creds = r#"'{"identifier":"ada@example.com","password":"correct horse"}'"#;
    let json = "-H 'content-type: application/json'";
    println!("  curl -s -X POST http://{auth_addr}/auth/register {json} -d {creds}");
    println!(
        "  TOKEN=$(curl -s -X POST http://{auth_addr}/auth/login {json} -d {creds} \
         | sed -E 's/.*\"accessToken\":\"([^\"]+)\".*/\\1/')"
    );
    println!("  curl -s http://{api_addr}/api/profile -H \"authorization: Bearer $TOKEN\"");
    println!("  curl -s http://{api_addr}/api/admin -H \"authorization: Bearer $TOKEN\"   # 403");

    axum::serve(api_listener, api_app)
        .with_graceful_shutdown(ctrl_c())
        .await?;
    auth_task.await??;
    Ok(())
}
