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
#[cfg(feature = "redis")]
use sentri::idempotency::BackendErrorPolicy;
use sentri::{AuthUser, IdempotencyKey, IdempotencyLayer, IdempotencyOptions};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tower::ServiceExt;

#[cfg(feature = "redis")]
use crate::support::common::redis_url;
use crate::support::common::{require_services, unique};

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

// ---- the suite, run on each backend -----------------------------------------------------

async fn replays_first_2xx_response(b: Backend) {
    let (app, count) = app(&b);
    let key = unique("pay");
    let (s1, h1, b1) = send(
        &app,
        req("POST", "/pay?x=1", Some(&key), Some(USER), r#"{"a":1}"#),
    )
    .await;
    assert_eq!(s1, StatusCode::CREATED);
    assert_eq!(h1["x-request-id"], key.as_str());
    assert!(h1.get("x-idempotent-replayed").is_none());
    assert_eq!(json_of(&b1), json!({ "count": 1, "key": key }));

    let (s2, h2, b2) = send(
        &app,
        req("POST", "/pay?x=1", Some(&key), Some(USER), r#"{"a":1}"#),
    )
    .await;
    assert_eq!(s2, StatusCode::CREATED);
    assert_eq!(b2, b1, "identical body");
    assert_eq!(h2["x-idempotent-replayed"], "true");
    assert_eq!(h2["x-request-id"], key.as_str());
    assert_eq!(h2["content-type"], "application/json");
    assert_eq!(h2["x-custom"], "kept", "replay_headers are replayed");
    assert!(
        h2.get("set-cookie").is_none(),
        "unlisted headers are not replayed"
    );
    assert_eq!(runs(&count), 1);
}

async fn non_2xx_is_not_stored(b: Backend) {
    let (app, count) = app(&b);
    let key = unique("fail");
    for n in 1..=2 {
        let (s, h, body) = send(&app, req("POST", "/fail", Some(&key), Some(USER), "{}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(h.get("x-idempotent-replayed").is_none());
        assert_eq!(json_of(&body)["count"], n);
    }
    assert_eq!(runs(&count), 2);
}

async fn concurrent_duplicates_run_once(b: Backend) {
    let (app, count) = app(&b);
    concurrent_once(&[app.clone(), app], &count).await;
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

async fn in_progress_gets_409(b: Backend) {
    let (app, count) = app(&b);
    let key = unique("busy");
    let first = {
        let (app, key) = (app.clone(), key.clone());
        tokio::spawn(
            async move { send(&app, req("POST", "/slow", Some(&key), Some(USER), "{}")).await },
        )
    };
    wait_for_runs(&count, 1).await;
    let (s, h, body) = send(&app, req("POST", "/slow", Some(&key), Some(USER), "{}")).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(code_of(&body), "IDEMPOTENCY_IN_PROGRESS");
    assert_eq!(h["retry-after"], "1");
    assert_eq!(json_of(&body)["statusCode"], 409);
    let Ok((s1, _, _)) = first.await else {
        panic!("first request task failed")
    };
    assert_eq!(s1, StatusCode::CREATED);
    let (s, h, _) = send(&app, req("POST", "/slow", Some(&key), Some(USER), "{}")).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(h["x-idempotent-replayed"], "true");
    assert_eq!(runs(&count), 1);
}

async fn reused_key_with_other_request_is_422(b: Backend) {
    let (app, count) = app(&b);
    let key = unique("mm");
    let (s, _, _) = send(
        &app,
        req("POST", "/pay", Some(&key), Some(USER), r#"{"amount":1}"#),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    // Different body.
    let (s, h, body) = send(
        &app,
        req("POST", "/pay", Some(&key), Some(USER), r#"{"amount":2}"#),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code_of(&body), "IDEMPOTENCY_KEY_MISMATCH");
    assert_eq!(h["x-request-id"], key.as_str());
    // Different query.
    let (s, _, body) = send(
        &app,
        req(
            "POST",
            "/pay?x=1",
            Some(&key),
            Some(USER),
            r#"{"amount":1}"#,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code_of(&body), "IDEMPOTENCY_KEY_MISMATCH");
    assert_eq!(runs(&count), 1);

    // Authenticated: the key is the user's, so another path or method is a mismatch too.
    let key = unique("mm_user");
    let (s, _, _) = send(&app, req("POST", "/pay", Some(&key), Some("u1"), "{}")).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _, body) = send(&app, req("POST", "/other", Some(&key), Some("u1"), "{}")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code_of(&body), "IDEMPOTENCY_KEY_MISMATCH");
    let (s, _, body) = send(&app, req("PUT", "/pay", Some(&key), Some("u1"), "{}")).await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(runs(&count), 2);
}

async fn anonymous_requests_pass_through(b: Backend) {
    let (app, count) = app(&b);
    let key = unique("anon");
    for n in 1..=2 {
        let (s, h, body) = send(&app, req("POST", "/pay", Some(&key), None, "{}")).await;
        assert_eq!(s, StatusCode::CREATED);
        assert!(h.get("x-idempotent-replayed").is_none());
        assert!(h.get("x-request-id").is_none(), "not handled by the layer");
        assert_eq!(json_of(&body), json!({ "count": n, "key": null }));
    }
    // A user's stored response is not an anonymous caller's either.
    let (s, _, mine) = send(&app, req("POST", "/pay", Some(&key), Some(USER), "{}")).await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, h, anon) = send(&app, req("POST", "/pay", Some(&key), None, "{}")).await;
    assert!(h.get("x-idempotent-replayed").is_none());
    assert_ne!(anon, mine);
    assert_eq!(runs(&count), 4);
}

/// With the layer outside authentication, keys are bound to the credentials: two
/// callers never see each other's response, and a caller without credentials never
/// gets a stored response.
async fn layer_outside_auth_binds_keys_to_credentials(b: Backend) {
    let count = Arc::new(AtomicUsize::new(0));
    let app = outside_auth_app(layer(&b), count.clone());
    let callers = [
        (
            "authorization",
            "Bearer token-of-alice",
            "Bearer token-of-bob",
        ),
        (
            "cookie",
            "session=alice; theme=dark",
            "session=bob; theme=dark",
        ),
        (
            "x-api-key",
            "alice-api-key-0123456789",
            "bob-api-key-0123456789",
        ),
    ];
    for (header, one, two) in callers {
        let key = unique("outside");
        let as_ = |who: &str| with_header(req("POST", "/pay", Some(&key), None, "{}"), header, who);
        let before = runs(&count);
        let (s, h, first) = send(&app, as_(one)).await;
        assert_eq!(s, StatusCode::CREATED, "{header}");
        assert!(h.get("x-idempotent-replayed").is_none());
        let (s, h, second) = send(&app, as_(two)).await;
        assert_eq!(s, StatusCode::CREATED, "{header}");
        assert!(
            h.get("x-idempotent-replayed").is_none(),
            "{header}: cross replay"
        );
        assert_ne!(
            second, first,
            "{header}: the second caller got the first's body"
        );
        assert_eq!(
            runs(&count),
            before + 2,
            "{header}: each caller's handler ran"
        );

        // Each caller still gets exactly-once on its own key.
        let (_, h, again) = send(&app, as_(one)).await;
        assert_eq!(h["x-idempotent-replayed"], "true", "{header}");
        assert_eq!(again, first);
        let (_, h, again) = send(&app, as_(two)).await;
        assert_eq!(h["x-idempotent-replayed"], "true", "{header}");
        assert_eq!(again, second);

        // No credentials at all: the handler runs, nothing stored is returned.
        let (s, h, anon) = send(&app, req("POST", "/pay", Some(&key), None, "{}")).await;
        assert_eq!(s, StatusCode::CREATED);
        assert!(
            h.get("x-idempotent-replayed").is_none(),
            "{header}: anonymous replay"
        );
        assert_ne!(anon, first);
        assert_eq!(runs(&count), before + 3, "{header}");
    }
}

async fn keys_are_scoped_to_the_user(b: Backend) {
    let (app, count) = app(&b);
    let key = unique("scoped");
    let (s, _, a1) = send(&app, req("POST", "/pay", Some(&key), Some("alice"), "{}")).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, h, b1) = send(&app, req("POST", "/pay", Some(&key), Some("bob"), "{}")).await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(
        h.get("x-idempotent-replayed").is_none(),
        "bob never sees alice's response"
    );
    assert_eq!(json_of(&b1)["count"], 2);
    assert_eq!(runs(&count), 2);
    let (_, h, a2) = send(&app, req("POST", "/pay", Some(&key), Some("alice"), "{}")).await;
    assert_eq!(h["x-idempotent-replayed"], "true");
    assert_eq!(a2, a1);
    let (_, h, b2) = send(&app, req("POST", "/pay", Some(&key), Some("bob"), "{}")).await;
    assert_eq!(h["x-idempotent-replayed"], "true");
    assert_eq!(b2, b1);
    assert_eq!(runs(&count), 2);
}

async fn invalid_keys_are_400(b: Backend) {
    let (app, count) = app(&b);
    let long = "k".repeat(256);
    for bad in [
        HeaderValue::from_static(""),
        HeaderValue::from_str(&long).unwrap_or(HeaderValue::from_static("")),
        HeaderValue::from_static("tab\there"),
        HeaderValue::from_static("with space"),
        HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap_or(HeaderValue::from_static("")),
    ] {
        let mut r = req("POST", "/pay", None, None, "{}");
        r.headers_mut().insert(KEY, bad.clone());
        let (s, _, body) = send(&app, r).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad:?}");
        assert_eq!(code_of(&body), "VALIDATION_ERROR");
    }
    // The longest valid key is accepted.
    let ok = "k".repeat(255);
    let (s, _, _) = send(
        &app,
        req("POST", "/pay", Some(&ok), Some(&unique("u")), "{}"),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(runs(&count), 1);
}

async fn other_methods_and_missing_header_pass_through(b: Backend) {
    let (app, count) = app(&b);
    let key = unique("get");
    for n in 1..=2 {
        let (s, h, body) = send(&app, req("GET", "/pay", Some(&key), Some(USER), "")).await;
        assert_eq!(s, StatusCode::CREATED);
        assert!(h.get("x-request-id").is_none(), "untouched");
        assert_eq!(json_of(&body), json!({ "count": n, "key": null }));
    }
    for n in 3..=4 {
        let (s, h, body) = send(&app, req("POST", "/pay", None, None, "{}")).await;
        assert_eq!(s, StatusCode::CREATED);
        assert!(h.get("x-idempotent-replayed").is_none());
        assert_eq!(json_of(&body)["count"], n);
    }
    assert_eq!(runs(&count), 4);
}

/// A 2xx over `max_body` is sent whole, then the key is done: a retry gets 409
/// `IDEMPOTENCY_NOT_REPLAYABLE` and the handler never runs twice.
async fn oversize_response_runs_once_and_is_not_replayable(b: Backend) {
    let (app, count) = app(&b);
    for (n, path) in [(1, "/big"), (2, "/big-stream")] {
        let key = unique("big");
        let (s, h, body) = send(&app, req("POST", path, Some(&key), Some(USER), "{}")).await;
        assert_eq!(s, StatusCode::CREATED);
        assert_eq!(body.len(), 4096, "{path}: streamed through whole");
        assert!(h.get("x-idempotent-replayed").is_none());
        assert_eq!(h["x-request-id"], key.as_str());
        for _ in 0..2 {
            let (s, h, body) = send(&app, req("POST", path, Some(&key), Some(USER), "{}")).await;
            assert_eq!(s, StatusCode::CONFLICT, "{path}");
            assert_eq!(code_of(&body), "IDEMPOTENCY_NOT_REPLAYABLE");
            assert_eq!(json_of(&body)["statusCode"], 409);
            assert_eq!(h["x-request-id"], key.as_str());
        }
        // The fingerprint is kept: the same key on another request is still a mismatch.
        let (s, _, body) = send(&app, req("POST", path, Some(&key), Some(USER), "[]")).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(code_of(&body), "IDEMPOTENCY_KEY_MISMATCH");
        assert_eq!(runs(&count), n, "{path}: ran once");
    }
}

async fn oversize_request_body_is_413(b: Backend) {
    let (app, count) = app(&b);
    let body = "x".repeat(sentri::idempotency::MAX_REQUEST_BODY + 1);
    let (s, _, resp) = send(
        &app,
        req("POST", "/pay", Some(&unique("k")), Some(USER), &body),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(code_of(&resp), "PAYLOAD_TOO_LARGE");
    assert_eq!(runs(&count), 0);
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

/// Retries a `/gated` key while the first call is in flight (409), then expects the
/// stored response.
async fn retry_until_replayed(app: &Router, gate: &Gate, key: &str) -> Value {
    for _ in 0..500 {
        let (s, h, body) = retry_gated(app, gate, key).await;
        match s {
            StatusCode::CREATED => {
                assert_eq!(h["x-idempotent-replayed"], "true", "the handler ran again");
                return json_of(&body);
            }
            StatusCode::CONFLICT => {
                assert_eq!(code_of(&body), "IDEMPOTENCY_IN_PROGRESS");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => panic!("unexpected {other}"),
        }
    }
    panic!("key {key} stayed in progress");
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

async fn panicking_handler_releases_the_key(b: Backend) {
    let (app, count) = app(&b);
    let key = unique("panic");
    let (s, _, _) = send(&app, req("POST", "/panic", Some(&key), Some(USER), "{}")).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(retry_until_created(&app, "/panic", &key).await["count"], 2);
    assert_eq!(runs(&count), 2);
}

/// Retries `path` with `key` until the handler runs again (the release is spawned).
async fn retry_until_created(app: &Router, path: &str, key: &str) -> Value {
    for _ in 0..250 {
        let (s, _, body) = send(app, req("POST", path, Some(key), Some(USER), "{}")).await;
        match s {
            StatusCode::CREATED => return json_of(&body),
            StatusCode::CONFLICT => tokio::time::sleep(Duration::from_millis(20)).await,
            other => panic!("unexpected {other}"),
        }
    }
    panic!("key {key} stayed in progress");
}

/// The service future is dropped mid-handler (in process): the handler still finishes,
/// its response is stored, and a retry replays it.
async fn dropped_request_does_not_cancel_the_handler(b: Backend) {
    let (app, count, gate) = gated_app(layer(&b));
    let key = unique("drop");
    let mut first = Box::pin(send(
        &app,
        req("POST", "/gated", Some(&key), Some(USER), "{}"),
    ));
    tokio::select! {
        _ = &mut first => panic!("the gated handler answered before the gate opened"),
        () = gate.started(1) => {}
    }
    drop(first);
    assert_in_progress(&app, &gate, &key).await;
    gate.open.add_permits(1);
    assert_eq!(retry_until_replayed(&app, &gate, &key).await["count"], 1);
    assert_eq!(runs(&count), 1, "the handler ran exactly once");
}

/// A real client disconnects mid-handler (hyper drops the request future): the
/// handler still finishes once, and the retry gets its stored response.
async fn client_disconnect_does_not_cancel_the_handler(b: Backend) {
    use tokio::io::AsyncWriteExt;
    let (app, count, gate) = gated_app(layer(&b));
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(err) => panic!("bind: {err}"),
    };
    let Ok(addr) = listener.local_addr() else {
        panic!("no local addr")
    };
    let server = tokio::spawn(axum::serve(listener, app.clone()).into_future());
    let key = unique("disc");
    let mut stream = match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(err) => panic!("connect: {err}"),
    };
    let raw = format!(
        "POST /gated HTTP/1.1\r\nhost: test\r\n{KEY}: {key}\r\nx-test-user: {USER}\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}"
    );
    if let Err(err) = stream.write_all(raw.as_bytes()).await {
        panic!("write: {err}");
    }
    gate.started(1).await;
    drop(stream);
    // The server dropped the request future (the client is gone)...
    gate.ended().await;
    // ...but the handler still runs and holds the key.
    assert_in_progress(&app, &gate, &key).await;
    gate.open.add_permits(1);
    assert_eq!(retry_until_replayed(&app, &gate, &key).await["count"], 1);
    assert_eq!(runs(&count), 1, "the handler ran exactly once");
    server.abort();
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Backend::Memory).await;
                }
            )*
        }

        #[cfg(feature = "redis")]
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(url) = crate::support::common::redis_url(concat!("idempotency::redis::", stringify!($name))) else {
                        return;
                    };
                    super::$name(super::Backend::Redis(url)).await;
                }
            )*
        }
    };
}

suite!(
    replays_first_2xx_response,
    non_2xx_is_not_stored,
    concurrent_duplicates_run_once,
    in_progress_gets_409,
    reused_key_with_other_request_is_422,
    anonymous_requests_pass_through,
    layer_outside_auth_binds_keys_to_credentials,
    keys_are_scoped_to_the_user,
    invalid_keys_are_400,
    other_methods_and_missing_header_pass_through,
    oversize_response_runs_once_and_is_not_replayable,
    oversize_request_body_is_413,
    panicking_handler_releases_the_key,
    dropped_request_does_not_cancel_the_handler,
    client_disconnect_does_not_cancel_the_handler,
);

// ---- memory store only -----------------------------------------------------------------

fn memory_layer(max_memory_bytes: u64) -> IdempotencyLayer {
    match IdempotencyLayer::new(IdempotencyOptions {
        max_memory_bytes,
        ..options(&Backend::Memory)
    }) {
        Ok(layer) => layer,
        Err(err) => panic!("layer: {err:?}"),
    }
}

fn stored_bytes(layer: &IdempotencyLayer) -> u64 {
    match layer.stored_bytes() {
        Some(bytes) => bytes,
        None => panic!("the memory store reports its bytes"),
    }
}

fn spawn_send(app: &Router, key: &str) -> tokio::task::JoinHandle<Reply> {
    let (app, key) = (app.clone(), key.to_owned());
    tokio::spawn(
        async move { send(&app, req("POST", "/gated", Some(&key), Some(USER), "{}")).await },
    )
}

async fn joined(task: tokio::task::JoinHandle<Reply>) -> Reply {
    match task.await {
        Ok(reply) => reply,
        Err(err) => panic!("task: {err}"),
    }
}

/// Flooding the byte budget with completed responses evicts completed responses, oldest
/// first, never an in-flight marker; the store never holds more than its budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_budget_evicts_completed_never_in_flight() {
    const BUDGET: u64 = 16 * 1024;
    let layer = memory_layer(BUDGET);
    let (app, count, gate) = gated_app(layer.clone());
    let held: Vec<String> = (0..4).map(|_| unique("held")).collect();
    let tasks: Vec<_> = held.iter().map(|key| spawn_send(&app, key)).collect();
    gate.started(4).await;

    let flood: Vec<String> = (0..200).map(|_| unique("flood")).collect();
    for key in &flood {
        let (s, _, _) = send(&app, req("POST", "/pay", Some(key), Some(USER), "{}")).await;
        assert_eq!(s, StatusCode::CREATED);
        assert!(
            stored_bytes(&layer) <= BUDGET,
            "{} > {BUDGET}",
            stored_bytes(&layer)
        );
    }
    assert_eq!(runs(&count), 204);
    for key in &held {
        assert_in_progress(&app, &gate, key).await;
    }
    // The oldest completed response was evicted (its retry runs again); the newest is kept.
    let (_, h, _) = send(&app, req("POST", "/pay", Some(&flood[0]), Some(USER), "{}")).await;
    assert!(h.get("x-idempotent-replayed").is_none());
    assert_eq!(runs(&count), 205);
    let (_, h, _) = send(
        &app,
        req("POST", "/pay", Some(&flood[199]), Some(USER), "{}"),
    )
    .await;
    assert_eq!(h["x-idempotent-replayed"], "true");
    assert_eq!(runs(&count), 205);

    gate.open.add_permits(4);
    for (key, task) in held.iter().zip(tasks) {
        let (s, h, first) = joined(task).await;
        assert_eq!(s, StatusCode::CREATED);
        assert!(h.get("x-idempotent-replayed").is_none());
        let (_, h, again) = retry_gated(&app, &gate, key).await;
        assert_eq!(h["x-idempotent-replayed"], "true");
        assert_eq!(again, first);
    }
    assert_eq!(runs(&count), 205, "no handler ran twice");
    assert!(stored_bytes(&layer) <= BUDGET);
}

/// When in-flight markers alone fill the budget, a new key is refused with 503 (the
/// default fail-closed policy) instead of evicting one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_full_of_in_flight_requests_refuses_new_keys() {
    let budget = sentri::idempotency::MIN_MEMORY_BYTES;
    let layer = memory_layer(budget);
    let (app, count, gate) = gated_app(layer.clone());
    let long_key = |i: usize| format!("{i:03}{}", "k".repeat(252));
    let mut held = Vec::new();
    let refused = loop {
        assert!(held.len() < 64, "the budget never filled up");
        let key = long_key(held.len());
        let mut task = spawn_send(&app, &key);
        tokio::select! {
            reply = &mut task => break reply,
            () = gate.started(1) => held.push((key, task)),
        }
    };
    let Ok((s, _, body)) = refused else {
        panic!("task failed")
    };
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(code_of(&body), "SERVICE_UNAVAILABLE");
    assert!(held.len() >= 2, "{} markers fit", held.len());
    assert!(stored_bytes(&layer) <= budget);
    for (key, _) in &held {
        assert_in_progress(&app, &gate, key).await;
    }
    let started = held.len();
    for (key, task) in held {
        // One at a time (the gate is FIFO): a later completion may evict this response
        // for space, and a retry after that would run (and wait on the gate) again.
        gate.open.add_permits(1);
        assert_eq!(joined(task).await.0, StatusCode::CREATED);
        // Replayed, or (when the response did not fit beside the other markers) refused
        // as not replayable: never run again.
        let (s, _, body) = retry_gated(&app, &gate, &key).await;
        assert!(
            s == StatusCode::CREATED || code_of(&body) == "IDEMPOTENCY_NOT_REPLAYABLE",
            "{s}"
        );
    }
    assert_eq!(runs(&count), started);
    assert!(stored_bytes(&layer) <= budget);
}

// ---- configuration ---------------------------------------------------------------------

#[test]
fn bad_configuration_is_rejected_and_secrets_redacted() {
    let err = IdempotencyLayer::new(IdempotencyOptions {
        ttl: Duration::ZERO,
        ..Default::default()
    })
    .err();
    assert_eq!(
        err.map(|e| e.code().as_str().to_owned()).as_deref(),
        Some("CONFIGURATION_ERROR")
    );

    let err = IdempotencyLayer::new(IdempotencyOptions {
        max_memory_bytes: sentri::idempotency::MIN_MEMORY_BYTES - 1,
        ..Default::default()
    })
    .err();
    assert_eq!(
        err.map(|e| e.code().as_str().to_owned()).as_deref(),
        Some("CONFIGURATION_ERROR")
    );

    let opts = IdempotencyOptions {
        redis_url: Some("redis://admin:hunter2@cache.internal:6379/0".into()),
        ..Default::default()
    };
    let shown = format!("{opts:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("admin"),
        "{shown}"
    );
    assert!(shown.contains("cache.internal:6379"), "{shown}");

    #[cfg(feature = "redis")]
    {
        let err = IdempotencyLayer::new(IdempotencyOptions {
            redis_url: Some("not a url".into()),
            ..Default::default()
        })
        .err();
        assert_eq!(
            err.map(|e| e.code().as_str().to_owned()).as_deref(),
            Some("CONFIGURATION_ERROR")
        );
        // Valid URL, nothing listening: still builds (connects lazily), outside a runtime.
        let layer = IdempotencyLayer::new(IdempotencyOptions {
            redis_url: Some("redis://:hunter2@127.0.0.1:1".into()),
            ..Default::default()
        });
        let shown = format!("{layer:?}");
        assert!(layer.is_ok() && !shown.contains("hunter2"), "{shown}");
    }
}

// ---- Redis only ------------------------------------------------------------------------

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_two_instances_share_exactly_once() {
    let Some(url) = redis_url("idempotency::redis_two_instances_share_exactly_once") else {
        return;
    };
    let b = Backend::Redis(url);
    let count = Arc::new(AtomicUsize::new(0));
    // Two "processes": independent layers, each with its own connection.
    let one = app_with(layer(&b), count.clone(), &Gate::new());
    let two = app_with(layer(&b), count.clone(), &Gate::new());
    concurrent_once(&[one.clone(), two.clone()], &count).await;

    let key = unique("two");
    let (_, _, first) = send(&one, req("POST", "/pay", Some(&key), Some(USER), "{}")).await;
    let (_, h, again) = send(&two, req("POST", "/pay", Some(&key), Some(USER), "{}")).await;
    assert_eq!(h["x-idempotent-replayed"], "true");
    assert_eq!(again, first);
    assert_eq!(runs(&count), 2);
}

#[cfg(not(feature = "redis"))]
#[test]
fn redis_suite_needs_the_redis_feature() {
    if require_services() {
        panic!("SENTRI_TEST_REQUIRE_SERVICES=1 but sentri was built without the `redis` feature");
    }
    eprintln!("SKIPPED idempotency::redis::*: built without the `redis` feature");
}

/// A throwaway `redis-server` child on a free port, killed on drop.
#[cfg(feature = "redis")]
struct OwnRedis {
    port: u16,
    child: Option<std::process::Child>,
}

#[cfg(feature = "redis")]
impl OwnRedis {
    fn free_port() -> u16 {
        match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
            Ok(addr) => addr.port(),
            Err(err) => panic!("no free port: {err}"),
        }
    }

    /// `None` when `redis-server` is not installed.
    async fn start(port: u16) -> Option<Self> {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
            Err(err) => panic!("redis-server: {err}"),
        };
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Some(Self {
                    port,
                    child: Some(child),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("own redis-server did not start on port {port}");
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(feature = "redis")]
impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_outage_fail_closed_fail_open_and_recovery() {
    let port = OwnRedis::free_port();
    let Some(mut redis) = OwnRedis::start(port).await else {
        if require_services() {
            panic!("redis-server binary not found but SENTRI_TEST_REQUIRE_SERVICES=1");
        }
        eprintln!(
            "SKIPPED idempotency::redis_outage_fail_closed_fail_open_and_recovery: redis-server binary not found"
        );
        return;
    };
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let closed_count = Arc::new(AtomicUsize::new(0));
    let open_count = Arc::new(AtomicUsize::new(0));
    let closed = app_with(
        layer(&Backend::Redis(url.clone())),
        closed_count.clone(),
        &Gate::new(),
    );
    let open = app_with(
        match IdempotencyLayer::new(IdempotencyOptions {
            on_backend_error: BackendErrorPolicy::FailOpen,
            ..options(&Backend::Redis(url))
        }) {
            Ok(l) => l,
            Err(err) => panic!("{err:?}"),
        },
        open_count.clone(),
        &Gate::new(),
    );

    // Healthy: both work and connect.
    let (s, _, _) = send(
        &closed,
        req("POST", "/pay", Some(&unique("up")), Some(USER), "{}"),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _, _) = send(
        &open,
        req("POST", "/pay", Some(&unique("up")), Some(USER), "{}"),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);

    redis.kill();

    let started = std::time::Instant::now();
    let (s, h, body) = send(
        &closed,
        req("POST", "/pay", Some(&unique("down")), Some(USER), "{}"),
    )
    .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(code_of(&body), "SERVICE_UNAVAILABLE");
    assert!(h.get("retry-after").is_some());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "fails fast: {:?}",
        started.elapsed()
    );
    assert_eq!(
        runs(&closed_count),
        1,
        "fail-closed does not run the handler"
    );

    let (s, h, _) = send(
        &open,
        req("POST", "/pay", Some(&unique("down")), Some(USER), "{}"),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(h.get("x-idempotent-replayed").is_none());
    assert_eq!(runs(&open_count), 2, "fail-open runs the handler");

    // Back on the same port: the same layer recovers without a rebuild.
    let Some(_redis_again) = OwnRedis::start(port).await else {
        panic!("redis-server vanished");
    };
    let key = unique("back");
    let mut recovered = false;
    for _ in 0..100 {
        let (s, _, _) = send(&closed, req("POST", "/pay", Some(&key), Some(USER), "{}")).await;
        if s == StatusCode::CREATED {
            recovered = true;
            break;
        }
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "layer did not recover after Redis came back");
    let (s, h, _) = send(&closed, req("POST", "/pay", Some(&key), Some(USER), "{}")).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(h["x-idempotent-replayed"], "true");
    assert_eq!(runs(&closed_count), 2);
}
