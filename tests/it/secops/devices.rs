//! Sessions per device: list (current marked), end one (another user's id → 404), end
//! all others, admin list/end; and ending a session racing its refresh leaves no
//! working token.

use axum::Router;
use axum::http::{Method, StatusCode};
use sentri::capability::devices::Devices;
use sentri::{RegisterInput, ServerAuth, create_auth};
use serde_json::{Value, json};

use super::trials;
use crate::support::db::{TestDb, databases};
use crate::support::http::{
    Reply, app, bearer, call, expect, from_peer, invalid, profile_with, register,
};
use crate::support::services::config;

fn devices_auth(t: &TestDb) -> ServerAuth {
    create_auth(
        config(t.db.clone())
            .cookie(None)
            .access_cookie(None)
            .with(Devices::default()),
    )
    .unwrap()
}

/// Logs in from `ip` with this user agent: (access, refresh, session id).
async fn device_login(
    auth: &ServerAuth,
    app: &Router,
    id: &str,
    ua: &str,
    ip: &str,
) -> (String, String, String) {
    let body = json!({"identifier": id, "password": "password1"});
    let r = from_peer(
        app,
        ip,
        Method::POST,
        "/auth/login",
        &[("user-agent", ua)],
        Some(body),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let d = &r.body["data"];
    let access = d["accessToken"].as_str().unwrap().to_owned();
    let sid = auth.verify_access_token(&access).unwrap().sid;
    (access, d["refreshToken"].as_str().unwrap().to_owned(), sid)
}

async fn with_token(app: &Router, method: Method, path: &str, token: &str) -> Reply {
    call(
        app,
        method,
        path,
        &[("authorization", &bearer(token))],
        None,
    )
    .await
}

async fn refresh(app: &Router, token: &str) -> Reply {
    call(
        app,
        Method::POST,
        "/auth/refresh",
        &[],
        Some(json!({"refreshToken": token})),
    )
    .await
}

fn ids(r: &Reply) -> Vec<String> {
    r.body["data"]["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn users_list_and_end_their_sessions_per_device() {
    for t in databases("secops::devices").await {
        let n = t.name;
        let auth = devices_auth(&t);
        auth.migrate().await.unwrap();
        let app = app(&auth);
        register(&app, "alice", "password1").await;
        register(&app, "bob", "password1").await;
        let phone = device_login(&auth, &app, "alice", "Phone/1", "192.0.2.1").await;
        let laptop = device_login(&auth, &app, "alice", "Laptop/2", "192.0.2.2").await;
        let tablet = device_login(&auth, &app, "alice", "Tablet/3", "192.0.2.3").await;
        let bob = device_login(&auth, &app, "bob", "Bob/1", "192.0.2.9").await;

        let r = with_token(&app, Method::GET, "/auth/sessions", &tablet.0).await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        let list = r.body["data"]["sessions"].as_array().unwrap().clone();
        assert_eq!(list.len(), 3, "{n}: {list:?}");
        let by_id = |sid: &str| list.iter().find(|s| s["id"] == sid).unwrap().clone();
        assert_eq!(by_id(&tablet.2)["current"], true, "{n}");
        assert_eq!(by_id(&phone.2)["current"], false, "{n}");
        assert_eq!(by_id(&phone.2)["userAgent"], "Phone/1", "{n}");
        assert_eq!(by_id(&laptop.2)["ip"], "192.0.2.2", "{n}");
        for s in &list {
            for field in ["createdAt", "lastUsedAt", "expiresAt"] {
                assert!(s[field].as_i64().is_some_and(|v| v > 0), "{n}: {field} {s}");
            }
            let text = s.to_string();
            assert!(
                !text.contains(&phone.1) && !text.contains("Hash"),
                "{n}: secrets listed"
            );
        }
        assert!(
            !ids(&r).contains(&bob.2),
            "{n}: another user's session listed"
        );

        // Another user's id, an unknown id: the same 404, and bob's session lives on.
        let r = with_token(
            &app,
            Method::DELETE,
            &format!("/auth/sessions/{}", bob.2),
            &tablet.0,
        )
        .await;
        expect(&r, StatusCode::NOT_FOUND, "NOT_FOUND", n);
        let unknown = with_token(&app, Method::DELETE, "/auth/sessions/nope", &tablet.0).await;
        assert_eq!(unknown.body, r.body, "{n}: other user's id vs unknown id");
        assert_eq!(
            profile_with(&app, &bob.0).await.status,
            StatusCode::OK,
            "{n}"
        );
        assert_eq!(refresh(&app, &bob.1).await.status, StatusCode::OK, "{n}");

        // End the phone: its refresh and access tokens stop at once; twice → 404.
        let r = with_token(
            &app,
            Method::DELETE,
            &format!("/auth/sessions/{}", phone.2),
            &tablet.0,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        invalid(&refresh(&app, &phone.1).await, n);
        invalid(&profile_with(&app, &phone.0).await, n);
        let r = with_token(
            &app,
            Method::DELETE,
            &format!("/auth/sessions/{}", phone.2),
            &tablet.0,
        )
        .await;
        expect(&r, StatusCode::NOT_FOUND, "NOT_FOUND", n);

        // Revoke the others: the laptop ends, the tablet (current) stays.
        let r = with_token(
            &app,
            Method::POST,
            "/auth/sessions/revoke-others",
            &tablet.0,
        )
        .await;
        assert_eq!(
            (r.status, r.body["data"]["ended"].clone()),
            (StatusCode::OK, json!(1)),
            "{n}: {:?}",
            r.body
        );
        invalid(&refresh(&app, &laptop.1).await, n);
        invalid(&profile_with(&app, &laptop.0).await, n);
        assert_eq!(
            profile_with(&app, &tablet.0).await.status,
            StatusCode::OK,
            "{n}"
        );
        let r = with_token(&app, Method::GET, "/auth/sessions", &tablet.0).await;
        assert_eq!(ids(&r), vec![tablet.2.clone()], "{n}");
        let r = with_token(&app, Method::GET, "/auth/sessions", &bob.0).await;
        assert_eq!(ids(&r).len(), 1, "{n}: bob's session untouched");
        t.cleanup().await;
    }
}

#[tokio::test]
async fn admins_list_and_end_a_users_sessions() {
    for t in databases("secops::devices_admin").await {
        let n = t.name;
        let auth = devices_auth(&t);
        auth.migrate().await.unwrap();
        let app = app(&auth);
        let input = RegisterInput {
            identifier: "root".into(),
            password: "password1".into(),
            roles: Some(vec!["admin".into()]),
        };
        auth.register(input).await.unwrap();
        let alice: Value = register(&app, "alice", "password1").await.body["data"]["user"].clone();
        let alice_id = alice["id"].as_str().unwrap();
        let root = device_login(&auth, &app, "root", "Admin", "192.0.2.1").await;
        let a1 = device_login(&auth, &app, "alice", "A1", "192.0.2.2").await;
        let a2 = device_login(&auth, &app, "alice", "A2", "192.0.2.3").await;

        let path = format!("/auth/users/{alice_id}/sessions");
        let r = with_token(&app, Method::GET, &path, &a1.0).await;
        expect(&r, StatusCode::FORBIDDEN, "FORBIDDEN", n);
        let r = with_token(&app, Method::GET, &path, &root.0).await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        let mut listed = ids(&r);
        listed.sort();
        let mut expected = vec![a1.2.clone(), a2.2.clone()];
        expected.sort();
        assert_eq!(listed, expected, "{n}");
        let r = with_token(
            &app,
            Method::GET,
            "/auth/users/00000000-0000-7000-8000-000000000000/sessions",
            &root.0,
        )
        .await;
        expect(&r, StatusCode::NOT_FOUND, "USER_NOT_FOUND", n);

        // Ending root's own session through alice's path: not alice's → 404.
        let r = with_token(&app, Method::DELETE, &format!("{path}/{}", root.2), &root.0).await;
        expect(&r, StatusCode::NOT_FOUND, "NOT_FOUND", n);
        let r = with_token(&app, Method::DELETE, &format!("{path}/{}", a1.2), &root.0).await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        invalid(&profile_with(&app, &a1.0).await, n);
        invalid(&refresh(&app, &a1.1).await, n);
        assert_eq!(
            profile_with(&app, &a2.0).await.status,
            StatusCode::OK,
            "{n}"
        );
        t.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ending_a_session_racing_its_refresh_leaves_no_working_token() {
    for t in databases("secops::devices_race").await {
        let n = t.name;
        let auth = devices_auth(&t);
        auth.migrate().await.unwrap();
        let app = app(&auth);
        register(&app, "rick", "password1").await;
        let keeper = device_login(&auth, &app, "rick", "Keeper", "192.0.2.1").await;
        let mut violations = 0;
        for _ in 0..trials() * 3 {
            let victim = device_login(&auth, &app, "rick", "Victim", "192.0.2.2").await;
            let path = format!("/auth/sessions/{}", victim.2);
            let (app1, app2, keeper_token, victim_refresh) =
                (app.clone(), app.clone(), keeper.0.clone(), victim.1.clone());
            let end = tokio::spawn(async move {
                with_token(&app1, Method::DELETE, &path, &keeper_token).await
            });
            let rotate = tokio::spawn(async move { refresh(&app2, &victim_refresh).await });
            let (end, rotated) = (end.await.unwrap(), rotate.await.unwrap());
            assert_eq!(end.status, StatusCode::OK, "{n}: {:?}", end.body);
            if rotated.status == StatusCode::OK {
                let next = rotated.body["data"]["refreshToken"].as_str().unwrap();
                let access = rotated.body["data"]["accessToken"].as_str().unwrap();
                if refresh(&app, next).await.status == StatusCode::OK
                    || profile_with(&app, access).await.status == StatusCode::OK
                {
                    violations += 1;
                }
            }
            if refresh(&app, &victim.1).await.status == StatusCode::OK {
                violations += 1;
            }
        }
        assert_eq!(
            violations, 0,
            "{n}: a token outlived the end of its session"
        );
        t.cleanup().await;
    }
}
