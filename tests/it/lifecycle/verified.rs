//! The pre-hijacking defence over real SMTP (issue #29, item 3b): the first sign-in by
//! mailed link on an account registered without proof of its address ends everything
//! set up before it (password, sessions, refresh tokens, API keys) and opens the only
//! session; a plain verification link (the registrant's normal flow) only marks the
//! address verified and keeps the credentials.

use axum::Router;
use axum::http::{Method, StatusCode};
use sentri::capability::api_keys::ApiKeys;
use sentri::capability::lifecycle::VerificationMode;
use serde_json::json;

use super::{PASSWORD, address, env, env_with, lifecycle, smtp, token_in};
use crate::support::db::databases;
use crate::support::http::{bearer, call, expect, profile, profile_with, refresh_with};

/// Logs `id` in: (access token, refresh token, a new API key).
async fn credentials(app: &Router, id: &str) -> (String, String, String) {
    let r = call(
        app,
        Method::POST,
        "/auth/login",
        &[],
        Some(json!({"identifier": id, "password": PASSWORD})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let access = r.body["data"]["accessToken"].as_str().unwrap().to_owned();
    let refresh = r.cookie("refresh_token").unwrap();
    let h = bearer(&access);
    let r = call(
        app,
        Method::POST,
        "/auth/api-keys",
        &[("authorization", &h)],
        Some(json!({"name": "kept"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let key = r.body["data"]["key"].as_str().unwrap().to_owned();
    (access, refresh, key)
}

#[tokio::test]
async fn the_first_magic_link_sign_in_ends_what_the_registrant_set_up() {
    let Some((url, maildir)) = smtp("verified::magic_prehijack") else {
        return;
    };
    for t in databases("verified::magic_prehijack").await {
        let n = t.name;
        let config = lifecycle(&url).email_verification(false);
        let e = env_with(&t, config, &maildir, |c| c.with(ApiKeys::default())).await;
        let victim = address();
        // The attacker registers the victim's address and never verifies it.
        e.register(&victim).await;
        let (access, refresh, key) = credentials(&e.app, &victim).await;
        // The victim signs in by link, from their own mailbox.
        let r = e
            .post("/magic-link/request", json!({"identifier": victim}))
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{n}");
        let token = token_in(&e.mail(&victim, 1).await);
        let r = e.post("/magic-link/consume", json!({"token": token})).await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        let mine = r.body["data"]["accessToken"].as_str().unwrap().to_owned();
        let my_refresh = r.cookie("refresh_token").unwrap();
        // Every credential of the attacker is refused. The removed password answers as
        // a wrong one does, after one hash computation.
        let before = e.auth.bcrypt_runs();
        let r = e
            .post(
                "/login",
                json!({"identifier": victim, "password": PASSWORD}),
            )
            .await;
        expect(&r, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS", n);
        assert_eq!(e.auth.bcrypt_runs() - before, 1, "{n}: one hash");
        let r = refresh_with(&e.app, &refresh).await;
        expect(&r, StatusCode::UNAUTHORIZED, "TOKEN_INVALID", n);
        let r = profile_with(&e.app, &access).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{n}: {:?}", r.body);
        let r = profile(&e.app, &[("x-sentri-key", &key)]).await;
        expect(&r, StatusCode::UNAUTHORIZED, "API_KEY_INVALID", n);
        // The victim's session works and the address is verified.
        assert_eq!(profile_with(&e.app, &mine).await.status, StatusCode::OK);
        assert_eq!(
            refresh_with(&e.app, &my_refresh).await.status,
            StatusCode::OK,
            "{n}"
        );
        let user =
            t.db.find_user_by_identifier(&victim)
                .await
                .unwrap()
                .unwrap();
        let state = t.db.user_email(&user.id).await.unwrap().unwrap();
        assert_eq!(state.email.as_deref(), Some(victim.as_str()), "{n}");
        assert!(state.verified_at.is_some(), "{n}");
        assert!(user.password_hash.starts_with('!'), "{n}: no password");
        // The next sign-in by link proves nothing new: the session above lives on.
        e.post("/magic-link/request", json!({"identifier": victim}))
            .await;
        let token = token_in(&e.mail(&victim, 2).await);
        let r = e.post("/magic-link/consume", json!({"token": token})).await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        assert_eq!(profile_with(&e.app, &mine).await.status, StatusCode::OK);
        t.cleanup().await;
    }
}

/// Decision: a plain verification link is not a sign-in. It marks the address verified
/// and keeps the registrant's password and sessions (their normal flow); a later sign-in
/// link then proves nothing new.
#[tokio::test]
async fn a_verification_link_keeps_the_credentials() {
    let Some((url, maildir)) = smtp("verified::verify_keeps") else {
        return;
    };
    for t in databases("verified::verify_keeps").await {
        let n = t.name;
        let config = lifecycle(&url).verification(VerificationMode::Link);
        let e = env(&t, config, &maildir).await;
        let id = address();
        e.register(&id).await;
        let r = e
            .post("/login", json!({"identifier": id, "password": PASSWORD}))
            .await;
        let access = r.body["data"]["accessToken"].as_str().unwrap().to_owned();
        let token = token_in(&e.mail(&id, 1).await);
        let r = e.post("/verify-email", json!({"token": token})).await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        assert_eq!(profile_with(&e.app, &access).await.status, StatusCode::OK);
        e.post("/magic-link/request", json!({"identifier": id}))
            .await;
        let token = token_in(&e.mail(&id, 2).await);
        let r = e.post("/magic-link/consume", json!({"token": token})).await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        assert_eq!(profile_with(&e.app, &access).await.status, StatusCode::OK);
        let r = e
            .post("/login", json!({"identifier": id, "password": PASSWORD}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{n}: password kept");
        t.cleanup().await;
    }
}

/// A second factor the registrant enrolled before the address was proven does not
/// survive the proof: the owner's first sign-in by link opens a session (no challenge
/// from the registrant's authenticator) and the account has no device or backup code.
#[tokio::test]
async fn a_second_factor_set_up_before_the_proof_ends_with_it() {
    use sentri::capability::two_factor::{TwoFactor, totp_code};
    use sentri::clock::Clock;
    let Some((url, maildir)) = smtp("verified::prehijack_2fa") else {
        return;
    };
    for t in databases("verified::prehijack_2fa").await {
        let n = t.name;
        let config = lifecycle(&url).email_verification(false);
        let sealer = sentri::core::seal::Sealer::new("k1", [7; 32]).unwrap();
        let e = env_with(&t, config, &maildir, |c| c.with(TwoFactor::new(sealer))).await;
        let victim = address();
        // The registrant (not the address's owner) signs in and enrols a TOTP device.
        e.register(&victim).await;
        let r = e
            .post(
                "/login",
                json!({"identifier": victim, "password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        let h = bearer(r.body["data"]["accessToken"].as_str().unwrap());
        let r = call(
            &e.app,
            Method::POST,
            "/auth/2fa/totp/enroll",
            &[("authorization", &h)],
            Some(json!({"password": PASSWORD, "name": "theirs"})),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{n}: {:?}", r.body);
        let device = r.body["data"]["deviceId"].as_str().unwrap().to_owned();
        let secret = r.body["data"]["secret"].as_str().unwrap().to_owned();
        let now = u64::try_from(e.clock.now_ms() / 1000).unwrap();
        let r = call(
            &e.app,
            Method::POST,
            "/auth/2fa/totp/confirm",
            &[("authorization", &h)],
            Some(json!({"deviceId": device, "code": totp_code(&secret, now).unwrap()})),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        // The owner signs in by link: a session, not the registrant's challenge.
        let r = e
            .post("/magic-link/request", json!({"identifier": victim}))
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{n}");
        let token = token_in(&e.mail(&victim, 1).await);
        let r = e.post("/magic-link/consume", json!({"token": token})).await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        assert_eq!(
            r.body["data"]["twoFactorRequired"],
            serde_json::Value::Null,
            "{n}"
        );
        let mine = bearer(r.body["data"]["accessToken"].as_str().unwrap());
        let r = call(
            &e.app,
            Method::GET,
            "/auth/2fa",
            &[("authorization", &mine)],
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        assert_eq!(r.body["data"]["enabled"], false, "{n}: {:?}", r.body);
        assert_eq!(r.body["data"]["devices"], json!([]), "{n}");
        assert_eq!(r.body["data"]["backupCodesRemaining"], 0, "{n}");
        t.cleanup().await;
    }
}
