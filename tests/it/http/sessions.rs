//! Sessions over HTTP: silent refresh with parallel requests, revocation across
//! instances (cache bound, Redis broadcast), and the refresh cookie's attributes.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use sentri::{CookieConfig, create_auth};

use crate::support::db::databases;
use crate::support::http::{app, bearer, call, login, profile_with, register};
use crate::support::services::config;

#[tokio::test]
async fn silent_refresh_with_parallel_requests() {
    for t in databases("http::silent_refresh").await {
        let mut cfg = config(t.db.clone()).access_expires_in(1i64);
        cfg.leeway = Duration::ZERO;
        let auth = create_auth(cfg).unwrap();
        let app = app(&auth);
        register(&app, "kim", "password1").await;
        let r = login(&app, "kim", "password1").await;
        let access = r.cookie("access_token").unwrap();
        let refresh = r.cookie("refresh_token").unwrap();
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let cookie = format!("access_token={access}; refresh_token={refresh}");
        let expired = call(
            &app,
            Method::GET,
            "/api/profile",
            &[("authorization", &bearer(&access))],
            None,
        )
        .await;
        assert_eq!(
            (expired.status, expired.code()),
            (StatusCode::UNAUTHORIZED, "TOKEN_EXPIRED"),
            "{}",
            t.name
        );

        let mut tasks = Vec::new();
        for _ in 0..6 {
            let app = app.clone();
            let cookie = cookie.clone();
            tasks.push(tokio::spawn(async move {
                call(
                    &app,
                    Method::GET,
                    "/api/profile",
                    &[("cookie", &cookie)],
                    None,
                )
                .await
            }));
        }
        for task in tasks {
            let r = task.await.unwrap();
            assert_eq!(r.status, StatusCode::OK, "{}: {:?}", t.name, r.body);
            assert!(r.cookie("access_token").is_some() && r.cookie("refresh_token").is_some());
            assert_eq!(r.body["user"]["identifier"], "kim");
        }
        let r = call(
            &app,
            Method::GET,
            "/api/profile",
            &[("cookie", &format!("access_token={access}"))],
            None,
        )
        .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "TOKEN_EXPIRED")
        );
    }
}

#[tokio::test]
async fn revocation_reaches_a_second_instance_within_the_cache_bound() {
    let t = databases("http::revocation_bound").await.remove(0);
    let cache = Duration::from_millis(500);
    let a = create_auth(config(t.db.clone()).session_cache_ttl(cache)).unwrap();
    let b = create_auth(config(t.db.clone()).session_cache_ttl(cache)).unwrap();
    let (app_a, app_b) = (app(&a), app(&b));
    register(&app_a, "leo", "password1").await;
    let r = login(&app_a, "leo", "password1").await;
    let access = r.body["data"]["accessToken"].as_str().unwrap().to_owned();
    let refresh = r.cookie("refresh_token").unwrap();
    let auth_header = bearer(&access);
    assert_eq!(
        call(
            &app_b,
            Method::GET,
            "/api/profile",
            &[("authorization", &auth_header)],
            None
        )
        .await
        .status,
        StatusCode::OK
    );
    call(
        &app_a,
        Method::POST,
        "/auth/logout",
        &[("cookie", &format!("refresh_token={refresh}"))],
        None,
    )
    .await;
    assert_eq!(
        call(
            &app_a,
            Method::GET,
            "/api/profile",
            &[("authorization", &auth_header)],
            None
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED,
        "at once on the revoking instance"
    );
    tokio::time::sleep(cache + Duration::from_millis(100)).await;
    let r = call(
        &app_b,
        Method::GET,
        "/api/profile",
        &[("authorization", &auth_header)],
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "TOKEN_INVALID"),
        "after the cache bound"
    );
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn revocation_broadcast_over_redis_within_one_second() {
    let Some(redis) = crate::support::common::redis_url("http::revocation_redis") else {
        return;
    };
    let t = databases("http::revocation_redis").await.remove(0);
    // A long cache TTL: only the broadcast can make B refuse the token quickly.
    let cfg = |db| {
        config(db)
            .session_cache_ttl(Duration::from_secs(60))
            .redis_url(redis.clone())
    };
    let a = create_auth(cfg(t.db.clone())).unwrap();
    let b = create_auth(cfg(t.db.clone())).unwrap();
    let (app_a, app_b) = (app(&a), app(&b));
    tokio::time::sleep(Duration::from_millis(300)).await; // subscribers connect
    register(&app_a, "mia", "password1").await;
    let r = login(&app_a, "mia", "password1").await;
    let access = r.body["data"]["accessToken"].as_str().unwrap().to_owned();
    let refresh = r.cookie("refresh_token").unwrap();
    let h = bearer(&access);
    assert_eq!(
        call(
            &app_b,
            Method::GET,
            "/api/profile",
            &[("authorization", &h)],
            None
        )
        .await
        .status,
        StatusCode::OK
    );
    call(
        &app_a,
        Method::POST,
        "/auth/logout",
        &[("cookie", &format!("refresh_token={refresh}"))],
        None,
    )
    .await;
    let mut refused = false;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = call(
            &app_b,
            Method::GET,
            "/api/profile",
            &[("authorization", &h)],
            None,
        )
        .await;
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

#[tokio::test]
async fn cookie_attributes_follow_configuration() {
    let t = databases("http::cookie_attrs").await.remove(0);
    let auth = create_auth(config(t.db.clone()).cookie(Some(CookieConfig {
        secure: true,
        same_site: sentri::SameSite::Lax,
        name: "rt".into(),
        ..CookieConfig::default()
    })))
    .unwrap();
    let app = app(&auth);
    register(&app, "ned", "password1").await;
    let r = login(&app, "ned", "password1").await;
    let rc = r
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("rt="))
        .unwrap();
    assert!(
        rc.contains("Secure") && rc.contains("SameSite=Lax") && rc.contains("HttpOnly"),
        "{rc}"
    );
}

/// The verified-token cache skips only the signature check: a cached access token of a
/// revoked session is refused at once, and one past its `exp` is TOKEN_EXPIRED, exactly
/// as without the cache.
#[tokio::test]
async fn cached_access_tokens_still_meet_revocation_and_expiry() {
    for t in databases("http::token_cache").await {
        let mut cfg = config(t.db.clone()).access_expires_in(2i64);
        cfg.leeway = Duration::ZERO;
        let auth = create_auth(cfg).unwrap();
        let app = app(&auth);
        let n = t.name;
        register(&app, "noor", "password1").await;
        let first = login(&app, "noor", "password1").await;
        let second = login(&app, "noor", "password1").await;
        let (a, b) = (
            first.body["data"]["accessToken"]
                .as_str()
                .unwrap()
                .to_owned(),
            second.body["data"]["accessToken"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        for token in [&a, &b, &a, &b] {
            let r = profile_with(&app, token).await;
            assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        }
        assert!(
            auth.tokens().verified_cache_bytes() > 0,
            "{n}: the tokens are cached"
        );

        // Session A logged out: its cached token is refused at once; B is untouched.
        let refresh_a = first.cookie("refresh_token").unwrap();
        let r = call(
            &app,
            Method::POST,
            "/auth/logout",
            &[("cookie", &format!("refresh_token={refresh_a}"))],
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        let r = profile_with(&app, &a).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "TOKEN_INVALID"),
            "{n}"
        );
        let r = profile_with(&app, &b).await;
        assert_eq!(r.status, StatusCode::OK, "{n}");

        // B past its exp while cached: expired, as a full verification says.
        tokio::time::sleep(Duration::from_millis(3100)).await;
        let r = profile_with(&app, &b).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "TOKEN_EXPIRED"),
            "{n}"
        );
    }
}
