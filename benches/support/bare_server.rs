//! The practical ceiling of a stateless JWT check, for `benches/load.sh`: a minimal axum
//! server that verifies an HS256 access token with `jsonwebtoken` on every request and
//! returns a JSON body of the same shape and size as the example server's
//! `GET /api/profile` (no database, no session check, no cookies, same allocator, same
//! runtime). `GET /token` mints a token of the same shape as sentri's (through
//! `TokenService`, HS256 with `SENTRI_SECRET`), so both servers get tokens of one size.
//!
//! `SENTRI_BENCH_BARE_SERVER=127.0.0.1:PORT SENTRI_SECRET=... <bench binary>`

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sentri::AuthUser;
use sentri::token::{SigningKey, TokenOptions, TokenService};
use serde::Deserialize;

struct Bare {
    key: DecodingKey,
    validation: Validation,
    minter: TokenService,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    identifier: String,
    roles: Vec<String>,
}

async fn profile(State(bare): State<Arc<Bare>>, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = token else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    match jsonwebtoken::decode::<Claims>(token, &bare.key, &bare.validation) {
        Ok(data) => {
            let c = data.claims;
            let user = AuthUser {
                id: c.sub,
                identifier: c.identifier,
                roles: c.roles,
            };
            sentri::http::success(
                StatusCode::OK,
                "Profile",
                serde_json::json!({ "user": user }),
            )
        }
        Err(_) => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn token(State(bare): State<Arc<Bare>>) -> Response {
    let user = AuthUser {
        id: uuid::Uuid::now_v7().to_string(),
        identifier: "bench-hs256@example.com".into(),
        roles: vec!["user".into()],
    };
    match bare
        .minter
        .sign_access(&user, &uuid::Uuid::now_v7().to_string())
    {
        Ok((token, _)) => token.into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

/// Serves the bare route on `addr` until killed.
pub fn serve(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    let secret = std::env::var("SENTRI_SECRET")?;
    let minter = TokenService::new(vec![SigningKey::hs256(&secret)?], TokenOptions::default())?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 5;
    let bare = Arc::new(Bare {
        key: DecodingKey::from_secret(secret.as_bytes()),
        validation,
        minter,
    });
    let app = Router::new()
        .route("/api/profile", get(profile))
        .route("/token", get(token))
        .route("/health", get(|| async { "ok" }))
        .with_state(bare);
    // The same runtime as `#[tokio::main]` of the example server (multi-thread, default
    // worker count).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        axum::serve(listener, app).await
    })?;
    Ok(())
}
