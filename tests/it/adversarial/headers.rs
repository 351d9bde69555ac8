//! Malformed `Authorization` headers and cookies, and API keys of every wrong length.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use serde_json::json;

use crate::support::db::databases;
use crate::support::http::{
    Reply, app, bearer, call, expect, invalid, profile, refresh_with, send, session,
};
use crate::support::services::config;

#[tokio::test]
async fn authorization_headers_and_cookies() {
    let t = databases("adversarial::headers").await.remove(0);
    let auth = sentri::create_auth(config(t.db.clone())).unwrap();
    let app = app(&auth);
    let (access, refresh) = session(&app, "erin", "password1").await;
    let unauth = |r: &Reply, what: &str| expect(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", what);

    // Schemes: ours is case-insensitive; other schemes are not ours (no token).
    for scheme in ["bearer", "BEARER", "BeArEr"] {
        let r = profile(&app, &[("authorization", &format!("{scheme} {access}"))]).await;
        assert_eq!(r.status, StatusCode::OK, "{scheme}");
    }
    for value in [
        access.clone(),
        format!("Token {access}"),
        format!("Basic {access}"),
        "Bearer".to_owned(),
        format!("Bearer\t{access}"),
        format!("Bearer{access}"),
    ] {
        unauth(
            &profile(&app, &[("authorization", &value)]).await,
            &value[..12.min(value.len())],
        );
    }
    for (what, value) in [
        ("two tokens", format!("Bearer {access} {access}")),
        ("comma list", format!("Bearer {access},{access}")),
        ("two schemes", format!("Bearer {access}, Basic abc")),
        ("empty token", "Bearer ".to_owned()),
        ("blank token", "Bearer     ".to_owned()),
        ("64 KiB", format!("Bearer {}", "a".repeat(64 * 1024))),
    ] {
        invalid(&profile(&app, &[("authorization", &value)]).await, what);
    }
    let r = profile(
        &app,
        &[
            ("authorization", &bearer(&access)),
            ("authorization", &bearer(&access)),
        ],
    )
    .await;
    invalid(&r, "two Authorization headers");
    // Non-UTF-8 (obs-text) bytes in the header.
    let req = Request::builder()
        .uri("/api/profile")
        .header(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer \xff\xfe\xfd").unwrap(),
        )
        .body(Body::empty())
        .unwrap();
    invalid(&send(&app, req).await, "obs-text bearer");
    // A bad bearer is not rescued by a good cookie.
    invalid(
        &profile(
            &app,
            &[
                ("authorization", "Bearer garbage"),
                ("cookie", &format!("access_token={access}")),
            ],
        )
        .await,
        "bad bearer + good cookie",
    );

    // Cookies: the first of a name wins, values are verbatim, oversize ones are ignored.
    let c = |v: String| profile_owned(&app, v);
    invalid(
        &c(format!("access_token=garbage; access_token={access}")).await,
        "duplicate: garbage first",
    );
    assert_eq!(
        c(format!("access_token={access}; access_token=garbage"))
            .await
            .status,
        StatusCode::OK,
        "duplicate: valid first"
    );
    invalid(
        &c("access_token=%zz%".to_owned()).await,
        "bad percent-encoding",
    );
    invalid(
        &c(format!("access_token={}", access.replace('.', "%2E"))).await,
        "percent-encoded token is not decoded",
    );
    unauth(
        &c(format!("access_token={}", "a".repeat(16 * 1024))).await,
        "oversized cookie",
    );
    unauth(&c("access_token=".to_owned()).await, "empty cookie");
    unauth(&c("access_token".to_owned()).await, "cookie without =");
    unauth(&c(";;;===;".to_owned()).await, "junk cookie header");
    let req = Request::builder()
        .uri("/api/profile")
        .header(
            header::COOKIE,
            HeaderValue::from_bytes(b"access_token=\xff\xfe").unwrap(),
        )
        .body(Body::empty())
        .unwrap();
    unauth(&send(&app, req).await, "obs-text cookie");

    // The refresh cookie under the same rules.
    let r = call(
        &app,
        Method::POST,
        "/auth/refresh",
        &[(
            "cookie",
            &format!("refresh_token=garbage; refresh_token={refresh}"),
        )],
        None,
    )
    .await;
    invalid(&r, "duplicate refresh cookie: garbage first");
    invalid(&refresh_with(&app, "%zz").await, "refresh cookie %zz");
    invalid(
        &refresh_with(&app, &"a".repeat(16 * 1024)).await,
        "oversized refresh cookie",
    );
    // The good refresh token still works (none of the above consumed it).
    assert_eq!(refresh_with(&app, &refresh).await.status, StatusCode::OK);
}

async fn profile_owned(app: &Router, cookie: String) -> Reply {
    profile(app, &[("cookie", &cookie)]).await
}

#[tokio::test]
async fn api_key_of_any_wrong_length_is_refused() {
    let t = databases("adversarial::api_key").await.remove(0);
    let key = "0123456789abcdef-api-key";
    let auth = sentri::create_auth(config(t.db.clone()).api_key(key)).unwrap();
    let app = app(&auth);
    let body = json!({"identifier": "frank", "password": "password1", "roles": ["admin"]});
    let long = "k".repeat(10 * 1024);
    for given in [
        "",
        "0",
        &key[..key.len() - 1],
        &format!("{key}x"),
        &format!("{key} "),
        &key.to_uppercase(),
        &long,
    ] {
        let r = call(
            &app,
            Method::POST,
            "/auth/register",
            &[("x-api-key", given)],
            Some(body.clone()),
        )
        .await;
        expect(
            &r,
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            &format!("key of {} bytes", given.len()),
        );
    }
    let req = Request::builder()
        .method(Method::POST)
        .uri("/auth/register")
        .header("x-api-key", HeaderValue::from_bytes(b"\xff\xfe").unwrap())
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    expect(
        &send(&app, req).await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "obs-text key",
    );
    let r = call(
        &app,
        Method::POST,
        "/auth/register",
        &[("x-api-key", key), ("x-api-key", "other")],
        Some(body.clone()),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "the first header is read: {:?}",
        r.body
    );
}
