//! Faults: a PostgreSQL restart under load, a Redis outage for revocation, pool
//! exhaustion, misbehaving hooks. The service and database faults run only with
//! `SENTRI_TEST_FAULTS=1` (CI sets it) and only against PRIVATE server instances started
//! here, never the shared ones.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{Method, StatusCode};
use sentri::Hooks;
use sentri::db::{Database, DatabaseOptions};
use serde_json::json;

use crate::support::http::{
    Reply, app, bearer, call, expect, invalid, login, profile_with, refresh_with, session,
};
use crate::support::services::config;

fn faults_enabled(test: &str) -> bool {
    if std::env::var("SENTRI_TEST_FAULTS").is_ok_and(|v| v == "1") {
        return true;
    }
    crate::support::common::loud_skip("SENTRI_TEST_FAULTS", test);
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

async fn wait_port(port: u16, up: bool) {
    for _ in 0..500 {
        let open = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok();
        if open == up {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "port {port} did not become {}",
        if up { "open" } else { "closed" }
    );
}

// ---- a private PostgreSQL -------------------------------------------------------------

struct OwnPostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl OwnPostgres {
    /// `None` when no PostgreSQL server binaries are installed.
    fn start() -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").exists())?;
        let dir = std::env::temp_dir().join(crate::support::common::unique("sentri_pg"));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "chown");
        let pg = OwnPostgres {
            bin,
            dir,
            port: free_port(),
        };
        pg.run(
            "initdb",
            &["-A", "trust", "-U", "postgres", "--no-sync", "-D"],
            true,
        );
        pg.ctl_start();
        Some(pg)
    }

    fn run(&self, tool: &str, args: &[&str], with_data: bool) {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .args(args);
        if with_data {
            cmd.arg(self.dir.join("data"));
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ctl_start(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log").display().to_string();
        self.run(
            "pg_ctl",
            &["-w", "-o", &opts, "-l", &log, "start", "-D"],
            true,
        );
    }

    fn ctl_stop(&self, mode: &str) {
        self.run("pg_ctl", &["-w", "-m", mode, "stop", "-D"], true);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-m", "immediate", "stop", "-D"])
            .arg(self.dir.join("data"))
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Debug)]
struct Outcome {
    status: StatusCode,
    code: String,
    elapsed: Duration,
    retry_after: bool,
}

fn outcome(r: &Reply, started: Instant) -> Outcome {
    Outcome {
        status: r.status,
        code: r.code().to_owned(),
        elapsed: started.elapsed(),
        retry_after: r.headers.contains_key("retry-after"),
    }
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_under_load_fails_fast_and_recovers() {
    if !faults_enabled("faults::postgres_restart") {
        return;
    }
    let Some(pg) = OwnPostgres::start() else {
        if crate::support::common::require_services() {
            panic!("no PostgreSQL server binaries under /usr/lib/postgresql");
        }
        crate::support::common::loud_skip("postgres server binaries", "faults::postgres_restart");
        return;
    };
    let options = DatabaseOptions {
        max_connections: 5,
        acquire_timeout: Duration::from_secs(2),
        statement_timeout: Duration::from_secs(2),
    };
    let bound = options.acquire_timeout + options.statement_timeout + Duration::from_secs(5);
    let db = Database::connect_with(&pg.url(), options).await.unwrap();
    sentri::server::migrate_core(&db).await.unwrap();
    // Every protected request asks the store (no session cache).
    let auth = sentri::create_auth(config(db.clone()).session_cache_ttl(Duration::from_millis(1)))
        .unwrap();
    let app = app(&auth);
    let (access, _) = session(&app, "olga", "password1").await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for i in 0..4 {
        let (app, access, stop) = (app.clone(), access.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let r = if i % 2 == 0 {
                    call(
                        &app,
                        Method::GET,
                        "/auth/me",
                        &[("authorization", &bearer(&access))],
                        None,
                    )
                    .await
                } else {
                    login(&app, "olga", "password1").await
                };
                seen.push(outcome(&r, started));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.ctl_stop("fast");
    // During the outage: fast 503s in the envelope.
    let mut down = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let r = call(
            &app,
            Method::GET,
            "/auth/me",
            &[("authorization", &bearer(&access))],
            None,
        )
        .await;
        expect(
            &r,
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            "outage",
        );
        down.push(outcome(&r, started));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    pg.ctl_start();
    // Recovers by itself: no rebuild, no restart of the app.
    let back = Instant::now();
    loop {
        let r = call(
            &app,
            Method::GET,
            "/auth/me",
            &[("authorization", &bearer(&access))],
            None,
        )
        .await;
        if r.status == StatusCode::OK {
            break;
        }
        expect(
            &r,
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            "recovering",
        );
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "no recovery after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = down;
    for l in load {
        all.extend(l.await.unwrap());
    }
    for o in &all {
        assert!(
            (o.status == StatusCode::OK && o.code.is_empty())
                || (o.status == StatusCode::SERVICE_UNAVAILABLE
                    && o.code == "SERVICE_UNAVAILABLE"
                    && o.retry_after),
            "{o:?}"
        );
        assert!(o.elapsed < bound, "a request hung: {o:?}");
    }
    assert!(
        all.iter()
            .any(|o| o.status == StatusCode::SERVICE_UNAVAILABLE)
    );
    assert!(all.iter().filter(|o| o.status == StatusCode::OK).count() > 2);

    // A quick restart between requests: stale pooled connections are replaced or the
    // read is retried; the first request after the restart is answered normally.
    pg.ctl_stop("fast");
    pg.ctl_start();
    wait_port(pg.port, true).await;
    let r = profile_with(&app, &access).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    // Pool exhaustion: sessions locked by another connection, 200 concurrent refreshes
    // through a pool of 5. Every request is answered: 200, or 503 after the timeouts.
    pool_exhaustion(&db, &app, || async {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&pg.url()).await.unwrap();
        sqlx::raw_sql("BEGIN; LOCK TABLE sentri_sessions IN ACCESS EXCLUSIVE MODE;")
            .execute(&mut conn)
            .await
            .unwrap();
        Box::new(conn) as Box<dyn std::any::Any + Send>
    })
    .await;
    drop(db);
}

/// Logs `app` in 200 times, takes a lock with `lock` for 3 s, fires 200 concurrent
/// refreshes: every one is answered with 200 or 503 SERVICE_UNAVAILABLE, none lost.
async fn pool_exhaustion<F, Fut>(db: &Database, app: &Router, lock: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Box<dyn std::any::Any + Send>>,
{
    let _ = db;
    let mut refresh = Vec::new();
    for i in 0..200 {
        let id = format!("pool{i}");
        crate::support::http::register(app, &id, "password1").await;
        refresh.push(
            login(app, &id, "password1")
                .await
                .cookie("refresh_token")
                .unwrap(),
        );
    }
    let held = lock().await;
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(held);
    });
    let tasks: Vec<_> = refresh
        .into_iter()
        .map(|rt| {
            let app = app.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let r = refresh_with(&app, &rt).await;
                outcome(&r, started)
            })
        })
        .collect();
    let mut answered = 0;
    let mut unavailable = 0;
    for task in tasks {
        let o = task.await.unwrap();
        answered += 1;
        match o.status {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE if o.code == "SERVICE_UNAVAILABLE" => unavailable += 1,
            _ => panic!("{o:?}"),
        }
        assert!(o.elapsed < Duration::from_secs(20), "hung: {o:?}");
    }
    release.await.unwrap();
    assert_eq!(answered, 200);
    assert!(unavailable > 0, "the pool was never exhausted");
    // And the pool is fine afterwards.
    let (access, _) = session(app, &crate::support::common::unique("after"), "password1").await;
    assert_eq!(profile_with(app, &access).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_pool_exhaustion_answers_every_request() {
    if !faults_enabled("faults::sqlite_pool") {
        return;
    }
    let path = std::env::temp_dir().join(format!(
        "{}.db",
        crate::support::common::unique("sentri_pool")
    ));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let db = Database::connect_with(
        &url,
        DatabaseOptions {
            max_connections: 5,
            acquire_timeout: Duration::from_secs(1),
            statement_timeout: Duration::from_secs(2),
        },
    )
    .await
    .unwrap();
    sentri::server::migrate_core(&db).await.unwrap();
    let auth = sentri::create_auth(config(db.clone())).unwrap();
    let app = app(&auth);
    let lock_url = url.clone();
    pool_exhaustion(&db, &app, || async move {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&lock_url).await.unwrap();
        sqlx::raw_sql("BEGIN IMMEDIATE")
            .execute(&mut conn)
            .await
            .unwrap();
        Box::new(conn) as Box<dyn std::any::Any + Send>
    })
    .await;
    drop(app);
    drop(auth);
    drop(db);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

// ---- a private Redis: revocation broadcast outage -------------------------------------

#[cfg(feature = "redis")]
struct OwnRedis(std::process::Child);

#[cfg(feature = "redis")]
impl OwnRedis {
    async fn start(port: u16) -> Option<Self> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        wait_port(port, true).await;
        Some(Self(child))
    }
}

#[cfg(feature = "redis")]
impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_degrades_to_the_cache_ttl_and_recovers_with_redis() {
    if !faults_enabled("faults::redis_revocation") {
        return;
    }
    let port = free_port();
    let Some(redis) = OwnRedis::start(port).await else {
        if crate::support::common::require_services() {
            panic!("redis-server binary not found");
        }
        crate::support::common::loud_skip("redis-server binary", "faults::redis_revocation");
        return;
    };
    let t = crate::support::db::database("sqlite", "faults::redis_revocation")
        .await
        .unwrap();
    let ttl = Duration::from_secs(3);
    let cfg = || {
        config(t.db.clone())
            .session_cache_ttl(ttl)
            .redis_url(format!("redis://127.0.0.1:{port}"))
    };
    let (a, b) = (
        sentri::create_auth(cfg()).unwrap(),
        sentri::create_auth(cfg()).unwrap(),
    );
    let (app_a, app_b) = (app(&a), app(&b));
    crate::support::http::register(&app_a, "rita", "password1").await;

    // Logs in on A, warms B's cache, logs out on A; returns how long B kept accepting.
    let logout_seen_by_b = |app_a: Router, app_b: Router, limit: Duration| async move {
        let r = login(&app_a, "rita", "password1").await;
        let access = r.body["data"]["accessToken"].as_str().unwrap().to_owned();
        let refresh = r.cookie("refresh_token").unwrap();
        assert_eq!(profile_with(&app_b, &access).await.status, StatusCode::OK);
        let started = Instant::now();
        let r = call(
            &app_a,
            Method::POST,
            "/auth/logout",
            &[("cookie", &format!("refresh_token={refresh}"))],
            None,
        )
        .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "logout never fails on a Redis outage"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "logout stalled on Redis"
        );
        invalid(&profile_with(&app_a, &access).await, "A at once");
        loop {
            let r = profile_with(&app_b, &access).await;
            if r.status == StatusCode::UNAUTHORIZED {
                invalid(&r, "B");
                return Some(started.elapsed());
            }
            if started.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    };
    tokio::time::sleep(Duration::from_millis(300)).await; // subscribers connect
    let healthy =
        logout_seen_by_b(app_a.clone(), app_b.clone(), ttl + Duration::from_secs(1)).await;
    assert!(
        healthy.is_some_and(|d| d < Duration::from_secs(1)),
        "healthy: {healthy:?}"
    );

    drop(redis);
    wait_port(port, false).await;
    let during = logout_seen_by_b(app_a.clone(), app_b.clone(), ttl + Duration::from_secs(1)).await;
    assert!(
        during.is_some(),
        "B accepted a revoked session past session_cache_ttl while Redis was down"
    );

    let _redis = OwnRedis::start(port).await.unwrap();
    // Recovers without a restart: within the subscriber's reconnect backoff (≤ 5 s)
    // plus slack, a logout on A reaches B within 1 s again.
    let back = Instant::now();
    loop {
        if logout_seen_by_b(app_a.clone(), app_b.clone(), Duration::from_secs(1))
            .await
            .is_some()
        {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "the broadcast never recovered"
        );
    }
    t.cleanup().await;
}

// ---- hooks on the HTTP path ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_hooks_never_fail_or_stall_requests() {
    let t = crate::support::db::database("sqlite", "faults::hooks")
        .await
        .unwrap();
    let hooks = Hooks::default()
        .on_login(|_| async { panic!("on_login panics") })
        .on_failed_login(|_, _| async { tokio::time::sleep(Duration::from_secs(10)).await })
        .on_logout(|_| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            panic!("on_logout panics late");
        });
    let auth = sentri::create_auth(config(t.db.clone()).hooks(hooks)).unwrap();
    let app = app(&auth);
    let hang = Duration::from_secs(5);
    let started = Instant::now();
    let (access, refresh) = session(&app, "hank", "password1").await;
    assert!(started.elapsed() < hang);
    for _ in 0..3 {
        let started = Instant::now();
        expect(
            &login(&app, "hank", "wrong-pass").await,
            StatusCode::UNAUTHORIZED,
            "INVALID_CREDENTIALS",
            "failed login",
        );
        assert!(
            started.elapsed() < hang,
            "a sleeping on_failed_login stalled the request"
        );
    }
    assert_eq!(profile_with(&app, &access).await.status, StatusCode::OK);
    let started = Instant::now();
    let r = call(
        &app,
        Method::POST,
        "/auth/logout",
        &[("cookie", &format!("refresh_token={refresh}"))],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        started.elapsed() < hang,
        "a sleeping on_logout stalled logout"
    );
    let (access, _) = {
        let r = login(&app, "hank", "password1").await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "a panicking on_login does not fail login"
        );
        (
            r.body["data"]["accessToken"].as_str().unwrap().to_owned(),
            (),
        )
    };
    let r = call(
        &app,
        Method::POST,
        "/auth/logout-all",
        &[("authorization", &bearer(&access))],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let _ = json!({});
}
