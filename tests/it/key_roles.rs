//! An API key's roles follow its owner's: a key's effective roles are its granted roles
//! that the owner holds now. When the owner loses a role, the key loses it on the same
//! signal that makes the owner's access tokens stale: at once in the process that made
//! the change, and in another process as soon as the role change arrives through Redis
//! (`sentri:authz`), long before the key cache (60 s here) would have expired.

use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{Method, StatusCode};
use axum::routing::get;
use sentri::capability::api_keys::ApiKeys;
use sentri::capability::roles::Roles;
use sentri::clock::ManualClock;
use sentri::db::Database;
use sentri::identity::ProvisionUser;
use sentri::{CurrentUser, ServerAuth, create_auth};
use serde_json::{Value, json};

use crate::support::common::redis_url;
use crate::support::db::databases;
use crate::support::http::{Reply, bearer, call, expect, login};
use crate::support::services::config;

const PW: &str = "password1";
/// Far shorter than the key cache's 60 s: a key still admitted after this long on the
/// other instance kept its cached roles (never a bound on how fast the message is).
const PATIENCE: Duration = Duration::from_secs(30);

/// A migrated server with the roles capability and API keys whose cache lives 60 s on
/// a clock that never moves (so only a role change can end a cached entry), plus a
/// protected and an admin route. `redis`: the instances share role changes.
async fn server(db: Database, redis: Option<&str>) -> (ServerAuth, Router) {
    let mut cfg = config(db)
        .clock(ManualClock::starting_now())
        .session_cache_ttl(Duration::from_secs(60))
        .with(Roles::default())
        .with(ApiKeys::default().cache_ttl(Duration::from_secs(60)));
    if let Some(url) = redis {
        cfg = cfg.redis_url(url.to_owned());
    }
    let auth = create_auth(cfg).unwrap();
    auth.migrate().await.unwrap();
    let app = Router::new()
        .nest("/auth", auth.router())
        .route(
            "/api/me",
            get(|u: CurrentUser| async move { axum::Json(json!({ "roles": u.user.roles })) })
                .route_layer(auth.protect().admit_credentials()),
        )
        .route(
            "/api/admin",
            get(|| async { "admin" }).route_layer(auth.authorize(["admin"]).admit_credentials()),
        )
        .layer(auth.error_handler());
    (auth, app)
}

/// Provisions `id` with `roles`, signs in: (user id, access token).
async fn user(auth: &ServerAuth, app: &Router, id: &str, roles: &[&str]) -> (String, String) {
    let user = auth
        .provision_user(ProvisionUser::new(id, PW).roles(roles.iter().copied()))
        .await
        .unwrap();
    let r = login(app, id, PW).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let token = r.body["data"]["accessToken"].as_str().unwrap().to_owned();
    (user.id, token)
}

async fn as_bearer(
    app: &Router,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Reply {
    call(
        app,
        method,
        path,
        &[("authorization", &bearer(token))],
        body,
    )
    .await
}

async fn with_key(app: &Router, path: &str, key: &str) -> Reply {
    call(app, Method::GET, path, &[("x-sentri-key", key)], None).await
}

/// The owner `kim` (user, admin) and an admin key of hers; the key is admitted to the
/// admin route (which caches it). Returns (kim's id, her token, the key, root's token).
async fn admin_key(auth: &ServerAuth, app: &Router) -> (String, String, String, String) {
    let (_, root) = user(auth, app, "root", &["user", "admin"]).await;
    let (kim, token) = user(auth, app, "kim", &["user", "admin"]).await;
    let r = as_bearer(
        app,
        Method::POST,
        "/auth/api-keys",
        &token,
        Some(json!({"name": "ops", "roles": ["admin"]})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let key = r.body["data"]["key"].as_str().unwrap().to_owned();
    (kim, token, key, root)
}

async fn take_admin(app: &Router, root: &str, kim: &str) {
    let path = format!("/auth/users/{kim}/roles/admin");
    let r = as_bearer(app, Method::DELETE, &path, root, None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

#[tokio::test]
async fn a_key_loses_a_role_at_once_when_its_owner_loses_it() {
    for t in databases("key_roles::in_process").await {
        let n = t.name;
        let (auth, app) = server(t.db.clone(), None).await;
        let (kim, token, key, root) = admin_key(&auth, &app).await;
        let r = with_key(&app, "/api/admin", &key).await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        let r = with_key(&app, "/api/me", &key).await;
        assert_eq!(r.body["roles"], json!(["admin"]), "{n}");

        take_admin(&app, &root, &kim).await;
        // The owner's token is stale at once; the key has no admin left at once.
        let r = as_bearer(&app, Method::GET, "/api/admin", &token, None).await;
        expect(&r, StatusCode::UNAUTHORIZED, "TOKEN_EXPIRED", n);
        let r = with_key(&app, "/api/admin", &key).await;
        expect(&r, StatusCode::FORBIDDEN, "FORBIDDEN", n);
        let r = with_key(&app, "/api/me", &key).await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        assert_eq!(r.body["roles"], json!([]), "{n}: granted ∩ the owner's");

        // Given back: the key's grant applies again, as granted (never more).
        let path = format!("/auth/users/{kim}/roles");
        let r = as_bearer(
            &app,
            Method::POST,
            &path,
            &root,
            Some(json!({"roles": ["admin"]})),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        let r = with_key(&app, "/api/admin", &key).await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        let r = with_key(&app, "/api/me", &key).await;
        assert_eq!(r.body["roles"], json!(["admin"]), "{n}");
        t.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_takes_the_role_from_the_key_through_redis() {
    let Some(redis) = redis_url("key_roles::redis") else {
        return;
    };
    for t in databases("key_roles::redis").await {
        let n = t.name;
        let (auth_a, app_a) = server(t.db.clone(), Some(&redis)).await;
        let (_, app_b) = server(t.db.clone(), Some(&redis)).await;
        let (kim, _, key, root) = admin_key(&auth_a, &app_a).await;
        // B caches the key with its admin role (60 s).
        let r = with_key(&app_b, "/api/admin", &key).await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);

        take_admin(&app_a, &root, &kim).await;
        let r = with_key(&app_a, "/api/admin", &key).await;
        expect(&r, StatusCode::FORBIDDEN, "FORBIDDEN", n);
        let started = Instant::now();
        loop {
            let r = with_key(&app_b, "/api/admin", &key).await;
            if r.status == StatusCode::FORBIDDEN {
                expect(&r, StatusCode::FORBIDDEN, "FORBIDDEN", n);
                break;
            }
            assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
            assert!(
                started.elapsed() < PATIENCE,
                "{n}: instance B kept the key's admin role from its cache"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let r = with_key(&app_b, "/api/me", &key).await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        assert_eq!(r.body["roles"], json!([]), "{n}");
        t.cleanup().await;
    }
}
