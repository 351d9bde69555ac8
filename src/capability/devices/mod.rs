//! The devices capability: a signed-in user sees and ends their sessions per device,
//! an administrator those of any user.
//!
//! Routes:
//!
//! | route | who | answer |
//! |---|---|---|
//! | `GET /sessions` | signed in | the caller's live sessions, newest first, `current` marked |
//! | `DELETE /sessions/{id}` | signed in | ends one of them; another user's, an ended or unknown id → 404 `NOT_FOUND` |
//! | `POST /sessions/revoke-others` | signed in | ends all but the caller's own; `{"ended": n}` |
//! | `GET /users/{userId}/sessions` | admin role | that user's live sessions |
//! | `DELETE /users/{userId}/sessions/{id}` | admin role | ends one of them (404 as above) |
//!
//! Ending a session is the logout revocation: the family row is revoked under its lock,
//! its refresh token stops working at once, and its access tokens stop passing
//! `protect()` here at once and on other processes within `session_cache_ttl` (at once
//! with Redis).
//!
//! ```no_run
//! # async fn demo() -> Result<(), sentri::SentriError> {
//! use sentri::{ServerConfig, capability::devices::Devices, db::Database, token::SigningKey};
//! let db = Database::connect("sqlite::memory:").await?;
//! let key = SigningKey::hs256(b"a secret of at least thirty-two bytes!!")?;
//! let config = ServerConfig::new(db, key, ["user", "admin"]).with(Devices::default());
//! # Ok(()) }
//! ```

mod routes;

use axum::Router;

use super::{Capability, Core};

/// The devices capability (no settings yet: the session data is the core's).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Devices {}

impl Capability for Devices {
    fn name(&self) -> &'static str {
        "devices"
    }

    fn routes(&self, core: &Core) -> Router {
        routes::router(core)
    }

    #[cfg(feature = "openapi")]
    fn openapi(&self, doc: &crate::http::openapi::ApiDoc) -> utoipa::openapi::OpenApi {
        routes::openapi(doc)
    }
}
