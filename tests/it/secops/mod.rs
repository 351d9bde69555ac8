//! Security operations: login throttling (per identifier, per address, shared through
//! Redis, falling back per process), the client address rules, and sessions per device.

mod devices;
mod throttle;

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, header};
use serde_json::{Value, json};

use crate::support::http::{Reply, send};

/// Trials of the race tests (`SENTRI_RACE_TRIALS`, default 10 here: each trial is a
/// flood of logins).
fn trials() -> usize {
    std::env::var("SENTRI_RACE_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(10, |n: usize| n.clamp(1, 30))
}

/// `method path` from the peer `ip` (as `into_make_service_with_connect_info` gives it).
pub async fn from_peer(
    app: &Router,
    ip: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let peer = SocketAddr::new(ip.parse().unwrap(), 40_000);
    req.extensions_mut().insert(ConnectInfo(peer));
    send(app, req).await
}

/// `POST /auth/login` from the peer `ip`.
pub async fn login_from(app: &Router, ip: &str, id: &str, pw: &str) -> Reply {
    let body = json!({"identifier": id, "password": pw});
    from_peer(app, ip, Method::POST, "/auth/login", &[], Some(body)).await
}
