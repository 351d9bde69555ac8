//! Concurrency and data integrity on every configured database: nothing lost, nothing
//! duplicated, and no revoked session or token that keeps working.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{Method, StatusCode};
use serde_json::json;
use tokio::sync::Mutex;

use crate::support::db::databases;
use crate::support::http::{
    Reply, app, bearer, call, expect, invalid, login, profile_with, refresh_with, register, session,
};
use crate::support::services::config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_lose_and_duplicate_nothing() {
    for t in databases("integrity::registrations").await {
        let n = t.name;
        // This test is about integrity, not shedding: let every hash wait its turn.
        let auth = sentri::create_auth(config(t.db.clone()).hash_queue_limit(2000)).unwrap();
        let app = app(&auth);
        let tasks: Vec<_> = (0..1000)
            .map(|i| {
                let app = app.clone();
                tokio::spawn(async move { register(&app, &format!("user{i}"), "password1").await })
            })
            .collect();
        let mut created = 0;
        for task in tasks {
            let r = task.await.unwrap();
            assert_eq!(r.status, StatusCode::CREATED, "{n}: {:?}", r.body);
            created += 1;
        }
        assert_eq!(created, 1000);
        assert_eq!(t.db.count_users().await.unwrap(), 1000, "{n}");

        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let app = app.clone();
                tokio::spawn(async move { register(&app, "same", "password1").await })
            })
            .collect();
        let (mut ok, mut conflict) = (0, 0);
        for task in tasks {
            let r = task.await.unwrap();
            match r.status {
                StatusCode::CREATED => ok += 1,
                _ => {
                    expect(&r, StatusCode::CONFLICT, "USER_ALREADY_EXISTS", n);
                    conflict += 1;
                }
            }
        }
        assert_eq!((ok, conflict), (1, 99), "{n}");
        assert_eq!(t.db.count_users().await.unwrap(), 1001, "{n}");
        t.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_storm_outside_the_grace_window_leaves_nothing_alive() {
    for t in databases("integrity::refresh_storm").await {
        let n = t.name;
        let auth = sentri::create_auth(config(t.db.clone()).refresh_grace(Duration::ZERO)).unwrap();
        let app = app(&auth);
        let (access, refresh) = session(&app, "storm", "password1").await;
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (app, refresh) = (app.clone(), refresh.clone());
                tokio::spawn(async move { refresh_with(&app, &refresh).await })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            let r = task.await.unwrap();
            if r.status == StatusCode::OK {
                winners.push(r);
            } else {
                invalid(&r, n);
            }
        }
        assert!(winners.len() <= 1, "{n}: {} winners", winners.len());
        // At least one loser presented a rotated token: the family is revoked, so the
        // winner's fresh pair is dead too, on this instance at once.
        invalid(&profile_with(&app, &access).await, n);
        for w in &winners {
            let a = w.body["data"]["accessToken"].as_str().unwrap();
            invalid(
                &profile_with(&app, a).await,
                &format!("{n}: winner's access"),
            );
            invalid(
                &refresh_with(&app, &w.cookie("refresh_token").unwrap()).await,
                &format!("{n}: winner's refresh"),
            );
        }
        let user = auth.verify_access_token(&access).unwrap().sub;
        assert!(
            t.db.list_user_sessions(&user).await.unwrap().is_empty(),
            "{n}: no session row left"
        );
        t.cleanup().await;
    }
}

/// The newest tokens one client holds.
#[derive(Clone, Default)]
struct Held {
    access: Vec<String>,
    refresh: Vec<String>,
}

fn tokens_of(r: &Reply) -> Option<(String, String)> {
    Some((
        r.body["data"]["accessToken"].as_str()?.to_owned(),
        r.cookie("refresh_token")?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_password_kills_every_old_session_under_load() {
    for t in databases("integrity::change_password").await {
        let n = t.name;
        let auth = sentri::create_auth(config(t.db.clone())).unwrap();
        let app = app(&auth);
        let (control, _) = session(&app, "pat", "password1").await;
        let stop = Arc::new(AtomicBool::new(false));
        let changed_at: Arc<Mutex<Option<Instant>>> = Arc::default();
        let late_success = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for _ in 0..6 {
            let r = login(&app, "pat", "password1").await;
            let (mut access, mut refresh) = tokens_of(&r).unwrap();
            let (app, stop, changed_at, late) = (
                app.clone(),
                stop.clone(),
                changed_at.clone(),
                late_success.clone(),
            );
            clients.push(tokio::spawn(async move {
                let mut held = Held::default();
                let mut previous: Option<String> = None;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let after_change = changed_at.lock().await.is_some_and(|c| started > c);
                    // A rotation, then a racing reuse of the rotated token (the grace
                    // path), then a protected call with the newest access token.
                    let r = refresh_with(&app, &refresh).await;
                    let mut replies = vec![r];
                    if let Some(p) = previous.take() {
                        replies.push(refresh_with(&app, &p).await);
                    }
                    replies.push(profile_with(&app, &access).await);
                    for r in &replies {
                        if r.status == StatusCode::OK && after_change {
                            late.store(true, Ordering::Relaxed);
                        }
                        assert!(
                            r.status == StatusCode::OK || r.status == StatusCode::UNAUTHORIZED,
                            "{:?}",
                            r.body
                        );
                    }
                    if let Some((a, rt)) = tokens_of(&replies[0]) {
                        previous = Some(std::mem::replace(&mut refresh, rt));
                        access = a;
                    }
                    if replies.len() == 3
                        && let Some((a, rt)) = tokens_of(&replies[1])
                    {
                        held.access.push(a);
                        held.refresh.push(rt);
                    }
                    held.access.push(access.clone());
                    held.refresh.push(refresh.clone());
                }
                held
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = call(
            &app,
            Method::POST,
            "/auth/change-password",
            &[("authorization", &bearer(&control))],
            Some(json!({"currentPassword": "password1", "newPassword": "password2"})),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        *changed_at.lock().await = Some(Instant::now());
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        let mut held = Held::default();
        for c in clients {
            let h = c.await.unwrap();
            held.access.extend(h.access);
            held.refresh.extend(h.refresh);
        }
        assert!(
            !late_success.load(Ordering::Relaxed),
            "{n}: a request started after change-password returned succeeded"
        );
        let user = auth.verify_access_token(&control).unwrap().sub;
        assert_eq!(
            t.db.list_user_sessions(&user).await.unwrap().len(),
            0,
            "{n}: a session row outlived change-password"
        );
        invalid(&profile_with(&app, &control).await, n);
        for a in held.access.iter().rev().take(50) {
            invalid(&profile_with(&app, a).await, &format!("{n}: old access"));
        }
        for rt in held.refresh.iter().rev().take(50) {
            invalid(&refresh_with(&app, rt).await, &format!("{n}: old refresh"));
        }
        expect(
            &login(&app, "pat", "password1").await,
            StatusCode::UNAUTHORIZED,
            "INVALID_CREDENTIALS",
            n,
        );
        assert_eq!(login(&app, "pat", "password2").await.status, StatusCode::OK);
        t.cleanup().await;
    }
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_on_one_instance_is_refused_on_another_within_a_second() {
    let Some(redis) = crate::support::common::redis_url("integrity::two_instances") else {
        return;
    };
    for t in databases("integrity::two_instances").await {
        let n = t.name;
        let cfg = || {
            config(t.db.clone())
                .session_cache_ttl(Duration::from_secs(60))
                .redis_url(redis.clone())
        };
        let (a, b) = (
            sentri::create_auth(cfg()).unwrap(),
            sentri::create_auth(cfg()).unwrap(),
        );
        let (app_a, app_b): (Router, Router) = (app(&a), app(&b));
        tokio::time::sleep(Duration::from_millis(300)).await; // subscribers connect
        let (access, refresh) = session(&app_a, "quinn", "password1").await;
        assert_eq!(profile_with(&app_b, &access).await.status, StatusCode::OK);
        let r = call(
            &app_a,
            Method::POST,
            "/auth/logout",
            &[("cookie", &format!("refresh_token={refresh}"))],
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        let started = Instant::now();
        loop {
            let r = profile_with(&app_b, &access).await;
            if r.status == StatusCode::UNAUTHORIZED {
                invalid(&r, n);
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{n}: B still accepts a logged-out session after 1 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        invalid(&refresh_with(&app_b, &refresh).await, n);
        t.cleanup().await;
    }
}
