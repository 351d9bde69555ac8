//! Hostile request bodies: content types, nesting, size, streaming, duplicate keys.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::json;

use crate::support::db::databases;
use crate::support::http::{Reply, app, bearer, call, expect, send, session};
use crate::support::services::config;

fn raw(method: Method, path: &str, ct: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(ct) = ct {
        b = b.header(header::CONTENT_TYPE, ct);
    }
    b.body(body.into()).unwrap()
}

#[tokio::test]
async fn hostile_bodies_get_the_envelope() {
    let t = databases("adversarial::bodies").await.remove(0);
    let auth = sentri::create_auth(config(t.db.clone())).unwrap();
    let app = app(&auth);
    let (access, _) = session(&app, "grace", "password1").await;
    let bad = |r: &Reply, what: &str| expect(r, StatusCode::BAD_REQUEST, "VALIDATION_ERROR", what);
    let json = Some("application/json");

    for path in ["/auth/login", "/auth/register"] {
        for (what, ct, body) in [
            (
                "no content type",
                None,
                r#"{"identifier":"a","password":"password1"}"#.as_bytes().to_vec(),
            ),
            (
                "form",
                Some("application/x-www-form-urlencoded"),
                b"identifier=a&password=password1".to_vec(),
            ),
            (
                "json prefix",
                Some("application/jsonx"),
                br#"{"identifier":"a","password":"password1"}"#.to_vec(),
            ),
            ("empty", json, Vec::new()),
            ("null", json, b"null".to_vec()),
            ("array", json, b"[]".to_vec()),
            ("string", json, br#""identifier""#.to_vec()),
            (
                "trailing garbage",
                json,
                br#"{"identifier":"a","password":"password1"} x"#.to_vec(),
            ),
            (
                "two documents",
                json,
                br#"{"identifier":"a","password":"password1"}{}"#.to_vec(),
            ),
            (
                "invalid utf-8",
                json,
                b"{\"identifier\":\"\xff\xfe\",\"password\":\"password1\"}".to_vec(),
            ),
            (
                "lone surrogate",
                json,
                br#"{"identifier":"\ud800","password":"password1"}"#.to_vec(),
            ),
            (
                "identifier array",
                json,
                br#"{"identifier":["a"],"password":"password1"}"#.to_vec(),
            ),
            (
                "identifier object",
                json,
                br#"{"identifier":{"$ne":null},"password":"password1"}"#.to_vec(),
            ),
            (
                "identifier null",
                json,
                br#"{"identifier":null,"password":"password1"}"#.to_vec(),
            ),
            (
                "identifier bool",
                json,
                br#"{"identifier":true,"password":"password1"}"#.to_vec(),
            ),
            (
                "password number",
                json,
                br#"{"identifier":"a","password":12345678}"#.to_vec(),
            ),
            (
                "duplicate password",
                json,
                br#"{"identifier":"a","password":"x","password":"password1"}"#.to_vec(),
            ),
            (
                "NUL identifier",
                json,
                br#"{"identifier":"a\u0000b","password":"password1"}"#.to_vec(),
            ),
            (
                "control identifier",
                json,
                br#"{"identifier":"a\u001bb","password":"password1"}"#.to_vec(),
            ),
            (
                "empty identifier",
                json,
                br#"{"identifier":"","password":"password1"}"#.to_vec(),
            ),
        ] {
            bad(
                &send(&app, raw(Method::POST, path, ct, body)).await,
                &format!("{path}: {what}"),
            );
        }
        // 10 000 levels of nesting inside a real field.
        let deep = format!(
            r#"{{"password":"password1","identifier":{}"x"{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        bad(
            &send(&app, raw(Method::POST, path, json, deep)).await,
            &format!("{path}: deep"),
        );
        let deep_obj = format!(r#"{}1{}"#, r#"{"a":"#.repeat(10_000), "}".repeat(10_000));
        bad(
            &send(&app, raw(Method::POST, path, json, deep_obj)).await,
            &format!("{path}: deep objects"),
        );
        // ...and in an ignored field: skipped without recursion (no stack overflow), the
        // request is then judged on its real fields.
        let ignored = format!(
            r#"{{"identifier":"nobody","password":"password1","x":{}1{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        let r = send(&app, raw(Method::POST, path, json, ignored)).await;
        if path == "/auth/login" {
            expect(
                &r,
                StatusCode::UNAUTHORIZED,
                "INVALID_CREDENTIALS",
                "deep ignored field",
            );
        } else {
            assert_eq!(
                r.status,
                StatusCode::CREATED,
                "deep ignored field: {:?}",
                r.body
            );
        }
        // 10 MiB of valid-looking JSON.
        let big = format!(
            r#"{{"identifier":"{}","password":"password1"}}"#,
            "a".repeat(10 * 1024 * 1024)
        );
        expect(
            &send(&app, raw(Method::POST, path, json, big)).await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            &format!("{path}: 10 MiB"),
        );
        // A streamed body without Content-Length is cut at the limit too.
        let chunks = futures_util::stream::iter(
            (0..160).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 64 * 1024]))),
        );
        expect(
            &send(
                &app,
                raw(Method::POST, path, json, Body::from_stream(chunks)),
            )
            .await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            &format!("{path}: 10 MiB streamed"),
        );
    }
    // +json media types and parameters are accepted; extra fields are ignored.
    let ok = br#"{"identifier":"grace","password":"password1","extra":{"nested":[1,2,3]}}"#;
    for ct in [
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        "application/vnd.api+json",
    ] {
        let r = send(
            &app,
            raw(Method::POST, "/auth/login", Some(ct), ok.to_vec()),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{ct}: {:?}", r.body);
    }
    // Protected bodies: same rules behind protect().
    let authz = bearer(&access);
    for path in ["/auth/change-password", "/auth/change-identifier"] {
        let mut req = raw(Method::POST, path, json, br#"{"identifier":[1]}"#.to_vec());
        req.headers_mut()
            .insert(header::AUTHORIZATION, authz.parse().unwrap());
        bad(&send(&app, req).await, path);
        let mut req = raw(Method::POST, path, json, vec![b' '; 10 * 1024 * 1024]);
        req.headers_mut()
            .insert(header::AUTHORIZATION, authz.parse().unwrap());
        expect(
            &send(&app, req).await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            path,
        );
    }
    // Wrong role types on register.
    for body in [
        json!({"identifier": "h", "password": "password1", "roles": "admin"}),
        json!({"identifier": "h", "password": "password1", "roles": [1]}),
    ] {
        bad(
            &call(&app, Method::POST, "/auth/register", &[], Some(body)).await,
            "roles types",
        );
    }
    let r = call(
        &app,
        Method::POST,
        "/auth/register",
        &[],
        Some(json!({"identifier": "h", "password": "password1", "roles": ["user\u{0}"]})),
    )
    .await;
    expect(&r, StatusCode::BAD_REQUEST, "INVALID_ROLE", "NUL role");
    // A logout with garbage is still a 200 (idempotent), never a 4xx/5xx.
    for body in [
        b"{not json".to_vec(),
        vec![b'['; 10_000],
        vec![b' '; 10 * 1024 * 1024],
    ] {
        let r = send(&app, raw(Method::POST, "/auth/logout", json, body)).await;
        assert_eq!(r.status, StatusCode::OK, "logout garbage: {:?}", r.body);
    }
}
