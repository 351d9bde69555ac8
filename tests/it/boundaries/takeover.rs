//! A leaked API key is never its owner's session (on the three databases): it cannot
//! link an identity provider, add a workspace member, list or end sessions, log out
//! everywhere or mint another key, by either header; an app's guard admits it only
//! where the app opted in. Key creation honours `sensitive_requires_2fa`.

use axum::Router;
use axum::http::{Method, StatusCode};
use axum::routing::get;
use sentri::capability::api_keys::ApiKeys;
use sentri::capability::devices::Devices;
use sentri::capability::sso::{Sso, SsoProvider};
use sentri::capability::workspaces::Workspaces;
use sentri::{ServerAuth, ServerConfig, create_auth};
use serde_json::{Value, json};

use crate::support::db::{TestDb, databases};
use crate::support::http::{Reply, bearer, call, expect, register, session};
use crate::support::services::config;

const PW: &str = "password1";

async fn server(t: &TestDb, f: impl FnOnce(ServerConfig) -> ServerConfig) -> (ServerAuth, Router) {
    let sso = Sso::new("http://127.0.0.1:1/auth").provider(SsoProvider::new(
        "oidc",
        "https://idp.example.com",
        "client",
    ));
    let cfg = config(t.db.clone())
        .with(ApiKeys::default().scopes(["orders:read"]))
        .with(Devices::default())
        .with(Workspaces::default())
        .with(sso);
    let auth = create_auth(f(cfg)).unwrap();
    auth.migrate().await.unwrap();
    let app = Router::new()
        .nest("/auth", auth.router())
        .route(
            "/api/session-only",
            get(|| async { "session" }).route_layer(auth.protect()),
        )
        .route(
            "/api/keys-too",
            get(|| async { "keys" }).route_layer(auth.protect().admit("api_key")),
        )
        .route(
            "/api/orders",
            get(|| async { "orders" }).route_layer(auth.require_scopes(["orders:read"])),
        )
        .route(
            "/api/nested",
            get(|| async { "nested" })
                .route_layer(auth.require_2fa())
                .route_layer(auth.protect().admit_credentials()),
        )
        .layer(auth.error_handler());
    (auth, app)
}

async fn as_key(
    app: &Router,
    method: Method,
    path: &str,
    header: (&str, &str),
    body: Option<Value>,
) -> Reply {
    call(app, method, path, &[header], body).await
}

#[tokio::test]
async fn a_leaked_api_key_cannot_act_as_its_owners_session() {
    for t in databases("boundaries::takeover").await {
        let what = t.name;
        let (auth, app) = server(&t, |c| c).await;
        let (access, _) = session(&app, "owner@example.com", PW).await;
        let r = register(&app, "attacker@example.com", PW).await;
        assert_eq!(r.status, StatusCode::CREATED);
        let r = call(
            &app,
            Method::POST,
            "/auth/api-keys",
            &[("authorization", &bearer(&access))],
            Some(json!({"name": "orders", "scopes": ["orders:read"]})),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{what}: {}", r.body);
        let key = r.body["data"]["key"].as_str().unwrap().to_owned();
        let r = call(
            &app,
            Method::POST,
            "/auth/workspaces",
            &[("authorization", &bearer(&access))],
            Some(json!({"name": "Owner's", "slug": "owners"})),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{what}: {}", r.body);
        let ws = r.body["data"]["workspace"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let owner = auth.verify_access_token(&access).unwrap().sub;
        let sessions_before = auth.database().list_user_sessions(&owner).await.unwrap();

        let by_bearer = format!("Bearer {key}");
        for header in [
            ("authorization", by_bearer.as_str()),
            ("x-sentri-key", key.as_str()),
        ] {
            let attempts = [
                (
                    Method::POST,
                    "/auth/sso/oidc/link".to_owned(),
                    Some(json!({})),
                ),
                (
                    Method::POST,
                    format!("/auth/workspaces/{ws}/members"),
                    Some(json!({"identifier": "attacker@example.com", "roles": ["owner"]})),
                ),
                (
                    Method::POST,
                    format!("/auth/workspaces/{ws}/invitations"),
                    Some(json!({"address": "attacker@example.com", "roles": ["owner"]})),
                ),
                (Method::GET, "/auth/sessions".to_owned(), None),
                (
                    Method::POST,
                    "/auth/sessions/revoke-others".to_owned(),
                    None,
                ),
                (Method::POST, "/auth/logout-all".to_owned(), None),
                (
                    Method::POST,
                    "/auth/api-keys".to_owned(),
                    Some(json!({"name": "wider", "scopes": ["orders:read"]})),
                ),
                (Method::GET, "/auth/me".to_owned(), None),
                (Method::GET, "/api/session-only".to_owned(), None),
            ];
            for (method, path, body) in attempts {
                let r = as_key(&app, method.clone(), &path, header, body).await;
                expect(
                    &r,
                    StatusCode::FORBIDDEN,
                    "CREDENTIAL_NOT_ADMITTED",
                    &format!("{what}: {method} {path} by {}", header.0),
                );
            }
            // Where the app opted in, the key works.
            for path in ["/api/keys-too", "/api/orders"] {
                let r = as_key(&app, Method::GET, path, header, None).await;
                assert_eq!(r.status, StatusCode::OK, "{what}: {path}: {}", r.body);
            }
            // An inner guard decides admission too, whatever the outer one admitted.
            let r = as_key(&app, Method::GET, "/api/nested", header, None).await;
            expect(&r, StatusCode::FORBIDDEN, "CREDENTIAL_NOT_ADMITTED", what);
        }
        // Nothing changed: the sessions live, the attacker is no member.
        let sessions_after = auth.database().list_user_sessions(&owner).await.unwrap();
        assert_eq!(sessions_after.len(), sessions_before.len(), "{what}");
        let r = call(
            &app,
            Method::GET,
            &format!("/auth/workspaces/{ws}/members"),
            &[("authorization", &bearer(&access))],
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{what}: {}", r.body);
        assert_eq!(
            r.body["data"]["items"].as_array().unwrap().len(),
            1,
            "{what}"
        );
        // A forged or unknown key is refused the same way, before any lookup.
        let r = as_key(
            &app,
            Method::GET,
            "/auth/me",
            ("authorization", "Bearer sk_not-a-real-key"),
            None,
        )
        .await;
        expect(&r, StatusCode::FORBIDDEN, "CREDENTIAL_NOT_ADMITTED", what);
        t.cleanup().await;
    }
}

#[tokio::test]
async fn key_creation_honours_sensitive_requires_2fa() {
    for t in databases("boundaries::key_2fa").await {
        let what = t.name;
        let (_, app) = server(&t, |c| c.sensitive_requires_2fa(true)).await;
        let (access, _) = session(&app, "single@example.com", PW).await;
        let r = call(
            &app,
            Method::POST,
            "/auth/api-keys",
            &[("authorization", &bearer(&access))],
            Some(json!({"name": "k", "scopes": ["orders:read"]})),
        )
        .await;
        expect(&r, StatusCode::FORBIDDEN, "TWO_FACTOR_REQUIRED", what);
        t.cleanup().await;
    }
}
