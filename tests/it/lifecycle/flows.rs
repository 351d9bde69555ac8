//! Every flow end to end over HTTP, mail through the real SMTP server.

use std::time::Duration;

use axum::http::StatusCode;
use sentri::AuthEventKind;
use sentri::capability::lifecycle::VerificationMode;
use sentri::identity::ProvisionUser;
use serde_json::json;

use super::{PASSWORD, address, code_in, env, lifecycle, smtp, token_in};
use crate::support::db::databases;
use crate::support::http::{expect, refresh_with};

#[tokio::test]
async fn code_verification_gates_login_only_after_the_password() {
    let Some((url, maildir)) = smtp("lifecycle code verification") else {
        return;
    };
    for t in databases("lifecycle_code").await {
        let e = env(
            &t,
            lifecycle(&url).require_email_verification(true),
            &maildir,
        )
        .await;
        let id = address();
        e.register(&id).await;
        let code = code_in(&e.mail(&id, 1).await);
        assert_eq!(code.len(), 6, "{}", t.name);

        let wrong = e
            .post(
                "/login",
                json!({"identifier": id, "password": "wrong password"}),
            )
            .await;
        expect(
            &wrong,
            StatusCode::UNAUTHORIZED,
            "INVALID_CREDENTIALS",
            t.name,
        );
        let gated = e
            .post("/login", json!({"identifier": id, "password": PASSWORD}))
            .await;
        expect(&gated, StatusCode::FORBIDDEN, "EMAIL_NOT_VERIFIED", t.name);

        let ok = e
            .post("/verify-email", json!({"identifier": id, "code": code}))
            .await;
        assert_eq!(ok.status, StatusCode::OK, "{}: {:?}", t.name, ok.body);
        e.events.wait_for(AuthEventKind::EmailVerified).await;
        let again = e
            .post("/verify-email", json!({"identifier": id, "code": code}))
            .await;
        expect(&again, StatusCode::UNAUTHORIZED, "TOKEN_INVALID", t.name);
        let login = e
            .post("/login", json!({"identifier": id, "password": PASSWORD}))
            .await;
        assert_eq!(login.status, StatusCode::OK, "{}: {:?}", t.name, login.body);
    }
}

#[tokio::test]
async fn link_verification_is_single_use_and_expires() {
    let Some((url, maildir)) = smtp("lifecycle link verification") else {
        return;
    };
    for t in databases("lifecycle_link").await {
        let config = lifecycle(&url)
            .verification(VerificationMode::Link)
            .resend_limits(10, 10);
        let e = env(&t, config, &maildir).await;
        let id = address();
        e.register(&id).await;
        let mail = e.mail(&id, 1).await;
        assert!(
            mail.contains("https://app.example/verify-email?token="),
            "{}",
            t.name
        );
        let token = token_in(&mail);
        assert!(token.len() >= 43, "{}: 256-bit token", t.name);

        // The last character changed (to one it is not: `A` ends 1 token in 64).
        let last = if token.ends_with('A') { 'B' } else { 'A' };
        let tampered = format!("{}{last}", &token[..token.len() - 1]);
        let r = e.post("/verify-email", json!({"token": tampered})).await;
        expect(&r, StatusCode::UNAUTHORIZED, "TOKEN_INVALID", t.name);
        let r = e.post("/verify-email", json!({"token": token})).await;
        assert_eq!(r.status, StatusCode::OK, "{}: {:?}", t.name, r.body);
        let r = e.post("/verify-email", json!({"token": token})).await;
        expect(&r, StatusCode::UNAUTHORIZED, "TOKEN_INVALID", t.name);

        // A second account: its link expires after 20 minutes.
        let other = address();
        e.register(&other).await;
        let token = token_in(&e.mail(&other, 1).await);
        e.clock.advance(Duration::from_secs(20 * 60 + 1));
        let r = e.post("/verify-email", json!({"token": token})).await;
        expect(&r, StatusCode::UNAUTHORIZED, "TOKEN_INVALID", t.name);
    }
}

#[tokio::test]
async fn resend_is_throttled_per_account() {
    let Some((url, maildir)) = smtp("lifecycle resend throttle") else {
        return;
    };
    for t in databases("lifecycle_resend").await {
        let e = env(&t, lifecycle(&url), &maildir).await;
        let id = address();
        e.register(&id).await;
        let first = code_in(&e.mail(&id, 1).await);
        // Within the minute: answered like any other request, but nothing is sent.
        let r = e
            .post("/verify-email/resend", json!({"identifier": id}))
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", t.name);
        e.clock.advance(Duration::from_secs(61));
        let r = e
            .post("/verify-email/resend", json!({"identifier": id}))
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", t.name);
        let second = code_in(&e.mail(&id, 2).await);
        // Only the newest code counts.
        if first != second {
            let r = e
                .post("/verify-email", json!({"identifier": id, "code": first}))
                .await;
            expect(&r, StatusCode::UNAUTHORIZED, "TOKEN_INVALID", t.name);
        }
        let r = e
            .post("/verify-email", json!({"identifier": id, "code": second}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}: {:?}", t.name, r.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            super::mails_to(&maildir, &id).len(),
            2,
            "{}: throttled resend sent nothing",
            t.name
        );
        // Five an hour: three more minutes give three more messages at most… and the
        // account is verified now, so no more at all.
        e.clock.advance(Duration::from_secs(61));
        e.post("/verify-email/resend", json!({"identifier": id}))
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            super::mails_to(&maildir, &id).len(),
            2,
            "{}: verified: nothing sent",
            t.name
        );
    }
}

#[tokio::test]
async fn password_reset_revokes_sessions_and_is_single_use() {
    let Some((url, maildir)) = smtp("lifecycle reset") else {
        return;
    };
    for t in databases("lifecycle_reset").await {
        let e = env(&t, lifecycle(&url).email_verification(false), &maildir).await;
        let id = address();
        e.register(&id).await;
        let login = e
            .post("/login", json!({"identifier": id, "password": PASSWORD}))
            .await;
        let refresh = login.cookie("refresh_token").unwrap();

        let r = e.post("/forgot-password", json!({"identifier": id})).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", t.name);
        let mail = e.mail(&id, 1).await;
        assert!(
            mail.contains("https://app.example/reset-password?token="),
            "{}",
            t.name
        );
        let token = token_in(&mail);

        // The policy applies and a refused password leaves the token usable.
        let r = e
            .post(
                "/reset-password",
                json!({"token": token, "newPassword": "short"}),
            )
            .await;
        expect(&r, StatusCode::BAD_REQUEST, "VALIDATION_ERROR", t.name);
        // Wrong purpose: a reset token is no sign-in link.
        let r = e.post("/magic-link/consume", json!({"token": token})).await;
        expect(&r, StatusCode::UNAUTHORIZED, "TOKEN_INVALID", t.name);

        let r = e
            .post(
                "/reset-password",
                json!({"token": token, "newPassword": "a brand new password"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}: {:?}", t.name, r.body);
        e.events.wait_for(AuthEventKind::PasswordReset).await;
        let r = e
            .post(
                "/reset-password",
                json!({"token": token, "newPassword": "another new password"}),
            )
            .await;
        expect(&r, StatusCode::UNAUTHORIZED, "TOKEN_INVALID", t.name);

        let r = refresh_with(&e.app, &refresh).await;
        expect(&r, StatusCode::UNAUTHORIZED, "TOKEN_INVALID", t.name);
        let r = e
            .post("/login", json!({"identifier": id, "password": PASSWORD}))
            .await;
        expect(&r, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS", t.name);
        let r = e
            .post(
                "/login",
                json!({"identifier": id, "password": "a brand new password"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", t.name);
        let user = e
            .auth
            .database()
            .find_user_by_identifier(&id)
            .await
            .unwrap()
            .unwrap();
        let state = e
            .auth
            .database()
            .user_email(&user.id)
            .await
            .unwrap()
            .unwrap();
        assert!(
            state.verified_at.is_some(),
            "{}: reset proves the address",
            t.name
        );
    }
}

#[tokio::test]
async fn a_reset_consumes_every_other_outstanding_reset_token() {
    let Some((url, maildir)) = smtp("lifecycle reset siblings") else {
        return;
    };
    for t in databases("lifecycle_siblings").await {
        let e = env(&t, lifecycle(&url).email_verification(false), &maildir).await;
        let id = address();
        e.register(&id).await;
        e.post("/forgot-password", json!({"identifier": id})).await;
        let first = token_in(&e.mail(&id, 1).await);
        e.post("/forgot-password", json!({"identifier": id})).await;
        let second = token_in(&e.mail(&id, 2).await);
        let r = e
            .post(
                "/reset-password",
                json!({"token": second, "newPassword": "a brand new password"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", t.name);
        let r = e
            .post(
                "/reset-password",
                json!({"token": first, "newPassword": "a sneaky new password"}),
            )
            .await;
        expect(&r, StatusCode::UNAUTHORIZED, "TOKEN_INVALID", t.name);
        // The reset was notified (the third message), without a link.
        let notice = e.mail(&id, 3).await;
        assert!(notice.contains("password was reset"), "{}", t.name);
        assert!(!notice.contains("token="), "{}", t.name);
        // Expiry: a fresh token dies after 30 minutes.
        e.post("/forgot-password", json!({"identifier": id})).await;
        let third = token_in(&e.mail(&id, 4).await);
        e.clock.advance(Duration::from_secs(30 * 60 + 1));
        let r = e
            .post(
                "/reset-password",
                json!({"token": third, "newPassword": "a late new password"}),
            )
            .await;
        expect(&r, StatusCode::UNAUTHORIZED, "TOKEN_INVALID", t.name);
    }
}

#[tokio::test]
async fn magic_link_signs_in_like_login_once() {
    let Some((url, maildir)) = smtp("lifecycle magic link") else {
        return;
    };
    for t in databases("lifecycle_magic").await {
        let config = lifecycle(&url)
            .email_verification(false)
            .require_email_verification(true);
        let e = env(&t, config, &maildir).await;
        let id = address();
        e.register(&id).await;
        let r = e
            .post("/magic-link/request", json!({"identifier": id}))
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", t.name);
        let mail = e.mail(&id, 1).await;
        assert!(
            mail.contains("https://app.example/magic-link?token="),
            "{}",
            t.name
        );
        let token = token_in(&mail);
        // Wrong purpose: a sign-in link is no reset token.
        let r = e
            .post(
                "/reset-password",
                json!({"token": token, "newPassword": "a brand new password"}),
            )
            .await;
        expect(&r, StatusCode::UNAUTHORIZED, "TOKEN_INVALID", t.name);

        let r = e.post("/magic-link/consume", json!({"token": token})).await;
        assert_eq!(r.status, StatusCode::OK, "{}: {:?}", t.name, r.body);
        assert!(r.body["data"]["accessToken"].is_string(), "{}", t.name);
        assert!(r.cookie("refresh_token").is_some(), "{}", t.name);
        let r = e.post("/magic-link/consume", json!({"token": token})).await;
        expect(&r, StatusCode::UNAUTHORIZED, "TOKEN_INVALID", t.name);
        // Consuming was the first proof of the address on an account registered
        // without it: the password set without the proof is gone (a reset sets one).
        let r = e
            .post("/login", json!({"identifier": id, "password": PASSWORD}))
            .await;
        expect(&r, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS", t.name);

        e.post("/magic-link/request", json!({"identifier": id}))
            .await;
        let late = token_in(&e.mail(&id, 2).await);
        e.clock.advance(Duration::from_secs(15 * 60 + 1));
        let r = e.post("/magic-link/consume", json!({"token": late})).await;
        expect(&r, StatusCode::UNAUTHORIZED, "TOKEN_INVALID", t.name);
    }
}

#[tokio::test]
async fn switched_off_flows_answer_404_and_provisioning_still_works() {
    let Some((url, maildir)) = smtp("lifecycle flags") else {
        return;
    };
    for t in databases("lifecycle_flags").await {
        let config = lifecycle(&url)
            .signup(false)
            .email_verification(false)
            .reset_password(false)
            .magic_link(false);
        let e = env(&t, config, &maildir).await;
        for path in [
            "/register",
            "/verify-email",
            "/verify-email/resend",
            "/forgot-password",
            "/reset-password",
            "/magic-link/request",
            "/magic-link/consume",
        ] {
            let r = e
                .post(path, json!({"identifier": "a@b.co", "password": PASSWORD}))
                .await;
            expect(
                &r,
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                &format!("{} {path}", t.name),
            );
        }
        let id = address();
        let admin = ProvisionUser::new(&id, PASSWORD)
            .roles(["admin"])
            .mark_email_verified(true);
        let user = e.auth.provision_user(admin.clone()).await.unwrap();
        assert_eq!(user.roles, ["admin"], "{}", t.name);
        // Idempotent for the same target; a different one is a conflict.
        let again = e.auth.provision_user(admin).await.unwrap();
        assert_eq!(again.id, user.id, "{}", t.name);
        let other = ProvisionUser::new(&id, PASSWORD).roles(["user"]);
        let err = e.auth.provision_user(other).await.unwrap_err();
        assert_eq!(err.code().as_str(), "USER_ALREADY_EXISTS", "{}", t.name);
        let err = e
            .auth
            .provision_user(ProvisionUser::new(&id, "another password"))
            .await
            .unwrap_err();
        assert_eq!(err.code().as_str(), "USER_ALREADY_EXISTS", "{}", t.name);
        let weak = e
            .auth
            .provision_user(ProvisionUser::new(address(), "short"))
            .await
            .unwrap_err();
        assert_eq!(weak.code().as_str(), "VALIDATION_ERROR", "{}", t.name);
        let state = e
            .auth
            .database()
            .user_email(&user.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(state.email.as_deref(), Some(id.as_str()), "{}", t.name);
        assert!(state.verified_at.is_some(), "{}", t.name);
        let r = e
            .post("/login", json!({"identifier": id, "password": PASSWORD}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", t.name);
    }
}

#[tokio::test]
async fn provisioned_username_accounts_get_mail_at_their_address() {
    let Some((url, maildir)) = smtp("lifecycle username address") else {
        return;
    };
    for t in databases("lifecycle_username").await {
        let e = env(&t, lifecycle(&url), &maildir).await;
        let to = address();
        let name = crate::support::common::unique("name");
        e.auth
            .provision_user(ProvisionUser::new(&name, PASSWORD).email(&to))
            .await
            .unwrap();
        // Provisioning emits `registered`: the verification code goes to the address.
        let code = code_in(&e.mail(&to, 1).await);
        let r = e
            .post("/verify-email", json!({"identifier": name, "code": code}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}: {:?}", t.name, r.body);
        let r = e
            .post("/forgot-password", json!({"identifier": name}))
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", t.name);
        assert!(token_in(&e.mail(&to, 2).await).len() >= 43, "{}", t.name);
    }
}

#[tokio::test]
async fn a_changed_address_needs_verifying_and_the_old_one_is_told() {
    let Some((url, maildir)) = smtp("lifecycle address change") else {
        return;
    };
    for t in databases("lifecycle_change").await {
        let e = env(
            &t,
            lifecycle(&url).require_email_verification(true),
            &maildir,
        )
        .await;
        let (old, new) = (address(), address());
        e.register(&old).await;
        let code = code_in(&e.mail(&old, 1).await);
        let r = e
            .post("/verify-email", json!({"identifier": old, "code": code}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", t.name);
        let login = e
            .post("/login", json!({"identifier": old, "password": PASSWORD}))
            .await;
        let access = login.body["data"]["accessToken"]
            .as_str()
            .unwrap()
            .to_owned();
        let r = crate::support::http::call(
            &e.app,
            axum::http::Method::POST,
            "/auth/change-identifier",
            &[("authorization", &crate::support::http::bearer(&access))],
            Some(json!({"identifier": new, "currentPassword": PASSWORD})),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}: {:?}", t.name, r.body);
        let notice = e.mail(&old, 2).await;
        assert!(notice.contains("email address was changed"), "{}", t.name);
        assert!(
            !notice.contains(&new),
            "{}: the notice does not name the new address",
            t.name
        );
        let code = code_in(&e.mail(&new, 1).await);
        let r = e
            .post("/login", json!({"identifier": new, "password": PASSWORD}))
            .await;
        expect(&r, StatusCode::FORBIDDEN, "EMAIL_NOT_VERIFIED", t.name);
        let r = e
            .post("/verify-email", json!({"identifier": new, "code": code}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", t.name);
        let r = e
            .post("/login", json!({"identifier": new, "password": PASSWORD}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", t.name);
    }
}
