//! Server-mode services as plain Rust, on every configured database.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sentri::db::Database;
use sentri::token::SigningKey;
use sentri::{CookieConfig, Hooks, SameSite};
use sentri::{ErrorCode, ServerConfig, SessionMeta, create_auth};

use crate::support::db::databases;
use crate::support::services::{SECRET, auth, config, creds, reg};

fn code(err: &sentri::SentriError) -> &str {
    err.code().as_str()
}

#[tokio::test]
async fn invalid_configuration_fails_at_creation() {
    let db = Database::connect("sqlite::memory:").await.unwrap();
    let key = || SigningKey::hs256(SECRET).unwrap();
    let cases: Vec<(&str, ServerConfig)> = vec![
        (
            "empty roles",
            ServerConfig::new(db.clone(), key(), Vec::<String>::new()),
        ),
        (
            "zero access ttl",
            config(db.clone()).access_expires_in(0i64),
        ),
        (
            "negative refresh ttl",
            config(db.clone()).refresh_expires_in(-5i64),
        ),
        ("bad ttl text", config(db.clone()).access_expires_in("soon")),
        ("cost 3", config(db.clone()).salt_rounds(3)),
        ("cost 32", config(db.clone()).salt_rounds(32)),
        (
            "SameSite=None without Secure",
            config(db.clone()).cookie(Some(CookieConfig {
                same_site: SameSite::None,
                secure: false,
                ..CookieConfig::default()
            })),
        ),
        (
            "public role not valid",
            config(db.clone()).public_roles(["root"]),
        ),
    ];
    for (name, cfg) in cases {
        let err = create_auth(cfg).expect_err(name);
        assert_eq!(code(&err), "CONFIGURATION_ERROR", "{name}");
        assert_eq!(err.status().as_u16(), 500, "{name}");
    }
    let short = SigningKey::hs256(b"too short").unwrap_err();
    assert_eq!(code(&short), "CONFIGURATION_ERROR");
    // Debug never shows secrets.
    let cfg = config(db.clone()).api_key("super-secret-api-key-123");
    let dbg = format!("{cfg:?}");
    assert!(!dbg.contains("super-secret-api-key-123"), "{dbg}");
    assert!(!dbg.contains("test-secret"), "{dbg}");
}

#[tokio::test]
async fn register_validates_and_assigns_roles() {
    for t in databases("services::register").await {
        let auth = auth(t.db.clone());
        let user = auth
            .register(reg("  Alice@Example.COM ", "correct horse"))
            .await
            .unwrap();
        assert_eq!(user.identifier, "alice@example.com", "{}", t.name);
        assert_eq!(user.roles, vec!["user".to_string()]);
        uuid::Uuid::parse_str(&user.id).unwrap();

        let dup = auth
            .register(reg("alice@example.com", "another pass"))
            .await
            .unwrap_err();
        assert_eq!(code(&dup), "USER_ALREADY_EXISTS", "{}", t.name);
        assert_eq!(dup.status().as_u16(), 409);

        for (id, pw, expect) in [
            ("", "password1", "VALIDATION_ERROR"),
            ("   ", "password1", "VALIDATION_ERROR"),
            ("nul\u{0}byte", "password1", "VALIDATION_ERROR"),
            ("ctl\u{7}", "password1", "VALIDATION_ERROR"),
            (&"x".repeat(321), "password1", "VALIDATION_ERROR"),
            ("short@pw", "1234567", "VALIDATION_ERROR"),
            ("long@pw", &"p".repeat(1025), "VALIDATION_ERROR"),
        ] {
            let err = auth.register(reg(id, pw)).await.unwrap_err();
            assert_eq!(code(&err), expect, "{} {id:?}", t.name);
        }

        let mut bad_role = reg("bob", "password1");
        bad_role.roles = Some(vec!["superuser".into()]);
        assert_eq!(
            code(&auth.register(bad_role).await.unwrap_err()),
            "INVALID_ROLE"
        );

        // The public path may only ask for public roles; the API-key path may ask for any.
        let admin = Some(vec!["admin".to_string()]);
        let err = auth
            .check_registration_roles(admin.as_deref(), false)
            .unwrap_err();
        assert_eq!(code(&err), "FORBIDDEN");
        assert_eq!(err.status().as_u16(), 403);
        auth.check_registration_roles(admin.as_deref(), true)
            .unwrap();
        auth.check_registration_roles(Some(&["user".to_string()]), false)
            .unwrap();
        let mut trusted = reg("root@example.com", "password1");
        trusted.roles = admin;
        assert_eq!(
            auth.register(trusted).await.unwrap().roles,
            vec!["admin".to_string()]
        );

        // SQL metacharacters are stored verbatim.
        let evil = "robert'); drop table sentri_users; --";
        let u = auth.register(reg(evil, "password1")).await.unwrap();
        assert_eq!(u.identifier, evil);
        assert_eq!(auth.get_user(&u.id).await.unwrap().identifier, evil);
    }
}

#[tokio::test]
async fn long_passwords_are_not_truncated() {
    for t in databases("services::long_passwords").await {
        let auth = auth(t.db.clone());
        let prefix = "a".repeat(72);
        let p1 = format!("{prefix}-first");
        let p2 = format!("{prefix}-second");
        auth.register(reg("long@example.com", &p1)).await.unwrap();
        auth.login(creds("long@example.com", &p1), SessionMeta::default())
            .await
            .unwrap();
        let err = auth
            .login(creds("long@example.com", &p2), SessionMeta::default())
            .await
            .unwrap_err();
        assert_eq!(code(&err), "INVALID_CREDENTIALS", "{}", t.name);
        // Exactly 72 and 1024 bytes work.
        for (i, len) in [72usize, 73, 1024].into_iter().enumerate() {
            let pw = "z".repeat(len);
            let id = format!("len{i}@example.com");
            auth.register(reg(&id, &pw)).await.unwrap();
            auth.login(creds(&id, &pw), SessionMeta::default())
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn login_does_not_enumerate_users_and_fires_hooks() {
    for t in databases("services::login").await {
        let logins = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(AtomicUsize::new(0));
        let (l, f) = (logins.clone(), failures.clone());
        let hooks = Hooks::default()
            .on_login(move |_u| {
                let l = l.clone();
                async move {
                    l.fetch_add(1, Ordering::SeqCst);
                }
            })
            .on_failed_login(move |_id, _e| {
                let f = f.clone();
                async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    panic!("a failing hook must not fail the request");
                }
            })
            .on_logout(|_| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
            });
        let auth = create_auth(config(t.db.clone()).hooks(hooks)).unwrap();
        auth.register(reg("carol", "password1")).await.unwrap();

        let unknown = auth
            .login(creds("nobody", "password1"), SessionMeta::default())
            .await
            .unwrap_err();
        let wrong = auth
            .login(creds("carol", "wrong-password"), SessionMeta::default())
            .await
            .unwrap_err();
        assert_eq!(code(&unknown), "INVALID_CREDENTIALS");
        assert_eq!(unknown.status(), wrong.status());
        assert_eq!(unknown.code(), wrong.code());
        assert_eq!(unknown.message(), wrong.message());

        let res = auth
            .login(creds("CAROL", "password1"), SessionMeta::default())
            .await
            .unwrap();
        assert_eq!(res.user.identifier, "carol");
        let claims = auth.verify_access_token(&res.access_token).unwrap();
        assert_eq!(claims.sub, res.user.id);
        assert_eq!(claims.identifier, "carol");
        assert_eq!(claims.roles, vec!["user".to_string()]);
        assert_eq!(claims.sid, res.session_id);
        assert!(claims.exp > claims.iat && !claims.jti.is_empty());
        // A refresh token is never an access token, and the reverse.
        assert_eq!(
            code(&auth.verify_access_token(&res.refresh_token).unwrap_err()),
            "TOKEN_INVALID"
        );
        assert_eq!(
            code(&auth.verify_refresh_token(&res.access_token).unwrap_err()),
            "TOKEN_INVALID"
        );

        // logout's hook sleeps 10 s: logout must still return at once.
        tokio::time::timeout(
            Duration::from_secs(5),
            auth.logout(Some(&res.refresh_token)),
        )
        .await
        .expect("a slow hook must not stall logout")
        .unwrap();
        for _ in 0..100 {
            if logins.load(Ordering::SeqCst) == 1 && failures.load(Ordering::SeqCst) == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(logins.load(Ordering::SeqCst), 1, "{}", t.name);
        assert_eq!(failures.load(Ordering::SeqCst), 2, "{}", t.name);
    }
}

#[tokio::test]
async fn refresh_rotates_and_detects_reuse() {
    for t in databases("services::refresh").await {
        // Grace window 0: any reuse is theft.
        let auth = create_auth(config(t.db.clone()).refresh_grace(Duration::ZERO)).unwrap();
        auth.register(reg("dave", "password1")).await.unwrap();
        let first = auth
            .login(creds("dave", "password1"), SessionMeta::default())
            .await
            .unwrap();
        let second = auth
            .refresh(&first.refresh_token, SessionMeta::default())
            .await
            .unwrap();
        assert_eq!(second.session_id, first.session_id, "same family");
        assert_ne!(second.refresh_token, first.refresh_token);
        assert!(auth.is_session_active(&first.session_id).await.unwrap());

        // Reusing the rotated token revokes the whole family, newest token included.
        let err = auth
            .refresh(&first.refresh_token, SessionMeta::default())
            .await
            .unwrap_err();
        assert_eq!(code(&err), "TOKEN_INVALID", "{}", t.name);
        let err = auth
            .refresh(&second.refresh_token, SessionMeta::default())
            .await
            .unwrap_err();
        assert_eq!(code(&err), "TOKEN_INVALID");
        assert!(!auth.is_session_active(&first.session_id).await.unwrap());

        // Garbage and access tokens are refused.
        assert_eq!(
            code(
                &auth
                    .refresh("garbage", SessionMeta::default())
                    .await
                    .unwrap_err()
            ),
            "TOKEN_INVALID"
        );
        let third = auth
            .login(creds("dave", "password1"), SessionMeta::default())
            .await
            .unwrap();
        assert_eq!(
            code(
                &auth
                    .refresh(&third.access_token, SessionMeta::default())
                    .await
                    .unwrap_err()
            ),
            "TOKEN_INVALID"
        );
    }
}

#[tokio::test]
async fn refresh_grace_window_tolerates_racing_tabs() {
    for t in databases("services::refresh_grace").await {
        let auth =
            create_auth(config(t.db.clone()).refresh_grace(Duration::from_secs(10))).unwrap();
        auth.register(reg("erin", "password1")).await.unwrap();
        let first = auth
            .login(creds("erin", "password1"), SessionMeta::default())
            .await
            .unwrap();
        let a = auth
            .refresh(&first.refresh_token, SessionMeta::default())
            .await
            .unwrap();
        // A second tab presents the same (now rotated) token within the grace window.
        let b = auth
            .refresh(&first.refresh_token, SessionMeta::default())
            .await
            .unwrap();
        assert_eq!(a.session_id, b.session_id, "{}", t.name);
        // Both the newest token and the racing tab's token keep working.
        auth.refresh(&a.refresh_token, SessionMeta::default())
            .await
            .unwrap();
        auth.refresh(&b.refresh_token, SessionMeta::default())
            .await
            .unwrap();
        assert!(auth.is_session_active(&first.session_id).await.unwrap());

        // Concurrent refreshes of one token: all succeed inside the grace window.
        let c = auth
            .login(creds("erin", "password1"), SessionMeta::default())
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let auth = auth.clone();
            let token = c.refresh_token.clone();
            tasks.push(tokio::spawn(async move {
                auth.refresh(&token, SessionMeta::default()).await
            }));
        }
        for task in tasks {
            let res = task.await.unwrap();
            assert!(res.is_ok(), "{}: {:?}", t.name, res.err());
        }
    }
}

#[tokio::test]
async fn concurrent_reuse_outside_grace_leaves_no_live_session() {
    for t in databases("services::refresh_concurrent_reuse").await {
        let auth = create_auth(config(t.db.clone()).refresh_grace(Duration::ZERO)).unwrap();
        auth.register(reg("frank", "password1")).await.unwrap();
        let login = auth
            .login(creds("frank", "password1"), SessionMeta::default())
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let auth = auth.clone();
            let token = login.refresh_token.clone();
            tasks.push(tokio::spawn(async move {
                auth.refresh(&token, SessionMeta::default()).await
            }));
        }
        let mut ok = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(res) => ok.push(res),
                Err(e) => assert_eq!(code(&e), "TOKEN_INVALID", "{}", t.name),
            }
        }
        assert!(
            ok.len() <= 1,
            "{}: {} rotations succeeded",
            t.name,
            ok.len()
        );
        // With reuse detected by the losers, the family is gone: no token of it works.
        let sessions = auth
            .database()
            .list_user_sessions(&login.user.id)
            .await
            .unwrap();
        assert!(
            sessions.len() <= 1,
            "{}: {} live rows",
            t.name,
            sessions.len()
        );
        for res in ok {
            let again = auth
                .refresh(&res.refresh_token, SessionMeta::default())
                .await;
            assert!(again.is_err(), "{}: the family must be revoked", t.name);
        }
    }
}

#[tokio::test]
async fn logout_change_password_identifier_and_roles() {
    for t in databases("services::account").await {
        let auth = auth(t.db.clone());
        let user = auth.register(reg("gina", "password1")).await.unwrap();
        let s1 = auth
            .login(creds("gina", "password1"), SessionMeta::default())
            .await
            .unwrap();
        let s2 = auth
            .login(creds("gina", "password1"), SessionMeta::default())
            .await
            .unwrap();

        auth.logout(Some(&s1.refresh_token)).await.unwrap();
        assert!(
            !auth.is_session_active(&s1.session_id).await.unwrap(),
            "{}",
            t.name
        );
        assert!(auth.is_session_active(&s2.session_id).await.unwrap());
        // Idempotent: again, missing, garbage.
        auth.logout(Some(&s1.refresh_token)).await.unwrap();
        auth.logout(None).await.unwrap();
        auth.logout(Some("not-a-token")).await.unwrap();

        auth.logout_all(&user.id).await.unwrap();
        assert!(!auth.is_session_active(&s2.session_id).await.unwrap());

        let s3 = auth
            .login(creds("gina", "password1"), SessionMeta::default())
            .await
            .unwrap();
        let err = auth
            .change_password(&user.id, "wrong-pass", "newpassword")
            .await
            .unwrap_err();
        assert_eq!(code(&err), "INVALID_CREDENTIALS");
        let err = auth
            .change_password(&user.id, "password1", "short")
            .await
            .unwrap_err();
        assert_eq!(code(&err), "VALIDATION_ERROR");
        auth.change_password(&user.id, "password1", "newpassword")
            .await
            .unwrap();
        assert!(
            !auth.is_session_active(&s3.session_id).await.unwrap(),
            "sessions revoked"
        );
        assert_eq!(
            code(
                &auth
                    .refresh(&s3.refresh_token, SessionMeta::default())
                    .await
                    .unwrap_err()
            ),
            "TOKEN_INVALID"
        );
        assert_eq!(
            code(
                &auth
                    .login(creds("gina", "password1"), SessionMeta::default())
                    .await
                    .unwrap_err()
            ),
            "INVALID_CREDENTIALS"
        );
        auth.login(creds("gina", "newpassword"), SessionMeta::default())
            .await
            .unwrap();

        auth.register(reg("taken", "password1")).await.unwrap();
        let err = auth
            .change_identifier(&user.id, "TAKEN", "newpassword")
            .await
            .unwrap_err();
        assert_eq!(code(&err), "USER_ALREADY_EXISTS");
        let renamed = auth
            .change_identifier(&user.id, "Gina2", "newpassword")
            .await
            .unwrap();
        assert_eq!(renamed.identifier, "gina2");

        let err = auth
            .assign_roles(&user.id, &["nope".into()])
            .await
            .unwrap_err();
        assert_eq!(code(&err), "INVALID_ROLE");
        let updated = auth
            .assign_roles(&user.id, &["editor".into(), "user".into()])
            .await
            .unwrap();
        assert_eq!(
            updated.roles,
            vec!["user".to_string(), "editor".to_string()]
        );
        let missing = uuid::Uuid::now_v7().to_string();
        assert_eq!(
            code(
                &auth
                    .assign_roles(&missing, &["user".into()])
                    .await
                    .unwrap_err()
            ),
            "USER_NOT_FOUND"
        );
        assert_eq!(
            code(&auth.get_user("not-a-uuid").await.unwrap_err()),
            "USER_NOT_FOUND"
        );
        assert!(auth.get_user(&user.id).await.is_ok());
        let _ = ErrorCode::UserNotFound;
    }
}
