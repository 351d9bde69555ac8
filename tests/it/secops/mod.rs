//! Security operations: login throttling (per identifier, per address, shared through
//! Redis, falling back per process), the client address rules, and sessions per device.

mod devices;
mod throttle;

use axum::Router;
use axum::http::Method;
use serde_json::json;

use crate::support::http::{Reply, from_peer};

/// Trials of the race tests (`SENTRI_RACE_TRIALS`, default 10 here: each trial is a
/// flood of logins).
fn trials() -> usize {
    std::env::var("SENTRI_RACE_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(10, |n: usize| n.clamp(1, 30))
}

/// `POST /auth/login` from the peer `ip`.
pub async fn login_from(app: &Router, ip: &str, id: &str, pw: &str) -> Reply {
    let body = json!({"identifier": id, "password": pw});
    from_peer(app, ip, Method::POST, "/auth/login", &[], Some(body)).await
}
