//! A role change reaches `protect()` at once: the old access token is stale here at
//! once, on another instance through Redis, and a silent refresh brings the new roles.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::json;

use super::{admin_call, roles_app, roles_config, user_with};
use crate::support::common::redis_url;
use crate::support::db::databases;
use crate::support::http::{bearer, call, expect};

/// Fails a test only when nothing ever happens (never a timing assertion).
const GENEROUS: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_revoked_role_stops_at_once_and_a_silent_refresh_brings_the_new_roles() {
    for t in databases("roles::revoked_at_once").await {
        let n = t.name;
        // A long cache: only the version check can make the change visible.
        let cfg = roles_config(t.db.clone()).session_cache_ttl(Duration::from_secs(60));
        let (auth, app) = roles_app(cfg).await;
        let (_, admin, _) = user_with(&auth, &app, "root", &["admin"]).await;
        let (id, _, _) = user_with(&auth, &app, "kim", &["user", "editor"]).await;
        let r = crate::support::http::login(&app, "kim", super::PW).await;
        let access = r.cookie("access_token").expect("access cookie");
        let refresh = r.cookie("refresh_token").expect("refresh cookie");
        let bearer_token = r.body["data"]["accessToken"].as_str().unwrap().to_owned();
        let r = call(
            &app,
            Method::GET,
            "/api/editor",
            &[("authorization", &bearer(&bearer_token))],
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{n}: warm cache");

        let r = admin_call(
            &app,
            &admin,
            Method::DELETE,
            &format!("/users/{id}/roles/editor"),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);

        let r = call(
            &app,
            Method::GET,
            "/api/editor",
            &[("authorization", &bearer(&bearer_token))],
            None,
        )
        .await;
        expect(&r, StatusCode::UNAUTHORIZED, "TOKEN_EXPIRED", n);
        let r = call(
            &app,
            Method::GET,
            "/api/profile",
            &[("authorization", &bearer(&bearer_token))],
            None,
        )
        .await;
        expect(&r, StatusCode::UNAUTHORIZED, "TOKEN_EXPIRED", n);

        // With the refresh cookie: refreshed silently, with the new roles.
        let cookie = format!("access_token={access}; refresh_token={refresh}");
        let r = call(
            &app,
            Method::GET,
            "/api/profile",
            &[("cookie", &cookie)],
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        assert_eq!(r.body["user"]["roles"], json!(["user"]), "{n}");
        let fresh = r.cookie("access_token").expect("a new access cookie");
        let claims = auth.verify_access_token(&fresh).unwrap();
        assert_eq!(claims.roles, ["user"], "{n}");
        let r = call(
            &app,
            Method::GET,
            "/api/editor",
            &[("authorization", &bearer(&fresh))],
            None,
        )
        .await;
        expect(&r, StatusCode::FORBIDDEN, "FORBIDDEN", n);

        // Given back: the refreshed token is stale in turn, the next refresh has it.
        let r = admin_call(
            &app,
            &admin,
            Method::POST,
            &format!("/users/{id}/roles"),
            Some(json!({"roles": ["editor"]})),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{n}");
        let r = call(
            &app,
            Method::GET,
            "/api/editor",
            &[("authorization", &bearer(&fresh))],
            None,
        )
        .await;
        expect(&r, StatusCode::UNAUTHORIZED, "TOKEN_EXPIRED", n);
        t.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_learns_a_role_change_through_redis() {
    let Some(redis) = redis_url("roles::redis") else {
        return;
    };
    for t in databases("roles::redis").await {
        let n = t.name;
        let cfg = |db| {
            roles_config(db)
                .redis_url(redis.clone())
                .session_cache_ttl(Duration::from_secs(60))
        };
        let (auth_a, app_a) = roles_app(cfg(t.db.clone())).await;
        let (_, app_b) = roles_app(cfg(t.db.clone())).await;
        let (_, admin, _) = user_with(&auth_a, &app_a, "root", &["admin"]).await;
        let (id, token, _) = user_with(&auth_a, &app_a, "kim", &["user", "editor"]).await;
        let on_b = |app: axum::Router, token: String| async move {
            call(
                &app,
                Method::GET,
                "/api/editor",
                &[("authorization", &bearer(&token))],
                None,
            )
            .await
        };
        // B caches the session (60 s): without the message it would keep trusting it.
        assert_eq!(
            on_b(app_b.clone(), token.clone()).await.status,
            StatusCode::OK,
            "{n}"
        );
        let r = admin_call(
            &app_a,
            &admin,
            Method::DELETE,
            &format!("/users/{id}/roles/editor"),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        let started = std::time::Instant::now();
        loop {
            let r = on_b(app_b.clone(), token.clone()).await;
            if r.status == StatusCode::UNAUTHORIZED {
                expect(&r, StatusCode::UNAUTHORIZED, "TOKEN_EXPIRED", n);
                break;
            }
            assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
            assert!(
                started.elapsed() < GENEROUS,
                "{n}: instance B never learned the change"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        t.cleanup().await;
    }
}
