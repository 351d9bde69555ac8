//! The conformance suite of the idempotency stores: every behaviour test runs once on
//! the in-memory store (moka), once on Redis and once on a Redis Cluster.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, StatusCode};
use serde_json::{Value, json};

use super::{
    Backend, Gate, KEY, USER, app, assert_in_progress, code_of, concurrent_once, gated_app,
    json_of, layer, outside_auth_app, req, retry_gated, runs, send, wait_for_runs, with_header,
};
#[cfg(not(feature = "redis"))]
use crate::support::common::require_services;
use crate::support::common::unique;

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
                    let Some(url) = crate::support::common::redis_url(concat!("idempotency::conformance::redis::", stringify!($name))) else {
                        return;
                    };
                    super::$name(super::Backend::Redis(url)).await;
                }
            )*
        }

        /// The same suite on a Redis Cluster (`SENTRI_TEST_REDIS_CLUSTER_URLS`, a
        /// `redis+cluster://` URL; `.ci/run` starts a 6-node cluster on 7001–7006).
        #[cfg(feature = "redis")]
        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(url) = crate::support::common::service_url("SENTRI_TEST_REDIS_CLUSTER_URLS", concat!("idempotency::conformance::cluster::", stringify!($name))) else {
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

#[cfg(not(feature = "redis"))]
#[test]
fn redis_suite_needs_the_redis_feature() {
    if require_services() {
        panic!("SENTRI_TEST_REQUIRE_SERVICES=1 but sentri was built without the `redis` feature");
    }
    eprintln!(
        "SKIPPED idempotency::conformance::redis::* and idempotency::redis_store::*: built without the `redis` feature"
    );
}
