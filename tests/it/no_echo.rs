//! No error message echoes submitted values: for every error code that user input can
//! raise over HTTP (`auth.router()`, the guards, the error layer and the idempotency
//! layer), a request carrying a marker gets the documented status and code, and neither
//! the body nor a header (except the idempotency layer's `x-request-id`, which is the
//! client's own key by design) contains the marker.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use sentri::{IdempotencyOptions, ServerAuth, create_auth};
use serde_json::{Value, json};

use crate::support::db::databases;
use crate::support::http::{Reply, app, bearer, call, login, register, send};
use crate::support::services::config;

/// What an attacker submits: markup plus a tag to search for.
const MARKER: &str = "<img src=x onerror=alert(1)>SENTRI-MARKER";
/// The marker's searchable part, lower-cased (identifiers are case-folded).
const TAG: &str = "sentri-marker";
/// The marker as one path segment.
const MARKER_IN_PATH: &str = "%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3ESENTRI-MARKER";
/// The marker without spaces (header values, tokens, idempotency keys).
const MARKER_NO_SPACE: &str = "<img/src=x/onerror=alert(1)>SENTRI-MARKER";

const API_KEY: &str = "0123456789abcdef-api-key";

/// Asserts status and code, and that the marker is nowhere in the response.
fn assert_refused(label: &str, r: &Reply, status: StatusCode, code: &str) {
    assert_eq!(
        (r.status, r.code()),
        (status, code),
        "{label}: {:?}",
        r.body
    );
    assert_eq!(r.body["error"], true, "{label}: envelope");
    let body = r.body.to_string().to_lowercase();
    assert!(!body.contains(TAG), "{label}: body echoes input: {body}");
    for (name, value) in &r.headers {
        if name == "x-request-id" {
            continue;
        }
        let v = String::from_utf8_lossy(value.as_bytes()).to_lowercase();
        assert!(!v.contains(TAG), "{label}: header {name} echoes input");
    }
}

async fn post(app: &Router, path: &str, headers: &[(&str, &str)], body: Value) -> Reply {
    call(app, Method::POST, path, headers, Some(body)).await
}

async fn post_raw(app: &Router, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
    let req = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .unwrap();
    send(app, req).await
}

async fn get(app: &Router, path: &str, headers: &[(&str, &str)]) -> Reply {
    call(app, Method::GET, path, headers, None).await
}

/// Logs in and returns the access token.
async fn token(app: &Router, identifier: &str) -> String {
    let r = login(app, identifier, "password1").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body["data"]["accessToken"].as_str().unwrap().to_owned()
}

async fn setup(auth: &ServerAuth, app: &Router) -> (String, String) {
    auth.register(sentri::RegisterInput {
        identifier: "root".into(),
        password: "password1".into(),
        roles: Some(vec!["admin".into()]),
    })
    .await
    .unwrap();
    let r = register(app, "victim", "password1").await;
    assert_eq!(r.status, StatusCode::CREATED);
    // The marker itself is a valid identifier (no control or invisible characters).
    let r = register(app, MARKER, "password1").await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    (token(app, "root").await, token(app, "victim").await)
}

async fn validation_errors(app: &Router, victim: &str) {
    let v = (StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    let cases = [
        (
            "invisible character in identifier",
            json!({"identifier": format!("{MARKER}\u{200B}"), "password": "password1"}),
        ),
        (
            "control character in identifier",
            json!({"identifier": format!("{MARKER}\u{7}"), "password": "password1"}),
        ),
        (
            "identifier too long",
            json!({"identifier": MARKER.repeat(40), "password": "password1"}),
        ),
        (
            "password too long",
            json!({"identifier": "newbie", "password": MARKER.repeat(40)}),
        ),
        (
            "wrongly typed field",
            json!({"identifier": 5, "password": MARKER}),
        ),
    ];
    for (label, body) in cases {
        let r = post(app, "/auth/register", &[], body).await;
        assert_refused(label, &r, v.0, v.1);
    }
    let bad_json = format!("{{\"identifier\": \"{MARKER}").into_bytes();
    let r = post_raw(app, "/auth/login", "application/json", bad_json).await;
    assert_refused("invalid JSON", &r, v.0, v.1);
    let r = post_raw(
        app,
        "/auth/login",
        &format!("text/{MARKER_NO_SPACE}"),
        vec![],
    )
    .await;
    assert_refused("content type", &r, v.0, v.1);
    let auth = bearer(victim);
    let h = [("authorization", auth.as_str())];
    let r = post(
        app,
        "/auth/change-identifier",
        &h,
        json!({"identifier": format!("\u{202E}{MARKER}"), "currentPassword": "password1"}),
    )
    .await;
    assert_refused("change-identifier bidi", &r, v.0, v.1);
    let r = post(
        app,
        "/auth/change-password",
        &h,
        json!({"currentPassword": "password1", "newPassword": MARKER.repeat(40)}),
    )
    .await;
    assert_refused("change-password too long", &r, v.0, v.1);
}

async fn role_errors(app: &Router, admin: &str, victim: &str) {
    let body = json!({"identifier": "newbie", "password": "password1", "roles": [MARKER]});
    let r = post(app, "/auth/register", &[], body).await;
    assert_refused("register role", &r, StatusCode::BAD_REQUEST, "INVALID_ROLE");
    let victim_id = get(app, "/auth/me", &[("authorization", &bearer(victim))]).await;
    let victim_id = victim_id.body["data"]["user"]["id"].as_str().unwrap();
    let path = format!("/auth/users/{victim_id}/roles");
    let admin_auth = bearer(admin);
    let r = post(
        app,
        &path,
        &[("authorization", &admin_auth)],
        json!({"roles": ["user", MARKER]}),
    )
    .await;
    assert_refused("assign role", &r, StatusCode::BAD_REQUEST, "INVALID_ROLE");
    let body = json!({"identifier": MARKER, "password": "password1", "roles": ["admin"]});
    let r = post(app, "/auth/register", &[], body).await;
    assert_refused("non-public role", &r, StatusCode::FORBIDDEN, "FORBIDDEN");
    let r = post(
        app,
        &format!("/auth/users/{MARKER_IN_PATH}/roles"),
        &[("authorization", &bearer(victim))],
        json!({"roles": [MARKER]}),
    )
    .await;
    assert_refused("guard", &r, StatusCode::FORBIDDEN, "FORBIDDEN");
    let r = post(
        app,
        &format!("/auth/users/{MARKER_IN_PATH}/roles"),
        &[("authorization", &admin_auth)],
        json!({"roles": ["editor"]}),
    )
    .await;
    assert_refused(
        "unknown user id",
        &r,
        StatusCode::NOT_FOUND,
        "USER_NOT_FOUND",
    );
}

async fn account_errors(app: &Router, victim: &str) {
    let conflict = (StatusCode::CONFLICT, "USER_ALREADY_EXISTS");
    let r = register(app, MARKER, "password1").await;
    assert_refused("register taken", &r, conflict.0, conflict.1);
    let auth = bearer(victim);
    let h = [("authorization", auth.as_str())];
    let r = post(
        app,
        "/auth/change-identifier",
        &h,
        json!({"identifier": MARKER, "currentPassword": "password1"}),
    )
    .await;
    assert_refused("change-identifier taken", &r, conflict.0, conflict.1);
    let bad = (StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS");
    let r = login(app, MARKER, &format!("{MARKER}-wrong")).await;
    assert_refused("wrong password", &r, bad.0, bad.1);
    let r = login(app, &format!("{MARKER}-nobody"), "password1").await;
    assert_refused("unknown identifier", &r, bad.0, bad.1);
    let r = post(
        app,
        "/auth/change-password",
        &h,
        json!({"currentPassword": MARKER, "newPassword": "password2"}),
    )
    .await;
    assert_refused("wrong current password", &r, bad.0, bad.1);
}

async fn token_errors(app: &Router) {
    let invalid = (StatusCode::UNAUTHORIZED, "TOKEN_INVALID");
    let r = get(
        app,
        "/auth/me",
        &[("authorization", &bearer(MARKER_NO_SPACE))],
    )
    .await;
    assert_refused("garbage bearer", &r, invalid.0, invalid.1);
    let r = get(app, "/auth/me", &[("authorization", &bearer(MARKER))]).await;
    assert_refused("malformed authorization", &r, invalid.0, invalid.1);
    let cookie = format!("refresh_token={MARKER_NO_SPACE}");
    let r = call(
        app,
        Method::POST,
        "/auth/refresh",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_refused("garbage refresh cookie", &r, invalid.0, invalid.1);
    let cookie = format!("other={MARKER_NO_SPACE}");
    let basic = format!("Basic {MARKER}");
    let r = get(
        app,
        "/auth/me",
        &[("cookie", &cookie), ("authorization", &basic)],
    )
    .await;
    assert_refused(
        "no credentials",
        &r,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
    );
}

async fn router_errors(app: &Router) {
    let r = get(app, &format!("/auth/{MARKER_IN_PATH}"), &[]).await;
    assert_refused("unknown path", &r, StatusCode::NOT_FOUND, "NOT_FOUND");
    let r = get(app, &format!("/auth/login?q={MARKER_IN_PATH}"), &[]).await;
    assert_refused(
        "wrong method",
        &r,
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
    );
    let big = format!("{{\"identifier\": \"{}\"}}", MARKER.repeat(2000)).into_bytes();
    let r = post_raw(app, "/auth/register", "application/json", big).await;
    assert_refused(
        "body too large",
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
    );
}

#[tokio::test]
async fn no_error_message_echoes_input() {
    let t = databases("no_echo::errors").await.remove(0);
    let auth = create_auth(config(t.db.clone())).unwrap();
    let app = app(&auth);
    let (admin, victim) = setup(&auth, &app).await;
    validation_errors(&app, &victim).await;
    role_errors(&app, &admin, &victim).await;
    account_errors(&app, &victim).await;
    token_errors(&app).await;
    router_errors(&app).await;
    t.cleanup().await;
}

#[tokio::test]
async fn api_key_and_idempotency_errors_do_not_echo_input() {
    let t = databases("no_echo::layers").await.remove(0);
    let auth = create_auth(config(t.db.clone()).api_key(API_KEY)).unwrap();
    let layer = auth.idempotency(IdempotencyOptions::default()).unwrap();
    let app = app(&auth).layer(layer);
    let body = json!({"identifier": MARKER, "password": "password1"});
    let r = post(
        &app,
        "/auth/register",
        &[("x-api-key", MARKER_NO_SPACE)],
        body.clone(),
    )
    .await;
    assert_refused(
        "wrong api key",
        &r,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
    );
    let long_key = MARKER_NO_SPACE.repeat(10);
    let r = post(
        &app,
        "/auth/login",
        &[("x-idempotency-key", &long_key)],
        body.clone(),
    )
    .await;
    assert_refused(
        "idempotency key too long",
        &r,
        StatusCode::BAD_REQUEST,
        "VALIDATION_ERROR",
    );
    let key = [
        ("x-idempotency-key", MARKER_NO_SPACE),
        ("x-api-key", API_KEY),
    ];
    let first = post(&app, "/auth/register", &key, body).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    let other = json!({"identifier": format!("{MARKER}2"), "password": "password1"});
    let r = post(&app, "/auth/register", &key, other).await;
    assert_refused(
        "idempotency key reused",
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "IDEMPOTENCY_KEY_MISMATCH",
    );
    t.cleanup().await;
}

/// An expired token whose claims carry the marker (the identifier claim).
#[tokio::test]
async fn expired_token_error_does_not_echo_its_claims() {
    let t = databases("no_echo::expired").await.remove(0);
    let mut cfg = config(t.db.clone()).access_expires_in(1i64);
    cfg.leeway = Duration::ZERO;
    let auth = create_auth(cfg).unwrap();
    let app = app(&auth);
    assert_eq!(
        register(&app, MARKER, "password1").await.status,
        StatusCode::CREATED
    );
    let access = token(&app, MARKER).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = get(&app, "/auth/me", &[("authorization", &bearer(&access))]).await;
    assert_refused(
        "expired token",
        &r,
        StatusCode::UNAUTHORIZED,
        "TOKEN_EXPIRED",
    );
    t.cleanup().await;
}
