//! Bad input and abuse: races on codes and tokens, enumeration, sessions rotating
//! during a reset, SMTP down, oversized and injected input.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use futures_util::future::join_all;
use sentri::AuthEventKind;
use sentri::capability::lifecycle::{Lifecycle, VerificationMode};
use sentri::mail::{QueueOptions, SmtpMailer};
use serde_json::json;

use super::{PASSWORD, address, code_in, env, lifecycle, smtp, token_in};
use crate::support::db::databases;
use crate::support::http::{expect, from_peer, refresh_with};

/// Trials per database of the racing tests (`SENTRI_RACE_TRIALS`, default 10 here:
/// each trial sends real mail).
fn trials() -> usize {
    std::env::var("SENTRI_RACE_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(10, |n: usize| n.clamp(1, 30))
}

#[tokio::test]
async fn parallel_guesses_never_get_more_than_five_tries() {
    let Some((url, maildir)) = smtp("lifecycle code attempts") else {
        return;
    };
    for t in databases("lifecycle_attempts").await {
        let e = env(&t, lifecycle(&url), &maildir).await;
        let id = address();
        e.register(&id).await;
        let code = code_in(&e.mail(&id, 1).await);
        let wrong = if code == "000000" { "111111" } else { "000000" };
        let guesses =
            (0..20).map(|_| e.post("/verify-email", json!({"identifier": id, "code": wrong})));
        for r in join_all(guesses).await {
            expect(&r, StatusCode::UNAUTHORIZED, "TOKEN_INVALID", t.name);
        }
        // Five wrong codes killed it: the right one no longer works.
        let r = e
            .post("/verify-email", json!({"identifier": id, "code": code}))
            .await;
        expect(&r, StatusCode::UNAUTHORIZED, "TOKEN_INVALID", t.name);
        let r = e
            .post("/verify-email", json!({"identifier": id, "code": "12ab56"}))
            .await;
        expect(&r, StatusCode::BAD_REQUEST, "VALIDATION_ERROR", t.name);
    }
}

#[tokio::test]
async fn a_code_and_a_link_are_each_accepted_once_under_races() {
    let Some((url, maildir)) = smtp("lifecycle single use races") else {
        return;
    };
    for t in databases("lifecycle_once").await {
        let e = env(&t, lifecycle(&url).email_verification(false), &maildir).await;
        let code_env = env(&t, lifecycle(&url), &maildir).await;
        for trial in 0..trials() {
            let id = address();
            code_env.register(&id).await;
            let code = code_in(&code_env.mail(&id, 1).await);
            let tries = (0..8)
                .map(|_| code_env.post("/verify-email", json!({"identifier": id, "code": code})));
            let ok = join_all(tries)
                .await
                .iter()
                .filter(|r| r.status == StatusCode::OK)
                .count();
            assert_eq!(ok, 1, "{} trial {trial}: code accepted once", t.name);

            e.post("/magic-link/request", json!({"identifier": id}))
                .await;
            let token = token_in(&e.mail(&id, 2).await);
            let tries = (0..8).map(|_| e.post("/magic-link/consume", json!({"token": token})));
            let ok = join_all(tries)
                .await
                .iter()
                .filter(|r| r.status == StatusCode::OK)
                .count();
            assert_eq!(ok, 1, "{} trial {trial}: link accepted once", t.name);
        }
    }
}

#[tokio::test]
async fn reset_revokes_a_session_that_was_rotating_meanwhile() {
    let Some((url, maildir)) = smtp("lifecycle reset vs rotation") else {
        return;
    };
    for t in databases("lifecycle_reset_race").await {
        // No reset notices: the trials count the reset links.
        let config = lifecycle(&url)
            .email_verification(false)
            .security_notices(false);
        let e = env(&t, config, &maildir).await;
        let id = address();
        e.register(&id).await;
        for trial in 0..trials() {
            let login = e
                .post("/login", json!({"identifier": id, "password": PASSWORD}))
                .await;
            let login = if login.status == StatusCode::OK {
                login
            } else {
                let pw = format!("new password {}", trial - 1);
                e.post("/login", json!({"identifier": id, "password": pw}))
                    .await
            };
            let refresh = login.cookie("refresh_token").expect("a session");
            e.post("/forgot-password", json!({"identifier": id})).await;
            let token = token_in(&e.mail(&id, trial + 1).await);
            let new_password = format!("new password {trial}");
            let reset = e.post(
                "/reset-password",
                json!({"token": token, "newPassword": new_password}),
            );
            let (rotated, reset) = tokio::join!(refresh_with(&e.app, &refresh), reset);
            assert_eq!(reset.status, StatusCode::OK, "{} trial {trial}", t.name);
            if let Some(next) = rotated.cookie("refresh_token").filter(|c| !c.is_empty()) {
                let r = refresh_with(&e.app, &next).await;
                assert_eq!(
                    r.status,
                    StatusCode::UNAUTHORIZED,
                    "{} trial {trial}: a rotation that raced the reset survived",
                    t.name
                );
            }
            let r = refresh_with(&e.app, &refresh).await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{} trial {trial}",
                t.name
            );
        }
    }
}

#[tokio::test]
async fn requests_for_known_and_unknown_accounts_are_indistinguishable() {
    let Some((url, maildir)) = smtp("lifecycle enumeration") else {
        return;
    };
    for t in databases("lifecycle_enum").await {
        let e = env(&t, lifecycle(&url), &maildir).await;
        let known = address();
        e.register(&known).await;
        for path in [
            "/forgot-password",
            "/magic-link/request",
            "/verify-email/resend",
        ] {
            let a = e.post(path, json!({"identifier": known})).await;
            let b = e.post(path, json!({"identifier": address()})).await;
            assert_eq!(a.status, StatusCode::ACCEPTED, "{} {path}", t.name);
            assert_eq!(
                (a.status, &a.body),
                (b.status, &b.body),
                "{} {path}",
                t.name
            );
            assert_eq!(a.headers, b.headers, "{} {path}", t.name);
        }
    }
}

#[tokio::test]
async fn smtp_down_answers_as_usual_and_is_logged_and_emitted() {
    let Some((_, maildir)) = smtp("lifecycle smtp down") else {
        return;
    };
    for t in databases("lifecycle_down").await {
        // Nothing listens on port 9 of the loopback.
        let down = Lifecycle::new(SmtpMailer::from_url("smtp://127.0.0.1:9?tls=none").unwrap())
            .email_verification(false)
            .queue(
                QueueOptions::default()
                    .attempts(3)
                    .backoff(Duration::from_millis(10)),
            );
        let e = env(&t, down, &maildir).await;
        let id = address();
        e.register(&id).await;
        let r = e.post("/forgot-password", json!({"identifier": id})).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", t.name);
        let failed = e.events.wait_for(AuthEventKind::MailFailed).await;
        assert!(failed.user_id.is_some(), "{}", t.name);
        let error = failed.error.as_ref().expect("why");
        assert_eq!(error.code().as_str(), "SERVICE_UNAVAILABLE", "{}", t.name);
    }
}

#[tokio::test]
async fn oversized_non_ascii_and_injected_input_is_refused() {
    let Some((url, maildir)) = smtp("lifecycle bad input") else {
        return;
    };
    let t = databases("lifecycle_input").await.remove(0);
    let e = env(&t, lifecycle(&url), &maildir).await;
    let huge = "a".repeat(1 << 20);
    let r = e
        .post("/forgot-password", json!({"identifier": huge}))
        .await;
    expect(
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        "1 MiB body",
    );
    let long = format!("{}@example.com", "a".repeat(400));
    for (path, identifier) in [
        ("/forgot-password", long.as_str()),
        ("/forgot-password", "ünïcode@example.com"),
        (
            "/magic-link/request",
            "a@example.com\r\nBcc: evil@example.net",
        ),
        ("/magic-link/request", "Eve <a@example.com>"),
        ("/verify-email/resend", "a@@example.com"),
    ] {
        let r = e.post(path, json!({"identifier": identifier})).await;
        expect(
            &r,
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            &format!("{path} {identifier:?}"),
        );
    }
    let r = e.post("/reset-password", json!({"token": 5})).await;
    expect(
        &r,
        StatusCode::BAD_REQUEST,
        "VALIDATION_ERROR",
        "wrongly typed",
    );
    let r = e.post("/verify-email", json!({"token": "x"})).await;
    expect(
        &r,
        StatusCode::BAD_REQUEST,
        "VALIDATION_ERROR",
        "token in code mode",
    );
    // Header injection in the sender's display name is refused at configuration.
    let mailer = SmtpMailer::from_url(&url).unwrap();
    let err =
        Lifecycle::new(mailer.clone()).sender("Acme\r\nBcc: evil@example.net", "a@acme.example");
    assert_eq!(err.unwrap_err().code().as_str(), "VALIDATION_ERROR");
    assert!(
        Lifecycle::new(mailer.clone())
            .sender("Acme", "évil@acme.example")
            .is_err()
    );
    assert!(
        Lifecycle::new(mailer)
            .verification(VerificationMode::Code)
            .code_digits(11)
            .is_err()
    );
}

/// Verification tokens stored for `address` (one per message sent).
async fn verify_tokens(t: &crate::support::db::TestDb, address: &str) -> i64 {
    t.scalar(&format!(
        "SELECT COUNT(*) FROM sentri_lifecycle_tokens WHERE purpose = 'verify' AND address = '{address}'"
    ))
    .await
}

/// Invariant: the resend throttle is atomic. However many resends race for one
/// account, at most `per_minute` messages go out in a minute and `per_hour` in an hour
/// (counted and stored in one transaction), and every answer is the same as for an
/// unknown account.
#[tokio::test]
async fn parallel_resends_never_exceed_the_throttle() {
    let Some((url, maildir)) = smtp("lifecycle resend race") else {
        return;
    };
    for t in databases("lifecycle_resend_race").await {
        let e = env(&t, lifecycle(&url).resend_limits(2, 3), &maildir).await;
        let unknown = e
            .post("/verify-email/resend", json!({"identifier": address()}))
            .await;
        assert_eq!(unknown.status, StatusCode::ACCEPTED, "{}", t.name);
        for trial in 0..trials() {
            let id = address();
            e.register(&id).await;
            e.mail(&id, 1).await; // the message of the registration: 1 of the hour's 3
            // A new minute: 2 more may go out; one later, the hour's 3 are spent.
            for burst_no in 0..2 {
                e.clock.advance(Duration::from_secs(61));
                let burst =
                    (0..20).map(|_| e.post("/verify-email/resend", json!({"identifier": id})));
                for r in join_all(burst).await {
                    assert_eq!(
                        (r.status, &r.body, &r.headers),
                        (unknown.status, &unknown.body, &unknown.headers),
                        "{} trial {trial}: a resend answered differently",
                        t.name
                    );
                }
                e.lifecycle.settled().await;
                assert_eq!(
                    verify_tokens(&t, &id).await,
                    3,
                    "{} trial {trial} burst {burst_no}: codes issued",
                    t.name
                );
            }
            // Each stored code was mailed (once: a mail needs a stored code).
            e.mail(&id, 3).await;
            assert_eq!(super::mails_to(&maildir, &id).len(), 3, "{}", t.name);
        }
    }
}

/// With throttling on, a code or token submitted by itself counts on the client
/// address (wrong ones stay counted), and so does every request that sends mail: a
/// client over its limit gets 429 before any lookup or message; others are unaffected.
#[tokio::test]
async fn codes_tokens_and_mail_requests_count_on_the_client_address() {
    use sentri::throttle::{Limit, Throttling};
    let Some((url, maildir)) = smtp("lifecycle per-address throttle") else {
        return;
    };
    let minute = Duration::from_secs(60);
    let policy = Throttling::default()
        .address(Limit::new(3, minute))
        .key_prefix(crate::support::common::unique("sentri:test:lc"));
    for t in databases("lifecycle_address_throttle").await {
        let n = t.name;
        let config = lifecycle(&url).verification(VerificationMode::Link);
        let e = super::env_with(&t, config, &maildir, |c| c.throttling(policy.clone())).await;
        let post = |ip: &'static str, path: &'static str, body: serde_json::Value| {
            let app = e.app.clone();
            async move { from_peer(&app, ip, Method::POST, path, &[], Some(body)).await }
        };
        let cases: [(&str, serde_json::Value, StatusCode, &str); 4] = [
            (
                "/auth/verify-email",
                json!({"token": "made-up"}),
                StatusCode::UNAUTHORIZED,
                "TOKEN_INVALID",
            ),
            (
                "/auth/reset-password",
                json!({"token": "made-up", "newPassword": "a new password"}),
                StatusCode::UNAUTHORIZED,
                "TOKEN_INVALID",
            ),
            (
                "/auth/magic-link/consume",
                json!({"token": "made-up"}),
                StatusCode::UNAUTHORIZED,
                "TOKEN_INVALID",
            ),
            (
                "/auth/forgot-password",
                json!({"identifier": address()}),
                StatusCode::ACCEPTED,
                "",
            ),
        ];
        for (i, (path, body, status, code)) in cases.into_iter().enumerate() {
            let ip: &'static str = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"][i];
            let other: &'static str = [
                "198.51.100.1",
                "198.51.100.2",
                "198.51.100.3",
                "198.51.100.4",
            ][i];
            for _ in 0..3 {
                let r = post(ip, path, body.clone()).await;
                assert_eq!(r.status, status, "{n} {path}: {:?}", r.body);
                if !code.is_empty() {
                    expect(&r, status, code, n);
                }
            }
            let r = post(ip, path, body.clone()).await;
            expect(
                &r,
                StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_ATTEMPTS",
                &format!("{n} {path}"),
            );
            let r = post(other, path, body).await;
            assert_eq!(
                r.status, status,
                "{n} {path} from another address: {:?}",
                r.body
            );
        }
        t.cleanup().await;
    }
}
