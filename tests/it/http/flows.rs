//! The core routes end to end: register, login, me, refresh, logout; body rules and
//! unknown paths; handler overrides and the revocation hook.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use sentri::{ServerAuth, create_auth};
use serde_json::json;

use crate::support::db::databases;
use crate::support::http::{app, bearer, call, login, register, send};
use crate::support::services::config;

#[tokio::test]
async fn register_login_me_refresh_logout_over_http() {
    for t in databases("http::flow").await {
        let auth = create_auth(config(t.db.clone())).unwrap();
        let app = app(&auth);
        let n = t.name;

        let r = register(&app, "Heidi@Example.com", "password1").await;
        assert_eq!(r.status, StatusCode::CREATED, "{n} {:?}", r.body);
        assert_eq!(r.body["error"], false);
        assert_eq!(r.body["statusCode"], 201);
        assert_eq!(r.body["data"]["user"]["identifier"], "heidi@example.com");
        assert!(r.body["data"]["user"].get("passwordHash").is_none());
        assert!(r.body["data"]["user"].get("password_hash").is_none());
        assert_eq!(
            register(&app, "heidi@example.com", "password1")
                .await
                .code(),
            "USER_ALREADY_EXISTS"
        );
        let r = call(
            &app,
            Method::POST,
            "/auth/register",
            &[],
            Some(json!({"identifier": "x", "password": "password1", "roles": ["admin"]})),
        )
        .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::FORBIDDEN, "FORBIDDEN"),
            "{n}"
        );
        let r = call(
            &app,
            Method::POST,
            "/auth/register",
            &[],
            Some(json!({"identifier": "x", "password": "password1", "roles": ["wizard"]})),
        )
        .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "INVALID_ROLE")
        );
        let r = call(
            &app,
            Method::POST,
            "/auth/register",
            &[],
            Some(json!({"identifier": "x", "password": 12345678})),
        )
        .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "VALIDATION_ERROR")
        );
        assert!(
            !r.body["message"].as_str().unwrap().contains("12345678"),
            "no echo of values"
        );

        let r = login(&app, "HEIDI@example.com", "password1").await;
        assert_eq!(r.status, StatusCode::OK, "{n} {:?}", r.body);
        let access = r.body["data"]["accessToken"].as_str().unwrap().to_owned();
        assert!(
            r.body["data"].get("refreshToken").is_none(),
            "refresh token only in the cookie"
        );
        let refresh = r.cookie("refresh_token").expect("refresh cookie");
        assert_eq!(r.cookie("access_token").as_deref(), Some(access.as_str()));
        let rc = r
            .cookies()
            .into_iter()
            .find(|c| c.starts_with("refresh_token="))
            .unwrap();
        assert!(
            rc.contains("HttpOnly")
                && rc.contains("SameSite=Strict")
                && rc.contains("Max-Age=604800")
                && rc.contains("Path=/"),
            "{rc}"
        );
        let ac = r
            .cookies()
            .into_iter()
            .find(|c| c.starts_with("access_token="))
            .unwrap();
        assert!(
            !ac.contains("HttpOnly") && ac.contains("Max-Age=900"),
            "{ac}"
        );

        let unknown = login(&app, "nobody", "password1").await;
        let wrong = login(&app, "heidi@example.com", "wrong-password").await;
        assert_eq!(
            (unknown.status, unknown.code()),
            (StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS")
        );
        assert_eq!(unknown.body, wrong.body);

        let me = call(
            &app,
            Method::GET,
            "/auth/me",
            &[("authorization", &bearer(&access))],
            None,
        )
        .await;
        assert_eq!(me.status, StatusCode::OK, "{n} {:?}", me.body);
        assert_eq!(me.body["data"]["user"]["identifier"], "heidi@example.com");
        let me = call(
            &app,
            Method::GET,
            "/auth/me",
            &[("cookie", &format!("access_token={access}"))],
            None,
        )
        .await;
        assert_eq!(me.status, StatusCode::OK, "access cookie works");
        let me = call(&app, Method::GET, "/auth/me", &[], None).await;
        assert_eq!(
            (me.status, me.code()),
            (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
        );
        let me = call(
            &app,
            Method::GET,
            "/auth/me",
            &[("authorization", "Bearer garbage")],
            None,
        )
        .await;
        assert_eq!(
            (me.status, me.code()),
            (StatusCode::UNAUTHORIZED, "TOKEN_INVALID")
        );

        let r = call(
            &app,
            Method::POST,
            "/auth/refresh",
            &[("cookie", &format!("refresh_token={refresh}"))],
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{n} {:?}", r.body);
        let access2 = r.body["data"]["accessToken"].as_str().unwrap().to_owned();
        let refresh2 = r.cookie("refresh_token").unwrap();
        assert_ne!(refresh2, refresh);
        let r = call(&app, Method::POST, "/auth/refresh", &[], None).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "TOKEN_INVALID")
        );

        let r = call(
            &app,
            Method::POST,
            "/auth/logout",
            &[("cookie", &format!("refresh_token={refresh2}"))],
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(
            r.cookies().iter().all(|c| c.contains("Max-Age=0")) && r.cookies().len() == 2,
            "{:?}",
            r.cookies()
        );
        let me = call(
            &app,
            Method::GET,
            "/api/profile",
            &[("authorization", &bearer(&access2))],
            None,
        )
        .await;
        assert_eq!(
            (me.status, me.code()),
            (StatusCode::UNAUTHORIZED, "TOKEN_INVALID"),
            "{n}: revoked session"
        );
        let r = call(&app, Method::POST, "/auth/logout", &[], None).await;
        assert_eq!(r.status, StatusCode::OK, "logout is idempotent");
    }
}

#[tokio::test]
async fn body_rules_and_unknown_paths() {
    let t = databases("http::body_rules").await.remove(0);
    let auth = create_auth(config(t.db.clone())).unwrap();
    let app = app(&auth);
    let post_raw = |ct: &'static str, body: Vec<u8>| {
        Request::builder()
            .method(Method::POST)
            .uri("/auth/login")
            .header(header::CONTENT_TYPE, ct)
            .body(Body::from(body))
            .unwrap()
    };
    let r = send(&app, post_raw("application/json", b"{not json".to_vec())).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "VALIDATION_ERROR")
    );
    let r = send(
        &app,
        post_raw(
            "text/plain",
            br#"{"identifier":"a","password":"b"}"#.to_vec(),
        ),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "VALIDATION_ERROR")
    );
    let r = send(
        &app,
        post_raw("application/json", br#"{"identifier":"a"}"#.to_vec()),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "VALIDATION_ERROR")
    );
    let r = send(
        &app,
        post_raw(
            "application/json",
            br#"{"identifier":"a","identifier":"b","password":"p"}"#.to_vec(),
        ),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "VALIDATION_ERROR"),
        "duplicate keys"
    );
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let r = send(&app, post_raw("application/json", deep.into_bytes())).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "VALIDATION_ERROR"),
        "deep nesting"
    );
    let r = send(
        &app,
        post_raw("application/json", vec![b' '; 10 * 1024 * 1024]),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE")
    );

    let r = call(&app, Method::GET, "/auth/nope", &[], None).await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "NOT_FOUND"));
    let r = call(&app, Method::GET, "/elsewhere", &[], None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "NOT_FOUND"),
        "error_handler renders app 404s"
    );
    let r = call(&app, Method::GET, "/auth/login", &[], None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.body["error"], true);
    let r = call(&app, Method::GET, "/api/panic", &[], None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR")
    );
    let r = call(&app, Method::GET, "/api/unprotected-extractor", &[], None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
        "extractor without protect"
    );
}

#[tokio::test]
async fn handler_overrides_wrap_the_default_services_and_revocation_hook_refuses() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let t = databases("http::overrides").await.remove(0);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let handlers = sentri::Overrides::default()
        .login(move |auth: ServerAuth, input, meta| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                // The override may call the default service.
                auth.login(input, meta).await
            }
        })
        .register(|_auth, _input| async {
            Err(sentri::SentriError::custom(
                "REGISTRATION_CLOSED",
                "Closed",
                StatusCode::SERVICE_UNAVAILABLE,
            ))
        });
    let revoked: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let list = revoked.clone();
    let auth = create_auth(
        config(t.db.clone())
            .overrides(handlers)
            .is_token_revoked(move |sid| {
                let hit = list.lock().unwrap().contains(&sid);
                async move { hit }
            }),
    )
    .unwrap();
    auth.register(sentri::RegisterInput {
        identifier: "olaf".into(),
        password: "password1".into(),
        roles: None,
    })
    .await
    .unwrap();
    let app = app(&auth);
    let r = register(&app, "pia", "password1").await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "REGISTRATION_CLOSED")
    );
    let r = call(
        &app,
        Method::POST,
        "/auth/register",
        &[],
        Some(json!({"identifier": 5})),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "VALIDATION_ERROR"),
        "router still validates before the override"
    );
    let first = login(&app, "olaf", "password1").await.body["data"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = login(&app, "olaf", "password1").await.body["data"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    revoked
        .lock()
        .unwrap()
        .push(auth.verify_access_token(&first).unwrap().sid);
    let me = call(
        &app,
        Method::GET,
        "/api/profile",
        &[("authorization", &bearer(&first))],
        None,
    )
    .await;
    assert_eq!(
        (me.status, me.code()),
        (StatusCode::UNAUTHORIZED, "TOKEN_INVALID"),
        "the hook refuses"
    );
    let me = call(
        &app,
        Method::GET,
        "/api/profile",
        &[("authorization", &bearer(&second))],
        None,
    )
    .await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the login override ran for each login"
    );
}
