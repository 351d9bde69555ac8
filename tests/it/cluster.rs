//! Redis Cluster (`SENTRI_TEST_REDIS_CLUSTER_URLS`, a `redis+cluster://` URL; `.ci/run`
//! starts 6 nodes on 7001–7006). The idempotency suite runs on the cluster in
//! `idempotency::conformance::cluster` and `idempotency::cluster_failover`; here: the
//! revocation broadcast between two instances subscribed on different nodes.
#![cfg(feature = "redis")]

use std::time::Duration;

use axum::http::{Method, StatusCode};
use sentri::create_auth;

use crate::support::common::service_url;
use crate::support::db::databases;
use crate::support::http::{app, bearer, call, login, register};
use crate::support::services::config;

/// The same cluster URL with its seed list rotated, so instance B subscribes on
/// another node than instance A.
fn rotated(url: &str) -> String {
    let hosts = url.trim_start_matches("redis+cluster://");
    let mut nodes: Vec<&str> = hosts.split(',').collect();
    nodes.rotate_left(1);
    format!("redis+cluster://{}", nodes.join(","))
}

async fn profile(app: &axum::Router, auth: &str) -> crate::support::http::Reply {
    call(
        app,
        Method::GET,
        "/api/profile",
        &[("authorization", auth)],
        None,
    )
    .await
}

#[tokio::test]
async fn revocation_broadcast_over_the_cluster_reaches_another_node() {
    let Some(url) = service_url("SENTRI_TEST_REDIS_CLUSTER_URLS", "cluster::revocation") else {
        return;
    };
    let t = databases("cluster::revocation").await.remove(0);
    // A long cache TTL: only the broadcast can make B refuse the token quickly.
    let cfg = |db, url: String| {
        config(db)
            .session_cache_ttl(Duration::from_secs(60))
            .redis_url(url)
    };
    let a = create_auth(cfg(t.db.clone(), url.clone())).unwrap();
    let b = create_auth(cfg(t.db.clone(), rotated(&url))).unwrap();
    let (app_a, app_b) = (app(&a), app(&b));
    tokio::time::sleep(Duration::from_millis(300)).await; // subscribers connect
    register(&app_a, "mia", "password1").await;
    let r = login(&app_a, "mia", "password1").await;
    let access = r.body["data"]["accessToken"].as_str().unwrap().to_owned();
    let refresh = r.cookie("refresh_token").unwrap();
    let h = bearer(&access);
    assert_eq!(profile(&app_b, &h).await.status, StatusCode::OK);
    let cookie = format!("refresh_token={refresh}");
    call(
        &app_a,
        Method::POST,
        "/auth/logout",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    let mut refused = false;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = profile(&app_b, &h).await;
        if r.status == StatusCode::UNAUTHORIZED {
            assert_eq!(r.code(), "TOKEN_INVALID");
            refused = true;
            break;
        }
    }
    assert!(
        refused,
        "instance B still accepted a revoked session after 1 s"
    );
}
