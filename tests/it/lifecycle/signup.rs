//! Sign-up on first use of a sign-in link (`magic_link_signup`): no enumeration, the
//! account created once whatever the races, nothing sent or created when it is off.

use axum::http::StatusCode;
use futures_util::future::join_all;
use serde_json::json;

use super::{Env, PASSWORD, address, env, env_with, lifecycle, smtp, token_in};
use crate::support::db::{TestDb, databases};
use crate::support::http::expect;

/// Trials per database of the racing tests (`SENTRI_RACE_TRIALS`, default 10).
fn trials() -> usize {
    std::env::var("SENTRI_RACE_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(10, |n: usize| n.clamp(1, 30))
}

/// Accounts with this identifier.
async fn accounts(t: &TestDb, identifier: &str) -> i64 {
    t.scalar(&format!(
        "SELECT COUNT(*) FROM sentri_users WHERE identifier = '{identifier}'"
    ))
    .await
}

/// Sessions (login families) of the account with this identifier.
async fn sessions(t: &TestDb, identifier: &str) -> i64 {
    t.scalar(&format!(
        "SELECT COUNT(*) FROM sentri_session_families f JOIN sentri_users u ON u.id = f.user_id \
         WHERE u.identifier = '{identifier}'"
    ))
    .await
}

/// Sign-up links stored for `address` once the requests answered so far are done.
async fn signup_links(e: &Env, t: &TestDb, address: &str) -> i64 {
    e.lifecycle.settled().await;
    t.scalar(&format!(
        "SELECT COUNT(*) FROM sentri_lifecycle_signups WHERE address = '{address}'"
    ))
    .await
}

#[tokio::test]
async fn a_sign_up_link_creates_a_verified_account_on_first_use() {
    let Some((url, maildir)) = smtp("lifecycle magic link sign-up") else {
        return;
    };
    for t in databases("lifecycle_signup").await {
        let config = lifecycle(&url)
            .magic_link_signup(true)
            .require_email_verification(true);
        let e = env(&t, config, &maildir).await;
        let known = address();
        e.register(&known).await;
        let id = address();
        // Unknown and known addresses get the same answer.
        let a = e
            .post("/magic-link/request", json!({"identifier": known}))
            .await;
        let b = e
            .post(
                "/magic-link/request",
                json!({"identifier": id.to_uppercase()}),
            )
            .await;
        assert_eq!(a.status, StatusCode::ACCEPTED, "{}", t.name);
        assert_eq!(
            (a.status, &a.body, &a.headers),
            (b.status, &b.body, &b.headers),
            "{}",
            t.name
        );
        let mail = e.mail(&id, 1).await;
        assert!(
            mail.contains("https://app.example/magic-link?token="),
            "{}",
            t.name
        );
        assert_eq!(accounts(&t, &id).await, 0, "{}: no account before", t.name);

        let token = token_in(&mail);
        let r = e.post("/magic-link/consume", json!({"token": token})).await;
        assert_eq!(r.status, StatusCode::OK, "{}: {:?}", t.name, r.body);
        assert!(r.body["data"]["accessToken"].is_string(), "{}", t.name);
        assert!(r.cookie("refresh_token").is_some(), "{}", t.name);
        assert_eq!(r.body["data"]["user"]["identifier"], id, "{}", t.name);
        assert_eq!(
            r.body["data"]["user"]["roles"],
            json!(["user"]),
            "{}",
            t.name
        );
        assert_eq!(accounts(&t, &id).await, 1, "{}", t.name);
        let verified = t
            .scalar(&format!(
                "SELECT COUNT(*) FROM sentri_users WHERE identifier = '{id}' \
                 AND email = '{id}' AND email_verified_at IS NOT NULL"
            ))
            .await;
        assert_eq!(verified, 1, "{}: the address is verified", t.name);
        let r = e.post("/magic-link/consume", json!({"token": token})).await;
        expect(&r, StatusCode::UNAUTHORIZED, "TOKEN_INVALID", t.name);
        // No usable password: a password login is a plain wrong password.
        let r = e
            .post("/login", json!({"identifier": id, "password": PASSWORD}))
            .await;
        expect(&r, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS", t.name);
        // Now an account: the next link is a plain sign-in link to it.
        e.post("/magic-link/request", json!({"identifier": id}))
            .await;
        let token = token_in(&e.mail(&id, 2).await);
        let r = e.post("/magic-link/consume", json!({"token": token})).await;
        assert_eq!(r.status, StatusCode::OK, "{}: {:?}", t.name, r.body);
        assert_eq!(accounts(&t, &id).await, 1, "{}", t.name);
        assert_eq!(signup_links(&e, &t, &id).await, 1, "{}", t.name);
    }
}

#[tokio::test]
async fn without_the_flag_or_open_sign_up_no_link_is_sent() {
    let Some((url, maildir)) = smtp("lifecycle sign-up off") else {
        return;
    };
    for t in databases("lifecycle_signup_off").await {
        let cases = [
            (
                "flag off (default)",
                env(&t, lifecycle(&url), &maildir).await,
            ),
            (
                "signup off",
                env(
                    &t,
                    lifecycle(&url).magic_link_signup(true).signup(false),
                    &maildir,
                )
                .await,
            ),
            (
                "register behind an API key",
                env_with(&t, lifecycle(&url).magic_link_signup(true), &maildir, |c| {
                    c.api_key("a registration key of 32 bytes..")
                })
                .await,
            ),
        ];
        for (what, e) in cases {
            let id = address();
            let r = e
                .post("/magic-link/request", json!({"identifier": id}))
                .await;
            assert_eq!(r.status, StatusCode::ACCEPTED, "{} {what}", t.name);
            assert_eq!(signup_links(&e, &t, &id).await, 0, "{} {what}", t.name);
            assert!(
                super::mails_to(&maildir, &id).is_empty(),
                "{} {what}",
                t.name
            );
            assert_eq!(accounts(&t, &id).await, 0, "{} {what}", t.name);
        }
        // Only addresses qualify: a username gets no sign-up link.
        let e = env(&t, lifecycle(&url).magic_link_signup(true), &maildir).await;
        let name = crate::support::common::unique("name");
        let r = e
            .post("/magic-link/request", json!({"identifier": name}))
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", t.name);
        assert_eq!(signup_links(&e, &t, &name).await, 0, "{}", t.name);
    }
}

/// Invariants: one sign-up link creates one account and opens one session however
/// many times it is submitted at once; two links for one address used at once still
/// make one account.
#[tokio::test]
async fn racing_sign_up_links_make_one_account() {
    let Some((url, maildir)) = smtp("lifecycle sign-up races") else {
        return;
    };
    for t in databases("lifecycle_signup_race").await {
        let e = env(&t, lifecycle(&url).magic_link_signup(true), &maildir).await;
        for trial in 0..trials() {
            let id = address();
            e.post("/magic-link/request", json!({"identifier": id}))
                .await;
            let token = token_in(&e.mail(&id, 1).await);
            let tries = (0..8).map(|_| e.post("/magic-link/consume", json!({"token": token})));
            let replies = join_all(tries).await;
            let ok = replies
                .iter()
                .filter(|r| r.status == StatusCode::OK)
                .count();
            assert_eq!(ok, 1, "{} trial {trial}: one sign-in", t.name);
            for r in replies.iter().filter(|r| r.status != StatusCode::OK) {
                expect(r, StatusCode::UNAUTHORIZED, "TOKEN_INVALID", t.name);
            }
            assert_eq!(accounts(&t, &id).await, 1, "{} trial {trial}", t.name);
            assert_eq!(sessions(&t, &id).await, 1, "{} trial {trial}", t.name);

            let other = address();
            e.post("/magic-link/request", json!({"identifier": other}))
                .await;
            e.post("/magic-link/request", json!({"identifier": other}))
                .await;
            // Both at once: the two messages may be delivered in either order.
            e.mail(&other, 2).await;
            let both = super::mails_to(&maildir, &other);
            let (first, second) = (token_in(&both[0]), token_in(&both[1]));
            assert_ne!(first, second, "{} trial {trial}", t.name);
            let (a, b) = tokio::join!(
                e.post("/magic-link/consume", json!({"token": first})),
                e.post("/magic-link/consume", json!({"token": second})),
            );
            assert_eq!(
                a.status,
                StatusCode::OK,
                "{} trial {trial}: {:?}",
                t.name,
                a.body
            );
            assert_eq!(
                b.status,
                StatusCode::OK,
                "{} trial {trial}: {:?}",
                t.name,
                b.body
            );
            assert_eq!(
                a.body["data"]["user"]["id"], b.body["data"]["user"]["id"],
                "{} trial {trial}: the same account",
                t.name
            );
            assert_eq!(accounts(&t, &other).await, 1, "{} trial {trial}", t.name);
        }
    }
}

/// `POST /register {identifier, password, email}`: the address of a username account,
/// checked like provisioning's, mailed the verification message; ignored (sentri 2.1's
/// body) without the lifecycle capability.
#[tokio::test]
async fn register_takes_an_email_for_username_accounts() {
    let Some((url, maildir)) = smtp("lifecycle register email") else {
        return;
    };
    for t in databases("lifecycle_register_email").await {
        let e = env(&t, lifecycle(&url), &maildir).await;
        let name = crate::support::common::unique("ada");
        let addr = address();
        let r = e
            .post(
                "/register",
                json!({"identifier": name, "password": PASSWORD, "email": addr}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}: {:?}", t.name, r.body);
        let code = super::code_in(&e.mail(&addr, 1).await);
        let r = e
            .post("/verify-email", json!({"identifier": name, "code": code}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}: {:?}", t.name, r.body);
        let stored = t
            .scalar(&format!(
                "SELECT COUNT(*) FROM sentri_users WHERE identifier = '{name}' \
                 AND email = '{addr}' AND email_verified_at IS NOT NULL"
            ))
            .await;
        assert_eq!(stored, 1, "{}", t.name);

        // An address identifier: `email` absent or the same address.
        let id = address();
        for (email, status) in [
            (json!(address()), StatusCode::BAD_REQUEST),
            (json!(id), StatusCode::CREATED),
        ] {
            let r = e
                .post(
                    "/register",
                    json!({"identifier": id, "password": PASSWORD, "email": email}),
                )
                .await;
            assert_eq!(r.status, status, "{}: {:?}", t.name, r.body);
        }
        // Malformed or injected addresses: 400, and no account.
        for bad in [
            json!("Eve <eve@example.com>"),
            json!("eve@example.com\r\nBcc: evil@example.net"),
            json!("ünï@example.com"),
            json!(5),
        ] {
            let other = crate::support::common::unique("eve");
            let r = e
                .post(
                    "/register",
                    json!({"identifier": other, "password": PASSWORD, "email": bad}),
                )
                .await;
            expect(&r, StatusCode::BAD_REQUEST, "VALIDATION_ERROR", t.name);
            assert_eq!(accounts(&t, &other).await, 0, "{} {bad}", t.name);
        }
        // An address already used by another account may be stored again: it is never
        // an identifier, so it signs no one in.
        let twin = crate::support::common::unique("twin");
        let r = e
            .post(
                "/register",
                json!({"identifier": twin, "password": PASSWORD, "email": addr}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}: {:?}", t.name, r.body);
        assert_eq!(accounts(&t, &addr).await, 0, "{}", t.name);

        // Without the lifecycle capability the field is ignored, as in sentri 2.1.
        let plain = crate::support::services::auth(t.db.clone());
        let app = crate::support::http::app(&plain);
        let r = crate::support::http::call(
            &app,
            axum::http::Method::POST,
            "/auth/register",
            &[],
            Some(json!({"identifier": crate::support::common::unique("bob"),
                        "password": PASSWORD, "email": "not an address"})),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}: {:?}", t.name, r.body);
    }
}
