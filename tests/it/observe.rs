//! What operators see: metrics through a real `metrics` recorder (feature `metrics`)
//! moving by exactly the expected amounts, and one tracing span per auth operation with
//! its outcome (and no secret in any field).
//!
//! Both are recorded thread-locally (`metrics::set_default_local_recorder`,
//! `tracing::subscriber::set_default`): on the current-thread runtime of
//! `#[tokio::test]` every request of the test runs on its thread, and the other tests of
//! the binary, on theirs, cannot move these counts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{Method, StatusCode};
use axum::routing::post;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use sentri::db::Database;
use sentri::throttle::{Limit, Throttling};
use sentri::{CurrentUser, IdempotencyOptions, ServerAuth, create_auth};
use serde_json::json;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

use crate::support::http::{call, expect, login, refresh_with, register, session};
use crate::support::services::config;

async fn server() -> ServerAuth {
    let db = Database::connect("sqlite::memory:").await.unwrap();
    let throttle = Throttling::default().subject(Limit::new(2, Duration::from_secs(600)));
    let auth = create_auth(
        config(db)
            .throttling(throttle)
            .refresh_grace(Duration::ZERO),
    )
    .unwrap();
    auth.migrate().await.unwrap();
    auth
}

fn app(auth: &ServerAuth) -> Router {
    let orders = post(|_: CurrentUser| async { (StatusCode::CREATED, "created") })
        .route_layer(auth.idempotency(IdempotencyOptions::default()).unwrap())
        .route_layer(auth.protect());
    Router::new()
        .nest("/auth", auth.router())
        .route(
            "/api/me",
            axum::routing::get(|| async { "me" }).route_layer(auth.protect()),
        )
        .route("/api/orders", orders)
        .layer(auth.error_handler())
}

/// Counter values by `name{label=value,…}`; gauges and histograms by name.
fn counters(
    snapshotter: &Snapshotter,
) -> (
    BTreeMap<String, u64>,
    BTreeMap<String, f64>,
    BTreeMap<String, usize>,
) {
    let mut c = BTreeMap::new();
    let mut g = BTreeMap::new();
    let mut h = BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let (_, key) = key.into_parts();
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = if labels.is_empty() {
            key.name().to_owned()
        } else {
            format!("{}{{{}}}", key.name(), labels.join(","))
        };
        match value {
            DebugValue::Counter(v) => {
                c.insert(name, v);
            }
            DebugValue::Gauge(v) => {
                g.insert(name, v.into_inner());
            }
            DebugValue::Histogram(v) => {
                h.insert(name, v.len());
            }
        }
    }
    (c, g, h)
}

#[tokio::test]
async fn metrics_move_by_exactly_the_expected_amounts() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let auth = server().await;
    let app = app(&auth);
    let bcrypt_before = auth.bcrypt_runs();

    // One registration and one login (two hashes), then the session's access token on
    // a protected route twice: the login cached the session, both are hits.
    let (access, refresh) = session(&app, "mia@example.com", "correct horse").await;
    let bearer = format!("Bearer {access}");
    for _ in 0..2 {
        let r = call(
            &app,
            Method::GET,
            "/api/me",
            &[("authorization", &bearer)],
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    // Two wrong passwords for another identifier, then the third attempt is refused.
    register(&app, "zed@example.com", "correct horse").await;
    for _ in 0..2 {
        let r = login(&app, "zed@example.com", "wrong horse").await;
        expect(
            &r,
            StatusCode::UNAUTHORIZED,
            "INVALID_CREDENTIALS",
            "wrong password",
        );
    }
    let r = login(&app, "zed@example.com", "correct horse").await;
    expect(
        &r,
        StatusCode::TOO_MANY_REQUESTS,
        "TOO_MANY_ATTEMPTS",
        "throttled",
    );

    // A rotation, then the old token again: reuse (no grace), the session is revoked.
    let r = refresh_with(&app, &refresh).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = refresh_with(&app, &refresh).await;
    expect(&r, StatusCode::UNAUTHORIZED, "TOKEN_INVALID", "reuse");

    // A second session: an idempotent order run once and replayed once, then logout.
    let r = login(&app, "mia@example.com", "correct horse").await;
    let bearer = format!("Bearer {}", r.body["data"]["accessToken"].as_str().unwrap());
    let refresh = r.cookie("refresh_token").unwrap();
    let key = [
        ("authorization", bearer.as_str()),
        ("x-idempotency-key", "order-1"),
    ];
    for _ in 0..2 {
        let r = call(
            &app,
            Method::POST,
            "/api/orders",
            &key,
            Some(json!({"n": 1})),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    let r = call(
        &app,
        Method::POST,
        "/auth/logout",
        &[("cookie", &format!("refresh_token={refresh}"))],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);

    let (c, g, h) = counters(&snapshotter);
    let expected: BTreeMap<String, u64> = [
        ("sentri_registrations_total", 2),
        ("sentri_logins_total{outcome=ok}", 2),
        ("sentri_logins_total{outcome=failed}", 2),
        ("sentri_logins_total{outcome=throttled}", 1),
        ("sentri_refreshes_total{outcome=ok}", 1),
        ("sentri_refreshes_total{outcome=invalid}", 1),
        ("sentri_refresh_reuse_detections_total", 1),
        ("sentri_session_revocations_total{reason=reuse_detected}", 1),
        ("sentri_session_revocations_total{reason=logout}", 1),
        // /api/me twice, the order twice (hits: sessions are cached when opened).
        ("sentri_session_cache_requests_total{result=hit}", 4),
        ("sentri_idempotency_requests_total{outcome=executed}", 1),
        ("sentri_idempotency_requests_total{outcome=replayed}", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(c, expected);
    // Every hash or check waited once for a core; none is in flight any more.
    let hashes = usize::try_from(auth.bcrypt_runs() - bcrypt_before).unwrap();
    assert_eq!(hashes, 6, "2 registrations, 2 wrong + 2 right passwords");
    assert_eq!(h["sentri_password_hash_wait_seconds"], hashes);
    assert_eq!(g["sentri_password_hash_queue_depth"], 0.0);
}

/// A span's name and its fields as recorded.
type Recorded = (String, BTreeMap<String, String>);

/// Every span with its fields, as recorded.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Recorded>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Spans {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut spans = self.0.lock().unwrap();
        spans.push((attrs.metadata().name().to_owned(), fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(spans.len() - 1);
        }
    }
    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        let Some(at) = ctx
            .span(id)
            .and_then(|s| s.extensions().get::<usize>().copied())
        else {
            return;
        };
        let mut spans = self.0.lock().unwrap();
        values.record(&mut Fields(&mut spans[at].1));
    }
}

#[tokio::test]
async fn one_span_per_auth_operation_with_its_outcome_and_no_secret() {
    // The process-wide subscriber of `secrets.rs` (installed once, writing nothing unless
    // that test captures) makes every callsite's interest "sometimes", so no callsite
    // another thread hit first can stay cached as "never" for this thread's subscriber.
    let _ = crate::secrets::capture();
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let _default = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    let auth = server().await;
    let app = app(&auth);

    let (access, refresh) = session(&app, "kim@example.com", "secret horse").await;
    let r = login(&app, "kim@example.com", "wrong horse").await;
    expect(
        &r,
        StatusCode::UNAUTHORIZED,
        "INVALID_CREDENTIALS",
        "wrong password",
    );
    let r = refresh_with(&app, &refresh).await;
    assert_eq!(r.status, StatusCode::OK);
    let next = r.cookie("refresh_token").unwrap();
    let r = refresh_with(&app, &refresh).await;
    expect(&r, StatusCode::UNAUTHORIZED, "TOKEN_INVALID", "reuse");
    let cookie = format!("refresh_token={next}");
    let r = call(
        &app,
        Method::POST,
        "/auth/logout",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);

    let recorded = spans.0.lock().unwrap().clone();
    let ops: Vec<(String, String)> = recorded
        .iter()
        .filter(|(name, _)| name.starts_with("sentri."))
        .map(|(name, f)| (name.clone(), f.get("outcome").cloned().unwrap_or_default()))
        .collect();
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        ops,
        pairs(&[
            ("sentri.register", "ok"),
            ("sentri.login", "ok"),
            ("sentri.login", "INVALID_CREDENTIALS"),
            ("sentri.refresh", "ok"),
            ("sentri.refresh", "TOKEN_INVALID"),
            ("sentri.logout", "ok"),
        ])
    );
    for (name, fields) in &recorded {
        for value in fields.values() {
            for secret in [
                "secret horse",
                "wrong horse",
                "kim@example.com",
                &access,
                &refresh,
                &next,
            ] {
                assert!(
                    !value.contains(secret),
                    "span {name} carries a secret: {fields:?}"
                );
            }
        }
    }
}
