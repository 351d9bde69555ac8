//! Guards over HTTP: the registration API key, roles, `authorize`, `permit`, and the
//! account endpoints behind them.

use axum::http::{Method, StatusCode};
use sentri::create_auth;
use serde_json::json;

use crate::support::db::databases;
use crate::support::http::{app, bearer, call, login, register};
use crate::support::services::config;

#[tokio::test]
async fn api_key_guards_registration() {
    let t = databases("http::api_key").await.remove(0);
    let auth = create_auth(config(t.db.clone()).api_key("0123456789abcdef-api-key")).unwrap();
    let app = app(&auth);
    let body = json!({"identifier": "ivan", "password": "password1", "roles": ["admin"]});
    let r = call(
        &app,
        Method::POST,
        "/auth/register",
        &[],
        Some(body.clone()),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    );
    let r = call(
        &app,
        Method::POST,
        "/auth/register",
        &[("x-api-key", "short")],
        Some(body.clone()),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    );
    let r = call(
        &app,
        Method::POST,
        "/auth/register",
        &[("x-api-key", "0123456789abcdef-api-kez")],
        Some(body.clone()),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    );
    let r = call(
        &app,
        Method::POST,
        "/auth/register",
        &[("x-api-key", "0123456789abcdef-api-key")],
        Some(body),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["data"]["user"]["roles"], json!(["admin"]));
}

#[tokio::test]
async fn roles_permit_and_account_endpoints() {
    for t in databases("http::roles").await {
        let auth = create_auth(config(t.db.clone()).cookie(None).access_cookie(None)).unwrap();
        let app = app(&auth);
        let n = t.name;
        let admin = auth
            .register(sentri::RegisterInput {
                identifier: "root".into(),
                password: "password1".into(),
                roles: Some(vec!["admin".into()]),
            })
            .await
            .unwrap();
        let judy = register(&app, "judy", "password1").await.body["data"]["user"].clone();
        let judy_id = judy["id"].as_str().unwrap().to_owned();
        let r = login(&app, "judy", "password1").await;
        assert!(r.cookies().is_empty(), "cookies off");
        let judy_token = r.body["data"]["accessToken"].as_str().unwrap().to_owned();
        let judy_refresh = r.body["data"]["refreshToken"].as_str().unwrap().to_owned();
        let admin_token = login(&app, "root", "password1").await.body["data"]["accessToken"]
            .as_str()
            .unwrap()
            .to_owned();
        let jb = bearer(&judy_token);
        let ab = bearer(&admin_token);

        let r = call(
            &app,
            Method::POST,
            "/auth/refresh",
            &[],
            Some(json!({"refreshToken": judy_refresh})),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{n} body refresh {:?}", r.body);
        assert!(r.body["data"]["refreshToken"].is_string());

        let path = format!("/auth/users/{judy_id}/roles");
        let r = call(
            &app,
            Method::POST,
            &path,
            &[("authorization", &jb)],
            Some(json!({"roles": ["editor"]})),
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
            &path,
            &[],
            Some(json!({"roles": ["editor"]})),
        )
        .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
        );
        let r = call(
            &app,
            Method::POST,
            &path,
            &[("authorization", &ab)],
            Some(json!({"roles": ["editor"]})),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{n} {:?}", r.body);
        assert_eq!(r.body["data"]["user"]["roles"], json!(["user", "editor"]));
        let r = call(
            &app,
            Method::POST,
            &path,
            &[("authorization", &ab)],
            Some(json!({"roles": ["wizard"]})),
        )
        .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "INVALID_ROLE")
        );
        let missing = format!("/auth/users/{}/roles", uuid::Uuid::now_v7());
        let r = call(
            &app,
            Method::POST,
            &missing,
            &[("authorization", &ab)],
            Some(json!({"roles": ["user"]})),
        )
        .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::NOT_FOUND, "USER_NOT_FOUND")
        );
        let long = format!("/auth/users/{}/roles", "x".repeat(10 * 1024));
        let r = call(
            &app,
            Method::POST,
            &long,
            &[("authorization", &ab)],
            Some(json!({"roles": ["user"]})),
        )
        .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::NOT_FOUND, "USER_NOT_FOUND")
        );

        let r = call(
            &app,
            Method::GET,
            "/api/admin",
            &[("authorization", &jb)],
            None,
        )
        .await;
        // Judy's roles changed after her token was signed: it is stale (the client
        // refreshes on TOKEN_EXPIRED).
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "TOKEN_EXPIRED")
        );
        let jb = {
            let r = login(&app, "judy", "password1").await;
            format!("Bearer {}", r.body["data"]["accessToken"].as_str().unwrap())
        };
        let r = call(
            &app,
            Method::GET,
            "/api/admin",
            &[("authorization", &jb)],
            None,
        )
        .await;
        assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "FORBIDDEN"));
        let r = call(&app, Method::GET, "/api/admin", &[], None).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            "authorize alone denies anonymous"
        );
        assert_eq!(
            call(
                &app,
                Method::GET,
                "/api/admin",
                &[("authorization", &ab)],
                None
            )
            .await
            .status,
            StatusCode::OK
        );

        let own = format!("/api/users/{judy_id}");
        let other = format!("/api/users/{}", admin.id);
        assert_eq!(
            call(&app, Method::PUT, &own, &[("authorization", &jb)], None)
                .await
                .status,
            StatusCode::OK
        );
        let r = call(&app, Method::PUT, &other, &[("authorization", &jb)], None).await;
        assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "FORBIDDEN"));
        assert_eq!(
            call(&app, Method::PUT, &own, &[("authorization", &ab)], None)
                .await
                .status,
            StatusCode::OK,
            "admin bypass"
        );

        let r = call(
            &app,
            Method::POST,
            "/auth/change-identifier",
            &[("authorization", &jb)],
            Some(json!({"identifier": "ROOT", "currentPassword": "password1"})),
        )
        .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::CONFLICT, "USER_ALREADY_EXISTS")
        );
        let r = call(
            &app,
            Method::POST,
            "/auth/change-identifier",
            &[("authorization", &jb)],
            Some(json!({"identifier": "", "currentPassword": "password1"})),
        )
        .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "VALIDATION_ERROR")
        );
        let r = call(
            &app,
            Method::POST,
            "/auth/change-identifier",
            &[("authorization", &jb)],
            Some(json!({"identifier": "judith", "currentPassword": "password1"})),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body["data"]["user"]["identifier"], "judith");

        let r = call(
            &app,
            Method::POST,
            "/auth/change-password",
            &[("authorization", &jb)],
            Some(json!({"currentPassword": "nope-nope", "newPassword": "password2"})),
        )
        .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS")
        );
        let r = call(
            &app,
            Method::POST,
            "/auth/change-password",
            &[("authorization", &jb)],
            Some(json!({"currentPassword": "password1", "newPassword": "x"})),
        )
        .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "VALIDATION_ERROR")
        );
        let r = call(
            &app,
            Method::POST,
            "/auth/change-password",
            &[("authorization", &jb)],
            Some(json!({"currentPassword": "password1", "newPassword": "password2"})),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        let r = call(
            &app,
            Method::GET,
            "/auth/me",
            &[("authorization", &jb)],
            None,
        )
        .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "TOKEN_INVALID"),
            "{n}: sessions revoked"
        );

        let r = call(
            &app,
            Method::POST,
            "/auth/logout-all",
            &[("authorization", &ab)],
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        let r = call(
            &app,
            Method::GET,
            "/auth/me",
            &[("authorization", &ab)],
            None,
        )
        .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "TOKEN_INVALID")
        );
    }
}

#[test]
#[should_panic(expected = "not one of valid_roles")]
fn authorize_with_unknown_role_panics_at_build_time() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = rt
        .block_on(sentri::db::Database::connect("sqlite::memory:"))
        .unwrap();
    let auth = create_auth(config(db)).unwrap();
    let _ = auth.authorize(["admn"]);
}
