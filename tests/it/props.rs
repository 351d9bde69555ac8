//! Property tests: arbitrary input never panics and always maps to a documented error.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use proptest::prelude::*;
use sentri::token::{SigningKey, TokenOptions, TokenService};

use crate::http::send;
use crate::services::{SECRET, config};

fn cases() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn tokens() -> TokenService {
    TokenService::new(
        vec![SigningKey::hs256(SECRET).unwrap()],
        TokenOptions::default(),
    )
    .unwrap()
}

/// Strings that look a bit like JWTs: base64url-ish segments and dots.
fn jwt_like() -> impl Strategy<Value = String> {
    prop::collection::vec("[A-Za-z0-9_=+/-]{0,40}", 0..5).prop_map(|s| s.join("."))
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn token_verification_never_panics(s in any::<String>(), j in jwt_like(), bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let t = tokens();
        let lossy = String::from_utf8_lossy(&bytes).into_owned();
        for input in [s.as_str(), j.as_str(), lossy.as_str()] {
            for res in [t.verify_access(input).err(), t.verify_refresh(input).err()] {
                let err = res.expect("garbage never verifies");
                prop_assert!(matches!(err.code().as_str(), "TOKEN_INVALID" | "TOKEN_EXPIRED"));
                prop_assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
            }
            let _ = sentri::token::peek_kid(input);
        }
    }

    #[test]
    fn damaging_a_real_token_never_verifies(pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let t = tokens();
        let user = sentri::AuthUser { id: "u".into(), identifier: "i".into(), roles: vec!["user".into()] };
        let (token, _) = t.sign_access(&user, "sid").unwrap();
        let mut bytes = token.clone().into_bytes();
        let i = pos.index(bytes.len());
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        let damaged = String::from_utf8_lossy(&bytes).into_owned();
        // Base64url has slack bits in the last character of a segment: a change
        // there may decode to the same bytes. Anything that verifies must carry the
        // original claims, i.e. nothing was forged.
        match t.verify_access(&damaged) {
            Ok(claims) => prop_assert_eq!(claims, t.verify_access(&token).unwrap()),
            Err(err) => prop_assert_eq!(err.code().as_str(), "TOKEN_INVALID"),
        }
    }

    #[test]
    fn durations_parse_or_fail_cleanly(s in any::<String>(), n in any::<u64>(), unit in "[smhdwxyS ]?") {
        for input in [s.clone(), format!("{n}{unit}"), format!("-{n}{unit}")] {
            match sentri::config::parse_duration(&input) {
                Ok(d) => {
                    prop_assert!(d.as_secs() > 0 && d.as_secs() <= 10 * 365 * 86_400);
                }
                Err(err) => prop_assert_eq!(err.code().as_str(), "CONFIGURATION_ERROR"),
            }
        }
    }

    #[test]
    fn cookie_and_bearer_extraction_never_panics(values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..4), name in "[a-z_]{1,12}") {
        let mut h = HeaderMap::new();
        for v in &values {
            if let Ok(v) = HeaderValue::from_bytes(v) {
                h.append(header::COOKIE, v.clone());
                h.append(header::AUTHORIZATION, v);
            }
        }
        if let Some(v) = sentri::http::cookies::read_cookie(&h, &name) {
            prop_assert!(!v.is_empty() && v.len() <= 8 * 1024);
        }
        if let Ok(Some(t)) = sentri::http::cookies::bearer_token(&h) {
            prop_assert!(!t.is_empty() && !t.contains(' '));
        }
    }
}

/// Statuses and codes the two public endpoints may answer with.
fn documented(status: StatusCode, code: &str) -> bool {
    matches!(
        (status.as_u16(), code),
        (201, "")
            | (200, "")
            | (400, "VALIDATION_ERROR")
            | (400, "INVALID_ROLE")
            | (403, "FORBIDDEN")
            | (409, "USER_ALREADY_EXISTS")
            | (401, "INVALID_CREDENTIALS")
            | (413, "PAYLOAD_TOO_LARGE")
    )
}

#[test]
fn arbitrary_bodies_to_login_and_register_get_documented_answers() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (app, _t) = rt.block_on(async {
        let t = crate::db::database("sqlite", "props::bodies")
            .await
            .unwrap();
        let auth = sentri::create_auth(config(t.db.clone())).unwrap();
        (crate::http::app(&auth), t)
    });
    let json_ish = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..400),
        "\\{\"identifier\":\"[a-zA-Z0-9 \\\\\\x00-\\x1f\u{200b}]{0,20}\",\"password\":\"[a-z0-9]{0,12}\"(,\"roles\":\\[\"[a-z]{0,6}\"\\])?\\}"
            .prop_map(String::into_bytes),
    ];
    let mut runner = proptest::test_runner::TestRunner::new(cases());
    runner
        .run(
            &(json_ish, any::<bool>(), any::<bool>()),
            |(body, register, json_ct)| {
                let path = if register {
                    "/auth/register"
                } else {
                    "/auth/login"
                };
                let mut req = Request::builder().method(Method::POST).uri(path);
                if json_ct {
                    req = req.header(header::CONTENT_TYPE, "application/json");
                }
                let req = req.body(Body::from(body)).unwrap();
                let r = rt.block_on(send(&app, req));
                prop_assert!(
                    documented(r.status, r.code()),
                    "{path}: {} {:?}",
                    r.status,
                    r.body
                );
                Ok(())
            },
        )
        .unwrap();
}
