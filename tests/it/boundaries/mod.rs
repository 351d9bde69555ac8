//! Credential boundaries (issue #29): which credential kinds each route admits, the
//! freshness rule of sensitive operations and the re-authentication that renews it.
//!
//! - `matrix`: every operation of `auth.router()` with every capability on, generated
//!   from the served OpenAPI document, × every credential kind, against a policy table;
//!   an operation without a declared policy fails.
//! - `sensitive`: `POST /reauthenticate`, `auth_time` through refresh, `REAUTH_REQUIRED`,
//!   the second factor under `sensitive_requires_2fa`, on the three databases.
//! - `takeover`: the reproductions of a leaked API key acting as its owner's session.

#[cfg(all(feature = "openapi", feature = "api-keys", feature = "sso"))]
mod matrix;
mod sensitive;
#[cfg(all(feature = "api-keys", feature = "sso"))]
mod takeover;
