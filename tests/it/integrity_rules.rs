//! Session-integrity rules over HTTP on every database: a family never forks (cookie
//! and body transports), sessions end, every refresh path runs the app's revocation
//! hook, safe defaults (roles, cookies, CSRF, no-store, object bodies, re-auth for
//! identifier changes) and the purge.

use std::time::Duration;

use axum::Router;
use axum::http::{Method, StatusCode};
use sentri::clock::{Clock, ManualClock};
use sentri::{CookieConfig, ServerAuth, ServerConfig};
use serde_json::json;

use crate::support::db::databases;
use crate::support::http::{Reply, app, bearer, call, expect, invalid, login, register};
use crate::support::services::config;

/// The `jti` of a refresh token (which token of the chain it is).
fn jti(auth: &ServerAuth, token: &str) -> String {
    auth.verify_refresh_token(token).unwrap().jti
}

/// How a test client carries its refresh token.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Transport {
    Cookie,
    Body,
}

fn configured(cfg: ServerConfig, transport: Transport) -> ServerConfig {
    match transport {
        Transport::Cookie => cfg,
        Transport::Body => cfg.cookie(None).access_cookie(None),
    }
}

async fn refresh(app: &Router, transport: Transport, token: &str) -> Reply {
    match transport {
        Transport::Cookie => {
            let cookie = format!("refresh_token={token}");
            call(
                app,
                Method::POST,
                "/auth/refresh",
                &[("cookie", &cookie)],
                None,
            )
            .await
        }
        Transport::Body => {
            let body = json!({ "refreshToken": token });
            call(app, Method::POST, "/auth/refresh", &[], Some(body)).await
        }
    }
}

/// The refresh token a reply hands out (cookie or body), if any; panics on a cookie
/// that clears the refresh token.
fn handed_out(r: &Reply, transport: Transport) -> Option<String> {
    match transport {
        Transport::Cookie => {
            let set = r.cookie("refresh_token")?;
            assert!(
                !set.is_empty(),
                "a refresh cookie was cleared: {:?}",
                r.cookies()
            );
            Some(set)
        }
        Transport::Body => r.body["data"]["refreshToken"].as_str().map(str::to_owned),
    }
}

async fn first_token(app: &Router, transport: Transport, id: &str) -> String {
    assert_eq!(
        register(app, id, "password1").await.status,
        StatusCode::CREATED
    );
    let r = login(app, id, "password1").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    handed_out(&r, transport).expect("a refresh token")
}

#[tokio::test]
async fn a_family_never_forks_in_either_transport() {
    for t in databases("integrity_rules::fork").await {
        for transport in [Transport::Cookie, Transport::Body] {
            let what = format!("{}/{transport:?}", t.name);
            let clock = ManualClock::starting_now();
            let cfg = config(t.db.clone()).clock(clock.clone());
            let auth = sentri::create_auth(configured(cfg, transport)).unwrap();
            let app = app(&auth);
            let a = first_token(&app, transport, &format!("fork{transport:?}")).await;

            let r = refresh(&app, transport, &a).await;
            assert_eq!(r.status, StatusCode::OK, "{what}: {:?}", r.body);
            let b = handed_out(&r, transport).unwrap();
            // A second tab / a retry after a lost response, within the grace window:
            // the same successor, never a second live chain.
            for _ in 0..3 {
                let again = refresh(&app, transport, &a).await;
                assert_eq!(again.status, StatusCode::OK, "{what}: {:?}", again.body);
                let b2 = handed_out(&again, transport).expect("the successor again");
                assert_eq!(jti(&auth, &b2), jti(&auth, &b), "{what}: same successor");
                assert!(again.body["data"]["accessToken"].is_string());
            }
            let user_id = auth.verify_refresh_token(&b).unwrap().sub;
            let rows = auth.database().list_user_sessions(&user_id).await.unwrap();
            assert_eq!(rows.len(), 1, "{what}: one row, one chain");

            // After the window only the chain through B continues …
            clock.advance(Duration::from_secs(11));
            let r = refresh(&app, transport, &b).await;
            assert_eq!(r.status, StatusCode::OK, "{what}: {:?}", r.body);
            let c = handed_out(&r, transport).unwrap();
            // … and A again (theft) revokes everything.
            invalid(
                &refresh(&app, transport, &a).await,
                &format!("{what}: A after window"),
            );
            invalid(
                &refresh(&app, transport, &c).await,
                &format!("{what}: C after theft"),
            );
            let access = r.body["data"]["accessToken"].as_str().unwrap();
            invalid(
                &call(
                    &app,
                    Method::GET,
                    "/api/profile",
                    &[("authorization", &bearer(access))],
                    None,
                )
                .await,
                &format!("{what}: access token after theft"),
            );
        }
        t.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_tabs_get_one_successor() {
    for t in databases("integrity_rules::tabs").await {
        let auth = sentri::create_auth(config(t.db.clone())).unwrap();
        let app = app(&auth);
        let a = first_token(&app, Transport::Cookie, "tabs").await;
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (app, a) = (app.clone(), a.clone());
                tokio::spawn(async move { refresh(&app, Transport::Cookie, &a).await })
            })
            .collect();
        let mut successors = std::collections::HashSet::new();
        for task in tasks {
            let r = task.await.unwrap();
            assert_eq!(r.status, StatusCode::OK, "{}: {:?}", t.name, r.body);
            successors.insert(jti(&auth, &handed_out(&r, Transport::Cookie).unwrap()));
        }
        assert_eq!(
            successors.len(),
            1,
            "{}: one successor for every tab",
            t.name
        );
        t.cleanup().await;
    }
}

#[tokio::test]
async fn sessions_end_at_their_absolute_lifetime() {
    for t in databases("integrity_rules::lifetime").await {
        let clock = ManualClock::starting_now();
        let cfg = config(t.db.clone())
            .clock(clock.clone())
            .refresh_expires_in("1h")
            .session_max_lifetime("2h");
        let auth = sentri::create_auth(configured(cfg, Transport::Body)).unwrap();
        let app = app(&auth);
        let mut token = first_token(&app, Transport::Body, "lifetime").await;
        for step in 0..3 {
            clock.advance(Duration::from_secs(35 * 60));
            let r = refresh(&app, Transport::Body, &token).await;
            assert_eq!(
                r.status,
                StatusCode::OK,
                "{} step {step}: {:?}",
                t.name,
                r.body
            );
            token = handed_out(&r, Transport::Body).unwrap();
        }
        // 2 h after login: however recently it slid, the session is over.
        clock.advance(Duration::from_secs(20 * 60));
        let r = refresh(&app, Transport::Body, &token).await;
        expect(&r, StatusCode::UNAUTHORIZED, "TOKEN_EXPIRED", t.name);
        // The store says so at once (protect()'s cache trusts it at most session_cache_ttl
        // of real time longer).
        let sid = auth.verify_refresh_token(&token).unwrap().sid;
        let live = auth
            .database()
            .family_active(&sid, clock.now_ms())
            .await
            .unwrap();
        assert!(!live, "{}", t.name);
        t.cleanup().await;
    }
}

#[tokio::test]
async fn expired_sessions_are_purged() {
    for t in databases("integrity_rules::purge").await {
        let clock = ManualClock::starting_now();
        let cfg = config(t.db.clone())
            .clock(clock.clone())
            .refresh_expires_in("1h");
        let auth = sentri::create_auth(cfg).unwrap();
        let app = app(&auth);
        first_token(&app, Transport::Cookie, "old").await;
        let user = auth
            .database()
            .find_user_by_identifier("old")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            auth.purge_expired_sessions().await.unwrap(),
            0,
            "{}: nothing ended",
            t.name
        );
        clock.advance(Duration::from_secs(3601));
        first_token(&app, Transport::Cookie, "new").await;
        // The ended family and its session row go; the new one stays.
        assert_eq!(
            auth.purge_expired_sessions().await.unwrap(),
            2,
            "{}",
            t.name
        );
        assert!(
            auth.database()
                .list_user_sessions(&user.id)
                .await
                .unwrap()
                .is_empty()
        );
        let fresh = auth
            .database()
            .find_user_by_identifier("new")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            auth.database()
                .list_user_sessions(&fresh.id)
                .await
                .unwrap()
                .len(),
            1
        );
        t.cleanup().await;
    }
}

#[tokio::test]
async fn every_refresh_path_runs_the_revocation_hook() {
    for t in databases("integrity_rules::hook").await {
        let banned: std::sync::Arc<std::sync::Mutex<Option<String>>> = Default::default();
        let b = banned.clone();
        let mut cfg = config(t.db.clone())
            .access_expires_in(1i64)
            .is_token_revoked(move |sid| {
                let hit = b.lock().unwrap().as_deref() == Some(sid.as_str());
                async move { hit }
            });
        cfg.leeway = Duration::ZERO;
        let auth = sentri::create_auth(cfg).unwrap();
        let app = app(&auth);
        let refresh_token = first_token(&app, Transport::Cookie, "hooked").await;
        *banned.lock().unwrap() = Some(auth.verify_refresh_token(&refresh_token).unwrap().sid);
        let cookie = format!("refresh_token={refresh_token}");
        // Silent refresh (only the refresh cookie on a protected route).
        let r = call(
            &app,
            Method::GET,
            "/api/profile",
            &[("cookie", &cookie)],
            None,
        )
        .await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{}: {:?}",
            t.name,
            r.body
        );
        assert!(
            r.cookie("refresh_token").is_none_or(|v| v.is_empty()),
            "{}: no new pair",
            t.name
        );
        // POST /refresh.
        invalid(
            &refresh(&app, Transport::Cookie, &refresh_token).await,
            t.name,
        );
        // The token still works once the app lifts the revocation: nothing rotated.
        *banned.lock().unwrap() = None;
        let r = refresh(&app, Transport::Cookie, &refresh_token).await;
        assert_eq!(r.status, StatusCode::OK, "{}: {:?}", t.name, r.body);
        t.cleanup().await;
    }
}

#[tokio::test]
async fn public_registration_never_grants_the_admin_role_by_default() {
    for t in databases("integrity_rules::roles").await {
        let cfg = ServerConfig::new(
            t.db.clone(),
            sentri::token::SigningKey::hs256(crate::support::services::SECRET).unwrap(),
            ["admin", "user"],
        )
        .salt_rounds(4);
        let auth = sentri::create_auth(cfg).unwrap();
        assert_eq!(auth.public_roles(), ["user".to_owned()]);
        let app = app(&auth);
        let r = register(&app, "mallory", "password1").await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        assert_eq!(
            r.body["data"]["user"]["roles"],
            json!(["user"]),
            "{}",
            t.name
        );
        let r = call(
            &app,
            Method::POST,
            "/auth/register",
            &[],
            Some(json!({"identifier": "mallory2", "password": "password1", "roles": ["admin"]})),
        )
        .await;
        expect(&r, StatusCode::FORBIDDEN, "FORBIDDEN", t.name);
        t.cleanup().await;
    }
    // Only the admin role: public registrations get no role at all.
    let db = sentri::db::Database::connect("sqlite::memory:")
        .await
        .unwrap();
    let only_admin = ServerConfig::new(
        db,
        sentri::token::SigningKey::hs256(crate::support::services::SECRET).unwrap(),
        ["admin"],
    );
    assert!(
        sentri::create_auth(only_admin)
            .unwrap()
            .public_roles()
            .is_empty()
    );
}

/// A cookie-authenticated unsafe request: `POST /auth/logout-all` with the access cookie.
async fn cookie_post(app: &Router, access: &str, extra: &[(&str, &str)]) -> Reply {
    let cookie = format!("access_token={access}");
    let mut headers = vec![("cookie", cookie.as_str()), ("host", "api.example.com")];
    headers.extend_from_slice(extra);
    call(app, Method::POST, "/auth/logout-all", &headers, None).await
}

#[tokio::test]
async fn csrf_matrix_for_cookie_and_bearer_requests() {
    for t in databases("integrity_rules::csrf").await {
        let cfg = config(t.db.clone()).trusted_origins(["https://app.example.com"]);
        let auth = sentri::create_auth(cfg).unwrap();
        let app = app(&auth);
        assert_eq!(
            register(&app, "csrf", "password1").await.status,
            StatusCode::CREATED
        );
        let fresh = || async {
            login(&app, "csrf", "password1")
                .await
                .cookie("access_token")
                .unwrap()
        };
        let refused: [&[(&str, &str)]; 4] = [
            &[("sec-fetch-site", "cross-site")],
            &[("sec-fetch-site", "same-site")],
            &[("origin", "https://evil.example.com")],
            &[("origin", "null")],
        ];
        for headers in refused {
            let r = cookie_post(&app, &fresh().await, headers).await;
            expect(
                &r,
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                &format!("{}: {headers:?}", t.name),
            );
        }
        let allowed: [&[(&str, &str)]; 5] = [
            &[],
            &[("sec-fetch-site", "same-origin")],
            &[("sec-fetch-site", "none")],
            &[("origin", "https://api.example.com")],
            &[
                ("origin", "https://app.example.com"),
                ("sec-fetch-site", "same-site"),
            ],
        ];
        for headers in allowed {
            let r = cookie_post(&app, &fresh().await, headers).await;
            assert_eq!(
                r.status,
                StatusCode::OK,
                "{}: {headers:?}: {:?}",
                t.name,
                r.body
            );
        }
        // Bearer-authenticated requests are not affected.
        let access = fresh().await;
        let auth_header = bearer(&access);
        let r = call(
            &app,
            Method::POST,
            "/auth/logout-all",
            &[
                ("authorization", &auth_header),
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://evil.example.com"),
            ],
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}: bearer: {:?}", t.name, r.body);
        // The refresh cookie on /refresh and /logout is checked the same way.
        let refresh_token = login(&app, "csrf", "password1")
            .await
            .cookie("refresh_token")
            .unwrap();
        let cookie = format!("refresh_token={refresh_token}");
        for path in ["/auth/refresh", "/auth/logout"] {
            let r = call(
                &app,
                Method::POST,
                path,
                &[("cookie", &cookie), ("sec-fetch-site", "cross-site")],
                None,
            )
            .await;
            expect(
                &r,
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                &format!("{}: {path}", t.name),
            );
        }
        // A safe method with the access cookie is not a CSRF concern.
        let r = call(
            &app,
            Method::GET,
            "/api/profile",
            &[
                ("cookie", &format!("access_token={}", fresh().await)),
                ("sec-fetch-site", "cross-site"),
            ],
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}: GET: {:?}", t.name, r.body);
        t.cleanup().await;
    }
}

#[tokio::test]
async fn token_responses_are_not_stored_and_bodies_must_be_objects() {
    for t in databases("integrity_rules::no_store").await {
        let auth = sentri::create_auth(config(t.db.clone())).unwrap();
        let app = app(&auth);
        let a = first_token(&app, Transport::Cookie, "nostore").await;
        let r = login(&app, "nostore", "password1").await;
        let r2 = refresh(&app, Transport::Cookie, &a).await;
        for (what, r) in [("login", &r), ("refresh", &r2)] {
            assert_eq!(r.status, StatusCode::OK, "{what}");
            assert_eq!(r.headers["cache-control"], "no-store", "{}: {what}", t.name);
            assert_eq!(r.headers["pragma"], "no-cache", "{}: {what}", t.name);
        }
        for path in ["/auth/login", "/auth/register"] {
            let r = call(
                &app,
                Method::POST,
                path,
                &[],
                Some(json!(["nostore", "password1"])),
            )
            .await;
            expect(&r, StatusCode::BAD_REQUEST, "VALIDATION_ERROR", path);
        }
        t.cleanup().await;
    }
}

#[tokio::test]
async fn changing_the_identifier_requires_the_current_password() {
    for t in databases("integrity_rules::change_identifier").await {
        let auth = sentri::create_auth(configured(config(t.db.clone()), Transport::Body)).unwrap();
        let app = app(&auth);
        register(&app, "ivan", "password1").await;
        let r = login(&app, "ivan", "password1").await;
        let auth_header = bearer(r.body["data"]["accessToken"].as_str().unwrap());
        let headers = [("authorization", auth_header.as_str())];
        let change = |body| {
            call(
                &app,
                Method::POST,
                "/auth/change-identifier",
                &headers,
                Some(body),
            )
        };
        let r = change(json!({"identifier": "ivan2"})).await;
        expect(
            &r,
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "no password",
        );
        let r = change(json!({"identifier": "ivan2", "currentPassword": "wrong-password"})).await;
        expect(
            &r,
            StatusCode::UNAUTHORIZED,
            "INVALID_CREDENTIALS",
            "wrong password",
        );
        let r = change(json!({"identifier": "ivan2", "currentPassword": "password1"})).await;
        assert_eq!(r.status, StatusCode::OK, "{}: {:?}", t.name, r.body);
        assert_eq!(r.body["data"]["user"]["identifier"], "ivan2");
        t.cleanup().await;
    }
}

#[tokio::test]
async fn durations_and_cookies_are_checked_at_start_up() {
    let t = databases("integrity_rules::start_up").await.remove(0);
    let db = t.db.clone();
    let cfg = || config(db.clone());
    let bad: Vec<(&str, ServerConfig)> = vec![
        ("grace", cfg().refresh_grace(Duration::from_secs(61))),
        ("cache", cfg().session_cache_ttl(Duration::from_secs(61))),
        ("access", cfg().access_expires_in("2d")),
        ("refresh", cfg().refresh_expires_in("366d")),
        ("lifetime", cfg().session_max_lifetime("366d")),
        ("purge", cfg().purge_interval(Some(Duration::from_secs(1)))),
        ("origin", cfg().trusted_origins(["app.example.com"])),
        (
            "__Host- without secure",
            cfg().cookie(Some(CookieConfig {
                secure: false,
                ..CookieConfig::default().host_prefixed()
            })),
        ),
        (
            "__Host- with a domain",
            cfg().cookie(Some(CookieConfig {
                domain: Some("example.com".into()),
                ..CookieConfig::default().host_prefixed()
            })),
        ),
    ];
    for (what, c) in bad {
        let err = sentri::create_auth(c).expect_err(what);
        assert_eq!(err.code().as_str(), "CONFIGURATION_ERROR", "{what}");
    }
    // The defaults: Secure cookies; a __Host- cookie is accepted and used.
    assert!(CookieConfig::default().secure && sentri::AccessCookieConfig::default().secure);
    let auth =
        sentri::create_auth(cfg().cookie(Some(CookieConfig::default().host_prefixed()))).unwrap();
    let app = app(&auth);
    register(&app, "host", "password1").await;
    let r = login(&app, "host", "password1").await;
    let set = r
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("__Host-refresh_token="))
        .expect("__Host- cookie");
    assert!(
        set.contains("Secure") && set.contains("Path=/") && !set.contains("Domain"),
        "{set}"
    );
    let token = r.cookie("__Host-refresh_token").unwrap();
    let cookie = format!("__Host-refresh_token={token}");
    let r = call(
        &app,
        Method::POST,
        "/auth/refresh",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

#[tokio::test]
async fn a_database_of_the_landed_schema_upgrades_in_place() {
    for t in databases("integrity_rules::upgrade").await {
        let auth = sentri::create_auth(configured(config(t.db.clone()), Transport::Body)).unwrap();
        let app = app(&auth);
        let token = first_token(&app, Transport::Body, "legacy").await;
        // Back to the landed (version 1) schema, with its users and sessions.
        t.raw("DROP TABLE sentri_session_families").await;
        t.raw("DROP TABLE sentri_schema_versions").await;
        t.raw("ALTER TABLE sentri_users DROP COLUMN email_verified_at")
            .await;
        t.raw("ALTER TABLE sentri_users DROP COLUMN email").await;
        // The landed roles: a JSON column, no catalogue, no version.
        for table in [
            "sentri_user_roles",
            "sentri_role_permissions",
            "sentri_roles",
        ] {
            t.raw(&format!("DROP TABLE {table}")).await;
        }
        t.raw("ALTER TABLE sentri_users DROP COLUMN authz_version")
            .await;
        t.raw("ALTER TABLE sentri_users ADD COLUMN roles TEXT")
            .await;
        t.raw(r#"UPDATE sentri_users SET roles = '["user"]'"#).await;
        t.raw("CREATE TABLE sentri_migrations (version BIGINT NOT NULL PRIMARY KEY, applied_at BIGINT NOT NULL)").await;
        t.raw("INSERT INTO sentri_migrations (version, applied_at) VALUES (1, 0)")
            .await;
        // A user stored by the landed code's rule (lower-casing keeps "ß").
        let hash = bcrypt::hash("password1", 4).unwrap();
        t.raw(&format!(
            "INSERT INTO sentri_users (id, identifier, password_hash, roles, created_at, updated_at) \
             VALUES ('{}', 'straße', '{hash}', '[\"user\",\"editor\"]', 0, 0)",
            uuid::Uuid::now_v7()
        ))
        .await;
        auth.migrate().await.unwrap();
        let applied = t.db.applied_migrations().await.unwrap();
        let expected = [
            ("identity", 1),
            ("identity-email", 1),
            ("identity-form", 2),
            ("identity-roles", 1),
            ("session", 1),
            ("session", 2),
            ("session-assurance", 1),
            ("session-workspace", 1),
        ];
        let expected: Vec<(String, i64)> = expected
            .iter()
            .map(|(c, v)| ((*c).to_owned(), *v))
            .collect();
        assert_eq!(applied, expected, "{}", t.name);
        let moved = t.db.find_user_by_identifier("strasse").await.unwrap();
        assert!(
            moved.is_some(),
            "{}: identifier in the new normal form",
            t.name
        );
        let moved = moved.unwrap();
        assert_eq!(moved.roles, ["user", "editor"], "{}: roles kept", t.name);
        let legacy = t.db.find_user_by_identifier("legacy").await.unwrap();
        assert_eq!(legacy.unwrap().roles, ["user"], "{}", t.name);
        assert_eq!(
            login(&app, "STRASSE", "password1").await.status,
            StatusCode::OK
        );
        let sid = auth.verify_refresh_token(&token).unwrap().sid;
        let family =
            t.db.find_family(&sid)
                .await
                .unwrap()
                .expect("backfilled family");
        assert!(family.revoked_at.is_none(), "{}", t.name);
        // The old session keeps working, and logout-all still ends it.
        let r = refresh(&app, Transport::Body, &token).await;
        assert_eq!(r.status, StatusCode::OK, "{}: {:?}", t.name, r.body);
        let next = handed_out(&r, Transport::Body).unwrap();
        auth.logout_all(&family.user_id).await.unwrap();
        invalid(&refresh(&app, Transport::Body, &next).await, t.name);
        t.cleanup().await;
    }
}

#[tokio::test]
async fn long_password_hashes_of_other_libraries_verify_and_upgrade_on_login() {
    for t in databases("integrity_rules::legacy_hash").await {
        let auth = sentri::create_auth(config(t.db.clone())).unwrap();
        let long = "x".repeat(72) + "-the-rest-that-other-libraries-dropped";
        let same_prefix = "x".repeat(72) + "-something-else";
        // What another bcrypt library stored: bcrypt over the first 72 bytes.
        let legacy = bcrypt::hash(&long, 4).unwrap();
        t.db.create_user(&sentri::identity::NewUser {
            identifier: "legacy",
            password_hash: &legacy,
            roles: &["user".to_owned()],
        })
        .await
        .unwrap();
        let creds = |pw: &str| sentri::LoginInput {
            identifier: "legacy".into(),
            password: pw.to_owned(),
        };
        auth.login(creds(&long), Default::default())
            .await
            .expect("verifies as before");
        let stored =
            t.db.find_user_by_identifier("legacy")
                .await
                .unwrap()
                .unwrap();
        assert!(
            stored.password_hash.starts_with("$sentri-sha256$"),
            "{}: upgraded",
            t.name
        );
        // Upgraded: every byte counts now.
        let err = auth
            .login(creds(&same_prefix), Default::default())
            .await
            .unwrap_err();
        assert_eq!(err.code().as_str(), "INVALID_CREDENTIALS", "{}", t.name);
        auth.login(creds(&long), Default::default())
            .await
            .expect("still the password");
        t.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_hashing_queue_sheds_logins_with_503_and_retry_after() {
    let t = databases("integrity_rules::shed").await.remove(0);
    // No waiting room: only one hash per core runs, the rest are shed at once.
    let cfg = config(t.db.clone()).salt_rounds(12).hash_queue_limit(0);
    let auth = sentri::create_auth(cfg).unwrap();
    let app = app(&auth);
    assert_eq!(
        register(&app, "busy", "password1").await.status,
        StatusCode::CREATED
    );
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { login(&app, "busy", "password1").await })
        })
        .collect();
    let (mut ok, mut shed) = (0, 0);
    for task in tasks {
        let r = task.await.unwrap();
        if r.status == StatusCode::OK {
            ok += 1;
        } else {
            expect(
                &r,
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
                "shed",
            );
            assert_eq!(r.headers["retry-after"], "1");
            shed += 1;
        }
    }
    assert!(ok >= 1 && shed >= 1, "ok {ok}, shed {shed}");
    t.cleanup().await;
}
