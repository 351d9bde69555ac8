//! Recovery ends every credential (issue #29, items 2 and 5), on SQLite, PostgreSQL and
//! MariaDB, with every capability that issues credentials switched on.
//!
//! Invariants:
//! - A password reset, a password change and logout-all end every session, every API
//!   key (unless `ApiKeys::keep_on_credential_reset`), every outstanding reset,
//!   sign-in and verification token and every two-factor challenge of the account,
//!   and mail the account a notice (real SMTP server, read back from its Maildir).
//! - A changed identifier voids every token mailed before; a reset link sent to an
//!   address the account no longer has is `TOKEN_INVALID` and changes nothing (checked
//!   before the token is used or the password set).
//! - The race: no request that started after the recovery call answered passes with the
//!   account's key or its old session (300 trials per database; `SENTRI_RACE_TRIALS`),
//!   and across two instances sharing Redis the other instance refuses both once the
//!   broadcast arrives (its caches would trust them for 60 s otherwise).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{Method, StatusCode};
use sentri::capability::api_keys::ApiKeys;
use sentri::capability::lifecycle::Lifecycle;
use sentri::capability::two_factor::{TwoFactor, totp_code};
use sentri::clock::Clock;
use sentri::core::BoxFuture;
use sentri::mail::{MailError, Mailer, Message};
use sentri::{ProvisionUser, ServerAuth, ServerConfig, create_auth};
use serde_json::{Value, json};

use crate::lifecycle::{Env, PASSWORD, address, code_in, env_with, lifecycle, smtp, token_in};
use crate::support::db::databases;
use crate::support::http::{Reply, bearer, call, expect, invalid, refresh_with};
use crate::support::services::config;

const NEW_PASSWORD: &str = "a brand new password";

/// How the account is recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recovery {
    Reset,
    ChangePassword,
    LogoutAll,
}

const RECOVERIES: [Recovery; 3] = [
    Recovery::Reset,
    Recovery::ChangePassword,
    Recovery::LogoutAll,
];

/// The two-factor capability with a fixed test key.
fn two_factor() -> TwoFactor {
    TwoFactor::new(sentri::core::seal::Sealer::new("k1", [7u8; 32]).unwrap())
}

/// Every credential-issuing capability on the lifecycle test server.
fn everything(keys: ApiKeys) -> impl FnOnce(ServerConfig) -> ServerConfig {
    move |c| c.with(keys).with(two_factor())
}

async fn post(app: &Router, path: &str, access: Option<&str>, body: Value) -> Reply {
    let auth = access.map(bearer);
    let headers: Vec<(&str, &str)> = auth.iter().map(|h| ("authorization", h.as_str())).collect();
    call(app, Method::POST, path, &headers, Some(body)).await
}

/// `GET /api/profile` (behind `protect()`) with an API key.
async fn with_key(app: &Router, key: &str) -> Reply {
    crate::support::http::profile(app, &[("x-sentri-key", key)]).await
}

/// `GET /api/profile` with an access token.
async fn with_access(app: &Router, access: &str) -> Reply {
    crate::support::http::profile_with(app, access).await
}

/// Creates an API key with a session: its secret.
async fn new_key(app: &Router, access: &str) -> String {
    let r = post(app, "/auth/api-keys", Some(access), json!({"name": "k"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    r.body["data"]["key"].as_str().unwrap().to_owned()
}

/// Logs in with a password: (access token, refresh token).
async fn login(app: &Router, id: &str, password: &str) -> (String, String) {
    let r = post(
        app,
        "/auth/login",
        None,
        json!({"identifier": id, "password": password}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    (
        r.body["data"]["accessToken"].as_str().unwrap().to_owned(),
        r.cookie("refresh_token").expect("refresh cookie"),
    )
}

/// Enrols and confirms a TOTP device: its secret.
async fn enable_2fa(e: &Env, access: &str) -> String {
    let r = post(
        &e.app,
        "/auth/2fa/totp/enroll",
        Some(access),
        json!({"password": PASSWORD, "name": "phone"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let device = r.body["data"]["deviceId"].as_str().unwrap().to_owned();
    let secret = r.body["data"]["secret"].as_str().unwrap().to_owned();
    let r = post(
        &e.app,
        "/auth/2fa/totp/confirm",
        Some(access),
        json!({"deviceId": device, "code": totp(e, &secret)}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // The next step: the confirming code is used.
    e.clock.advance(Duration::from_secs(30));
    secret
}

fn totp(e: &Env, secret: &str) -> String {
    totp_code(secret, u64::try_from(e.clock.now_ms() / 1000).unwrap()).unwrap()
}

/// What an account holds before its recovery.
struct Held {
    id: String,
    access: String,
    refresh: String,
    key: String,
    challenge: String,
    totp_secret: String,
    verification_code: String,
    resets: [String; 2],
    magic: String,
}

/// An address account (verified) with a session, an API key, 2FA and an outstanding
/// challenge, an unused verification code, two reset links and a sign-in link; the
/// mails 1 to 4 of its address.
async fn holding_everything(e: &Env) -> Held {
    let id = address();
    e.register(&id).await;
    let verification_code = code_in(&e.mail(&id, 1).await);
    // Verified without using the code (provisioning the same account again).
    e.auth
        .provision_user(ProvisionUser::new(&id, PASSWORD).mark_email_verified(true))
        .await
        .unwrap();
    let (access, refresh) = login(&e.app, &id, PASSWORD).await;
    let key = new_key(&e.app, &access).await;
    let totp_secret = enable_2fa(e, &access).await;
    let r = post(
        &e.app,
        "/auth/login",
        None,
        json!({"identifier": id, "password": PASSWORD}),
    )
    .await;
    assert_eq!(r.body["data"]["twoFactorRequired"], true, "{:?}", r.body);
    let challenge = r.body["data"]["twoFactorToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut resets = Vec::new();
    for n in [2, 3] {
        let r = post(
            &e.app,
            "/auth/forgot-password",
            None,
            json!({"identifier": id}),
        )
        .await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        resets.push(token_in(&e.mail(&id, n).await));
    }
    let r = post(
        &e.app,
        "/auth/magic-link/request",
        None,
        json!({"identifier": id}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let magic = token_in(&e.mail(&id, 4).await);
    assert_eq!(with_key(&e.app, &key).await.status, StatusCode::OK);
    assert_eq!(with_access(&e.app, &access).await.status, StatusCode::OK);
    Held {
        id,
        access,
        refresh,
        key,
        challenge,
        totp_secret,
        verification_code,
        resets: [resets[0].clone(), resets[1].clone()],
        magic,
    }
}

/// Runs `how` on the account; the reset uses the first reset link.
async fn recover(e: &Env, h: &Held, how: Recovery) {
    let r = match how {
        Recovery::Reset => {
            let body = json!({"token": h.resets[0], "newPassword": NEW_PASSWORD});
            post(&e.app, "/auth/reset-password", None, body).await
        }
        Recovery::ChangePassword => {
            let body = json!({"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD});
            post(&e.app, "/auth/change-password", Some(&h.access), body).await
        }
        Recovery::LogoutAll => post(&e.app, "/auth/logout-all", Some(&h.access), json!({})).await,
    };
    assert_eq!(r.status, StatusCode::OK, "{how:?}: {:?}", r.body);
}

/// Every session, mailed token and challenge of `h` is dead (exact codes).
async fn sessions_and_tokens_dead(e: &Env, h: &Held, what: &str) {
    invalid(&with_access(&e.app, &h.access).await, what);
    invalid(&refresh_with(&e.app, &h.refresh).await, what);
    let r = post(
        &e.app,
        "/auth/2fa/verify",
        None,
        json!({"twoFactorToken": h.challenge, "code": totp(e, &h.totp_secret)}),
    )
    .await;
    expect(&r, StatusCode::UNAUTHORIZED, "TWO_FACTOR_INVALID", what);
    let r = post(
        &e.app,
        "/auth/verify-email",
        None,
        json!({"identifier": h.id, "code": h.verification_code}),
    )
    .await;
    invalid(&r, what);
    let r = post(
        &e.app,
        "/auth/magic-link/consume",
        None,
        json!({"token": h.magic}),
    )
    .await;
    invalid(&r, what);
    for token in &h.resets {
        let body = json!({"token": token, "newPassword": "an intruder's password"});
        invalid(
            &post(&e.app, "/auth/reset-password", None, body).await,
            what,
        );
    }
}

/// Invariant: after a reset, a password change or logout-all, no credential the
/// account held works (key 401 `API_KEY_INVALID`, session and refresh `TOKEN_INVALID`,
/// challenge `TWO_FACTOR_INVALID`, every mailed token `TOKEN_INVALID`), the account is
/// mailed a notice without any secret, and the new password signs in.
#[tokio::test]
async fn recovery_ends_every_credential_and_mails_the_account() {
    let Some((url, maildir)) = smtp("recovery::ends_everything") else {
        return;
    };
    for t in databases("recovery::ends_everything").await {
        let e = env_with(
            &t,
            lifecycle(&url),
            &maildir,
            everything(ApiKeys::default()),
        )
        .await;
        for how in RECOVERIES {
            let what = &format!("{}/{how:?}", t.name);
            let h = holding_everything(&e).await;
            recover(&e, &h, how).await;
            let r = with_key(&e.app, &h.key).await;
            expect(&r, StatusCode::UNAUTHORIZED, "API_KEY_INVALID", what);
            sessions_and_tokens_dead(&e, &h, what).await;

            let notice = e.mail(&h.id, 5).await;
            let subject = match how {
                Recovery::Reset => "Subject: Your Acme Test password was reset",
                Recovery::ChangePassword => "Subject: Your Acme Test password was changed",
                Recovery::LogoutAll => "Subject: You were signed out of Acme Test everywhere",
            };
            assert!(notice.contains(subject), "{what}: {notice}");
            assert!(!notice.contains("token="), "{what}: no link in a notice");
            for secret in [&h.key, &h.resets[0], &h.magic, &h.verification_code] {
                assert!(!notice.contains(secret.as_str()), "{what}: a secret mailed");
            }
            let password = match how {
                Recovery::LogoutAll => PASSWORD,
                _ => NEW_PASSWORD,
            };
            let r = post(
                &e.app,
                "/auth/login",
                None,
                json!({"identifier": h.id, "password": password}),
            )
            .await;
            assert_eq!(
                r.body["data"]["twoFactorRequired"], true,
                "{what}: {:?}",
                r.body
            );
        }
        t.cleanup().await;
    }
}

/// Invariant: with `keep_on_credential_reset(true)`, the key outlives a password change,
/// logout-all and a reset; everything else still ends.
#[tokio::test]
async fn keep_on_credential_reset_keeps_the_keys_only() {
    let Some((url, maildir)) = smtp("recovery::keep_keys") else {
        return;
    };
    for t in databases("recovery::keep_keys").await {
        let keys = ApiKeys::default().keep_on_credential_reset(true);
        let e = env_with(&t, lifecycle(&url), &maildir, everything(keys)).await;
        for how in RECOVERIES {
            let what = &format!("{}/{how:?}", t.name);
            let h = holding_everything(&e).await;
            recover(&e, &h, how).await;
            let r = with_key(&e.app, &h.key).await;
            assert_eq!(r.status, StatusCode::OK, "{what}: {:?}", r.body);
            sessions_and_tokens_dead(&e, &h, what).await;
        }
        t.cleanup().await;
    }
}

/// The reproduction: the owner changes identifier and password; the reset link mailed
/// to the old address must not reset the password.
#[tokio::test]
async fn a_reset_link_to_the_old_address_is_dead_after_identifier_and_password_change() {
    let Some((url, maildir)) = smtp("recovery::old_address") else {
        return;
    };
    for t in databases("recovery::old_address").await {
        let what = t.name;
        let cfg = lifecycle(&url).email_verification(false);
        let e = env_with(&t, cfg, &maildir, everything(ApiKeys::default())).await;
        let (old, new) = (address(), address());
        e.register(&old).await;
        post(
            &e.app,
            "/auth/forgot-password",
            None,
            json!({"identifier": old}),
        )
        .await;
        let stale = token_in(&e.mail(&old, 1).await);
        let (access, _) = login(&e.app, &old, PASSWORD).await;
        let body = json!({"identifier": new, "currentPassword": PASSWORD});
        let r = post(&e.app, "/auth/change-identifier", Some(&access), body).await;
        assert_eq!(r.status, StatusCode::OK, "{what}: {:?}", r.body);
        let body = json!({"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD});
        let r = post(&e.app, "/auth/change-password", Some(&access), body).await;
        assert_eq!(r.status, StatusCode::OK, "{what}: {:?}", r.body);

        let body = json!({"token": stale, "newPassword": "an intruder's password"});
        invalid(
            &post(&e.app, "/auth/reset-password", None, body).await,
            what,
        );
        login(&e.app, &new, NEW_PASSWORD).await;
        let r = post(
            &e.app,
            "/auth/login",
            None,
            json!({"identifier": new, "password": "an intruder's password"}),
        )
        .await;
        expect(&r, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS", what);
        t.cleanup().await;
    }
}

/// Invariant: a change of identifier voids every token mailed before, even when the
/// address stays the same (a username account with a separate address), before it
/// answers; a new request works.
#[tokio::test]
async fn an_identifier_change_voids_every_mailed_token() {
    let Some((url, maildir)) = smtp("recovery::identifier_change") else {
        return;
    };
    for t in databases("recovery::identifier_change").await {
        let what = t.name;
        let cfg = lifecycle(&url).email_verification(false);
        let e = env_with(&t, cfg, &maildir, |c| c).await;
        let (name, email) = (crate::support::common::unique("u"), address());
        let body = json!({"identifier": name, "password": PASSWORD, "email": email});
        let r = post(&e.app, "/auth/register", None, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{what}: {:?}", r.body);
        post(
            &e.app,
            "/auth/forgot-password",
            None,
            json!({"identifier": name}),
        )
        .await;
        let reset = token_in(&e.mail(&email, 1).await);
        post(
            &e.app,
            "/auth/magic-link/request",
            None,
            json!({"identifier": name}),
        )
        .await;
        let magic = token_in(&e.mail(&email, 2).await);

        let (access, _) = login(&e.app, &name, PASSWORD).await;
        let renamed = crate::support::common::unique("v");
        let body = json!({"identifier": renamed, "currentPassword": PASSWORD});
        let r = post(&e.app, "/auth/change-identifier", Some(&access), body).await;
        assert_eq!(r.status, StatusCode::OK, "{what}: {:?}", r.body);

        let body = json!({"token": reset, "newPassword": "an intruder's password"});
        invalid(
            &post(&e.app, "/auth/reset-password", None, body).await,
            what,
        );
        let r = post(
            &e.app,
            "/auth/magic-link/consume",
            None,
            json!({"token": magic}),
        )
        .await;
        invalid(&r, what);
        login(&e.app, &renamed, PASSWORD).await;

        post(
            &e.app,
            "/auth/forgot-password",
            None,
            json!({"identifier": renamed}),
        )
        .await;
        let fresh = token_in(&e.mail(&email, 3).await);
        let body = json!({"token": fresh, "newPassword": NEW_PASSWORD});
        let r = post(&e.app, "/auth/reset-password", None, body).await;
        assert_eq!(r.status, StatusCode::OK, "{what}: {:?}", r.body);
        t.cleanup().await;
    }
}

/// Invariant: the reset checks the token's address against the account's current
/// address BEFORE using the token or setting the password. The identifier is changed
/// in the store directly (as when the token was stored by a request that raced the
/// change): the reset answers `TOKEN_INVALID` and changes nothing, and once the
/// identifier is back, the very same token still works (it was not used).
#[tokio::test]
async fn a_reset_checks_the_address_before_using_the_token() {
    let Some((url, maildir)) = smtp("recovery::check_order") else {
        return;
    };
    for t in databases("recovery::check_order").await {
        let what = t.name;
        let cfg = lifecycle(&url).email_verification(false);
        let e = env_with(&t, cfg, &maildir, |c| c).await;
        let (old, new) = (address(), address());
        e.register(&old).await;
        post(
            &e.app,
            "/auth/forgot-password",
            None,
            json!({"identifier": old}),
        )
        .await;
        let token = token_in(&e.mail(&old, 1).await);
        let db = e.auth.database();
        let user = db.find_user_by_identifier(&old).await.unwrap().unwrap();
        db.update_user_identifier(&user.id, &new).await.unwrap();

        let body = json!({"token": token, "newPassword": "an intruder's password"});
        invalid(
            &post(&e.app, "/auth/reset-password", None, body).await,
            what,
        );
        login(&e.app, &new, PASSWORD).await;

        db.update_user_identifier(&user.id, &old).await.unwrap();
        let body = json!({"token": token, "newPassword": NEW_PASSWORD});
        let r = post(&e.app, "/auth/reset-password", None, body).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{what}: the token was used: {:?}",
            r.body
        );
        login(&e.app, &old, NEW_PASSWORD).await;
        t.cleanup().await;
    }
}

// ---- the race ----------------------------------------------------------------------

fn trials() -> usize {
    std::env::var("SENTRI_RACE_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// Trials run at once (each with its own account).
const PARALLEL: usize = 6;
/// Request streams per trial (half with the key, half with the old session).
const STREAMS: usize = 4;
/// Requests each stream sends after it saw the recovery answered.
const AFTER: usize = 3;

/// A mailer that keeps every message in memory: `(to, text)`.
#[derive(Clone, Default)]
struct Inbox(Arc<Mutex<Vec<(String, String)>>>);

impl Mailer for Inbox {
    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), MailError>> {
        let mail = (message.to().address().to_owned(), message.text().to_owned());
        self.0.lock().unwrap().push(mail);
        Box::pin(async { Ok(()) })
    }
}

impl Inbox {
    /// The reset link token last mailed to `to`, waiting (bounded) for it.
    async fn reset_token(&self, to: &str) -> String {
        for _ in 0..2000 {
            let found = self
                .0
                .lock()
                .unwrap()
                .iter()
                .rev()
                .find(|(addr, text)| addr == to && text.contains("reset-password?token="))
                .map(|(_, text)| token_in(text));
            if let Some(token) = found {
                return token;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("no reset link to {to}");
    }
}

/// One server of the race: caches that would trust a key or a session for a minute,
/// so only the eviction can refuse them.
async fn race_server(
    db: sentri::db::Database,
    inbox: &Inbox,
    redis: Option<&str>,
) -> (ServerAuth, Router) {
    let mut cfg = config(db)
        .session_cache_ttl(Duration::from_secs(60))
        .with(ApiKeys::default().cache_ttl(Duration::from_secs(60)))
        .with(Lifecycle::new(inbox.clone()).email_verification(false));
    if let Some(url) = redis {
        cfg = cfg.redis_url(url);
    }
    let auth = create_auth(cfg).unwrap();
    auth.migrate().await.unwrap();
    let app = crate::support::http::app(&auth);
    (auth, app)
}

/// What one trial saw.
#[derive(Default)]
struct Outcome {
    /// Requests that started after the recovery answered and still got 200.
    survivors: usize,
    /// Requests that started after the recovery answered.
    after: usize,
    /// A request was in flight when the recovery was called, or one started while it
    /// ran.
    raced: bool,
}

async fn race_trial(app: Router, inbox: Inbox, n: usize) -> Outcome {
    let how = RECOVERIES[n % 3];
    let id = format!("{}@example.com", crate::support::common::unique("race"));
    let r = post(
        &app,
        "/auth/register",
        None,
        json!({"identifier": id, "password": PASSWORD}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let (access, _) = login(&app, &id, PASSWORD).await;
    let key = new_key(&app, &access).await;
    // Both cached before the race.
    assert_eq!(with_key(&app, &key).await.status, StatusCode::OK);
    assert_eq!(with_access(&app, &access).await.status, StatusCode::OK);
    let reset = match how {
        Recovery::Reset => {
            post(
                &app,
                "/auth/forgot-password",
                None,
                json!({"identifier": id}),
            )
            .await;
            Some(inbox.reset_token(&id).await)
        }
        _ => None,
    };

    let answered = Arc::new(AtomicBool::new(false));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let streams: Vec<_> = (0..STREAMS)
        .map(|s| {
            let (app, key, access) = (app.clone(), key.clone(), access.clone());
            let (answered, in_flight, started) =
                (answered.clone(), in_flight.clone(), started.clone());
            tokio::spawn(async move {
                let (mut survivors, mut after) = (0, 0);
                while after < AFTER {
                    let seen = answered.load(Ordering::SeqCst);
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    started.fetch_add(1, Ordering::SeqCst);
                    let r = if s % 2 == 0 {
                        with_key(&app, &key).await
                    } else {
                        with_access(&app, &access).await
                    };
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    if seen {
                        after += 1;
                        if r.status == StatusCode::OK {
                            survivors += 1;
                        }
                    }
                    tokio::task::yield_now().await;
                }
                (survivors, after)
            })
        })
        .collect();
    // A random moment: after a few requests, plus some scheduler turns.
    let wait_for = 1 + n % 5;
    while started.load(Ordering::SeqCst) < wait_for {
        tokio::task::yield_now().await;
    }
    for _ in 0..(n / 5) % 7 {
        tokio::task::yield_now().await;
    }
    let (busy, before) = (
        in_flight.load(Ordering::SeqCst) > 0,
        started.load(Ordering::SeqCst),
    );
    let r = match how {
        Recovery::Reset => {
            let body = json!({"token": reset, "newPassword": NEW_PASSWORD});
            post(&app, "/auth/reset-password", None, body).await
        }
        Recovery::ChangePassword => {
            let body = json!({"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD});
            post(&app, "/auth/change-password", Some(&access), body).await
        }
        Recovery::LogoutAll => post(&app, "/auth/logout-all", Some(&access), json!({})).await,
    };
    assert_eq!(r.status, StatusCode::OK, "{how:?}: {:?}", r.body);
    answered.store(true, Ordering::SeqCst);
    let mut out = Outcome {
        raced: busy || started.load(Ordering::SeqCst) > before,
        ..Outcome::default()
    };
    for stream in streams {
        let (survivors, after) = stream.await.expect("stream panicked");
        out.survivors += survivors;
        out.after += after;
    }
    out
}

/// The race: recovery (reset, password change, logout-all in turn) against streams of
/// requests by the account's key and its old session. Every request that started
/// after the recovery answered is refused: zero survivors.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_request_by_a_key_or_old_session_passes_after_the_recovery_answered() {
    use std::io::Write as _;
    for t in databases("recovery::race").await {
        let inbox = Inbox::default();
        let (_auth, app) = race_server(t.db.clone(), &inbox, None).await;
        let total = trials();
        let (mut survivors, mut after, mut raced, mut started) = (0, 0, 0, 0);
        while started < total {
            let batch: Vec<_> = (started..total.min(started + PARALLEL))
                .map(|n| tokio::spawn(race_trial(app.clone(), inbox.clone(), n)))
                .collect();
            started += batch.len();
            for task in batch {
                let o = task.await.expect("trial panicked");
                survivors += o.survivors;
                after += o.after;
                raced += usize::from(o.raced);
            }
        }
        let _ = writeln!(
            std::io::stderr(),
            "recovery race[{}]: {total} trials, {raced} with requests in flight during the recovery, \
             {after} requests after the answer, {survivors} survivors",
            t.name
        );
        assert_eq!(
            survivors, 0,
            "{}: a request passed after the recovery answered",
            t.name
        );
        assert_eq!(after, total * STREAMS * AFTER, "{}", t.name);
        assert!(
            raced * 4 >= total,
            "{}: only {raced} of {total} trials raced",
            t.name
        );
        t.cleanup().await;
    }
}

/// Fails a test only when nothing ever happens (never a timing assertion).
const GENEROUS: Duration = Duration::from_secs(60);

/// Across two instances sharing one database and Redis, each trusting a key and a
/// session for 60 s from its cache: after a recovery on A, A refuses both at once and
/// B as soon as the broadcast arrives (long before its caches would let go).
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_refuses_the_key_and_session_once_the_broadcast_arrives() {
    let Some(redis) = crate::support::common::redis_url("recovery::redis") else {
        return;
    };
    for t in databases("recovery::redis").await {
        let what = t.name;
        let inbox = Inbox::default();
        let (_a, app_a) = race_server(t.db.clone(), &inbox, Some(&redis)).await;
        let (_b, app_b) = race_server(t.db.clone(), &inbox, Some(&redis)).await;
        tokio::time::sleep(Duration::from_millis(300)).await; // subscribers connect
        for how in [Recovery::LogoutAll, Recovery::ChangePassword] {
            let id = format!("{}@example.com", crate::support::common::unique("two"));
            let body = json!({"identifier": id, "password": PASSWORD});
            post(&app_a, "/auth/register", None, body).await;
            let (access, _) = login(&app_a, &id, PASSWORD).await;
            let key = new_key(&app_a, &access).await;
            assert_eq!(with_key(&app_b, &key).await.status, StatusCode::OK);
            assert_eq!(with_access(&app_b, &access).await.status, StatusCode::OK);
            let r = match how {
                Recovery::ChangePassword => {
                    let body = json!({"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD});
                    post(&app_a, "/auth/change-password", Some(&access), body).await
                }
                _ => post(&app_a, "/auth/logout-all", Some(&access), json!({})).await,
            };
            assert_eq!(r.status, StatusCode::OK, "{what}/{how:?}");
            let r = with_key(&app_a, &key).await;
            expect(&r, StatusCode::UNAUTHORIZED, "API_KEY_INVALID", what);
            invalid(&with_access(&app_a, &access).await, what);
            let start = std::time::Instant::now();
            loop {
                let (k, s) = (
                    with_key(&app_b, &key).await,
                    with_access(&app_b, &access).await,
                );
                if k.status == StatusCode::UNAUTHORIZED && s.status == StatusCode::UNAUTHORIZED {
                    expect(&k, StatusCode::UNAUTHORIZED, "API_KEY_INVALID", what);
                    invalid(&s, what);
                    break;
                }
                assert!(
                    start.elapsed() < GENEROUS,
                    "{what}/{how:?}: B never refused (key {}, session {})",
                    k.status,
                    s.status
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        t.cleanup().await;
    }
}
