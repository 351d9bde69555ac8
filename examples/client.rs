//! sentri's example client app: `cargo run --example client --features client`.
//!
//! An API that trusts a sentri auth server (e.g. `cargo run --example server` with an
//! asymmetric `SENTRI_ALGORITHM`): it verifies access tokens against the server's JWKS
//! and has no database and no secret.
//!
//! Environment:
//! - `SENTRI_KEY_URI` (required): the server's JWKS, e.g. `http://127.0.0.1:3000/auth/keys`;
//! - `SENTRI_ADDR` (default `127.0.0.1:4000`): where to listen;
//! - `SENTRI_ISSUER`, `SENTRI_AUDIENCE` (optional): required on tokens when set.
//!
//! Routes: `GET /api/profile` (any signed-in user) and `GET /api/admin` (role `admin`).

use std::net::SocketAddr;

use axum::routing::get;
use axum::{Json, Router};
use sentri::{ClientConfig, CurrentUser, SentriError, create_auth};
use serde_json::{Value, json};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

async fn profile(user: CurrentUser) -> Json<Value> {
    Json(json!({ "user": user.user, "sessionId": user.session_id }))
}

async fn admin(user: CurrentUser) -> Json<Value> {
    Json(json!({ "message": "Welcome, admin", "user": user.user }))
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let key_uri = env("SENTRI_KEY_URI").ok_or_else(|| {
        SentriError::configuration(
            "SENTRI_KEY_URI is required, e.g. http://127.0.0.1:3000/auth/keys",
        )
    })?;
    let addr: SocketAddr = env("SENTRI_ADDR")
        .unwrap_or_else(|| "127.0.0.1:4000".into())
        .parse()
        .map_err(|e| SentriError::configuration("SENTRI_ADDR is not an address").with_source(e))?;

    let mut config = ClientConfig::new(key_uri).valid_roles(["user", "admin"]);
    if let Some(issuer) = env("SENTRI_ISSUER") {
        config = config.issuer(issuer);
    }
    if let Some(audience) = env("SENTRI_AUDIENCE") {
        config = config.audience(audience);
    }
    let auth = create_auth(config)?;
    // Not fatal: keys are fetched again on the first request.
    if let Err(err) = auth.prefetch().await {
        tracing::warn!(error = %err, "could not load the auth server's keys yet");
    }

    let app = Router::new()
        .route("/api/profile", get(profile).route_layer(auth.protect()))
        .route(
            "/api/admin",
            get(admin).route_layer(auth.authorize(["admin"])),
        )
        .layer(auth.error_handler());

    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await?;
    tracing::info!("shut down");
    Ok(())
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    if let Err(err) = run().await {
        eprintln!("sentri example client failed: {err}");
        std::process::exit(1);
    }
}
