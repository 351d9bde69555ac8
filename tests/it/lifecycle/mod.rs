//! The account lifecycle over real SMTP: every flow end to end on SQLite, PostgreSQL and
//! MariaDB, the mail delivered by a real SMTP server (aiosmtpd, started by `.ci/run`)
//! and read back from its Maildir.
//!
//! Needs `SENTRI_TEST_SMTP_URL` (e.g. `smtp://127.0.0.1:2525?tls=none`) and
//! `SENTRI_TEST_MAILDIR`; skipped loudly without them, failed under
//! `SENTRI_TEST_REQUIRE_SERVICES=1`.

mod abuse;
mod flows;
mod signup;
mod transport;
mod uniform;
#[cfg(feature = "api-keys")]
mod verified;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{Method, StatusCode};
use sentri::capability::lifecycle::Lifecycle;
use sentri::clock::ManualClock;
use sentri::mail::{QueueOptions, SmtpMailer};
use sentri::{AuthEvent, EventSink, ServerAuth, ServerConfig, create_auth};
use serde_json::{Value, json};

use crate::support::common::{service_url, unique};
use crate::support::db::TestDb;
use crate::support::http::{Reply, app, call};
use crate::support::services::config;

pub const PASSWORD: &str = "correct horse battery";

/// The test SMTP server's URL and Maildir, or `None` (a loud skip).
pub fn smtp(test: &str) -> Option<(String, PathBuf)> {
    let url = service_url("SENTRI_TEST_SMTP_URL", test)?;
    let dir = service_url("SENTRI_TEST_MAILDIR", test)?;
    Some((url, PathBuf::from(dir)))
}

/// A fresh address nobody else receives mail at.
pub fn address() -> String {
    format!("{}@example.com", unique("u"))
}

/// A lifecycle on the test SMTP server with fast retries.
pub fn lifecycle(url: &str) -> Lifecycle {
    Lifecycle::new(SmtpMailer::from_url(url).unwrap())
        .sender("Acme Test", "no-reply@acme.example")
        .unwrap()
        .app_url("https://app.example")
        .queue(
            QueueOptions::default()
                .attempts(2)
                .backoff(Duration::from_millis(20)),
        )
}

/// Records every event.
#[derive(Clone, Default)]
pub struct Recorder(pub Arc<Mutex<Vec<Arc<AuthEvent>>>>);

impl EventSink for Recorder {
    fn handle(&self, event: Arc<AuthEvent>) -> sentri::core::BoxFuture<'static, ()> {
        self.0.lock().unwrap().push(event);
        Box::pin(async {})
    }
}

impl Recorder {
    /// Waits (bounded) for an event of `kind`.
    pub async fn wait_for(&self, kind: sentri::AuthEventKind) -> Arc<AuthEvent> {
        for _ in 0..1000 {
            if let Some(e) = self.0.lock().unwrap().iter().find(|e| e.kind == kind) {
                return e.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no {kind:?} event");
    }
}

/// One server under test.
pub struct Env {
    pub auth: ServerAuth,
    pub app: Router,
    pub clock: ManualClock,
    pub events: Recorder,
    pub maildir: PathBuf,
    /// A clone of the capability under test (for [`Lifecycle::settled`]).
    pub lifecycle: Lifecycle,
}

/// Builds and migrates the auth with `lifecycle` on `t`.
pub async fn env(t: &TestDb, lifecycle: Lifecycle, maildir: &std::path::Path) -> Env {
    env_with(t, lifecycle, maildir, |c| c).await
}

/// [`env`] with the server configuration changed by `tweak` first.
pub async fn env_with(
    t: &TestDb,
    lifecycle: Lifecycle,
    maildir: &std::path::Path,
    tweak: impl FnOnce(ServerConfig) -> ServerConfig,
) -> Env {
    let clock = ManualClock::starting_now();
    let events = Recorder::default();
    let auth = create_auth(
        tweak(config(t.db.clone()))
            .clock(clock.clone())
            .event_sink(events.clone())
            .with(lifecycle.clone()),
    )
    .unwrap();
    auth.migrate().await.unwrap();
    Env {
        app: app(&auth),
        auth,
        clock,
        events,
        maildir: maildir.to_owned(),
        lifecycle,
    }
}

impl Env {
    /// `POST /auth<path>` with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        call(
            &self.app,
            Method::POST,
            &format!("/auth{path}"),
            &[],
            Some(body),
        )
        .await
    }

    /// Registers `id` with the test password (201).
    pub async fn register(&self, id: &str) {
        let r = self
            .post("/register", json!({"identifier": id, "password": PASSWORD}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }

    /// Waits for the `n`-th message to `to` (1-based) and returns its decoded text.
    pub async fn mail(&self, to: &str, n: usize) -> String {
        wait_mail(&self.maildir, to, n).await
    }
}

/// Every message delivered to `to`, oldest first (raw, with soft line breaks undone).
pub fn mails_to(maildir: &std::path::Path, to: &str) -> Vec<String> {
    let mut found: Vec<(std::time::SystemTime, String, String)> = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(dir) = std::fs::read_dir(maildir.join(sub)) else {
            continue;
        };
        for entry in dir.flatten() {
            let Ok(raw) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            if raw.contains(&format!("X-RcptTo: {to}")) {
                let at = entry.metadata().and_then(|m| m.modified()).unwrap();
                let name = entry.file_name().to_string_lossy().into_owned();
                found.push((at, name, unfold(&raw)));
            }
        }
    }
    found.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    found.into_iter().map(|(_, _, m)| m).collect()
}

/// Undoes quoted-printable soft breaks and `=3D`.
fn unfold(raw: &str) -> String {
    raw.replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=")
}

/// Waits (bounded, 20 s) for the `n`-th message to `to`.
pub async fn wait_mail(maildir: &std::path::Path, to: &str, n: usize) -> String {
    for _ in 0..2000 {
        let mails = mails_to(maildir, to);
        if mails.len() >= n {
            return mails[n - 1].clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no message #{n} to {to}");
}

/// The `token=` value of the first link in `mail`.
pub fn token_in(mail: &str) -> String {
    let start = mail.find("?token=").expect("a link") + "?token=".len();
    mail[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

/// The code in a verification message ("… code is 123456").
pub fn code_in(mail: &str) -> String {
    let start = mail.find("code is ").expect("a code") + "code is ".len();
    mail[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect()
}
