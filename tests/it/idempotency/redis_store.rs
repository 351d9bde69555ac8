//! The Redis store only (feature `redis`): two instances sharing one store, outages and
//! recovery.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use axum::http::StatusCode;
use sentri::idempotency::BackendErrorPolicy;
use sentri::{IdempotencyLayer, IdempotencyOptions};

use super::{
    Backend, Gate, USER, app_with, code_of, concurrent_once, layer, options, req, runs, send,
};
use crate::support::common::redis_url;
use crate::support::common::{require_services, unique};

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

/// A throwaway `redis-server` child on a free port, killed on drop.
struct OwnRedis {
    port: u16,
    child: Option<std::process::Child>,
}

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

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

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
