//! sentri's in-process benchmarks (one binary, to keep link time down on small machines).
//!
//! `cargo bench --bench sentri --features sqlite -- --quick`
//!
//! Groups (criterion):
//!
//! * `token/{sign,verify}/{HS256,RS256,ES256,EdDSA}` — an access token, through
//!   `TokenService` (precomputed keys and `Validation`).
//! * `protect/*` — one request through an axum router with `tower::ServiceExt::oneshot`
//!   (no sockets), SQLite store in a temporary file:
//!   - `bare` — the route without any layer (the baseline);
//!   - `jwt-only` — a tiny middleware that calls `auth.verify_access_token` on the bearer
//!     token and nothing else (no session check) — the floor for any JWT auth;
//!   - `protect (cache warm)` — `auth.protect()`, the session is in the live-session cache;
//!   - `protect (cache cold)` — `auth.protect()` on a `ServerAuth` whose
//!     `session_cache_ttl` is the 1 ms minimum, cycling through 256 sessions so that every
//!     call finds its session expired from the cache and asks the store (one indexed
//!     `SELECT` on SQLite, then a cache insert).
//! * `idempotency/*` — the idempotency layer (moka) on a route without auth: `baseline`
//!   (no layer), `pass-through` (no key header), `miss` (fresh key: run + store),
//!   `replay` (same key: stored response replayed).
//! * `bcrypt/hash cost 10` — one password hash at cost 10 (the login bound).
//! * `throttle/*` — what throttling adds to a login on the in-memory store: `login check`
//!   (count the attempt on the identifier and the address, then settle it as a
//!   success) and `refused` (a locked identifier answered at once).
//!   `SENTRI_BENCH_THROTTLE=1` runs only this group.
//!
//! After criterion, a plain interleaved timing loop prints one table of every case with
//! its ratio to the baseline of its group (measured in the same run, best of 5 rounds).
//!
//! `SENTRI_BENCH_LOOP=<case name prefix>` (e.g. `protect (cache warm)`, `jwt-only`,
//! `layer miss`) runs only that case in a loop for `SENTRI_BENCH_SECS` (default 10) s,
//! for `perf record` or callgrind.
//!
//! `SENTRI_BENCH_BARE_SERVER=<addr>` (with `SENTRI_SECRET`) serves the "axum +
//! jsonwebtoken, no database" ceiling `benches/load.sh` compares `protect()` with (see
//! `support/bare_server.rs`). `SENTRI_BENCH_TOKEN_CACHE_RSS=1` prints the RSS the
//! verified-token cache adds when full at its default bound.
//!
//! `SENTRI_BENCH_BCRYPT=<cost>` skips everything else and prints hashes/s of one thread
//! at that cost (used by `benches/load.sh` to compute the login bound on the server core).

#[path = "support/bare_server.rs"]
mod bare_server;

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Request as HttpRequest, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use criterion::Criterion;
use sentri::db::Database;
use sentri::password::PasswordHasher;
use sentri::token::{Algorithm, SigningKey, TokenOptions, TokenService};
use sentri::{
    AuthUser, IdempotencyLayer, IdempotencyOptions, RegisterInput, ServerAuth, ServerConfig,
    create_auth,
};
use sentri::{LoginInput, SessionMeta};
use tower::ServiceExt;

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => panic!("{err}"),
    }
}

fn ok<T, E: std::fmt::Debug>(r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(err) => panic!("{err:?}"),
    }
}

// ---- tokens ----------------------------------------------------------------------------

const ALGS: [(&str, Algorithm); 4] = [
    ("HS256", Algorithm::HS256),
    ("RS256", Algorithm::RS256),
    ("ES256", Algorithm::ES256),
    ("EdDSA", Algorithm::EdDSA),
];

fn bench_user() -> AuthUser {
    AuthUser {
        id: "0191d3a4-5b6c-7d8e-9f00-112233445566".into(),
        identifier: "ada@example.com".into(),
        roles: vec!["user".into()],
    }
}

/// A token service of `alg`; `cached`: with the verified-token cache (the default).
fn token_service(rt: &tokio::runtime::Runtime, alg: Algorithm, cached: bool) -> TokenService {
    let key = ok(rt.block_on(SigningKey::generate(alg)));
    let opts = if cached {
        TokenOptions::default()
    } else {
        TokenOptions {
            verified_cache_bytes: 0,
            ..TokenOptions::default()
        }
    };
    ok(TokenService::new(vec![key], opts))
}

// ---- protect ---------------------------------------------------------------------------

/// Everything the protect cases need: routers and tokens.
struct ProtectFixture {
    bare: Router,
    jwt_only: Router,
    warm: Router,
    cold: Router,
    /// `require_permission("orders:read")` (granted to `user` in code), cache warm.
    permission: Router,
    /// `auth.tenant()`: the session switched to a workspace, caches warm.
    tenant: Router,
    tenant_token: String,
    workspace: String,
    token: String,
    /// One token per session, for the cold case.
    cold_tokens: Vec<String>,
    next_cold: AtomicUsize,
    db_path: std::path::PathBuf,
}

impl Drop for ProtectFixture {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.db_path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

async fn handler() -> &'static str {
    "ok"
}

/// The JWT-only middleware: bearer token → `verify_access_token` → claims in extensions.
async fn jwt_only(State(auth): State<ServerAuth>, mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = token else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    match auth.verify_access_token(token) {
        Ok(claims) => {
            req.extensions_mut().insert(claims);
            next.run(req).await
        }
        Err(err) => err.into_response(),
    }
}

const COLD_SESSIONS: usize = 256;

async fn protect_fixture() -> ProtectFixture {
    let db_path = std::env::temp_dir().join(format!("sentri-bench-{}.db", std::process::id()));
    let url = format!("sqlite://{}?mode=rwc", db_path.display());
    let db = ok(Database::connect(&url).await);
    let key = ok(SigningKey::generate(Algorithm::HS256).await);
    let config = |ttl: Duration| {
        ServerConfig::new(db.clone(), key.clone(), ["user", "admin"])
            .salt_rounds(4)
            .cookie(None)
            .access_cookie(None)
            .session_cache_ttl(ttl)
            .grant("user", ["orders:read"])
            .with(sentri::capability::workspaces::Workspaces::default())
    };
    let auth = ok(create_auth(config(Duration::from_secs(5))));
    ok(auth.migrate().await);
    // Same store and key, but the cache forgets a session 1 ms after it learnt it.
    let cold_auth = ok(create_auth(config(Duration::ZERO)));
    ok(auth
        .register(RegisterInput {
            identifier: "bench@example.com".into(),
            password: "correct horse battery".into(),
            roles: None,
        })
        .await);
    let login = || async {
        ok(auth
            .login(
                LoginInput {
                    identifier: "bench@example.com".into(),
                    password: "correct horse battery".into(),
                },
                SessionMeta::default(),
            )
            .await)
        .access_token
    };
    let token = login().await;
    let mut cold_tokens = Vec::with_capacity(COLD_SESSIONS);
    for _ in 0..COLD_SESSIONS {
        cold_tokens.push(login().await);
    }
    let route = || Router::new().route("/r", get(handler));
    let (workspace, tenant_token) = switched_token(&auth, &token).await;
    ProtectFixture {
        tenant: route().route_layer(auth.tenant()),
        tenant_token,
        workspace,
        bare: route(),
        jwt_only: route().route_layer(middleware::from_fn_with_state(auth.clone(), jwt_only)),
        warm: route().route_layer(auth.protect()),
        cold: route().route_layer(cold_auth.protect()),
        permission: route().route_layer(auth.require_permission("orders:read")),
        token,
        cold_tokens,
        next_cold: AtomicUsize::new(0),
        db_path,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Protect {
    Bare,
    JwtOnly,
    Warm,
    Cold,
}

impl Protect {
    const ALL: [Protect; 4] = [
        Protect::Bare,
        Protect::JwtOnly,
        Protect::Warm,
        Protect::Cold,
    ];

    fn name(self) -> &'static str {
        match self {
            Protect::Bare => "bare route (baseline)",
            Protect::JwtOnly => "jwt-only middleware",
            Protect::Warm => "protect (cache warm)",
            Protect::Cold => "protect (cache cold, SQLite)",
        }
    }

    async fn run(self, f: &ProtectFixture) {
        let (app, token) = match self {
            Protect::Bare => (&f.bare, f.token.as_str()),
            Protect::JwtOnly => (&f.jwt_only, f.token.as_str()),
            Protect::Warm => (&f.warm, f.token.as_str()),
            Protect::Cold => {
                let i = f.next_cold.fetch_add(1, Ordering::Relaxed) % f.cold_tokens.len();
                (&f.cold, f.cold_tokens[i].as_str())
            }
        };
        let req = ok(HttpRequest::get("/r")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty()));
        let res = match app.clone().oneshot(req).await {
            Ok(res) => res,
            Err(never) => match never {},
        };
        assert_eq!(res.status(), StatusCode::OK);
        let _ = black_box(axum::body::to_bytes(res.into_body(), usize::MAX).await);
    }
}

// ---- idempotency -----------------------------------------------------------------------

const IDEM_BODY: &str = r#"{"amount":1250,"currency":"EUR"}"#;

fn idem_router(with_layer: bool) -> Router {
    let r = Router::new().route(
        "/pay",
        post(|| async {
            (
                StatusCode::CREATED,
                axum::Json(serde_json::json!({"id": 1})),
            )
        }),
    );
    if with_layer {
        r.route_layer(ok(IdempotencyLayer::new(IdempotencyOptions::default())))
    } else {
        r
    }
}

static NEXT_KEY: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Idem {
    Baseline,
    Passthrough,
    Miss,
    Replay,
}

impl Idem {
    const ALL: [Idem; 4] = [Idem::Baseline, Idem::Passthrough, Idem::Miss, Idem::Replay];

    fn name(self) -> &'static str {
        match self {
            Idem::Baseline => "no layer (baseline)",
            Idem::Passthrough => "layer, no key (pass-through)",
            Idem::Miss => "layer miss (fresh key)",
            Idem::Replay => "layer replay (same key)",
        }
    }

    fn app(self) -> Router {
        idem_router(self != Idem::Baseline)
    }

    async fn run(self, app: &Router) {
        // A credential: without a user or credentials the layer passes requests through.
        let mut b = HttpRequest::post("/pay")
            .header("content-type", "application/json")
            .header("authorization", "Bearer bench-token");
        match self {
            Idem::Baseline | Idem::Passthrough => {}
            Idem::Miss => {
                let key = format!("bench-{}", NEXT_KEY.fetch_add(1, Ordering::Relaxed));
                b = b.header("x-idempotency-key", key);
            }
            Idem::Replay => b = b.header("x-idempotency-key", "bench-replay"),
        }
        let req = ok(b.body(Body::from(IDEM_BODY)));
        let res = match app.clone().oneshot(req).await {
            Ok(res) => res,
            Err(never) => match never {},
        };
        assert!(res.status().is_success());
        let _ = black_box(axum::body::to_bytes(res.into_body(), usize::MAX).await);
    }
}

// ---- criterion -------------------------------------------------------------------------

fn criterion_cases(c: &mut Criterion, rt: &tokio::runtime::Runtime, fx: &ProtectFixture) {
    let user = bench_user();
    let mut group = c.benchmark_group("token");
    for (name, alg) in ALGS {
        let svc = token_service(rt, alg, false);
        let cached = token_service(rt, alg, true);
        let (token, _) = ok(svc.sign_access(&user, "session-1"));
        let (cached_token, _) = ok(cached.sign_access(&user, "session-1"));
        group.bench_function(format!("sign/{name}"), |b| {
            b.iter(|| black_box(ok(svc.sign_access(black_box(&user), "session-1"))));
        });
        group.bench_function(format!("verify/{name}"), |b| {
            b.iter(|| black_box(ok(svc.verify_access(black_box(&token)))));
        });
        group.bench_function(format!("verify (cached)/{name}"), |b| {
            b.iter(|| black_box(ok(cached.verify_access(black_box(&cached_token)))));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("protect");
    for case in Protect::ALL {
        group.bench_function(case.name(), |b| b.to_async(rt).iter(|| case.run(fx)));
    }
    group.finish();

    let mut group = c.benchmark_group("idempotency");
    for case in Idem::ALL {
        let app = case.app();
        group.bench_function(case.name(), |b| b.to_async(rt).iter(|| case.run(&app)));
    }
    group.finish();

    throttle_cases(c, rt);

    let mut group = c.benchmark_group("bcrypt");
    group.sample_size(10);
    let hasher = ok(PasswordHasher::new(10));
    group.bench_function("hash cost 10", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(ok(hasher.hash("correct horse battery").await)) });
    });
    group.finish();
}

fn throttle_cases(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    use sentri::clock::SystemClock;
    use sentri::throttle::{Throttle, ThrottleKey, Throttling};
    let throttle = ok(Throttle::new(
        Throttling::default(),
        std::sync::Arc::new(SystemClock),
        None,
    ));
    let mut group = c.benchmark_group("throttle");
    let n = AtomicU64::new(0);
    group.bench_function("login check", |b| {
        b.to_async(rt).iter(|| async {
            // A fresh identifier per call (keys are normalised and hashed per call, as
            // on a login); a fixed address (its counter refunded by each success).
            let i = n.fetch_add(1, Ordering::Relaxed) % 10_000;
            let keys = [
                ThrottleKey::subject("login", &format!("user{i}@example.com")),
                ThrottleKey::address("203.0.113.7"),
            ];
            ok(throttle.attempt(&keys).await).succeeded().await;
        });
    });
    let locked = [ThrottleKey::subject("login", "locked@example.com")];
    for _ in 0..6 {
        if let Ok(a) = rt.block_on(throttle.attempt(&locked)) {
            a.failed();
        }
    }
    group.bench_function("refused", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(throttle.attempt(&locked).await.is_err()) });
    });
    group.finish();
}

// ---- the ratio table -------------------------------------------------------------------

/// Mean time per call of `f` over `iters` calls.
fn time_async<F, Fut>(rt: &tokio::runtime::Runtime, iters: u32, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            f().await;
        }
        start.elapsed() / iters
    })
}

fn time_sync<F: FnMut()>(iters: u32, mut f: F) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed() / iters
}

const ROUNDS: usize = 15;

fn best(samples: &[Duration]) -> Duration {
    samples.iter().copied().min().unwrap_or_default()
}

fn row(name: &str, t: Duration, base: Duration) {
    let us = t.as_secs_f64() * 1e6;
    let over = (t.as_secs_f64() - base.as_secs_f64()) * 1e6;
    println!(
        "  {name:<34} {us:>10.2} µs  {over:>+9.2} µs  {:>6.2}x",
        t.as_secs_f64() / base.as_secs_f64()
    );
}

fn ratio_table(rt: &tokio::runtime::Runtime, fx: &ProtectFixture) {
    println!(
        "\n== sentri in-process figures (best of {ROUNDS} interleaved rounds; ratio to the group's baseline) =="
    );
    println!(
        "  {:<34} {:>13}  {:>12}  {:>7}",
        "case", "per call", "over base", "ratio"
    );

    // Tokens: baseline = HS256 verify.
    let user = bench_user();
    let services: Vec<_> = ALGS
        .iter()
        .map(|(name, alg)| {
            let svc = token_service(rt, *alg, false);
            let (token, _) = ok(svc.sign_access(&user, "session-1"));
            let cached = token_service(rt, *alg, true);
            let (cached_token, _) = ok(cached.sign_access(&user, "session-1"));
            (*name, svc, token, cached, cached_token)
        })
        .collect();
    let mut sign = vec![Vec::new(); ALGS.len()];
    let mut verify = vec![Vec::new(); ALGS.len()];
    let mut hit = vec![Vec::new(); ALGS.len()];
    for _ in 0..ROUNDS {
        for (i, (_, svc, token, cached, cached_token)) in services.iter().enumerate() {
            let n = if i == 1 { 20 } else { 500 }; // RS256 signing is ~1 ms
            sign[i].push(time_sync(n, || {
                black_box(ok(svc.sign_access(black_box(&user), "s")));
            }));
            verify[i].push(time_sync(500, || {
                black_box(ok(svc.verify_access(black_box(token))));
            }));
            hit[i].push(time_sync(500, || {
                black_box(ok(cached.verify_access(black_box(cached_token))));
            }));
        }
    }
    let base = best(&verify[0]);
    println!("-- tokens (baseline: verify HS256, no cache)");
    for (i, (name, ..)) in services.iter().enumerate() {
        row(&format!("sign {name}"), best(&sign[i]), base);
        row(&format!("verify {name}"), best(&verify[i]), base);
        row(&format!("verify {name} (cached)"), best(&hit[i]), base);
    }

    // protect: baseline = bare route.
    let mut t = vec![Vec::new(); Protect::ALL.len()];
    for _ in 0..ROUNDS {
        for (i, case) in Protect::ALL.iter().enumerate() {
            t[i].push(time_async(rt, 1_000, || case.run(fx)));
        }
    }
    let base = best(&t[0]);
    println!("-- protect() via oneshot (baseline: bare route)");
    for (i, case) in Protect::ALL.iter().enumerate() {
        row(case.name(), best(&t[i]), base);
    }
    let jwt = best(&t[1]).as_secs_f64();
    let warm = best(&t[2]).as_secs_f64();
    println!(
        "  => throughput of protect (warm) / jwt-only = {:.3} (target >= 0.85)",
        jwt / warm
    );

    // idempotency: baseline = no layer.
    let apps: Vec<Router> = Idem::ALL.iter().map(|c| c.app()).collect();
    let mut t = vec![Vec::new(); Idem::ALL.len()];
    for _ in 0..ROUNDS {
        for (i, case) in Idem::ALL.iter().enumerate() {
            t[i].push(time_async(rt, 1_000, || case.run(&apps[i])));
        }
    }
    let base = best(&t[0]);
    println!("-- idempotency layer, moka (baseline: route without the layer)");
    for (i, case) in Idem::ALL.iter().enumerate() {
        row(case.name(), best(&t[i]), base);
    }

    idempotency_memory(rt);

    // bcrypt: absolute, plus the implied one-core login bound.
    println!("-- bcrypt (one hash, one thread)");
    for cost in [10, 12] {
        let hasher = ok(PasswordHasher::new(cost));
        let n = if cost == 10 { 8 } else { 3 };
        let d = time_async(rt, n, || async {
            black_box(ok(hasher.hash("correct horse battery").await));
        });
        println!(
            "  hash cost {cost:<24} {:>10.2} ms  => login bound {:.1}/s per core",
            d.as_secs_f64() * 1e3,
            1.0 / d.as_secs_f64()
        );
    }
}

/// Resident set size of this process, in bytes (Linux; 0 elsewhere).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// RSS growth for 10 000 stored responses of 1 KiB in the moka store (default options).
fn idempotency_memory(rt: &tokio::runtime::Runtime) {
    const ENTRIES: u64 = 10_000;
    let payload: &'static str = Box::leak("x".repeat(1024 - 11).into_boxed_str());
    let app = Router::new()
        .route(
            "/pay",
            post(move || async move { format!("{{\"note\":\"{payload}\"}}") }),
        )
        .route_layer(ok(IdempotencyLayer::new(IdempotencyOptions::default())));
    let before = rss_bytes();
    rt.block_on(async {
        for i in 0..ENTRIES {
            let req = ok(HttpRequest::post("/pay")
                .header("authorization", "Bearer bench-token")
                .header("x-idempotency-key", format!("mem-{i}"))
                .body(Body::from(IDEM_BODY)));
            let res = match app.clone().oneshot(req).await {
                Ok(res) => res,
                Err(never) => match never {},
            };
            assert!(res.status().is_success());
            let body = ok(axum::body::to_bytes(res.into_body(), usize::MAX).await);
            assert_eq!(body.len(), 1024);
        }
    });
    let grown = rss_bytes().saturating_sub(before);
    println!(
        "  RSS +{ENTRIES} stored 1 KiB responses   {:>7.1} MiB  ({} bytes/entry; target <= 20 MB)",
        grown as f64 / (1024.0 * 1024.0),
        grown / ENTRIES
    );
    drop(app);
}

/// RSS the verified-token cache adds when full at its default bound: EdDSA tokens signed
/// and verified until the cache stops growing, against the same loop with the cache off
/// (what signing and verifying alone leave in the allocator), measured in the same run.
fn token_cache_rss() {
    let rt = runtime();
    let user = bench_user();
    let fill = |svc: &TokenService| -> u64 {
        let before = rss_bytes();
        for _ in 0..60_000 {
            let (token, _) = ok(svc.sign_access(&user, "session-1"));
            black_box(ok(svc.verify_access(&token)));
        }
        rss_bytes().saturating_sub(before)
    };
    let off = token_service(&rt, Algorithm::EdDSA, false);
    let base = fill(&off);
    let on = token_service(&rt, Algorithm::EdDSA, true);
    let grown = fill(&on);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "token cache: bound {:.1} MiB, weighed {:.1} MiB, RSS +{:.1} MiB (cache off: +{:.1} MiB), added {:.1} MiB",
        mib(sentri::token::DEFAULT_VERIFIED_CACHE_BYTES),
        mib(on.verified_cache_bytes()),
        mib(grown),
        mib(base),
        mib(grown.saturating_sub(base))
    );
    println!("token_cache_rss_mib {:.1}", mib(grown.saturating_sub(base)));
}

fn bcrypt_only(cost: u32) {
    let rt = runtime();
    let hasher = ok(PasswordHasher::new(cost));
    rt.block_on(async {
        ok(hasher.hash("warm up the code").await);
    });
    let n = 10;
    let d = time_async(&rt, n, || async {
        black_box(ok(hasher.hash("correct horse battery").await));
    });
    println!("bcrypt cost {cost}: {:.2} ms/hash", d.as_secs_f64() * 1e3);
    println!("hashes_per_sec {:.2}", 1.0 / d.as_secs_f64());
}

/// Runs one case in a loop for `secs` seconds (for a profiler: `perf record`, callgrind).
fn profile_loop(case: &str, secs: u64) {
    let rt = runtime();
    if std::env::var("SENTRI_BENCH_THROTTLE").is_ok_and(|v| v == "1") {
        let mut c = Criterion::default()
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .configure_from_args();
        throttle_cases(&mut c, &rt);
        c.final_summary();
        return;
    }
    let fx = rt.block_on(protect_fixture());
    let protect = Protect::ALL
        .into_iter()
        .find(|c| c.name().starts_with(case));
    let idem = Idem::ALL.into_iter().find(|c| c.name().starts_with(case));
    let app = idem.map(Idem::app);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut n = 0u64;
    rt.block_on(async {
        while Instant::now() < deadline {
            for _ in 0..1000 {
                match (protect, idem, &app) {
                    _ if case == "tenant" => tenant_run(&fx, &fx.tenant).await,
                    (Some(p), _, _) => p.run(&fx).await,
                    (None, Some(i), Some(app)) => i.run(app).await,
                    _ => panic!("no case starts with {case:?}"),
                }
            }
            n += 1000;
        }
    });
    println!("{case}: {n} calls in {secs} s");
}

// ---- API keys (feature `api-keys`) -----------------------------------------------------

/// A protected route authenticated by an API key (warm cache), on the protect fixture's
/// database, next to the JWT cases.
#[cfg(feature = "api-keys")]
struct ApiKeyFixture {
    app: Router,
    key: String,
}

#[cfg(feature = "api-keys")]
async fn api_key_fixture(fx: &ProtectFixture) -> ApiKeyFixture {
    use sentri::capability::api_keys::ApiKeys;
    let url = format!("sqlite://{}?mode=rwc", fx.db_path.display());
    let db = ok(Database::connect(&url).await);
    let signing = ok(SigningKey::generate(Algorithm::HS256).await);
    let config = ServerConfig::new(db, signing, ["user", "admin"])
        .salt_rounds(4)
        .cookie(None)
        .access_cookie(None)
        .with(ApiKeys::default().scopes(["orders:read"]));
    let auth = ok(create_auth(config));
    ok(auth.migrate().await);
    let login = ok(auth
        .login(
            LoginInput {
                identifier: "bench@example.com".into(),
                password: "correct horse battery".into(),
            },
            SessionMeta::default(),
        )
        .await);
    let req = ok(HttpRequest::post("/api-keys")
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", login.access_token),
        )
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"name":"bench","scopes":["orders:read"]}"#)));
    let res = match auth.router::<()>().oneshot(req).await {
        Ok(res) => res,
        Err(never) => match never {},
    };
    let bytes = ok(axum::body::to_bytes(res.into_body(), usize::MAX).await);
    let body: serde_json::Value = ok(serde_json::from_slice(&bytes));
    let key = body["data"]["key"].as_str().unwrap_or_default().to_owned();
    let app = Router::new()
        .route("/r", get(handler))
        .route_layer(auth.protect().admit("api_key"));
    ApiKeyFixture { app, key }
}

#[cfg(feature = "api-keys")]
async fn api_key_run(f: &ApiKeyFixture) {
    let req = ok(HttpRequest::get("/r")
        .header(header::AUTHORIZATION, format!("Bearer {}", f.key))
        .body(Body::empty()));
    let res = match f.app.clone().oneshot(req).await {
        Ok(res) => res,
        Err(never) => match never {},
    };
    assert_eq!(res.status(), StatusCode::OK);
    let _ = black_box(axum::body::to_bytes(res.into_body(), usize::MAX).await);
}

#[cfg(feature = "api-keys")]
fn api_key_cases(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    fx: &ProtectFixture,
    kf: &ApiKeyFixture,
) {
    let mut group = c.benchmark_group("api_key");
    group.bench_function(Protect::Warm.name(), |b| {
        b.to_async(rt).iter(|| Protect::Warm.run(fx))
    });
    group.bench_function("protect (API key, cache warm)", |b| {
        b.to_async(rt).iter(|| api_key_run(kf))
    });
    group.finish();
}

/// The ratio row: the API key (warm) against the JWT cases, interleaved in one run.
#[cfg(feature = "api-keys")]
fn api_key_ratio(rt: &tokio::runtime::Runtime, fx: &ProtectFixture, kf: &ApiKeyFixture) {
    let (mut jwt, mut warm, mut key) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        jwt.push(time_async(rt, 1_000, || Protect::JwtOnly.run(fx)));
        warm.push(time_async(rt, 1_000, || Protect::Warm.run(fx)));
        key.push(time_async(rt, 1_000, || api_key_run(kf)));
    }
    let base = best(&warm);
    println!("-- API keys via oneshot (baseline: protect with a JWT, cache warm)");
    row(Protect::Warm.name(), base, base);
    row("protect (API key, cache warm)", best(&key), base);
    println!(
        "  => throughput of API key (warm) / JWT protect (warm) = {:.3}, / jwt-only = {:.3} (target >= 0.8)",
        base.as_secs_f64() / best(&key).as_secs_f64(),
        best(&jwt).as_secs_f64() / best(&key).as_secs_f64()
    );
}

/// A workspace created by the bearer of `token` and an access token switched to it.
async fn switched_token(auth: &ServerAuth, token: &str) -> (String, String) {
    let call = |path: String, body: &'static str, token: String| {
        let app = auth.router::<()>();
        async move {
            let req = ok(HttpRequest::post(path)
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body)));
            let res = match app.oneshot(req).await {
                Ok(res) => res,
                Err(never) => match never {},
            };
            let bytes = ok(axum::body::to_bytes(res.into_body(), usize::MAX).await);
            ok(serde_json::from_slice::<serde_json::Value>(&bytes))
        }
    };
    let created = call(
        "/workspaces".into(),
        r#"{"name":"Bench"}"#,
        token.to_owned(),
    )
    .await;
    let id = created["data"]["workspace"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let switched = call(format!("/workspaces/{id}/switch"), "{}", token.to_owned()).await;
    let access = switched["data"]["accessToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (id, access)
}

/// One request with the switched token and the workspace header through `app`:
/// `f.tenant` (`auth.tenant()`, session and membership caches warm) or, as its baseline,
/// `f.warm` (`protect()`, which ignores the header): the same request both ways.
async fn tenant_run(f: &ProtectFixture, app: &Router) {
    let req = ok(HttpRequest::get("/r")
        .header(header::AUTHORIZATION, format!("Bearer {}", f.tenant_token))
        .header("x-workspace-id", f.workspace.as_str())
        .body(Body::empty()));
    let res = match app.clone().oneshot(req).await {
        Ok(res) => res,
        Err(never) => match never {},
    };
    assert_eq!(res.status(), StatusCode::OK);
    let _ = black_box(axum::body::to_bytes(res.into_body(), usize::MAX).await);
}

/// One request through `require_permission` (session and permission caches warm).
async fn permission_run(f: &ProtectFixture) {
    let req = ok(HttpRequest::get("/r")
        .header(header::AUTHORIZATION, format!("Bearer {}", f.token))
        .body(Body::empty()));
    let res = match f.permission.clone().oneshot(req).await {
        Ok(res) => res,
        Err(never) => match never {},
    };
    assert_eq!(res.status(), StatusCode::OK);
    let _ = black_box(axum::body::to_bytes(res.into_body(), usize::MAX).await);
}

fn permission_cases(c: &mut Criterion, rt: &tokio::runtime::Runtime, fx: &ProtectFixture) {
    let mut group = c.benchmark_group("permission");
    group.bench_function(Protect::Warm.name(), |b| {
        b.to_async(rt).iter(|| Protect::Warm.run(fx))
    });
    group.bench_function("require_permission (cache warm)", |b| {
        b.to_async(rt).iter(|| permission_run(fx))
    });
    group.bench_function("tenant (cache warm)", |b| {
        b.to_async(rt).iter(|| tenant_run(fx, &fx.tenant))
    });
    group.finish();
}

/// The ratio row: `require_permission` against `protect()`, both warm, interleaved.
fn permission_ratio(rt: &tokio::runtime::Runtime, fx: &ProtectFixture) {
    let (mut warm, mut perm) = (Vec::new(), Vec::new());
    let (mut warm_ws, mut tenant) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        warm.push(time_async(rt, 1_000, || Protect::Warm.run(fx)));
        perm.push(time_async(rt, 1_000, || permission_run(fx)));
        warm_ws.push(time_async(rt, 1_000, || tenant_run(fx, &fx.warm)));
        tenant.push(time_async(rt, 1_000, || tenant_run(fx, &fx.tenant)));
    }
    let base = best(&warm);
    println!("-- permissions via oneshot (baseline: protect, cache warm)");
    row(Protect::Warm.name(), base, base);
    row("require_permission (cache warm)", best(&perm), base);
    println!(
        "  => cost of require_permission (warm) / protect (warm) = {:.3} (target <= 1.10)",
        best(&perm).as_secs_f64() / base.as_secs_f64()
    );
    let base = best(&warm_ws);
    println!(
        "-- tenant guard via oneshot (baseline: protect, same request and header, cache warm)"
    );
    row("protect, switched token + header", base, base);
    row("tenant (cache warm)", best(&tenant), base);
    println!(
        "  => cost of tenant (warm) / protect (warm) = {:.3} (target <= 1.10)",
        best(&tenant).as_secs_f64() / base.as_secs_f64()
    );
}

fn main() {
    if let Ok(addr) = std::env::var("SENTRI_BENCH_BARE_SERVER") {
        if let Err(err) = bare_server::serve(&addr) {
            eprintln!("bare server: {err}");
            std::process::exit(1);
        }
        return;
    }
    if std::env::var("SENTRI_BENCH_TOKEN_CACHE_RSS").is_ok_and(|v| v == "1") {
        token_cache_rss();
        return;
    }
    if let Ok(case) = std::env::var("SENTRI_BENCH_LOOP") {
        let secs = std::env::var("SENTRI_BENCH_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10);
        profile_loop(&case, secs);
        return;
    }
    if let Some(cost) = std::env::var("SENTRI_BENCH_BCRYPT")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        bcrypt_only(cost);
        return;
    }
    let rt = runtime();
    let fx = rt.block_on(protect_fixture());
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    criterion_cases(&mut c, &rt, &fx);
    permission_cases(&mut c, &rt, &fx);
    #[cfg(feature = "api-keys")]
    let kf = rt.block_on(api_key_fixture(&fx));
    #[cfg(feature = "api-keys")]
    api_key_cases(&mut c, &rt, &fx, &kf);
    c.final_summary();
    ratio_table(&rt, &fx);
    permission_ratio(&rt, &fx);
    #[cfg(feature = "api-keys")]
    api_key_ratio(&rt, &fx, &kf);
    drop(fx);
}
