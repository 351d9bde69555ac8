//! The HTTP surface through the real router (`tower::ServiceExt::oneshot`), on every
//! configured database.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::routing::{get, put};
use http_body_util::BodyExt;
use sentri::CookieConfig;
use sentri::token::{Algorithm, SigningKey};
use sentri::{CurrentUser, PermitOptions, ServerAuth, ServerConfig, create_auth};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::db::databases;
use crate::services::config;

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
    pub fn cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookies().into_iter().find_map(|c| {
            let first = c.split(';').next()?.to_owned();
            let (k, v) = first.split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
    }
}

pub async fn call(
    app: &Router,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    send(app, req).await
}

pub async fn send(app: &Router, req: Request<Body>) -> Reply {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// The example server's routes, on top of `auth`.
pub fn app(auth: &ServerAuth) -> Router {
    let own_or_admin = PermitOptions::new(["admin"], |parts, user| {
        let ok = parts.uri.path().rsplit('/').next() == Some(user.id.as_str());
        async move { ok }
    });
    Router::new()
        .nest("/auth", auth.router())
        .route(
            "/api/profile",
            get(|u: CurrentUser| async move { axum::Json(json!({ "user": u.user })) })
                .route_layer(auth.protect()),
        )
        .route(
            "/api/admin",
            get(|| async { "admin" }).route_layer(auth.authorize(["admin"])),
        )
        .route(
            "/api/users/{id}",
            put(|| async { "updated" }).route_layer(auth.permit(own_or_admin)),
        )
        .route(
            "/api/unprotected-extractor",
            get(|u: CurrentUser| async move { u.user.id }),
        )
        .route(
            "/api/panic",
            get(|| async { if true { panic!("boom") } else { "never" } }),
        )
        .layer(auth.error_handler())
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

pub async fn register(app: &Router, id: &str, pw: &str) -> Reply {
    call(
        app,
        Method::POST,
        "/auth/register",
        &[],
        Some(json!({"identifier": id, "password": pw})),
    )
    .await
}

pub async fn login(app: &Router, id: &str, pw: &str) -> Reply {
    call(
        app,
        Method::POST,
        "/auth/login",
        &[],
        Some(json!({"identifier": id, "password": pw})),
    )
    .await
}

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

#[tokio::test]
async fn keys_endpoint() {
    let t = databases("http::keys").await.remove(0);
    let hs = create_auth(config(t.db.clone())).unwrap();
    let r = call(&hs.router::<()>(), Method::GET, "/keys", &[], None).await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "NOT_FOUND"));

    let current = SigningKey::generate(Algorithm::ES256).await.unwrap();
    let previous = SigningKey::generate(Algorithm::EdDSA).await.unwrap();
    let auth = create_auth(
        ServerConfig::new(t.db.clone(), current.clone(), ["user"])
            .previous_key(previous.clone())
            .salt_rounds(4),
    )
    .unwrap();
    let r = call(&auth.router::<()>(), Method::GET, "/keys", &[], None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CACHE_CONTROL], "public, max-age=300");
    let keys = r.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["kid"], current.kid());
    assert_eq!(keys[1]["kid"], previous.kid());
    assert!(
        keys.iter().all(|k| k.get("d").is_none()),
        "no private members"
    );
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
    let Some(redis) = crate::common::redis_url("http::revocation_redis") else {
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

#[cfg(feature = "postgres")]
#[tokio::test]
async fn create_auth_server_on_postgres_serves_generated_keys() {
    let Some(url) =
        crate::common::service_url("SENTRI_TEST_POSTGRES_URL", "http::create_auth_server")
    else {
        return;
    };
    let auth = sentri::create_auth_server(sentri::CreateServerOptions {
        db: sentri::PostgresConfig::ConnectionString {
            connection_string: url,
            max: Some(5),
        },
        valid_roles: vec!["user".into(), "admin".into()],
        key: None,
        configure: Some(Box::new(|c: ServerConfig| c.salt_rounds(4))),
    })
    .await
    .unwrap();
    let app = app(&auth);
    let r = call(&app, Method::GET, "/auth/keys", &[], None).await;
    assert_eq!(r.status, StatusCode::OK);
    let keys = r.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(
        (keys[0]["kty"].as_str(), keys[0]["alg"].as_str()),
        (Some("RSA"), Some("RS256"))
    );
    let id = crate::common::unique("cas");
    assert_eq!(
        register(&app, &id, "password1").await.status,
        StatusCode::CREATED
    );
    let r = login(&app, &id, "password1").await;
    assert_eq!(r.status, StatusCode::OK);
    let token = r.body["data"]["accessToken"].as_str().unwrap();
    let header = sentri::token::peek_kid(token).unwrap();
    assert_eq!(header, keys[0]["kid"].as_str().unwrap());
    let bad = sentri::create_auth_server(sentri::CreateServerOptions {
        db: sentri::PostgresConfig::ConnectionString {
            connection_string: "mysql://x@y/z".into(),
            max: None,
        },
        valid_roles: vec!["user".into()],
        key: None,
        configure: None,
    })
    .await
    .unwrap_err();
    assert_eq!(bad.code().as_str(), "CONFIGURATION_ERROR");
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
