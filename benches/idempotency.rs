//! Overhead of `IdempotencyLayer` (moka backend) on an axum route called with `oneshot`.
//!
//! `cargo bench --bench idempotency --all-features -- --quick`
//!
//! * `baseline`     — the route without the layer;
//! * `passthrough`  — with the layer, no key header;
//! * `miss`         — with the layer, a fresh key every call (handler runs, response stored);
//! * `replay`       — with the layer, the same key every call (stored response replayed).
//!
//! After criterion's figures, a plain timing loop prints each case's overhead over the
//! baseline in µs so the ratios are readable at a glance.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use criterion::Criterion;
use sentri::{IdempotencyLayer, IdempotencyOptions};
use tower::ServiceExt;

const BODY: &str = r#"{"amount":1250,"currency":"EUR"}"#;

fn router(with_layer: bool) -> Router {
    let r = Router::new().route(
        "/pay",
        post(|| async {
            (
                StatusCode::CREATED,
                axum::Json(serde_json::json!({"id": 1})),
            )
        }),
    );
    if !with_layer {
        return r;
    }
    match IdempotencyLayer::new(IdempotencyOptions::default()) {
        Ok(layer) => r.route_layer(layer),
        Err(err) => panic!("{err:?}"),
    }
}

fn request(key: Option<&str>) -> Request<Body> {
    let mut b = Request::post("/pay").header("content-type", "application/json");
    if let Some(key) = key {
        b = b.header("x-idempotency-key", key);
    }
    match b.body(Body::from(BODY)) {
        Ok(r) => r,
        Err(err) => panic!("{err}"),
    }
}

async fn call(app: &Router, req: Request<Body>) {
    let res = match app.clone().oneshot(req).await {
        Ok(res) => res,
        Err(never) => match never {},
    };
    assert!(res.status().is_success());
    // Drain the body like a server would.
    let _ = black_box(axum::body::to_bytes(res.into_body(), usize::MAX).await);
}

static NEXT: AtomicU64 = AtomicU64::new(0);

fn fresh_key() -> String {
    format!("bench-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

#[derive(Clone, Copy)]
enum Case {
    Baseline,
    Passthrough,
    Miss,
    Replay,
}

impl Case {
    const ALL: [Case; 4] = [Case::Baseline, Case::Passthrough, Case::Miss, Case::Replay];

    fn name(self) -> &'static str {
        match self {
            Case::Baseline => "baseline (no layer)",
            Case::Passthrough => "layer, no key (pass-through)",
            Case::Miss => "layer miss (fresh key)",
            Case::Replay => "layer replay (same key)",
        }
    }

    fn app(self) -> Router {
        router(!matches!(self, Case::Baseline))
    }

    async fn run(self, app: &Router) {
        match self {
            Case::Baseline | Case::Passthrough => call(app, request(None)).await,
            Case::Miss => call(app, request(Some(&fresh_key()))).await,
            Case::Replay => call(app, request(Some("bench-replay"))).await,
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => panic!("{err}"),
    }
}

fn criterion_cases(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("idempotency");
    for case in Case::ALL {
        let app = case.app();
        group.bench_function(case.name(), |b| {
            b.to_async(&rt).iter(|| case.run(&app));
        });
    }
    group.finish();
}

/// Mean time per call over `iters` calls (after a warm-up).
fn mean(rt: &tokio::runtime::Runtime, case: Case, iters: u32) -> Duration {
    let app = case.app();
    rt.block_on(async {
        for _ in 0..iters / 10 {
            case.run(&app).await;
        }
        let start = Instant::now();
        for _ in 0..iters {
            case.run(&app).await;
        }
        start.elapsed() / iters
    })
}

fn ratios() {
    let rt = runtime();
    let iters = 20_000;
    let base = mean(&rt, Case::Baseline, iters);
    println!("\nidempotency overhead (mean of {iters} calls, current-thread runtime):");
    for case in Case::ALL {
        let t = mean(&rt, case, iters);
        let overhead = t.as_secs_f64() - base.as_secs_f64();
        println!(
            "  {:<30} {:>8.2} µs/call  overhead {:>+6.2} µs  ({:.2}x baseline)",
            case.name(),
            t.as_secs_f64() * 1e6,
            overhead * 1e6,
            t.as_secs_f64() / base.as_secs_f64(),
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    criterion_cases(&mut c);
    c.final_summary();
    ratios();
}
