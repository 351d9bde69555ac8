//! Login throttling: the limits per identifier and per address, backoff, reset on
//! success, `Retry-After`, no enumeration, refused before hashing, exactly the limit
//! under a flood (one process and two sharing Redis), the Redis outage fallback, and
//! the client address rules.

use std::time::Duration;

use axum::Router;
use axum::http::{Method, StatusCode};
use sentri::clock::ManualClock;
use sentri::http::TrustedProxies;
use sentri::throttle::{Limit, Throttling};
use sentri::{ServerAuth, ServerConfig, create_auth};
use serde_json::json;

use super::{login_from, trials};
use crate::support::common::{redis_url, unique};
use crate::support::db::{TestDb, databases};
use crate::support::http::{Reply, app, bearer, expect, from_peer, register};
use crate::support::services::config;

const MINUTE: Duration = Duration::from_secs(60);

/// 3 per minute per identifier (lockout 1 min doubling to 8), 10 per minute per address.
fn policy() -> Throttling {
    Throttling::default()
        .subject(Limit::new(3, MINUTE).backoff(MINUTE, 8 * MINUTE))
        .address(Limit::new(10, MINUTE))
        .key_prefix(unique("sentri:test:throttle"))
}

fn throttled_config(t: &TestDb, clock: &ManualClock, policy: Throttling) -> ServerConfig {
    config(t.db.clone())
        .cookie(None)
        .access_cookie(None)
        .clock(clock.clone())
        .throttling(policy)
}

#[track_caller]
fn refused(r: &Reply, retry_after: u64, what: &str) {
    expect(r, StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_ATTEMPTS", what);
    assert_eq!(
        r.headers["retry-after"].to_str().unwrap(),
        retry_after.to_string(),
        "{what}: Retry-After"
    );
}

#[track_caller]
fn wrong(r: &Reply, what: &str) {
    expect(r, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS", what);
}

#[tokio::test]
async fn login_throttle_matrix() {
    for t in databases("secops::throttle_matrix").await {
        let n = t.name;
        let clock = ManualClock::starting_now();
        let auth = create_auth(throttled_config(&t, &clock, policy())).unwrap();
        auth.migrate().await.unwrap();
        let app = app(&auth);
        register(&app, "alice", "password1").await;

        // Per identifier: 3 wrong, then refused even with the right password, before
        // any hashing; an unknown identifier behaves exactly alike (no enumeration).
        let mut answers = Vec::new();
        for id in ["alice", "ghost"] {
            for i in 0..3 {
                wrong(
                    &login_from(&app, "192.0.2.1", id, "nope-nope").await,
                    &format!("{n} {id} {i}"),
                );
            }
            let before = auth.bcrypt_runs();
            let r = login_from(&app, "192.0.2.1", id, "password1").await;
            refused(&r, 60, &format!("{n} {id} locked"));
            assert_eq!(auth.bcrypt_runs(), before, "{n}: a refused login hashed");
            answers.push(r.body.clone());
        }
        assert_eq!(
            answers[0], answers[1],
            "{n}: locked known vs unknown identifier differ"
        );
        // The identifier is normalised: case and width do not escape the counter.
        refused(
            &login_from(&app, "192.0.2.9", "ALICE", "password1").await,
            60,
            n,
        );

        // Retry-After counts down with the clock; then the right password resets.
        clock.advance(Duration::from_secs(59));
        refused(
            &login_from(&app, "192.0.2.1", "alice", "password1").await,
            1,
            n,
        );
        clock.advance(Duration::from_secs(1));
        let r = login_from(&app, "192.0.2.1", "alice", "password1").await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        for i in 0..3 {
            wrong(
                &login_from(&app, "192.0.2.1", "alice", "bad").await,
                &format!("{n} after reset {i}"),
            );
        }
        refused(&login_from(&app, "192.0.2.1", "alice", "bad").await, 60, n);

        // Backoff: each lockout without a success in between doubles, up to the cap.
        let mut previous = 60;
        for expected in [120, 240, 480, 480] {
            clock.advance(Duration::from_secs(previous));
            previous = expected;
            for _ in 0..3 {
                wrong(&login_from(&app, "192.0.2.1", "alice", "bad").await, n);
            }
            refused(
                &login_from(&app, "192.0.2.1", "alice", "bad").await,
                expected,
                n,
            );
        }

        // Per address: 10 wrong attempts on 10 identifiers, the 11th refused; another
        // address is not affected.
        clock.advance(Duration::from_secs(3600));
        for i in 0..10 {
            wrong(
                &login_from(&app, "198.51.100.7", &format!("user{i}"), "bad").await,
                n,
            );
        }
        refused(
            &login_from(&app, "198.51.100.7", "someone", "bad").await,
            60,
            n,
        );
        wrong(&login_from(&app, "198.51.100.8", "someone", "bad").await, n);
        // Successes do not use up an address's budget.
        clock.advance(MINUTE);
        for _ in 0..12 {
            let r = login_from(&app, "203.0.113.5", "alice", "password1").await;
            assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        }
        t.cleanup().await;
    }
}

/// `attempts` concurrent wrong logins for one identifier (from distinct addresses),
/// spread over `apps`: returns (401s, 429s).
async fn flood(apps: &[Router], id: &str, net: usize, attempts: usize) -> (usize, usize) {
    let tasks: Vec<_> = (0..attempts)
        .map(|i| {
            let app = apps[i % apps.len()].clone();
            let (id, ip) = (
                id.to_owned(),
                format!("10.{net}.{}.{}", i / 200, i % 200 + 1),
            );
            tokio::spawn(async move { login_from(&app, &ip, &id, "wrong-password").await })
        })
        .collect();
    let (mut no, mut limited) = (0, 0);
    for task in tasks {
        let r = task.await.unwrap();
        match r.status {
            StatusCode::UNAUTHORIZED => no += 1,
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            other => panic!("unexpected {other}: {:?}", r.body),
        }
    }
    (no, limited)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_gets_exactly_the_limit_through() {
    for t in databases("secops::throttle_flood").await {
        let clock = ManualClock::starting_now();
        let auth = create_auth(throttled_config(&t, &clock, policy())).unwrap();
        let app = app(&auth);
        register(&app, "alice", "password1").await;
        for trial in 0..trials() {
            let id = format!("flood{trial}");
            let (no, limited) = flood(std::slice::from_ref(&app), &id, trial, 40).await;
            assert_eq!((no, limited), (3, 37), "{} trial {trial}", t.name);
        }
        t.cleanup().await;
    }
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_sharing_redis_enforce_one_limit() {
    let Some(url) = redis_url("secops::throttle_shared") else {
        return;
    };
    for t in databases("secops::throttle_shared").await {
        let clock = ManualClock::starting_now();
        let policy = policy();
        let cfg = || throttled_config(&t, &clock, policy.clone()).redis_url(url.clone());
        let (a, b) = (create_auth(cfg()).unwrap(), create_auth(cfg()).unwrap());
        let apps = [app(&a), app(&b)];
        register(&apps[0], "alice", "password1").await;
        for trial in 0..trials() {
            let id = format!("shared{trial}");
            let (no, limited) = flood(&apps, &id, trial, 40).await;
            assert_eq!((no, limited), (3, 37), "{} trial {trial}", t.name);
        }
        // A success on one instance resets the identifier for both.
        for _ in 0..2 {
            wrong(
                &login_from(&apps[0], "192.0.2.1", "alice", "bad").await,
                t.name,
            );
        }
        let r = login_from(&apps[1], "192.0.2.1", "alice", "password1").await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        for _ in 0..3 {
            wrong(
                &login_from(&apps[0], "192.0.2.1", "alice", "bad").await,
                t.name,
            );
        }
        refused(
            &login_from(&apps[1], "192.0.2.1", "alice", "bad").await,
            60,
            t.name,
        );
        assert_eq!(a.throttle().fallbacks() + b.throttle().fallbacks(), 0);
        t.cleanup().await;
    }
}

#[tokio::test]
async fn spoofed_forwarding_headers_change_nothing_without_trusted_proxies() {
    for t in databases("secops::throttle_spoof").await {
        let n = t.name;
        let clock = ManualClock::starting_now();
        let auth = create_auth(throttled_config(&t, &clock, policy())).unwrap();
        let app = app(&auth);
        let spoof = |i: usize| format!("203.0.113.{i}");
        for i in 0..10 {
            let xff = spoof(i);
            let fwd = format!("for={}", spoof(i + 100));
            let headers = [
                ("x-forwarded-for", xff.as_str()),
                ("forwarded", fwd.as_str()),
            ];
            let body = json!({"identifier": format!("u{i}"), "password": "bad"});
            let r = from_peer(
                &app,
                "192.0.2.50",
                Method::POST,
                "/auth/login",
                &headers,
                Some(body),
            )
            .await;
            wrong(&r, n);
        }
        let headers = [("x-forwarded-for", "198.51.100.1")];
        let body = json!({"identifier": "u99", "password": "bad"});
        let r = from_peer(
            &app,
            "192.0.2.50",
            Method::POST,
            "/auth/login",
            &headers,
            Some(body),
        )
        .await;
        refused(
            &r,
            60,
            &format!("{n}: the peer's budget is spent whatever the headers say"),
        );
        t.cleanup().await;
    }
}

#[tokio::test]
async fn trusted_proxies_name_the_client_and_a_prepended_hop_does_not_escape() {
    for t in databases("secops::throttle_proxies").await {
        let n = t.name;
        let clock = ManualClock::starting_now();
        let proxies = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
        let cfg = throttled_config(&t, &clock, policy()).trusted_proxies(proxies);
        let auth = create_auth(cfg).unwrap();
        let app = app(&auth);
        let login_via = |xff: String, id: String| {
            let app = app.clone();
            async move {
                let headers = [("x-forwarded-for", xff.as_str())];
                let body = json!({"identifier": id, "password": "bad"});
                from_peer(
                    &app,
                    "10.1.2.3",
                    Method::POST,
                    "/auth/login",
                    &headers,
                    Some(body),
                )
                .await
            }
        };
        // The client 198.51.100.9 prepends a fresh fake hop each time: the proxy appended
        // its real address, which is what counts.
        for i in 0..10 {
            wrong(
                &login_via(format!("1.1.1.{i}, 198.51.100.9"), format!("p{i}")).await,
                n,
            );
        }
        refused(
            &login_via("7.7.7.7, 198.51.100.9".into(), "p99".into()).await,
            60,
            n,
        );
        // Another client behind the same proxy has its own budget.
        wrong(&login_via("198.51.100.10".into(), "p100".into()).await, n);
        // The address stored with a session is the client's.
        register(&app, "zoe", "password1").await;
        let body = json!({"identifier": "zoe", "password": "password1"});
        let headers = [("x-forwarded-for", "198.51.100.77")];
        let r = from_peer(
            &app,
            "10.1.2.3",
            Method::POST,
            "/auth/login",
            &headers,
            Some(body),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        let sessions = auth
            .database()
            .user_device_sessions(
                r.body["data"]["user"]["id"].as_str().unwrap(),
                clock_now(&clock),
            )
            .await
            .unwrap();
        assert_eq!(sessions[0].ip.as_deref(), Some("198.51.100.77"), "{n}");
        t.cleanup().await;
    }
}

fn clock_now(clock: &ManualClock) -> i64 {
    use sentri::clock::Clock;
    clock.now_ms()
}

#[tokio::test]
async fn change_password_is_throttled_per_user() {
    for t in databases("secops::throttle_change_password").await {
        let n = t.name;
        let clock = ManualClock::starting_now();
        let auth = create_auth(throttled_config(&t, &clock, policy())).unwrap();
        auth.migrate().await.unwrap();
        let app = app(&auth);
        register(&app, "carol", "password1").await;
        let token = login_from(&app, "192.0.2.1", "carol", "password1")
            .await
            .body["data"]["accessToken"]
            .as_str()
            .unwrap()
            .to_owned();
        let change = |current: &'static str| {
            let (app, token) = (app.clone(), token.clone());
            async move {
                let body = json!({"currentPassword": current, "newPassword": "password2"});
                let headers = [("authorization", bearer(&token))];
                let headers: Vec<(&str, &str)> =
                    headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                from_peer(
                    &app,
                    "192.0.2.1",
                    Method::POST,
                    "/auth/change-password",
                    &headers,
                    Some(body),
                )
                .await
            }
        };
        for _ in 0..3 {
            wrong(&change("wrong-one").await, n);
        }
        let before = auth.bcrypt_runs();
        refused(&change("password1").await, 60, n);
        assert_eq!(auth.bcrypt_runs(), before, "{n}: hashed while refused");
        clock.advance(MINUTE);
        let r = change("password1").await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        t.cleanup().await;
    }
}

// ---- Redis stopped mid-test: a private instance -------------------------------------

#[cfg(feature = "redis")]
struct OwnRedis(std::process::Child);

#[cfg(feature = "redis")]
impl OwnRedis {
    async fn start(port: u16) -> Option<Self> {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        for _ in 0..500 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Some(Self(child));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
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
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_falls_back_to_the_per_process_limiter() {
    if !std::env::var("SENTRI_TEST_FAULTS").is_ok_and(|v| v == "1") {
        crate::support::common::loud_skip("SENTRI_TEST_FAULTS", "secops::throttle_redis_outage");
        return;
    }
    let port = free_port();
    let Some(redis) = OwnRedis::start(port).await else {
        assert!(
            !crate::support::common::require_services(),
            "redis-server binary not found"
        );
        return;
    };
    let t = crate::support::db::database("sqlite", "secops::throttle_outage")
        .await
        .unwrap();
    let clock = ManualClock::starting_now();
    let shared = policy();
    let url = format!("redis://127.0.0.1:{port}");
    let cfg = || throttled_config(&t, &clock, shared.clone()).redis_url(url.clone());
    let (a, b): (ServerAuth, ServerAuth) =
        (create_auth(cfg()).unwrap(), create_auth(cfg()).unwrap());
    let (app_a, app_b) = (app(&a), app(&b));
    register(&app_a, "dave", "password1").await;
    // Both instances have connected to Redis (a loaded machine may need a retry).
    for app in [&app_a, &app_b] {
        for _ in 0..20 {
            let before = a.throttle().fallbacks() + b.throttle().fallbacks();
            login_from(app, "192.0.2.200", "warm-up", "bad").await;
            if a.throttle().fallbacks() + b.throttle().fallbacks() == before {
                break;
            }
        }
    }
    let (fa, fb) = (a.throttle().fallbacks(), b.throttle().fallbacks());
    // Shared while Redis is up.
    wrong(&login_from(&app_a, "192.0.2.1", "dave", "bad").await, "up");
    wrong(&login_from(&app_b, "192.0.2.1", "dave", "bad").await, "up");
    wrong(&login_from(&app_a, "192.0.2.1", "dave", "bad").await, "up");
    refused(
        &login_from(&app_b, "192.0.2.1", "dave", "bad").await,
        60,
        "up: shared",
    );
    assert_eq!(
        (a.throttle().fallbacks(), b.throttle().fallbacks()),
        (fa, fb)
    );

    drop(redis);
    // Down: every login is still answered (never 5xx), limited per process.
    let started = std::time::Instant::now();
    for i in 0..3 {
        wrong(
            &login_from(&app_a, "192.0.2.2", "erin", "bad").await,
            &format!("down {i}"),
        );
    }
    refused(
        &login_from(&app_a, "192.0.2.2", "erin", "bad").await,
        60,
        "down: per process",
    );
    let r = login_from(&app_b, "192.0.2.2", "dave", "password1").await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "down: B has its own counters: {:?}",
        r.body
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stalled on the outage"
    );
    assert!(
        a.throttle().fallbacks() > 0 && b.throttle().fallbacks() > 0,
        "fallback not counted"
    );
    t.cleanup().await;
}

/// `POST /auth/register` of `id` from the peer `ip`, with extra `headers`.
async fn register_from(app: &Router, ip: &str, id: &str, headers: &[(&str, &str)]) -> Reply {
    let body = json!({"identifier": id, "password": "password1"});
    from_peer(app, ip, Method::POST, "/auth/register", headers, Some(body)).await
}

/// Sign-ups are counted per address whatever their outcome (a taken identifier counts
/// too), refused with 429 before any hashing, exactly the limit under a concurrent
/// flood; other addresses and registrations trusted by the API key are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registrations_are_throttled_per_address_before_hashing() {
    for t in databases("secops::throttle_register").await {
        let n = t.name;
        let clock = ManualClock::starting_now();
        let policy = policy().registration(Limit::new(5, MINUTE));
        let auth = create_auth(throttled_config(&t, &clock, policy.clone())).unwrap();
        auth.migrate().await.unwrap();
        let app = app(&auth);
        for trial in 0..trials() {
            let ip = format!("192.0.2.{}", trial + 1);
            let tasks: Vec<_> = (0..20)
                .map(|i| {
                    let (app, ip) = (app.clone(), ip.clone());
                    // Two sign-ups per identifier: a taken one (409) counts too.
                    let id = format!("t{trial}-user{}", i / 2);
                    tokio::spawn(async move { register_from(&app, &ip, &id, &[]).await })
                })
                .collect();
            let (mut done, mut limited) = (0, 0);
            for task in tasks {
                let r = task.await.unwrap();
                match r.status {
                    StatusCode::CREATED | StatusCode::CONFLICT => done += 1,
                    StatusCode::TOO_MANY_REQUESTS => {
                        refused(&r, 60, n);
                        limited += 1;
                    }
                    other => panic!("{n}: unexpected {other}: {:?}", r.body),
                }
            }
            assert_eq!((done, limited), (5, 15), "{n} trial {trial}");
            // Refused before hashing; another address still signs up.
            let before = auth.bcrypt_runs();
            let r = register_from(&app, &ip, &format!("t{trial}-late"), &[]).await;
            refused(&r, 60, n);
            assert_eq!(auth.bcrypt_runs(), before, "{n}: a refused sign-up hashed");
            let other = format!("198.51.100.{}", trial + 1);
            let r = register_from(&app, &other, &format!("t{trial}-other"), &[]).await;
            assert_eq!(r.status, StatusCode::CREATED, "{n}: {:?}", r.body);
        }
        // The window passes: the address signs up again.
        clock.advance(MINUTE);
        let r = register_from(&app, "192.0.2.1", "after-the-window", &[]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{n}: {:?}", r.body);
        // Registrations trusted by the server's API key are not counted.
        let cfg = throttled_config(&t, &clock, policy).api_key("registration-secret");
        let trusted = crate::support::http::app(&create_auth(cfg).unwrap());
        let key = [("x-api-key", "registration-secret")];
        for i in 0..8 {
            let r = register_from(&trusted, "192.0.2.77", &format!("trusted{i}"), &key).await;
            assert_eq!(r.status, StatusCode::CREATED, "{n}: {:?}", r.body);
        }
        t.cleanup().await;
    }
}

/// A second-factor check is counted on the client address too: wrong codes and made-up
/// challenge tokens alike are refused with 429 once the address is over its limit (before
/// any lookup), while another address still gets its answer.
#[tokio::test]
async fn second_factor_checks_are_counted_per_address() {
    use sentri::capability::two_factor::TwoFactor;
    for t in databases("secops::throttle_2fa").await {
        let n = t.name;
        let clock = ManualClock::starting_now();
        let policy = policy().address(Limit::new(4, MINUTE));
        let two_factor = TwoFactor::new(crate::two_factor::sealer());
        let cfg = throttled_config(&t, &clock, policy).with(two_factor);
        let auth = create_auth(cfg).unwrap();
        auth.migrate().await.unwrap();
        let app = app(&auth);
        let verify = |ip: &'static str, i: usize| {
            let app = app.clone();
            let body = json!({"twoFactorToken": format!("made-up-{i}"), "code": "123456"});
            async move { from_peer(&app, ip, Method::POST, "/auth/2fa/verify", &[], Some(body)).await }
        };
        for i in 0..4 {
            let r = verify("192.0.2.1", i).await;
            expect(&r, StatusCode::UNAUTHORIZED, "TWO_FACTOR_INVALID", n);
        }
        refused(&verify("192.0.2.1", 4).await, 60, n);
        let r = verify("192.0.2.2", 5).await;
        expect(&r, StatusCode::UNAUTHORIZED, "TWO_FACTOR_INVALID", n);
        clock.advance(MINUTE);
        let r = verify("192.0.2.1", 6).await;
        expect(&r, StatusCode::UNAUTHORIZED, "TWO_FACTOR_INVALID", n);
        t.cleanup().await;
    }
}
