//! HTTP helpers: one request through the real router (`tower::ServiceExt::oneshot`),
//! the example server's routes, and the envelope assertions shared by the HTTP suites.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::routing::{get, put};
use http_body_util::BodyExt;
use sentri::{CurrentUser, PermitOptions, ServerAuth};
use serde_json::{Value, json};
use tower::ServiceExt;

/// Status, headers and JSON body (or `Null`, or the text as a JSON string) of an answer.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The envelope's `code` (`""` when there is none).
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
    /// Every `Set-Cookie` header, verbatim.
    pub fn cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
    /// The value of the cookie `name` set by this answer.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookies().into_iter().find_map(|c| {
            let first = c.split(';').next()?.to_owned();
            let (k, v) = first.split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
    }
}

/// `method path` with these headers and an optional JSON body.
pub async fn call(
    app: &Router,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Reply {
    send(app, request(method, path, headers, body)).await
}

/// The request `method path` with these headers and an optional JSON body.
pub fn request(
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Request<Body> {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap()
}

/// Sends `req` through a clone of `app` and reads the whole answer.
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
        // The app opts its profile route in to capability credentials (API keys), so the
        // suites can check a key is alive or dead through it; sentri's own routes admit
        // sessions only (`boundaries::matrix`).
        .route(
            "/api/profile",
            get(|u: CurrentUser| async move { axum::Json(json!({ "user": u.user })) })
                .route_layer(auth.protect().admit_credentials()),
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

/// `Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `POST /auth/register` with this identifier and password.
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

/// `POST /auth/login` with this identifier and password.
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

/// Registers and logs in; returns (access token, refresh token from the cookie).
pub async fn session(app: &Router, id: &str, pw: &str) -> (String, String) {
    let r = register(app, id, pw).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = login(app, id, pw).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    (
        r.body["data"]["accessToken"].as_str().unwrap().to_owned(),
        r.cookie("refresh_token").expect("refresh cookie"),
    )
}

/// `GET /api/profile` (behind `protect()`) with these headers.
pub async fn profile(app: &Router, headers: &[(&str, &str)]) -> Reply {
    call(app, Method::GET, "/api/profile", headers, None).await
}

/// `GET /api/profile` with `Authorization: Bearer <token>`.
pub async fn profile_with(app: &Router, token: &str) -> Reply {
    profile(app, &[("authorization", &bearer(token))]).await
}

/// `POST /auth/refresh` with the refresh cookie.
pub async fn refresh_with(app: &Router, token: &str) -> Reply {
    call(
        app,
        Method::POST,
        "/auth/refresh",
        &[("cookie", &format!("refresh_token={token}"))],
        None,
    )
    .await
}

/// Asserts the exact status and code, and the error envelope.
#[track_caller]
pub fn expect(r: &Reply, status: StatusCode, code: &str, what: &str) {
    assert_eq!((r.status, r.code()), (status, code), "{what}: {:?}", r.body);
    assert_eq!(r.body["error"], true, "{what}: envelope");
    assert_eq!(r.body["statusCode"], status.as_u16(), "{what}: envelope");
}

/// Asserts 401 `TOKEN_INVALID` in the error envelope.
#[track_caller]
pub fn invalid(r: &Reply, what: &str) {
    expect(r, StatusCode::UNAUTHORIZED, "TOKEN_INVALID", what);
}

/// `method path` from the peer `ip` (as `into_make_service_with_connect_info` gives it).
pub async fn from_peer(
    app: &Router,
    ip: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Reply {
    let mut req = request(method, path, headers, body);
    let peer = SocketAddr::new(ip.parse().unwrap(), 40_000);
    req.extensions_mut().insert(ConnectInfo(peer));
    send(app, req).await
}
