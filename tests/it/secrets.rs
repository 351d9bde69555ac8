//! Secrets never leave through logs, `Debug` or error messages; cookie attributes.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sentri::{AccessCookieConfig, CookieConfig, Hooks};
use sentri::{SameSite, create_auth};
use serde_json::json;
use tracing_subscriber::Layer as _;

use crate::support::db::database;
use crate::support::http::{app, bearer, call, login, profile_with, refresh_with, register};
use crate::support::services::{SECRET, config};

/// A `MakeWriter` into a shared buffer.
#[derive(Clone, Default)]
pub(crate) struct Buffer(pub(crate) Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Buffer {
        self.clone()
    }
}

fn jti_of(refresh: &str) -> String {
    let payload = refresh.split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

pub(crate) static CAPTURING: AtomicBool = AtomicBool::new(false);

/// Installs (once) a process-wide TRACE subscriber writing into a buffer while
/// `CAPTURING` is on. Process-wide because SQLite statements run (and log) on sqlx's
/// worker threads and bcrypt on the blocking pool; other tests running meanwhile only
/// add unrelated lines.
pub(crate) fn capture() -> Buffer {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    static BUF: std::sync::OnceLock<Buffer> = std::sync::OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Buffer::default();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(buf.clone())
            .with_ansi(false)
            .with_filter(tracing_subscriber::filter::dynamic_filter_fn(|_, _| {
                CAPTURING.load(Ordering::Relaxed)
            }));
        if tracing_subscriber::registry()
            .with(layer)
            .try_init()
            .is_err()
        {
            panic!("another global tracing subscriber is installed");
        }
        buf
    })
    .clone()
}

/// A full register/login/refresh/logout/change-password flow, with failures, logged at
/// TRACE on every database; the log must contain none of the secrets.
#[test]
fn no_secret_in_trace_logs() {
    let buf = capture();
    CAPTURING.store(true, Ordering::Relaxed);
    for kind in ["sqlite", "postgres", "mysql"] {
        flow_without_leaks(&buf, kind);
    }
    CAPTURING.store(false, Ordering::Relaxed);
}

fn flow_without_leaks(buf: &Buffer, kind: &str) {
    buf.0.lock().unwrap().clear();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let api_key = "the-api-key-0123456789";
    let password = "correct-horse-battery";
    let new_password = "tr0ub4dor-and-3";
    let mut secrets: Vec<(String, &str)> = vec![
        (password.to_owned(), "password"),
        (new_password.to_owned(), "new password"),
        (String::from_utf8(SECRET.to_vec()).unwrap(), "HMAC secret"),
        (api_key.to_owned(), "api key"),
    ];
    rt.block_on(async {
        let Some(t) = database(kind, "secrets::logs").await else {
            return;
        };
        let hooks = Hooks::default()
            .on_login(|_| async {})
            .on_failed_login(|_, _| async {})
            .on_logout(|_| async {});
        let auth = create_auth(config(t.db.clone()).api_key(api_key).hooks(hooks)).unwrap();
        let app = app(&auth);
        let r = call(
            &app,
            Method::POST,
            "/auth/register",
            &[("x-api-key", api_key)],
            Some(json!({"identifier": "sam", "password": password})),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED);
        let hash =
            t.db.find_user_by_identifier("sam")
                .await
                .unwrap()
                .unwrap()
                .password_hash;
        secrets.push((hash.clone(), "bcrypt hash"));
        // The salt+hash part alone, in case something prints it without the prefix.
        secrets.push((hash[hash.len() - 31..].to_owned(), "bcrypt digest"));
        assert_eq!(
            login(&app, "sam", "wrong-password-1").await.status,
            StatusCode::UNAUTHORIZED
        );
        let r = login(&app, "sam", password).await;
        let access = r.body["data"]["accessToken"].as_str().unwrap().to_owned();
        let refresh = r.cookie("refresh_token").unwrap();
        assert_eq!(profile_with(&app, &access).await.status, StatusCode::OK);
        let r = refresh_with(&app, &refresh).await;
        assert_eq!(r.status, StatusCode::OK);
        let access2 = r.body["data"]["accessToken"].as_str().unwrap().to_owned();
        let refresh2 = r.cookie("refresh_token").unwrap();
        // Reuse of the rotated token after the grace window would revoke; inside it,
        // a fresh pair. Either way it is logged without the token.
        let r = refresh_with(&app, &refresh).await;
        assert_eq!(r.status, StatusCode::OK);
        let refresh3 = r.cookie("refresh_token").unwrap();
        let r = call(
            &app,
            Method::POST,
            "/auth/change-password",
            &[("authorization", &bearer(&access2))],
            Some(json!({"currentPassword": password, "newPassword": new_password})),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(
            refresh_with(&app, &refresh2).await.status,
            StatusCode::UNAUTHORIZED
        );
        let r = login(&app, "sam", new_password).await;
        let refresh4 = r.cookie("refresh_token").unwrap();
        let r = call(
            &app,
            Method::POST,
            "/auth/logout",
            &[("cookie", &format!("refresh_token={refresh4}"))],
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        // A registration that fails in the store path (duplicate) and a bad API key.
        let r = call(
            &app,
            Method::POST,
            "/auth/register",
            &[("x-api-key", api_key)],
            Some(json!({"identifier": "sam", "password": password})),
        )
        .await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        for (tok, what) in [
            (access, "access token"),
            (access2, "access token 2"),
            (refresh.clone(), "refresh token"),
            (refresh2.clone(), "refresh token 2"),
            (refresh3, "refresh token 3"),
            (refresh4, "refresh token 4"),
        ] {
            secrets.push((tok.split('.').nth(2).unwrap().to_owned(), what));
            secrets.push((tok, what));
        }
        secrets.push((jti_of(&refresh), "refresh jti"));
        secrets.push((jti_of(&refresh2), "refresh jti 2"));
        // Let hook tasks and the pool's background work log too.
        tokio::time::sleep(Duration::from_millis(100)).await;
        t.cleanup().await;
    });
    let log = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    if !log.contains("sentri") {
        return; // backend skipped
    }
    assert!(
        log.contains("DEBUG") && log.contains("sentri_users"),
        "the capture works: {log}"
    );
    for (secret, what) in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "{kind}: {what} appears in the logs"
        );
    }
}

#[tokio::test]
async fn debug_output_and_errors_carry_no_secrets() {
    let t = database("sqlite", "secrets::debug").await.unwrap();
    let auth = create_auth(config(t.db.clone()).api_key("debug-api-key-0123456789")).unwrap();
    let user = auth
        .register(sentri::RegisterInput {
            identifier: "tess".into(),
            password: "password-in-debug".into(),
            roles: None,
        })
        .await
        .unwrap();
    let res = auth
        .login(
            sentri::LoginInput {
                identifier: "tess".into(),
                password: "password-in-debug".into(),
            },
            Default::default(),
        )
        .await
        .unwrap();
    let record = t.db.find_user_by_id(&user.id).await.unwrap().unwrap();
    let sessions = t.db.list_user_sessions(&user.id).await.unwrap();
    let rsa = sentri::token::SigningKey::generate(sentri::token::Algorithm::RS256)
        .await
        .unwrap();
    let pem = rsa.to_pkcs8_pem().unwrap();
    let pem_body: String = pem.lines().nth(1).unwrap().to_owned();
    let dump = format!(
        "{auth:?} {res:?} {record:?} {sessions:?} {rsa:?} {:?} {:?} {:?} {:?}",
        auth.tokens(),
        t.db,
        sentri::RegisterInput {
            identifier: "x".into(),
            password: "password-in-debug".into(),
            roles: None
        },
        config(t.db.clone()).api_key("debug-api-key-0123456789"),
    );
    for (secret, what) in [
        ("password-in-debug", "password"),
        (record.password_hash.as_str(), "hash"),
        (res.access_token.as_str(), "access token"),
        (res.refresh_token.as_str(), "refresh token"),
        (sessions[0].refresh_hash.as_str(), "refresh hash"),
        ("debug-api-key-0123456789", "api key"),
        (std::str::from_utf8(SECRET).unwrap(), "secret"),
        (pem_body.as_str(), "private key"),
    ] {
        assert!(!dump.contains(secret), "{what} in Debug output");
    }
    // Error messages and Display never carry the submitted secret.
    let err = auth
        .login(
            sentri::LoginInput {
                identifier: "tess".into(),
                password: "wrong-secret-value".into(),
            },
            Default::default(),
        )
        .await
        .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("wrong-secret-value"), "{text}");
    // A database URL with a password never shows up in errors or Debug.
    let err = sentri::db::Database::connect("postgres://user:hunter2-db-pass@127.0.0.1:1/x")
        .await
        .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("hunter2-db-pass"), "{text}");
}

#[tokio::test]
async fn cookie_attributes_lifetimes_and_clearing() {
    let t = database("sqlite", "secrets::cookies").await.unwrap();
    for (secure, same_site, label) in [
        (false, SameSite::Strict, "Strict"),
        (true, SameSite::Lax, "Lax"),
        (true, SameSite::None, "None"),
    ] {
        let auth = create_auth(
            config(t.db.clone())
                .access_expires_in("2m")
                .refresh_expires_in("3h")
                .cookie(Some(CookieConfig {
                    secure,
                    same_site,
                    ..CookieConfig::default()
                }))
                .access_cookie(Some(AccessCookieConfig {
                    secure,
                    same_site,
                    ..AccessCookieConfig::default()
                })),
        )
        .unwrap();
        let app = app(&auth);
        let id = crate::support::common::unique("cookie");
        register(&app, &id, "password1").await;
        let r = login(&app, &id, "password1").await;
        let find = |cookies: &[String], name: &str| {
            cookies
                .iter()
                .find(|c| c.starts_with(&format!("{name}=")))
                .cloned()
                .unwrap_or_else(|| panic!("{name} in {cookies:?}"))
        };
        let attrs =
            |c: &str| -> Vec<String> { c.split(';').map(|a| a.trim().to_owned()).collect() };
        let rc = attrs(&find(&r.cookies(), "refresh_token"));
        let ac = attrs(&find(&r.cookies(), "access_token"));
        assert!(rc.contains(&"HttpOnly".to_owned()), "{rc:?}");
        assert!(!ac.contains(&"HttpOnly".to_owned()), "{ac:?}");
        for c in [&rc, &ac] {
            assert_eq!(c.contains(&"Secure".to_owned()), secure, "{c:?}");
            assert!(c.contains(&format!("SameSite={label}")), "{c:?}");
            assert!(c.contains(&"Path=/".to_owned()), "{c:?}");
        }
        assert!(rc.contains(&"Max-Age=10800".to_owned()), "{rc:?}");
        assert!(ac.contains(&"Max-Age=120".to_owned()), "{ac:?}");
        // Refresh: new cookies, same attributes.
        let refresh = r.cookie("refresh_token").unwrap();
        let r = refresh_with(&app, &refresh).await;
        let rc2 = attrs(&find(&r.cookies(), "refresh_token"));
        assert!(rc2.contains(&"HttpOnly".to_owned()) && rc2.contains(&"Max-Age=10800".to_owned()));
        // Logout clears both with Max-Age=0 and the same Path/SameSite/Secure.
        let refresh2 = r.cookie("refresh_token").unwrap();
        let r = call(
            &app,
            Method::POST,
            "/auth/logout",
            &[("cookie", &format!("refresh_token={refresh2}"))],
            None,
        )
        .await;
        for name in ["refresh_token", "access_token"] {
            let c = attrs(&find(&r.cookies(), name));
            assert!(
                c[0] == format!("{name}=") && c.contains(&"Max-Age=0".to_owned()),
                "{c:?}"
            );
            assert!(c.contains(&"Path=/".to_owned()) && c.contains(&format!("SameSite={label}")));
            assert_eq!(c.contains(&"Secure".to_owned()), secure, "{c:?}");
        }
        // A dead refresh token also clears them.
        let r = refresh_with(&app, &refresh2).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.cookies()
                .iter()
                .filter(|c| c.contains("Max-Age=0"))
                .count(),
            2
        );
    }
}
