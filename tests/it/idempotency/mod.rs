//! The idempotency layer, end to end through axum routers, on moka and on Redis.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::FutureExt;
use sentri::{AuthUser, IdempotencyKey, IdempotencyLayer, IdempotencyOptions};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::support::common::unique;

#[cfg(feature = "redis")]
mod cluster_failover;
mod config;
mod conformance;
mod memory_store;
#[cfg(feature = "redis")]
mod redis_store;

const KEY: &str = "x-idempotency-key";

/// The authenticated user (`x-test-user`) of the tests that are not about scoping:
/// without a user or credentials the layer passes requests through.
const USER: &str = "u1";

#[derive(Clone, Debug)]
enum Backend {
    Memory,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Redis(String),
}

fn options(backend: &Backend) -> IdempotencyOptions {
    IdempotencyOptions {
        max_body: 1024,
        replay_headers: vec![axum::http::HeaderName::from_static("x-custom")],
        redis_url: match backend {
            Backend::Memory => None,
            Backend::Redis(url) => Some(url.clone()),
        },
        ..Default::default()
    }
}

fn layer(backend: &Backend) -> IdempotencyLayer {
    match IdempotencyLayer::new(options(backend)) {
        Ok(layer) => layer,
        Err(err) => panic!("layer: {err:?}"),
    }
}

/// Test auth: `x-test-user: <id>` becomes an `AuthUser` in the extensions.
async fn fake_auth(mut req: Request, next: Next) -> Response {
    if let Some(id) = req
        .headers()
        .get("x-test-user")
        .and_then(|v| v.to_str().ok())
    {
        let user = AuthUser {
            id: id.to_owned(),
            identifier: format!("{id}@example.com"),
            roles: vec![],
        };
        req.extensions_mut().insert(user);
    }
    next.run(req).await
}

/// Turns a handler panic into a 500 (outside the idempotency layer, as a server would).
async fn catch_panic(req: Request, next: Next) -> Response {
    match AssertUnwindSafe(next.run(req)).catch_unwind().await {
        Ok(res) => res,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// What the `/gated` handler and the outermost middleware signal, to wait on events
/// (never on time).
#[derive(Clone)]
struct Gate {
    /// One permit per `/gated` call that started.
    started: Arc<Semaphore>,
    /// Each `/gated` call waits for (and consumes) one permit before answering.
    open: Arc<Semaphore>,
    /// One permit per request future that ended, answered or dropped (outermost layer).
    ended: Arc<Semaphore>,
}

impl Gate {
    fn new() -> Self {
        Self {
            started: Arc::new(Semaphore::new(0)),
            open: Arc::new(Semaphore::new(0)),
            ended: Arc::new(Semaphore::new(0)),
        }
    }

    /// Waits until `n` more `/gated` calls have started.
    async fn started(&self, n: u32) {
        match self.started.acquire_many(n).await {
            Ok(permits) => permits.forget(),
            Err(err) => panic!("gate: {err}"),
        }
    }

    /// Waits until one more request future has ended.
    async fn ended(&self) {
        match self.ended.acquire().await {
            Ok(permit) => permit.forget(),
            Err(err) => panic!("gate: {err}"),
        }
    }
}

/// Adds an `ended` permit when the request future finishes or is dropped.
struct EndProbe(Arc<Semaphore>);

impl Drop for EndProbe {
    fn drop(&mut self) {
        self.0.add_permits(1);
    }
}

async fn end_probe(State(ended): State<Arc<Semaphore>>, req: Request, next: Next) -> Response {
    let _probe = EndProbe(ended);
    next.run(req).await
}

/// A 2xx body of 4096 bytes streamed in 1 KiB chunks (no size hint).
fn streamed_big() -> Body {
    let chunks = (0..4).map(|_| Ok::<_, std::convert::Infallible>(vec![b'y'; 1024]));
    Body::from_stream(futures_util::stream::iter(chunks))
}

/// All routes share one run counter. `/pay` answers 201 with the count and the key.
fn app_with(layer: IdempotencyLayer, count: Arc<AtomicUsize>, gate: &Gate) -> Router {
    let c = count.clone();
    let pay = move |key: Option<IdempotencyKey>| {
        let n = c.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            (
                StatusCode::CREATED,
                [("x-custom", "kept"), ("set-cookie", "s=1")],
                axum::Json(json!({ "count": n, "key": key.map(|k| k.0) })),
            )
        }
    };
    let c = count.clone();
    let fail = move || {
        let n = c.fetch_add(1, Ordering::SeqCst) + 1;
        async move { (StatusCode::BAD_REQUEST, axum::Json(json!({ "count": n }))) }
    };
    let c = count.clone();
    let slow = move || {
        let n = c.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            (StatusCode::CREATED, axum::Json(json!({ "count": n })))
        }
    };
    let c = count.clone();
    let big = move || {
        c.fetch_add(1, Ordering::SeqCst);
        async move { (StatusCode::CREATED, "x".repeat(4096)) }
    };
    let c = count.clone();
    let panics_once = move || {
        let n = c.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if n == 1 {
                panic!("handler blew up (expected by the test)");
            }
            (StatusCode::CREATED, axum::Json(json!({ "count": n })))
        }
    };
    let c = count.clone();
    let big_stream = move || {
        c.fetch_add(1, Ordering::SeqCst);
        async move { (StatusCode::CREATED, streamed_big()) }
    };
    let (c, g) = (count, gate.clone());
    let gated = move || {
        let n = c.fetch_add(1, Ordering::SeqCst) + 1;
        let g = g.clone();
        async move {
            g.started.add_permits(1);
            match g.open.acquire().await {
                Ok(permit) => permit.forget(),
                Err(err) => panic!("gate: {err}"),
            }
            (StatusCode::CREATED, axum::Json(json!({ "count": n })))
        }
    };
    Router::new()
        .route("/pay", post(pay.clone()).get(pay))
        .route("/other", post(|| async { StatusCode::CREATED }))
        .route("/fail", post(fail))
        .route("/slow", post(slow))
        .route("/big", post(big))
        .route("/big-stream", post(big_stream))
        .route("/panic", post(panics_once))
        .route("/gated", post(gated))
        .route_layer(layer)
        .layer(middleware::from_fn(fake_auth))
        .layer(middleware::from_fn(catch_panic))
        .layer(middleware::from_fn_with_state(
            gate.ended.clone(),
            end_probe,
        ))
}

fn app(backend: &Backend) -> (Router, Arc<AtomicUsize>) {
    let (app, count, _) = gated_app(layer(backend));
    (app, count)
}

fn gated_app(layer: IdempotencyLayer) -> (Router, Arc<AtomicUsize>, Gate) {
    let (count, gate) = (Arc::new(AtomicUsize::new(0)), Gate::new());
    (app_with(layer, count.clone(), &gate), count, gate)
}

/// The layer *outside* authentication (as with `.layer()` around the whole router): it
/// never sees an `AuthUser`, only the request's credentials.
fn outside_auth_app(layer: IdempotencyLayer, count: Arc<AtomicUsize>) -> Router {
    let pay = move || {
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        async move { (StatusCode::CREATED, axum::Json(json!({ "count": n }))) }
    };
    Router::new()
        .route("/pay", post(pay))
        .layer(middleware::from_fn(fake_auth))
        .layer(layer)
}

/// `req` with one more header (a credential).
fn with_header(mut r: Request, name: &'static str, value: &str) -> Request {
    match HeaderValue::from_str(value) {
        Ok(v) => r.headers_mut().insert(name, v),
        Err(err) => panic!("header: {err}"),
    };
    r
}

fn req(method: &str, path: &str, key: Option<&str>, user: Option<&str>, body: &str) -> Request {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(key) = key {
        b = b.header(KEY, key);
    }
    if let Some(user) = user {
        b = b.header("x-test-user", user);
    }
    match b
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
    {
        Ok(r) => r,
        Err(err) => panic!("request: {err}"),
    }
}

/// Status, headers and body of an answer.
type Reply = (StatusCode, axum::http::HeaderMap, Vec<u8>);

async fn send(app: &Router, req: Request) -> Reply {
    let res = match app.clone().oneshot(req).await {
        Ok(res) => res,
        Err(never) => match never {},
    };
    let (parts, body) = res.into_parts();
    let body = match to_bytes(body, usize::MAX).await {
        Ok(b) => b.to_vec(),
        Err(err) => panic!("body: {err}"),
    };
    (parts.status, parts.headers, body)
}

fn json_of(body: &[u8]) -> Value {
    match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(err) => panic!("not json ({err}): {}", String::from_utf8_lossy(body)),
    }
}

fn code_of(body: &[u8]) -> String {
    json_of(body)["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn runs(count: &AtomicUsize) -> usize {
    count.load(Ordering::SeqCst)
}

/// Waits (up to 5 s) until the handlers ran `n` times.
async fn wait_for_runs(count: &AtomicUsize, n: usize) {
    for _ in 0..500 {
        if runs(count) >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(runs(count), n);
}

/// 32 identical requests at once across `apps` → one run; the rest replay or 409.
async fn concurrent_once(apps: &[Router], count: &AtomicUsize) {
    let key = unique("conc");
    let mut tasks = Vec::new();
    for i in 0..32 {
        let app = apps[i % apps.len()].clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            send(&app, req("POST", "/slow", Some(&key), Some(USER), "{}")).await
        }));
    }
    let (mut fresh, mut replayed, mut conflicts) = (0, 0, 0);
    for t in tasks {
        let (s, h, body) = match t.await {
            Ok(r) => r,
            Err(err) => panic!("task: {err}"),
        };
        match s {
            StatusCode::CREATED if h.get("x-idempotent-replayed").is_some() => {
                assert_eq!(json_of(&body)["count"], 1);
                replayed += 1;
            }
            StatusCode::CREATED => {
                assert_eq!(json_of(&body)["count"], 1);
                fresh += 1;
            }
            StatusCode::CONFLICT => {
                assert_eq!(code_of(&body), "IDEMPOTENCY_IN_PROGRESS");
                assert_eq!(h["retry-after"], "1");
                assert_eq!(h["x-request-id"], key.as_str());
                conflicts += 1;
            }
            other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&body)),
        }
    }
    assert_eq!(runs(count), 1, "handler ran exactly once");
    assert_eq!(fresh, 1);
    assert_eq!(fresh + replayed + conflicts, 32);
    assert!(conflicts > 0, "the 200 ms handler overlaps the others");
}

/// Sends a retry of a `/gated` key that must not run the handler again: if it does,
/// this fails at once (the handler would otherwise wait on the gate forever).
async fn retry_gated(app: &Router, gate: &Gate, key: &str) -> Reply {
    let retry = send(app, req("POST", "/gated", Some(key), Some(USER), "{}"));
    tokio::select! {
        reply = retry => reply,
        () = gate.started(1) => panic!("the handler of key {key} ran a second time"),
    }
}

/// Retries a `/gated` key whose handler is known to be running: 409
/// `IDEMPOTENCY_IN_PROGRESS`.
async fn assert_in_progress(app: &Router, gate: &Gate, key: &str) {
    let (s, _, body) = retry_gated(app, gate, key).await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(code_of(&body), "IDEMPOTENCY_IN_PROGRESS");
}
