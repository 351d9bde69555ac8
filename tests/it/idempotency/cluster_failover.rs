//! A manual Redis Cluster failover of every master (`CLUSTER FAILOVER` on each replica)
//! loses no idempotency guarantee: a response stored before is replayed after, and a
//! key started after runs its handler once under concurrent duplicates.
//! Runs on the cluster of `SENTRI_TEST_REDIS_CLUSTER_URLS` (`.ci/run`: 7001–7006).

use std::process::Command;
use std::time::Duration;

use axum::http::StatusCode;

use super::{Backend, USER, concurrent_once, json_of, req, runs, send};
use crate::support::common::{service_url, unique};

fn redis_cli(port: &str, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", port])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("redis-cli: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The ports of the cluster's replicas, read from `CLUSTER NODES` on `seed`.
fn replica_ports(seed: &str) -> Vec<String> {
    redis_cli(seed, &["cluster", "nodes"])
        .lines()
        .filter(|l| l.split(' ').nth(2).is_some_and(|f| f.contains("slave")))
        .filter_map(|l| l.split(' ').nth(1))
        .filter_map(|addr| addr.split(['@']).next()?.rsplit(':').next())
        .map(str::to_owned)
        .collect()
}

async fn fail_over_every_master(seed: &str) {
    let replicas = replica_ports(seed);
    assert_eq!(replicas.len(), 3, "3 replicas in the test cluster");
    for port in &replicas {
        assert_eq!(redis_cli(port, &["cluster", "failover"]).trim(), "OK");
    }
    for port in &replicas {
        let mut promoted = false;
        for _ in 0..100 {
            if redis_cli(port, &["role"]).starts_with("master") {
                promoted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(promoted, "replica {port} was not promoted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_failover_keeps_stored_responses_and_runs_once() {
    let Some(url) = service_url(
        "SENTRI_TEST_REDIS_CLUSTER_URLS",
        "idempotency::cluster_failover",
    ) else {
        return;
    };
    let seed = url
        .trim_start_matches("redis+cluster://")
        .split(',')
        .next()
        .and_then(|h| h.rsplit(':').next())
        .unwrap_or("7001")
        .to_owned();
    let backend = Backend::Redis(url);
    let (app, count) = super::app(&backend);
    let keys: Vec<String> = (0..8).map(|_| unique("fo")).collect();
    for key in &keys {
        let (s, _, _) = send(&app, req("POST", "/pay", Some(key), Some(USER), "{}")).await;
        assert_eq!(s, StatusCode::CREATED);
    }
    assert_eq!(runs(&count), keys.len());

    fail_over_every_master(&seed).await;

    for key in &keys {
        let (s, h, b) = send(&app, req("POST", "/pay", Some(key), Some(USER), "{}")).await;
        assert_eq!(s, StatusCode::CREATED, "replayed after the failover");
        assert_eq!(h["x-idempotent-replayed"], "true");
        assert_eq!(json_of(&b)["key"], key.as_str());
    }
    assert_eq!(runs(&count), keys.len(), "no handler ran twice");

    let (app, count) = super::app(&backend);
    concurrent_once(&[app.clone(), app], &count).await;
}
