//! API keys over HTTP on the three databases: creation, authentication, scopes,
//! refusals (answered without a lookup when the checksum fails), expiry, revocation
//! (local race, and across two instances sharing Redis), owner deletion, last use,
//! secrets kept out of responses, events, logs and `Debug`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{Method, StatusCode};
use axum::routing::get;
use sentri::capability::api_keys::ApiKeys;
use sentri::clock::ManualClock;
use sentri::{AuthEvent, CurrentUser, EventSink, ServerAuth, ServerConfig, create_auth};
use serde_json::{Value, json};

use crate::support::db::{TestDb, databases};
use crate::support::http::{Reply, bearer, call, expect, register, session};
use crate::support::services::config;

const PW: &str = "password1";

fn keys() -> ApiKeys {
    ApiKeys::default().scopes(["orders:read", "orders:write"])
}

/// Builds the auth with API keys on, migrates it, and mounts a protected, a scoped and
/// an admin route next to the auth routes.
async fn server(cfg: ServerConfig) -> (ServerAuth, Router) {
    let auth = create_auth(cfg).unwrap();
    auth.migrate().await.unwrap();
    let app = Router::new()
        .nest("/auth", auth.router())
        .route(
            "/api/me",
            get(|u: CurrentUser| async move {
                axum::Json(json!({
                    "id": u.user.id,
                    "roles": u.user.roles,
                    "kind": u.credential.as_ref().map(|c| c.kind),
                    "keyId": u.credential.as_ref().map(|c| c.id.clone()),
                    "scopes": u.credential.as_ref().map(|c| c.scopes.clone()),
                }))
            })
            // The app opts this route in to API keys.
            .route_layer(auth.protect().admit_credentials()),
        )
        .route(
            "/api/orders",
            get(|| async { "orders" }).route_layer(auth.require_scopes(["orders:read"])),
        )
        .route(
            "/api/orders/write",
            get(|| async { "written" }).route_layer(auth.require_scopes(["orders:write"])),
        )
        .route(
            "/api/admin",
            get(|| async { "admin" }).route_layer(auth.authorize(["admin"]).admit("api_key")),
        )
        .layer(auth.error_handler());
    (auth, app)
}

async fn create_key(app: &Router, access: &str, body: Value) -> Reply {
    let h = bearer(access);
    call(
        app,
        Method::POST,
        "/auth/api-keys",
        &[("authorization", &h)],
        Some(body),
    )
    .await
}

/// Creates a key and returns (secret, id).
async fn new_key(app: &Router, access: &str, body: Value) -> (String, String) {
    let r = create_key(app, access, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    (
        r.body["data"]["key"].as_str().unwrap().to_owned(),
        r.body["data"]["apiKey"]["id"].as_str().unwrap().to_owned(),
    )
}

async fn with_key(app: &Router, path: &str, key: &str) -> Reply {
    call(app, Method::GET, path, &[("x-sentri-key", key)], None).await
}

async fn with_session(app: &Router, method: Method, path: &str, access: &str) -> Reply {
    let h = bearer(access);
    call(app, method, path, &[("authorization", &h)], None).await
}

fn key_format(key: &str) -> bool {
    let Some(body) = key.strip_prefix("sk_") else {
        return false;
    };
    body.len() == 49 && body.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[tokio::test]
async fn a_key_authenticates_with_its_scopes_and_never_shows_again() {
    for t in databases("api_keys::lifecycle").await {
        let db = t.name;
        let (_auth, app) = server(config(t.db.clone()).with(keys())).await;
        let (access, _) = session(&app, "ana", PW).await;
        let r = create_key(
            &app,
            &access,
            json!({"name": "ci", "scopes": ["orders:read"], "metadata": {"team": "ops"}}),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{db}: {:?}", r.body);
        assert_eq!(r.headers["cache-control"], "no-store");
        let key = r.body["data"]["key"].as_str().unwrap().to_owned();
        let view = &r.body["data"]["apiKey"];
        assert!(key_format(&key), "{db}: {key}");
        assert_eq!(view["prefix"], "sk_");
        assert_eq!(view["lastFour"], key[key.len() - 4..]);
        assert_eq!(view["metadata"], json!({"team": "ops"}));
        let id = view["id"].as_str().unwrap().to_owned();

        // Protected route, by header and by bearer; the principal says it is a key.
        let r = with_key(&app, "/api/me", &key).await;
        assert_eq!(r.status, StatusCode::OK, "{db}: {:?}", r.body);
        assert_eq!(r.body["kind"], "api_key");
        assert_eq!(r.body["keyId"], id.as_str());
        assert_eq!(r.body["scopes"], json!(["orders:read"]));
        assert_eq!(r.body["roles"], json!([]), "{db}: no roles unless asked");
        let r = with_session(&app, Method::GET, "/api/me", &key).await;
        assert_eq!(r.status, StatusCode::OK, "{db}: bearer {:?}", r.body);
        // Scoped routes.
        assert_eq!(
            with_key(&app, "/api/orders", &key).await.status,
            StatusCode::OK
        );
        let r = with_key(&app, "/api/orders/write", &key).await;
        expect(&r, StatusCode::FORBIDDEN, "INSUFFICIENT_SCOPE", db);
        // Roles: the owner is a `user`, the key has no role.
        expect(
            &with_key(&app, "/api/admin", &key).await,
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            db,
        );
        // Sessions are not scoped.
        let r = with_session(&app, Method::GET, "/api/orders/write", &access).await;
        assert_eq!(r.status, StatusCode::OK, "{db}");

        // The secret never appears again.
        let path = format!("/auth/api-keys/{id}");
        let list = with_session(&app, Method::GET, "/auth/api-keys", &access).await;
        assert_eq!(list.body["data"]["apiKeys"][0]["id"], id.as_str());
        let got = with_session(&app, Method::GET, &path, &access).await;
        assert_eq!(got.status, StatusCode::OK);
        let patch = call(
            &app,
            Method::PATCH,
            &path,
            &[("authorization", &bearer(&access))],
            Some(json!({"name": "ci-2", "scopes": ["orders:read", "orders:write"]})),
        )
        .await;
        assert_eq!(patch.status, StatusCode::OK, "{db}: {:?}", patch.body);
        assert_eq!(patch.body["data"]["apiKey"]["name"], "ci-2");
        // Widened scopes apply at once in this process.
        let r = with_key(&app, "/api/orders/write", &key).await;
        assert_eq!(r.status, StatusCode::OK, "{db}: {:?}", r.body);
        let revoked = with_session(&app, Method::DELETE, &path, &access).await;
        assert_eq!(revoked.status, StatusCode::OK);
        assert!(revoked.body["data"]["apiKey"]["revokedAt"].is_i64());
        for r in [&list, &got, &patch, &revoked] {
            assert!(
                !r.body.to_string().contains(&key[3..]),
                "{db}: secret echoed"
            );
            assert!(r.body.to_string().contains(&key[key.len() - 4..]));
        }
        // Revoked: refused at once.
        let r = with_key(&app, "/api/me", &key).await;
        expect(&r, StatusCode::UNAUTHORIZED, "API_KEY_INVALID", db);
        assert!(!r.body.to_string().contains(&key[3..]));
        t.cleanup().await;
    }
}

/// The CRC32 checksum of the key format, for building keys in tests.
fn checksum(s: &str) -> String {
    const A: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut n = u64::from(crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(s.as_bytes()));
    let mut out = vec![b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = A[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out).unwrap()
}

/// A key of the right shape and checksum that was never issued.
fn forged(lead: &str) -> String {
    let body: String = uuid::Uuid::new_v4().simple().to_string()
        + &uuid::Uuid::new_v4().simple().to_string()[..11];
    let head = format!("{lead}{body}");
    let sum = checksum(&head);
    head + &sum
}

#[tokio::test]
async fn bad_keys_are_refused_and_only_well_formed_ones_are_looked_up() {
    for t in databases("api_keys::refusals").await {
        let db = t.name;
        let (_auth, app) = server(config(t.db.clone()).with(keys())).await;
        let (access, _) = session(&app, "ben", PW).await;
        let (key, _) = new_key(&app, &access, json!({"name": "k"})).await;
        let mut typo = key.clone().into_bytes();
        typo[9] = if typo[9] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).unwrap();
        let bad = [
            ("wrong checksum", typo),
            ("truncated", key[..key.len() - 1].to_owned()),
            ("another prefix", format!("pk_{}", &key[3..])),
            ("another environment", format!("sk_test_{}", &key[3..])),
            ("not a key", "hello".to_owned()),
        ];
        // A never-issued key with a valid checksum is looked up, and unknown.
        let forged = forged("sk_");
        let r = with_key(&app, "/api/me", &forged).await;
        expect(&r, StatusCode::UNAUTHORIZED, "API_KEY_INVALID", db);
        for (what, k) in &bad {
            let r = with_key(&app, "/api/me", k).await;
            expect(&r, StatusCode::UNAUTHORIZED, "API_KEY_INVALID", what);
        }
        // Without the table, any lookup fails (503): the bad keys still get their 401,
        // so they were refused without one; a well-formed key does reach the store.
        t.raw("DROP TABLE sentri_api_keys").await;
        for (what, k) in &bad {
            let r = with_key(&app, "/api/me", k).await;
            expect(
                &r,
                StatusCode::UNAUTHORIZED,
                "API_KEY_INVALID",
                &format!("{db}: {what}"),
            );
            let r = with_session(&app, Method::GET, "/api/me", k).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{db}: bearer {what}");
        }
        let r = with_key(&app, "/api/me", &forged).await;
        expect(
            &r,
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            db,
        );
        t.cleanup().await;
    }
}

/// Shared setup for the clock-driven tests: a manual clock and a signed-in user.
async fn clocked(t: &TestDb, ttl: Duration) -> (ManualClock, Router, String) {
    let clock = ManualClock::starting_now();
    let cfg = config(t.db.clone()).clock(clock.clone()).with(
        keys()
            .cache_ttl(ttl)
            .max_lifetime(Duration::from_secs(86_400)),
    );
    let (_auth, app) = server(cfg).await;
    let (access, _) = session(&app, "cy", PW).await;
    (clock, app, access)
}

#[tokio::test]
async fn expired_and_deleted_owner_keys_are_refused() {
    for t in databases("api_keys::expiry").await {
        let db = t.name;
        let (clock, app, access) = clocked(&t, Duration::from_secs(5)).await;
        let (short, _) = new_key(&app, &access, json!({"name": "s", "expiresIn": 3600})).await;
        // No expiresIn: max_lifetime (1 day).
        let r = create_key(&app, &access, json!({"name": "d"})).await;
        let view = &r.body["data"]["apiKey"];
        assert_eq!(
            view["expiresAt"].as_i64().unwrap() - view["createdAt"].as_i64().unwrap(),
            86_400_000
        );
        let long = r.body["data"]["key"].as_str().unwrap().to_owned();
        for body in [
            json!({"name": "x", "expiresIn": 10}),
            json!({"name": "x", "expiresIn": 86_401}),
        ] {
            let r = create_key(&app, &access, body).await;
            expect(&r, StatusCode::BAD_REQUEST, "VALIDATION_ERROR", db);
        }
        assert_eq!(
            with_key(&app, "/api/me", &short).await.status,
            StatusCode::OK
        );
        assert_eq!(
            with_key(&app, "/api/me", &long).await.status,
            StatusCode::OK
        );
        clock.advance(Duration::from_secs(3600));
        let r = with_key(&app, "/api/me", &short).await;
        expect(&r, StatusCode::UNAUTHORIZED, "API_KEY_EXPIRED", db);
        // The owner is deleted: the keys go with it (foreign key), and a cached key is
        // refused once the cache TTL has passed.
        assert_eq!(
            with_key(&app, "/api/me", &long).await.status,
            StatusCode::OK
        );
        let me = with_key(&app, "/api/me", &long).await.body["id"].clone();
        assert!(t.db.delete_user(me.as_str().unwrap()).await.unwrap());
        clock.advance(Duration::from_secs(5));
        let r = with_key(&app, "/api/me", &long).await;
        expect(&r, StatusCode::UNAUTHORIZED, "API_KEY_INVALID", db);
        t.cleanup().await;
    }
}

#[tokio::test]
async fn last_use_is_written_at_most_once_a_minute() {
    for t in databases("api_keys::last_used").await {
        let db = t.name;
        let (clock, app, access) = clocked(&t, Duration::from_secs(5)).await;
        let (key, id) = new_key(&app, &access, json!({"name": "u"})).await;
        let path = format!("/auth/api-keys/{id}");
        let last_used = || async {
            // Written off the request path: wait for it (bounded).
            let mut seen = Value::Null;
            for _ in 0..100 {
                seen = with_session(&app, Method::GET, &path, &access).await.body["data"]["apiKey"]
                    ["lastUsedAt"]
                    .clone();
                if !seen.is_null() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen
        };
        assert_eq!(with_key(&app, "/api/me", &key).await.status, StatusCode::OK);
        let first = last_used().await.as_i64().expect("last_used_at written");
        clock.advance(Duration::from_secs(30));
        for _ in 0..5 {
            assert_eq!(with_key(&app, "/api/me", &key).await.status, StatusCode::OK);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            last_used().await.as_i64(),
            Some(first),
            "{db}: within a minute"
        );
        clock.advance(Duration::from_secs(31));
        assert_eq!(with_key(&app, "/api/me", &key).await.status, StatusCode::OK);
        let mut now = first;
        for _ in 0..100 {
            now = last_used().await.as_i64().unwrap();
            if now != first {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(now - first, 61_000, "{db}: written again after a minute");
        t.cleanup().await;
    }
}

#[tokio::test]
async fn scopes_roles_and_ownership_are_checked() {
    for t in databases("api_keys::rules").await {
        let db = t.name;
        let (auth, app) = server(config(t.db.clone()).with(keys())).await;
        let (access, _) = session(&app, "dan", PW).await;
        let cases = [
            (
                json!({"name": "k", "scopes": ["orders:delete"]}),
                StatusCode::BAD_REQUEST,
                "INVALID_SCOPE",
            ),
            (
                json!({"name": "k", "roles": ["admin"]}),
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
            ),
            (
                json!({"name": "k", "roles": ["root"]}),
                StatusCode::BAD_REQUEST,
                "INVALID_ROLE",
            ),
            (
                json!({"name": ""}),
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
            ),
            (
                json!({"name": "k", "metadata": [1]}),
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
            ),
            (
                json!({"name": "k", "secret": "x"}),
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
            ),
            (
                json!({"scopes": []}),
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
            ),
        ];
        for (body, status, code) in cases {
            let r = create_key(&app, &access, body.clone()).await;
            expect(&r, status, code, &format!("{db}: {body}"));
        }
        let (key, id) = new_key(&app, &access, json!({"name": "k", "roles": ["user"]})).await;
        // Widening a key's roles beyond its owner's is refused.
        let r = call(
            &app,
            Method::PATCH,
            &format!("/auth/api-keys/{id}"),
            &[("authorization", &bearer(&access))],
            Some(json!({"roles": ["admin"]})),
        )
        .await;
        expect(&r, StatusCode::FORBIDDEN, "FORBIDDEN", db);
        // A key cannot manage keys: the routes admit sessions only.
        let r = call(
            &app,
            Method::POST,
            "/auth/api-keys",
            &[("x-sentri-key", &key)],
            Some(json!({"name": "n"})),
        )
        .await;
        expect(&r, StatusCode::FORBIDDEN, "CREDENTIAL_NOT_ADMITTED", db);
        let r = with_key(&app, "/auth/api-keys", &key).await;
        expect(&r, StatusCode::FORBIDDEN, "CREDENTIAL_NOT_ADMITTED", db);

        // Another user sees none of dan's keys; an admin does, and revokes them.
        let (eve, _) = session(&app, "eve", PW).await;
        let path = format!("/auth/api-keys/{id}");
        for method in [Method::GET, Method::DELETE] {
            let r = with_session(&app, method, &path, &eve).await;
            expect(&r, StatusCode::NOT_FOUND, "API_KEY_NOT_FOUND", db);
        }
        let dan_id = with_key(&app, "/api/me", &key).await.body["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let theirs = format!("/auth/users/{dan_id}/api-keys");
        expect(
            &with_session(&app, Method::GET, &theirs, &eve).await,
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            db,
        );
        let r = register(&app, "root", PW).await;
        let root_id = r.body["data"]["user"]["id"].as_str().unwrap().to_owned();
        auth.assign_roles(&root_id, &["admin".into()])
            .await
            .unwrap();
        let (admin, _) = {
            let r = crate::support::http::login(&app, "root", PW).await;
            (
                r.body["data"]["accessToken"].as_str().unwrap().to_owned(),
                (),
            )
        };
        let r = with_session(&app, Method::GET, &theirs, &admin).await;
        assert_eq!(r.body["data"]["apiKeys"][0]["id"], id.as_str(), "{db}");
        // An admin's key with the admin role passes authorize(["admin"]).
        let (admin_key, _) = new_key(&app, &admin, json!({"name": "a", "roles": ["admin"]})).await;
        assert_eq!(
            with_key(&app, "/api/admin", &admin_key).await.status,
            StatusCode::OK,
            "{db}"
        );
        let r = with_session(&app, Method::DELETE, &format!("{theirs}/{id}"), &admin).await;
        assert_eq!(r.status, StatusCode::OK, "{db}: {:?}", r.body);
        expect(
            &with_key(&app, "/api/me", &key).await,
            StatusCode::UNAUTHORIZED,
            "API_KEY_INVALID",
            db,
        );
        t.cleanup().await;
    }
}

fn trials() -> usize {
    std::env::var("SENTRI_RACE_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// Invariant: once `DELETE /api-keys/{id}` has answered, no request of this process
/// authenticates with that key, however many are in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_request_passes_after_the_revocation_answered() {
    for t in databases("api_keys::race").await {
        let db = t.name;
        let (_auth, app) =
            server(config(t.db.clone()).with(keys().cache_ttl(Duration::from_secs(60)))).await;
        let (access, _) = session(&app, "fay", PW).await;
        let violations = Arc::new(AtomicUsize::new(0));
        for trial in 0..trials() {
            let (key, id) = new_key(&app, &access, json!({"name": format!("r{trial}")})).await;
            assert_eq!(with_key(&app, "/api/me", &key).await.status, StatusCode::OK);
            let done = Arc::new(AtomicBool::new(false));
            let mut tasks = Vec::new();
            for _ in 0..6 {
                let (app, key, done, violations) =
                    (app.clone(), key.clone(), done.clone(), violations.clone());
                tasks.push(tokio::spawn(async move {
                    for _ in 0..15 {
                        let after = done.load(Ordering::SeqCst);
                        let r = with_key(&app, "/api/me", &key).await;
                        if after && r.status == StatusCode::OK {
                            violations.fetch_add(1, Ordering::SeqCst);
                        }
                        tokio::task::yield_now().await;
                    }
                }));
            }
            let r = with_session(
                &app,
                Method::DELETE,
                &format!("/auth/api-keys/{id}"),
                &access,
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{db}");
            done.store(true, Ordering::SeqCst);
            for task in tasks {
                task.await.unwrap();
            }
        }
        assert_eq!(
            violations.load(Ordering::SeqCst),
            0,
            "{db}: a revoked key passed"
        );
        t.cleanup().await;
    }
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn revoked_on_one_instance_refused_on_the_other() {
    let Some(redis) = crate::support::common::redis_url("api_keys::redis") else {
        return;
    };
    for t in databases("api_keys::redis").await {
        let db = t.name;
        // A long cache TTL: only the broadcast can make B refuse the key quickly.
        let cfg = |db| {
            config(db)
                .redis_url(redis.clone())
                .with(keys().cache_ttl(Duration::from_secs(60)))
        };
        let (_a, app_a) = server(cfg(t.db.clone())).await;
        let (_b, app_b) = server(cfg(t.db.clone())).await;
        tokio::time::sleep(Duration::from_millis(300)).await; // subscribers connect
        let (access, _) = session(&app_a, "gus", PW).await;
        let (key, id) = new_key(&app_a, &access, json!({"name": "r"})).await;
        assert_eq!(
            with_key(&app_b, "/api/me", &key).await.status,
            StatusCode::OK
        );
        let r = with_session(
            &app_a,
            Method::DELETE,
            &format!("/auth/api-keys/{id}"),
            &access,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        let mut refused = false;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if with_key(&app_b, "/api/me", &key).await.status == StatusCode::UNAUTHORIZED {
                refused = true;
                break;
            }
        }
        assert!(
            refused,
            "{db}: B still accepts the key a second after A revoked it"
        );
        t.cleanup().await;
    }
}

#[tokio::test]
async fn the_registration_key_is_a_different_thing() {
    let t = databases("api_keys::registration").await.remove(0);
    let registration = "registration-key-0123456789";
    let (_auth, app) = server(config(t.db.clone()).api_key(registration).with(keys())).await;
    let reg = |key: &'static str, who: &'static str| {
        let app = app.clone();
        async move {
            call(
                &app,
                Method::POST,
                "/auth/register",
                &[("x-api-key", key)],
                Some(json!({"identifier": who, "password": PW})),
            )
            .await
        }
    };
    assert_eq!(reg(registration, "hal").await.status, StatusCode::CREATED);
    expect(
        &reg("wrong-key-0123456789", "ida").await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "wrong",
    );
    let access = crate::support::http::login(&app, "hal", PW).await.body["data"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let (key, _) = new_key(&app, &access, json!({"name": "k"})).await;
    // An API key is not the registration key, and X-Api-Key is not the API key header.
    let r = call(
        &app,
        Method::POST,
        "/auth/register",
        &[("x-api-key", &key)],
        Some(json!({"identifier": "joe", "password": PW})),
    )
    .await;
    expect(
        &r,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "api key on /register",
    );
    let r = call(&app, Method::GET, "/api/me", &[("x-api-key", &key)], None).await;
    expect(
        &r,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "x-api-key on a protected route",
    );
    t.cleanup().await;
}

/// Collects every event.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<Arc<AuthEvent>>>>);

impl EventSink for Events {
    fn handle(&self, event: Arc<AuthEvent>) -> sentri::core::BoxFuture<'static, ()> {
        self.0.lock().unwrap().push(event);
        Box::pin(async {})
    }
}

#[test]
fn the_secret_is_in_no_event_log_or_debug_output() {
    use crate::secrets::{CAPTURING, capture};
    let buf = capture();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let t = databases("api_keys::secrets").await.remove(0);
        let events = Events::default();
        let (auth, app) =
            server(config(t.db.clone()).event_sink(events.clone()).with(keys())).await;
        let (access, _) = session(&app, "kim", PW).await;
        CAPTURING.store(true, Ordering::Relaxed);
        let (key, id) = new_key(&app, &access, json!({"name": "k"})).await;
        with_key(&app, "/api/me", &key).await;
        with_key(&app, "/api/me", &key[..key.len() - 1]).await;
        with_session(
            &app,
            Method::DELETE,
            &format!("/auth/api-keys/{id}"),
            &access,
        )
        .await;
        with_key(&app, "/api/me", &key).await;
        tokio::time::sleep(Duration::from_millis(200)).await; // the event task drains
        CAPTURING.store(false, Ordering::Relaxed);
        let body = &key[3..];
        let log = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
        assert!(!log.contains(body), "the key is in the logs");
        let seen = events.0.lock().unwrap().clone();
        let kinds: Vec<&str> = seen.iter().map(|e| e.kind.as_str()).collect();
        for kind in ["api_key_created", "api_key_revoked", "api_key_rejected"] {
            assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
        }
        for e in &seen {
            assert!(!format!("{e:?}").contains(body), "the key is in an event");
        }
        assert!(
            seen.iter()
                .any(|e| e.key_id.as_deref() == Some(id.as_str()))
        );
        assert!(!format!("{auth:?} {:?}", keys()).contains(body));
        t.cleanup().await;
    });
}
