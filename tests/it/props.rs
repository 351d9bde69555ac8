//! Property tests: arbitrary input never panics and always maps to a documented error.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use proptest::prelude::*;
use sentri::token::{SigningKey, TokenOptions, TokenService};

use crate::support::http::send;
use crate::support::services::{SECRET, config};

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
            match sentri::clock::parse_duration(&input) {
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
        let t = crate::support::db::database("sqlite", "props::bodies")
            .await
            .unwrap();
        let auth = sentri::create_auth(config(t.db.clone())).unwrap();
        (crate::support::http::app(&auth), t)
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

/// Characters that stress identifier normalisation: combining marks, compatibility
/// characters, letters whose case folding expands or needs NFKC again, and anything.
fn identifier_char() -> impl Strategy<Value = char> {
    let special = vec![
        'W', 'J', 'H', 'T', 'Y', '\u{130}', '\u{131}', '\u{1E98}', '\u{1F0}', '\u{1E96}',
        '\u{1E97}', '\u{1E99}', 'ß', '\u{1E9E}', 'Σ', 'ς', 'ǅ', 'ſ', '\u{212A}', '\u{212B}',
        '\u{2126}', '\u{390}', '\u{345}', '\u{149}', 'ﬁ', 'ﬃ', 'ﬅ', '\u{FDFA}', '\u{3392}', 'Ⅻ',
        '①', '㎏', '\u{B4}', '\u{A0}', '\u{3000}', 'Å', 'Ǆ', 'ᾈ', 'ﬓ',
    ];
    prop_oneof![
        3 => prop::char::range('a', 'z'),
        2 => prop::char::range('A', 'Z'),
        3 => prop::char::range('\u{300}', '\u{36F}'),
        3 => prop::sample::select(special),
        2 => prop::char::range('\u{FF01}', '\u{FF5E}'),
        1 => prop::char::range('\u{1100}', '\u{11FF}'),
        1 => prop::char::range('\u{AC00}', '\u{AC20}'),
        1 => prop::char::range('\u{1F00}', '\u{1FFF}'),
        1 => any::<char>(),
    ]
}

fn identifier_like() -> impl Strategy<Value = String> {
    prop::collection::vec(identifier_char(), 0..24).prop_map(|v| v.into_iter().collect())
}

/// An identifier that starts with a capital and a combining mark (the issue #23 shapes,
/// e.g. `W` + U+030A, whose lower case NFKC composes), then anything.
fn lookalike_identifier() -> impl Strategy<Value = String> {
    let bases = vec!['W', 'J', 'H', 'T', 'Y', '\u{130}'];
    let marks = vec![
        '\u{30A}', '\u{30C}', '\u{331}', '\u{308}', '\u{301}', '\u{307}',
    ];
    (
        prop::sample::select(bases),
        prop::sample::select(marks),
        identifier_like(),
    )
        .prop_map(|(base, mark, rest)| format!("{base}{mark}{rest}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..cases() })]

    /// Normalisation is a fixed point, and canonically equivalent spellings (decomposed
    /// or precomposed) are one identifier.
    #[test]
    fn identifier_normalisation_is_idempotent(s in identifier_like(), any_s in any::<String>()) {
        use sentri::identity::normalize_identifier;
        use sentri::IdentifierCase::{Insensitive, Sensitive};
        use unicode_normalization::UnicodeNormalization;
        for input in [s.as_str(), any_s.as_str()] {
            for case in [Insensitive, Sensitive] {
                let once = normalize_identifier(input, case);
                if let Err(e) = &once {
                    prop_assert_ne!(e.message(), "identifier has no stable normal form");
                }
                if let Ok(once) = &once {
                    let twice = normalize_identifier(once, case).ok();
                    prop_assert_eq!(twice.as_ref(), Some(once));
                }
                for equivalent in [input.nfd().collect::<String>(), input.nfc().collect()] {
                    let other = normalize_identifier(&equivalent, case);
                    prop_assert_eq!(
                        other.as_ref().map_err(|e| e.message()),
                        once.as_ref().map_err(|e| e.message())
                    );
                }
            }
        }
    }
}

/// Whatever registers can log in, with the identifier the server returned and as typed.
#[test]
fn register_then_login_with_the_returned_identifier_always_succeeds() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (app, _t) = rt.block_on(async {
        let t = crate::support::db::database("sqlite", "props::identifier_round_trip")
            .await
            .unwrap();
        let auth = sentri::create_auth(config(t.db.clone())).unwrap();
        (crate::support::http::app(&auth), t)
    });
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 64,
        ..cases()
    });
    runner
        .run(&lookalike_identifier(), |s| {
            let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let typed = format!("{s}-{i}");
            let r = rt.block_on(crate::support::http::register(&app, &typed, "password1"));
            if r.status == StatusCode::BAD_REQUEST {
                prop_assert_eq!(r.code(), "VALIDATION_ERROR");
                return Ok(());
            }
            prop_assert_eq!(r.status, StatusCode::CREATED, "{:?}: {:?}", typed, r.body);
            let returned = r.body["data"]["user"]["identifier"]
                .as_str()
                .unwrap()
                .to_owned();
            for login_as in [returned.as_str(), typed.as_str()] {
                let r = rt.block_on(crate::support::http::login(&app, login_as, "password1"));
                prop_assert_eq!(r.status, StatusCode::OK, "{:?}: {:?}", login_as, r.body);
                prop_assert_eq!(
                    r.body["data"]["user"]["identifier"].as_str(),
                    Some(returned.as_str())
                );
            }
            Ok(())
        })
        .unwrap();
}
