//! The two-factor flows over HTTP, each on SQLite, PostgreSQL and MariaDB.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use sentri::capability::two_factor::TwoFactor;
use sentri::{LoginInput, SessionMeta};
use serde_json::json;

use super::{PW, assurance_of, rig, rig_full, rig_with, sealer};
use crate::support::db::databases;
use crate::support::http::{bearer, call, expect, login, refresh_with};

#[tokio::test]
async fn enrol_confirm_step_up_and_backup_code() {
    for t in databases("two_factor::flow").await {
        let r = rig(&t).await;
        let access = r.signed_in("ada").await;
        assert_eq!(
            assurance_of(&access),
            (json!(1), json!(["pwd"])),
            "{}",
            t.name
        );
        let res = r.get("/api/secure", &access).await;
        expect(&res, StatusCode::FORBIDDEN, "TWO_FACTOR_REQUIRED", "aal1");
        let res = r
            .post(
                "/auth/2fa/totp/enroll",
                &access,
                json!({"password": "wrong-pass"}),
            )
            .await;
        expect(
            &res,
            StatusCode::UNAUTHORIZED,
            "INVALID_CREDENTIALS",
            "enrol password",
        );
        let enrol = r
            .post("/auth/2fa/totp/enroll", &access, json!({"password": PW}))
            .await;
        assert_eq!(enrol.status, StatusCode::CREATED);
        let secret = enrol.body["data"]["secret"].as_str().unwrap().to_owned();
        assert!(secret.len() >= 32, "at least 160 bits");
        let url = enrol.body["data"]["otpauthUrl"].as_str().unwrap();
        assert!(
            url.starts_with("otpauth://totp/sentri:ada?secret="),
            "{url}"
        );
        let id = enrol.body["data"]["deviceId"].as_str().unwrap();
        // Nothing is active before confirmation.
        let plain = login(&r.app, "ada", PW).await;
        assert!(
            plain.body["data"]["accessToken"].is_string(),
            "not active yet"
        );
        let bad = r
            .post(
                "/auth/2fa/totp/confirm",
                &access,
                json!({"deviceId": id, "code": "000000"}),
            )
            .await;
        expect(
            &bad,
            StatusCode::UNAUTHORIZED,
            "TWO_FACTOR_INVALID",
            "confirm",
        );
        let ok = r
            .post(
                "/auth/2fa/totp/confirm",
                &access,
                json!({"deviceId": id, "code": r.code(&secret, 0)}),
            )
            .await;
        assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
        let codes = ok.body["data"]["backupCodes"].as_array().unwrap().clone();
        assert_eq!(codes.len(), 10);
        r.next_step();
        let status = r.get("/auth/2fa", &access).await;
        assert_eq!(status.body["data"]["enabled"], true);
        assert_eq!(status.body["data"]["backupCodesRemaining"], 10);
        assert!(
            !status.body.to_string().contains(&secret),
            "secret never again"
        );

        // Step-up login: no session until the second factor.
        let token = r.challenge("ada").await;
        let wrong = r.verify(&token, "123456").await;
        expect(
            &wrong,
            StatusCode::UNAUTHORIZED,
            "TWO_FACTOR_INVALID",
            "wrong code",
        );
        let done = r.verify(&token, &r.code(&secret, 0)).await;
        assert_eq!(done.status, StatusCode::OK, "{}: {:?}", t.name, done.body);
        let access2 = done.body["data"]["accessToken"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            done.cookie("refresh_token").is_some(),
            "normal login response"
        );
        assert_eq!(
            assurance_of(&access2),
            (json!(2), json!(["pwd", "otp", "mfa"]))
        );
        assert_eq!(r.get("/api/secure", &access2).await.status, StatusCode::OK);
        let again = r.verify(&token, &r.code(&secret, 0)).await;
        expect(
            &again,
            StatusCode::UNAUTHORIZED,
            "TWO_FACTOR_INVALID",
            "token reused",
        );

        // The public service names the missing factor.
        let input = LoginInput {
            identifier: "ada".into(),
            password: PW.into(),
        };
        let err = r
            .auth
            .login(input, SessionMeta::default())
            .await
            .unwrap_err();
        assert_eq!(err.code().as_str(), "TWO_FACTOR_REQUIRED");

        // A backup code, once.
        let backup = codes[0].as_str().unwrap();
        let token = r.challenge("ada").await;
        let done = r.verify(&token, backup).await;
        assert_eq!(done.status, StatusCode::OK, "{:?}", done.body);
        let token = r.challenge("ada").await;
        let reused = r.verify(&token, backup).await;
        expect(
            &reused,
            StatusCode::UNAUTHORIZED,
            "TWO_FACTOR_INVALID",
            "backup reused",
        );
        let status = r.get("/auth/2fa", &access2).await;
        assert_eq!(status.body["data"]["backupCodesRemaining"], 9);

        // Regenerating invalidates the old set.
        let regen = r
            .post(
                "/auth/2fa/backup-codes",
                &access2,
                json!({"password": PW, "code": codes[1]}),
            )
            .await;
        assert_eq!(regen.status, StatusCode::OK, "{:?}", regen.body);
        let token = r.challenge("ada").await;
        let old = r.verify(&token, codes[2].as_str().unwrap()).await;
        expect(
            &old,
            StatusCode::UNAUTHORIZED,
            "TWO_FACTOR_INVALID",
            "old set",
        );
        let new_code = regen.body["data"]["backupCodes"][0].as_str().unwrap();
        assert_eq!(r.verify(&token, new_code).await.status, StatusCode::OK);
        t.cleanup().await;
    }
}

#[tokio::test]
async fn the_skew_window_has_exact_edges() {
    for t in databases("two_factor::skew").await {
        let r = rig(&t).await;
        let access = r.signed_in("bob").await;
        let (_, secret, _) = r.enable(&access).await;
        r.clock.advance(Duration::from_secs(300));
        for offset in [-2, 2] {
            let token = r.challenge("bob").await;
            let res = r.verify(&token, &r.code(&secret, offset)).await;
            expect(
                &res,
                StatusCode::UNAUTHORIZED,
                "TWO_FACTOR_INVALID",
                "outside",
            );
        }
        for offset in [-1, 1] {
            let token = r.challenge("bob").await;
            let res = r.verify(&token, &r.code(&secret, offset)).await;
            assert_eq!(res.status, StatusCode::OK, "{} offset {offset}", t.name);
        }
        // Step 0 is older than the used step +1: never accepted again.
        let token = r.challenge("bob").await;
        let res = r.verify(&token, &r.code(&secret, 0)).await;
        expect(
            &res,
            StatusCode::UNAUTHORIZED,
            "TWO_FACTOR_INVALID",
            "older step",
        );
        t.cleanup().await;
    }
}

#[tokio::test]
async fn a_wider_skew_is_configurable() {
    let t = databases("two_factor::skew2").await.remove(0);
    let r = rig_full(&t, TwoFactor::new(sealer()).skew(2), |c| c).await;
    let access = r.signed_in("cy").await;
    let (_, secret, _) = r.enable(&access).await;
    r.clock.advance(Duration::from_secs(300));
    let token = r.challenge("cy").await;
    assert_eq!(
        r.verify(&token, &r.code(&secret, -2)).await.status,
        StatusCode::OK
    );
    t.cleanup().await;
}

#[tokio::test]
async fn tokens_expire_die_after_five_wrong_codes_and_bind_their_user() {
    for t in databases("two_factor::tokens").await {
        let r = rig(&t).await;
        let a = r.signed_in("ann").await;
        let (_, secret_a, _) = r.enable(&a).await;
        let b = r.signed_in("ben").await;
        let (_, secret_b, _) = r.enable(&b).await;
        // Expired.
        let token = r.challenge("ann").await;
        r.clock.advance(Duration::from_secs(301));
        let res = r.verify(&token, &r.code(&secret_a, 0)).await;
        expect(
            &res,
            StatusCode::UNAUTHORIZED,
            "TWO_FACTOR_INVALID",
            "expired",
        );
        // Another user's code does not complete ann's login.
        let token = r.challenge("ann").await;
        let res = r.verify(&token, &r.code(&secret_b, 0)).await;
        expect(
            &res,
            StatusCode::UNAUTHORIZED,
            "TWO_FACTOR_INVALID",
            "other user",
        );
        // Five wrong codes kill the token (this one had one already).
        for _ in 0..4 {
            let res = r.verify(&token, "000000").await;
            expect(
                &res,
                StatusCode::UNAUTHORIZED,
                "TWO_FACTOR_INVALID",
                "wrong",
            );
        }
        let res = r.verify(&token, &r.code(&secret_a, 0)).await;
        expect(
            &res,
            StatusCode::UNAUTHORIZED,
            "TWO_FACTOR_INVALID",
            "dead token",
        );
        // A garbage token.
        let res = r.verify("nope", &r.code(&secret_a, 0)).await;
        expect(
            &res,
            StatusCode::UNAUTHORIZED,
            "TWO_FACTOR_INVALID",
            "garbage",
        );
        let res = call(
            &r.app,
            Method::POST,
            "/auth/2fa/verify",
            &[],
            Some(json!({"code": 1})),
        )
        .await;
        expect(
            &res,
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "bad body",
        );
        t.cleanup().await;
    }
}

#[tokio::test]
async fn wrong_codes_are_limited_per_user_across_tokens() {
    for t in databases("two_factor::limit").await {
        let r = rig_full(
            &t,
            TwoFactor::new(sealer()).failure_limit(6, Duration::from_secs(900)),
            |c| c,
        )
        .await;
        let a = r.signed_in("dan").await;
        let (_, secret, _) = r.enable(&a).await;
        for _ in 0..3 {
            let token = r.challenge("dan").await;
            for _ in 0..2 {
                let res = r.verify(&token, "000000").await;
                expect(
                    &res,
                    StatusCode::UNAUTHORIZED,
                    "TWO_FACTOR_INVALID",
                    "wrong",
                );
            }
        }
        let token = r.challenge("dan").await;
        let res = r.verify(&token, &r.code(&secret, 0)).await;
        expect(
            &res,
            StatusCode::TOO_MANY_REQUESTS,
            "TWO_FACTOR_LOCKED",
            "locked",
        );
        assert!(res.headers.get("retry-after").is_some());
        r.clock.advance(Duration::from_secs(901));
        let token = r.challenge("dan").await;
        let res = r.verify(&token, &r.code(&secret, 0)).await;
        assert_eq!(res.status, StatusCode::OK, "{}: {:?}", t.name, res.body);
        t.cleanup().await;
    }
}

#[tokio::test]
async fn refresh_and_silent_refresh_never_raise_the_level() {
    for t in databases("two_factor::refresh").await {
        let r = rig(&t).await;
        let first = login_after_register(&r, "eve").await;
        let (access1, refresh1) = first;
        let (_, secret, _) = r.enable(&access1).await;
        // The aal1 session stays aal1 through /refresh.
        let res = refresh_with(&r.app, &refresh1).await;
        assert_eq!(res.status, StatusCode::OK, "{:?}", res.body);
        let access = res.body["data"]["accessToken"].as_str().unwrap();
        assert_eq!(assurance_of(access).0, json!(1), "{}", t.name);
        let refresh1 = res.cookie("refresh_token").unwrap();
        // …and through a silent refresh.
        let cookie = format!("refresh_token={refresh1}");
        let res = call(
            &r.app,
            Method::GET,
            "/api/secure",
            &[("cookie", &cookie)],
            None,
        )
        .await;
        expect(
            &res,
            StatusCode::FORBIDDEN,
            "TWO_FACTOR_REQUIRED",
            "silent aal1",
        );
        // An aal2 session keeps level 2 through both.
        let token = r.challenge("eve").await;
        let done = r.verify(&token, &r.code(&secret, 0)).await;
        let refresh2 = done.cookie("refresh_token").unwrap();
        let res = refresh_with(&r.app, &refresh2).await;
        let access = res.body["data"]["accessToken"].as_str().unwrap();
        assert_eq!(
            assurance_of(access),
            (json!(2), json!(["pwd", "otp", "mfa"]))
        );
        let cookie = format!("refresh_token={}", res.cookie("refresh_token").unwrap());
        let res = call(
            &r.app,
            Method::GET,
            "/api/secure",
            &[("cookie", &cookie)],
            None,
        )
        .await;
        assert_eq!(res.status, StatusCode::OK, "{:?}", res.body);
        t.cleanup().await;
    }
}

async fn login_after_register(r: &super::Rig, id: &str) -> (String, String) {
    let access = r.signed_in(id).await;
    let res = login(&r.app, id, PW).await;
    let _ = access;
    (
        res.body["data"]["accessToken"].as_str().unwrap().to_owned(),
        res.cookie("refresh_token").unwrap(),
    )
}

#[tokio::test]
async fn disabling_needs_both_factors_and_turns_2fa_off() {
    for t in databases("two_factor::disable").await {
        let r = rig(&t).await;
        let a = r.signed_in("fay").await;
        let (id, secret, _) = r.enable(&a).await;
        let token = r.challenge("fay").await;
        let done = r.verify(&token, &r.code(&secret, 0)).await;
        let access = done.body["data"]["accessToken"]
            .as_str()
            .unwrap()
            .to_owned();
        r.next_step();
        let path = format!("/auth/2fa/totp/{id}");
        let auth = bearer(&access);
        let headers = [("authorization", auth.as_str())];
        let del = |body| call(&r.app, Method::DELETE, &path, &headers, Some(body));
        let res = del(json!({"password": "wrong-pass", "code": r.code(&secret, 0)})).await;
        expect(
            &res,
            StatusCode::UNAUTHORIZED,
            "INVALID_CREDENTIALS",
            "password",
        );
        let res = del(json!({"password": PW, "code": "000000"})).await;
        expect(&res, StatusCode::UNAUTHORIZED, "TWO_FACTOR_INVALID", "code");
        let res = del(json!({"password": PW})).await;
        expect(&res, StatusCode::BAD_REQUEST, "VALIDATION_ERROR", "no code");
        let res = del(json!({"password": PW, "code": r.code(&secret, 0)})).await;
        assert_eq!(res.status, StatusCode::OK, "{}: {:?}", t.name, res.body);
        let status = r.get("/auth/2fa", &access).await;
        assert_eq!(status.body["data"]["enabled"], false);
        assert_eq!(status.body["data"]["backupCodesRemaining"], 0);
        let plain = login(&r.app, "fay", PW).await;
        assert!(plain.body["data"]["accessToken"].is_string(), "2FA is off");
        t.cleanup().await;
    }
}

#[tokio::test]
async fn sensitive_operations_can_require_the_second_factor() {
    for t in databases("two_factor::sensitive").await {
        let r = rig_with(&t, |c| c.sensitive_requires_2fa(true)).await;
        let a = r.signed_in("gus").await;
        let body = json!({"currentPassword": PW, "newPassword": "password2"});
        let res = r.post("/auth/change-password", &a, body.clone()).await;
        expect(&res, StatusCode::FORBIDDEN, "TWO_FACTOR_REQUIRED", "aal1");
        let (_, secret, _) = r.enable(&a).await;
        let token = r.challenge("gus").await;
        let done = r.verify(&token, &r.code(&secret, 0)).await;
        let access = done.body["data"]["accessToken"].as_str().unwrap();
        let res = r.post("/auth/change-password", access, body).await;
        assert_eq!(res.status, StatusCode::OK, "{}: {:?}", t.name, res.body);
        t.cleanup().await;
    }
}

#[tokio::test]
async fn secrets_never_leave_after_enrolment_nor_rest_in_plaintext() {
    for t in databases("two_factor::secrets").await {
        let r = rig(&t).await;
        let a = r.signed_in("hal").await;
        let enrol = r
            .post(
                "/auth/2fa/totp/enroll",
                &a,
                json!({"password": PW, "name": "phone"}),
            )
            .await;
        let secret = enrol.body["data"]["secret"].as_str().unwrap().to_owned();
        let raw = decode_base32(&secret);
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
        // Marks the device when its stored secret contains the plaintext in any form.
        t.raw(&format!(
            "UPDATE sentri_two_factor_devices SET name = 'LEAK' WHERE secret LIKE '%{secret}%' \
             OR secret LIKE '%{hex}%' OR secret LIKE '%{b64}%' OR secret NOT LIKE 'v1.k1.%'"
        ))
        .await;
        let status = r.get("/auth/2fa", &a).await;
        assert_eq!(
            status.body["data"]["devices"][0]["name"], "phone",
            "{}",
            t.name
        );
        assert!(!status.body.to_string().contains(&secret));
        let debug = format!("{:?} {:?}", TwoFactor::new(sealer()), r.auth);
        assert!(
            !debug.contains(&secret) && !debug.contains("[7, 7"),
            "{debug}"
        );
        t.cleanup().await;
    }
}

fn decode_base32(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut buf, mut bits, mut out) = (0u32, 0u32, Vec::new());
    for c in s.bytes() {
        buf = (buf << 5) | A.iter().position(|a| *a == c).unwrap() as u32;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    out
}
