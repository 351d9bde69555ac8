//! Hostile input through the real router: forged and damaged tokens, malformed headers
//! and cookies, hostile bodies, identifiers and paths. Every case asserts the exact
//! status and code of the documented envelope (never a 500, a panic or a hang).

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sentri::ServerAuth;
use sentri::db::now_ms;
use sentri::token::{Algorithm, SigningKey};
use serde_json::{Value, json};

use crate::db::databases;
use crate::http::{Reply, app, bearer, call, login, register, send};
use crate::services::{SECRET, config};

// ---- helpers (shared with the other hardening modules) -------------------------------

/// Registers and logs in; returns (access token, refresh token from the cookie).
pub async fn session(app: &Router, id: &str, pw: &str) -> (String, String) {
    let r = register(app, id, pw).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = login(app, id, pw).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    (
        r.body["data"]["accessToken"].as_str().unwrap().to_owned(),
        r.cookie("refresh_token").expect("refresh cookie"),
    )
}

/// `GET /api/profile` (behind `protect()`) with these headers.
pub async fn profile(app: &Router, headers: &[(&str, &str)]) -> Reply {
    call(app, Method::GET, "/api/profile", headers, None).await
}

/// `GET /api/profile` with `Authorization: Bearer <token>`.
pub async fn profile_with(app: &Router, token: &str) -> Reply {
    profile(app, &[("authorization", &bearer(token))]).await
}

/// `POST /auth/refresh` with the refresh cookie.
pub async fn refresh_with(app: &Router, token: &str) -> Reply {
    call(
        app,
        Method::POST,
        "/auth/refresh",
        &[("cookie", &format!("refresh_token={token}"))],
        None,
    )
    .await
}

#[track_caller]
pub fn expect(r: &Reply, status: StatusCode, code: &str, what: &str) {
    assert_eq!((r.status, r.code()), (status, code), "{what}: {:?}", r.body);
    assert_eq!(r.body["error"], true, "{what}: envelope");
    assert_eq!(r.body["statusCode"], status.as_u16(), "{what}: envelope");
}

#[track_caller]
pub fn invalid(r: &Reply, what: &str) {
    expect(r, StatusCode::UNAUTHORIZED, "TOKEN_INVALID", what);
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn segment(token: &str, i: usize) -> Value {
    let part = token.split('.').nth(i).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// A compact JWS with this header and payload, HMAC-SHA256 over `key` (any bytes).
fn hs256_with(header: &Value, payload: &Value, key: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes())
    );
    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    let tag = aws_lc_rs::hmac::sign(&k, input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

/// Signs `payload` properly with `key` (any algorithm), with this `kid` and `typ`.
fn sign_with(key: &SigningKey, kid: Option<&str>, typ: &str, payload: &Value) -> String {
    let mut h = jsonwebtoken::Header::new(key.algorithm());
    h.kid = kid.map(str::to_owned);
    h.typ = Some(typ.to_owned());
    let enc = match key.algorithm() {
        Algorithm::HS256 => jsonwebtoken::EncodingKey::from_secret(SECRET),
        Algorithm::RS256 => {
            jsonwebtoken::EncodingKey::from_rsa_pem(key.to_pkcs8_pem().unwrap().as_bytes()).unwrap()
        }
        Algorithm::ES256 => {
            jsonwebtoken::EncodingKey::from_ec_pem(key.to_pkcs8_pem().unwrap().as_bytes()).unwrap()
        }
        other => panic!("unsupported in tests: {other:?}"),
    };
    jsonwebtoken::encode(&h, payload, &enc).unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

// ---- tokens --------------------------------------------------------------------------

#[tokio::test]
async fn forged_and_damaged_access_tokens_are_refused() {
    let t = databases("adversarial::tokens").await.remove(0);
    let auth = sentri::create_auth(config(t.db.clone())).unwrap();
    let app = app(&auth);
    let (access, refresh) = session(&app, "alice", "password1").await;
    assert_eq!(profile_with(&app, &access).await.status, StatusCode::OK);
    let hs = SigningKey::hs256(SECRET).unwrap();
    let header = segment(&access, 0);
    let claims = segment(&access, 1);
    assert_eq!(header["kid"], hs.kid());

    // Positive control: a token we sign ourselves with the real secret is accepted, so
    // every refusal below is about the one thing that was changed.
    let ok = sign_with(&hs, Some(hs.kid()), "at+jwt", &claims);
    assert_eq!(profile_with(&app, &ok).await.status, StatusCode::OK);

    // alg: none, with and without a signature.
    let none_header = json!({"alg": "none", "typ": "at+jwt", "kid": hs.kid()});
    let unsigned = format!(
        "{}.{}.",
        b64(none_header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    invalid(&profile_with(&app, &unsigned).await, "alg none");
    let none_sig = format!("{unsigned}{}", b64(b"sig"));
    invalid(&profile_with(&app, &none_sig).await, "alg none + sig");
    for alg in ["None", "NONE", "nOnE", "", "HS1"] {
        let h = json!({"alg": alg, "typ": "at+jwt", "kid": hs.kid()});
        invalid(
            &profile_with(&app, &hs256_with(&h, &claims, SECRET)).await,
            &format!("alg {alg:?}"),
        );
    }

    // Missing or unknown kid, kid of the wrong type.
    for h in [
        json!({"alg": "HS256", "typ": "at+jwt"}),
        json!({"alg": "HS256", "typ": "at+jwt", "kid": "nope"}),
        json!({"alg": "HS256", "typ": "at+jwt", "kid": ""}),
        json!({"alg": "HS256", "typ": "at+jwt", "kid": 7}),
        json!({"alg": "HS256", "typ": "at+jwt", "kid": [hs.kid()]}),
        json!({"alg": "HS256", "typ": "at+jwt", "kid": hs.kid(), "crit": ["exp"]}),
        json!({"alg": "HS512", "typ": "at+jwt", "kid": hs.kid()}),
    ] {
        invalid(
            &profile_with(&app, &hs256_with(&h, &claims, SECRET)).await,
            &format!("header {h}"),
        );
    }

    // Tampered header, payload and signature.
    let parts: Vec<&str> = access.split('.').collect();
    let mut h2 = header.clone();
    h2["x"] = json!(1);
    let tampered_header = format!(
        "{}.{}.{}",
        b64(h2.to_string().as_bytes()),
        parts[1],
        parts[2]
    );
    invalid(
        &profile_with(&app, &tampered_header).await,
        "tampered header",
    );
    let mut c2 = claims.clone();
    c2["roles"] = json!(["admin"]);
    let tampered_payload = format!(
        "{}.{}.{}",
        parts[0],
        b64(c2.to_string().as_bytes()),
        parts[2]
    );
    invalid(
        &profile_with(&app, &tampered_payload).await,
        "tampered payload",
    );
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    sig[0] ^= 1;
    let tampered_sig = format!("{}.{}.{}", parts[0], parts[1], b64(&sig));
    invalid(&profile_with(&app, &tampered_sig).await, "tampered sig");
    let no_sig = format!("{}.{}.", parts[0], parts[1]);
    invalid(&profile_with(&app, &no_sig).await, "empty signature");

    // Truncated and mangled shapes.
    for (what, tok) in [
        ("truncated", access[..access.len() - 10].to_owned()),
        ("one segment", parts[0].to_owned()),
        ("two segments", format!("{}.{}", parts[0], parts[1])),
        ("four segments", format!("{access}.{}", parts[2])),
        ("dots", "..".to_owned()),
        ("non-base64url", "a$b.c!d.e@f".to_owned()),
        (
            "standard base64 with padding",
            format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
        ),
        (
            "plus and slash",
            format!("{}+/.{}.{}", parts[0], parts[1], parts[2]),
        ),
        (
            "header not JSON",
            format!("{}.{}.{}", b64(b"hello"), parts[1], parts[2]),
        ),
        (
            "header JSON array",
            format!("{}.{}.{}", b64(b"[]"), parts[1], parts[2]),
        ),
        ("9 KiB", format!("{access}{}", "A".repeat(9 * 1024))),
    ] {
        invalid(&profile_with(&app, &tok).await, what);
    }

    // 1 MiB: too big for the Authorization header (TOKEN_INVALID), ignored as a cookie
    // (no token: UNAUTHORIZED), and over the 64 KiB body limit of /auth/refresh (413).
    let huge = format!(
        "{}.{}.{}",
        "A".repeat(512 * 1024),
        "B".repeat(512 * 1024),
        "C"
    );
    invalid(&profile_with(&app, &huge).await, "1 MiB bearer");
    expect(
        &profile(&app, &[("cookie", &format!("access_token={huge}"))]).await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "1 MiB access cookie",
    );
    invalid(&refresh_with(&app, &huge).await, "1 MiB refresh cookie");
    let r = call(
        &app,
        Method::POST,
        "/auth/refresh",
        &[],
        Some(json!({ "refreshToken": huge })),
    )
    .await;
    expect(
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        "1 MiB refresh body",
    );

    // Valid signature, bad claims.
    let n = now();
    let with = |patch: Value| {
        let mut c = claims.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        sign_with(&hs, Some(hs.kid()), "at+jwt", &c)
    };
    expect(
        &profile_with(&app, &with(json!({"exp": n - 60}))).await,
        StatusCode::UNAUTHORIZED,
        "TOKEN_EXPIRED",
        "expired",
    );
    invalid(
        &profile_with(&app, &with(json!({"nbf": n + 3600}))).await,
        "nbf in the future",
    );
    invalid(
        &profile_with(&app, &with(json!({"exp": null}))).await,
        "no exp",
    );
    invalid(
        &profile_with(&app, &with(json!({"exp": "tomorrow"}))).await,
        "exp is a string",
    );
    invalid(
        &profile_with(&app, &with(json!({"sid": "no-such-session"}))).await,
        "unknown session",
    );
    invalid(
        &profile_with(&app, &with(json!({"roles": "admin"}))).await,
        "roles of the wrong type",
    );

    // Token types: a refresh token is not an access token and the reverse.
    invalid(&profile_with(&app, &refresh).await, "refresh as access");
    invalid(&refresh_with(&app, &access).await, "access as refresh");
    for typ in ["JWT", "refresh+jwt", "at+jwt2", ""] {
        invalid(
            &profile_with(&app, &sign_with(&hs, Some(hs.kid()), typ, &claims)).await,
            &format!("typ {typ:?}"),
        );
    }
    let rclaims = segment(&refresh, 1);
    let mut expired = rclaims.clone();
    expired["exp"] = json!(n - 60);
    let r = refresh_with(
        &app,
        &sign_with(&hs, Some(hs.kid()), "refresh+jwt", &expired),
    )
    .await;
    expect(
        &r,
        StatusCode::UNAUTHORIZED,
        "TOKEN_EXPIRED",
        "expired refresh",
    );
    assert!(
        r.cookies().iter().any(|c| c.contains("Max-Age=0")),
        "a dead refresh cookie is cleared"
    );
    let mut forged_jti = rclaims.clone();
    forged_jti["jti"] = json!("guessed");
    invalid(
        &refresh_with(
            &app,
            &sign_with(&hs, Some(hs.kid()), "refresh+jwt", &forged_jti),
        )
        .await,
        "refresh with an unknown jti",
    );
    // A correctly signed refresh token of this family whose jti is not the current one
    // is indistinguishable from an old, already rotated token: reuse, so the whole
    // family is revoked (RFC 9700 §4.14.2), the real tokens included.
    invalid(
        &profile_with(&app, &access).await,
        "family revoked by reuse",
    );
    invalid(
        &refresh_with(&app, &refresh).await,
        "family revoked by reuse",
    );
}

#[tokio::test]
async fn issuer_and_audience_are_required() {
    let t = databases("adversarial::iss_aud").await.remove(0);
    let auth =
        sentri::create_auth(config(t.db.clone()).issuer("sentri-test").audience("api")).unwrap();
    let app = app(&auth);
    let (access, _) = session(&app, "bob", "password1").await;
    assert_eq!(profile_with(&app, &access).await.status, StatusCode::OK);
    let hs = SigningKey::hs256(SECRET).unwrap();
    let claims = segment(&access, 1);
    assert_eq!(
        (&claims["iss"], &claims["aud"]),
        (&json!("sentri-test"), &json!("api"))
    );
    for (what, k, v) in [
        ("wrong iss", "iss", json!("evil")),
        ("wrong aud", "aud", json!("other")),
        ("aud list without ours", "aud", json!(["other", "x"])),
        ("iss of the wrong type", "iss", json!(1)),
    ] {
        let mut c = claims.clone();
        c[k] = v;
        invalid(
            &profile_with(&app, &sign_with(&hs, Some(hs.kid()), "at+jwt", &c)).await,
            what,
        );
    }
    for k in ["iss", "aud"] {
        let mut c = claims.clone();
        c.as_object_mut().unwrap().remove(k);
        invalid(
            &profile_with(&app, &sign_with(&hs, Some(hs.kid()), "at+jwt", &c)).await,
            &format!("missing {k}"),
        );
    }
    // A token of an auth server without iss/aud (same secret) is refused here.
    let plain = sentri::create_auth(config(t.db.clone())).unwrap();
    let (other, _) = session(&crate::http::app(&plain), "carol", "password1").await;
    invalid(&profile_with(&app, &other).await, "token without iss/aud");
}

/// The public key of `key` as the PEM / DER an attacker would download and use as an
/// HMAC secret.
fn public_key_material(key: &SigningKey) -> Vec<Vec<u8>> {
    let jwk = key.public_jwk().unwrap();
    let mut out = vec![jwk.to_string().into_bytes(), key.kid().as_bytes().to_vec()];
    match key.algorithm() {
        Algorithm::RS256 => {
            use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
            let private = rsa::RsaPrivateKey::from_pkcs8_pem(&key.to_pkcs8_pem().unwrap()).unwrap();
            let public = private.to_public_key();
            out.push(
                public
                    .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
                    .unwrap()
                    .into_bytes(),
            );
            out.push(public.to_public_key_der().unwrap().as_bytes().to_vec());
            out.push(URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap());
        }
        Algorithm::ES256 => {
            let mut point = vec![4u8];
            point.extend(URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap());
            point.extend(URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap());
            out.push(point);
        }
        _ => {}
    }
    out
}

#[tokio::test]
async fn asymmetric_keys_resist_algorithm_confusion_and_rotation() {
    let t = databases("adversarial::asymmetric").await.remove(0);
    let rsa_key = SigningKey::generate(Algorithm::RS256).await.unwrap();
    let ec_key = SigningKey::generate(Algorithm::ES256).await.unwrap();
    let with_keys = |first: &SigningKey, previous: Option<&SigningKey>| {
        let mut c = sentri::ServerConfig::new(t.db.clone(), first.clone(), ["user", "admin"])
            .salt_rounds(4);
        if let Some(p) = previous {
            c = c.previous_key(p.clone());
        }
        sentri::create_auth(c).unwrap()
    };
    for key in [&rsa_key, &ec_key] {
        let name = format!("{:?}", key.algorithm());
        let auth: ServerAuth = with_keys(key, None);
        let app = app(&auth);
        let id = crate::common::unique("asym");
        let (access, refresh) = session(&app, &id, "password1").await;
        assert_eq!(profile_with(&app, &access).await.status, StatusCode::OK);
        let claims = segment(&access, 1);
        // Algorithm confusion: HS256/384/512 keyed with every public form of the key.
        for material in public_key_material(key) {
            for alg in ["HS256", "HS384", "HS512"] {
                let h = json!({"alg": alg, "typ": "at+jwt", "kid": key.kid()});
                invalid(
                    &profile_with(&app, &hs256_with(&h, &claims, &material)).await,
                    &format!("{name}: {alg} keyed with the public key"),
                );
            }
        }
        // The other asymmetric algorithm under this kid.
        let h = json!({"alg": if name == "RS256" { "ES256" } else { "RS256" }, "typ": "at+jwt", "kid": key.kid()});
        invalid(
            &profile_with(&app, &hs256_with(&h, &claims, b"x")).await,
            &format!("{name}: other alg"),
        );
        // Properly signed, but unknown or missing kid.
        invalid(
            &profile_with(&app, &sign_with(key, Some("unknown"), "at+jwt", &claims)).await,
            &format!("{name}: unknown kid"),
        );
        invalid(
            &profile_with(&app, &sign_with(key, None, "at+jwt", &claims)).await,
            &format!("{name}: no kid"),
        );
        assert_eq!(
            profile_with(&app, &sign_with(key, Some(key.kid()), "at+jwt", &claims))
                .await
                .status,
            StatusCode::OK,
            "{name}: positive control"
        );

        // Rotation: the new key signs, the old one still verifies while configured...
        let new_key = SigningKey::generate(key.algorithm()).await.unwrap();
        let rotated = app_of(&with_keys(&new_key, Some(key)));
        assert_eq!(
            profile_with(&rotated, &access).await.status,
            StatusCode::OK,
            "{name}: previous key verifies"
        );
        // ...and once it is rotated out, its tokens are refused everywhere.
        let gone = app_of(&with_keys(&new_key, None));
        invalid(
            &profile_with(&gone, &access).await,
            &format!("{name}: rotated-out access"),
        );
        invalid(
            &refresh_with(&gone, &refresh).await,
            &format!("{name}: rotated-out refresh"),
        );
    }
}

fn app_of(auth: &ServerAuth) -> Router {
    app(auth)
}

#[tokio::test]
async fn tokens_of_deleted_sessions_and_users_are_refused() {
    for t in databases("adversarial::deleted").await {
        let n = t.name;
        // A zero cache TTL: the store is asked every time (the bound is tested elsewhere).
        let auth = sentri::create_auth(
            config(t.db.clone()).session_cache_ttl(std::time::Duration::from_millis(1)),
        )
        .unwrap();
        let app = app(&auth);
        let (access, refresh) = session(&app, "dave", "password1").await;
        let sid = auth.verify_access_token(&access).unwrap().sid;
        assert!(t.db.revoke_family(&sid, now_ms()).await.unwrap(), "{n}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        invalid(
            &profile_with(&app, &access).await,
            &format!("{n}: session deleted"),
        );
        invalid(
            &refresh_with(&app, &refresh).await,
            &format!("{n}: refresh of deleted session"),
        );

        let (access, refresh) = {
            let r = login(&app, "dave", "password1").await;
            (
                r.body["data"]["accessToken"].as_str().unwrap().to_owned(),
                r.cookie("refresh_token").unwrap(),
            )
        };
        let user_id = auth.verify_access_token(&access).unwrap().sub;
        assert!(t.db.delete_user(&user_id).await.unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        invalid(
            &profile_with(&app, &access).await,
            &format!("{n}: user deleted"),
        );
        invalid(
            &refresh_with(&app, &refresh).await,
            &format!("{n}: refresh of deleted user"),
        );
        expect(
            &call(
                &app,
                Method::GET,
                "/auth/me",
                &[("authorization", &bearer(&access))],
                None,
            )
            .await,
            StatusCode::UNAUTHORIZED,
            "TOKEN_INVALID",
            n,
        );
        t.cleanup().await;
    }
}

// ---- headers and cookies -------------------------------------------------------------

#[tokio::test]
async fn authorization_headers_and_cookies() {
    let t = databases("adversarial::headers").await.remove(0);
    let auth = sentri::create_auth(config(t.db.clone())).unwrap();
    let app = app(&auth);
    let (access, refresh) = session(&app, "erin", "password1").await;
    let unauth = |r: &Reply, what: &str| expect(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", what);

    // Schemes: ours is case-insensitive; other schemes are not ours (no token).
    for scheme in ["bearer", "BEARER", "BeArEr"] {
        let r = profile(&app, &[("authorization", &format!("{scheme} {access}"))]).await;
        assert_eq!(r.status, StatusCode::OK, "{scheme}");
    }
    for value in [
        access.clone(),
        format!("Token {access}"),
        format!("Basic {access}"),
        "Bearer".to_owned(),
        format!("Bearer\t{access}"),
        format!("Bearer{access}"),
    ] {
        unauth(
            &profile(&app, &[("authorization", &value)]).await,
            &value[..12.min(value.len())],
        );
    }
    for (what, value) in [
        ("two tokens", format!("Bearer {access} {access}")),
        ("comma list", format!("Bearer {access},{access}")),
        ("two schemes", format!("Bearer {access}, Basic abc")),
        ("empty token", "Bearer ".to_owned()),
        ("blank token", "Bearer     ".to_owned()),
        ("64 KiB", format!("Bearer {}", "a".repeat(64 * 1024))),
    ] {
        invalid(&profile(&app, &[("authorization", &value)]).await, what);
    }
    let r = profile(
        &app,
        &[
            ("authorization", &bearer(&access)),
            ("authorization", &bearer(&access)),
        ],
    )
    .await;
    invalid(&r, "two Authorization headers");
    // Non-UTF-8 (obs-text) bytes in the header.
    let req = Request::builder()
        .uri("/api/profile")
        .header(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer \xff\xfe\xfd").unwrap(),
        )
        .body(Body::empty())
        .unwrap();
    invalid(&send(&app, req).await, "obs-text bearer");
    // A bad bearer is not rescued by a good cookie.
    invalid(
        &profile(
            &app,
            &[
                ("authorization", "Bearer garbage"),
                ("cookie", &format!("access_token={access}")),
            ],
        )
        .await,
        "bad bearer + good cookie",
    );

    // Cookies: the first of a name wins, values are verbatim, oversize ones are ignored.
    let c = |v: String| profile_owned(&app, v);
    invalid(
        &c(format!("access_token=garbage; access_token={access}")).await,
        "duplicate: garbage first",
    );
    assert_eq!(
        c(format!("access_token={access}; access_token=garbage"))
            .await
            .status,
        StatusCode::OK,
        "duplicate: valid first"
    );
    invalid(
        &c("access_token=%zz%".to_owned()).await,
        "bad percent-encoding",
    );
    invalid(
        &c(format!("access_token={}", access.replace('.', "%2E"))).await,
        "percent-encoded token is not decoded",
    );
    unauth(
        &c(format!("access_token={}", "a".repeat(16 * 1024))).await,
        "oversized cookie",
    );
    unauth(&c("access_token=".to_owned()).await, "empty cookie");
    unauth(&c("access_token".to_owned()).await, "cookie without =");
    unauth(&c(";;;===;".to_owned()).await, "junk cookie header");
    let req = Request::builder()
        .uri("/api/profile")
        .header(
            header::COOKIE,
            HeaderValue::from_bytes(b"access_token=\xff\xfe").unwrap(),
        )
        .body(Body::empty())
        .unwrap();
    unauth(&send(&app, req).await, "obs-text cookie");

    // The refresh cookie under the same rules.
    let r = call(
        &app,
        Method::POST,
        "/auth/refresh",
        &[(
            "cookie",
            &format!("refresh_token=garbage; refresh_token={refresh}"),
        )],
        None,
    )
    .await;
    invalid(&r, "duplicate refresh cookie: garbage first");
    invalid(&refresh_with(&app, "%zz").await, "refresh cookie %zz");
    invalid(
        &refresh_with(&app, &"a".repeat(16 * 1024)).await,
        "oversized refresh cookie",
    );
    // The good refresh token still works (none of the above consumed it).
    assert_eq!(refresh_with(&app, &refresh).await.status, StatusCode::OK);
}

async fn profile_owned(app: &Router, cookie: String) -> Reply {
    profile(app, &[("cookie", &cookie)]).await
}

#[tokio::test]
async fn api_key_of_any_wrong_length_is_refused() {
    let t = databases("adversarial::api_key").await.remove(0);
    let key = "0123456789abcdef-api-key";
    let auth = sentri::create_auth(config(t.db.clone()).api_key(key)).unwrap();
    let app = app(&auth);
    let body = json!({"identifier": "frank", "password": "password1", "roles": ["admin"]});
    let long = "k".repeat(10 * 1024);
    for given in [
        "",
        "0",
        &key[..key.len() - 1],
        &format!("{key}x"),
        &format!("{key} "),
        &key.to_uppercase(),
        &long,
    ] {
        let r = call(
            &app,
            Method::POST,
            "/auth/register",
            &[("x-api-key", given)],
            Some(body.clone()),
        )
        .await;
        expect(
            &r,
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            &format!("key of {} bytes", given.len()),
        );
    }
    let req = Request::builder()
        .method(Method::POST)
        .uri("/auth/register")
        .header("x-api-key", HeaderValue::from_bytes(b"\xff\xfe").unwrap())
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    expect(
        &send(&app, req).await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "obs-text key",
    );
    let r = call(
        &app,
        Method::POST,
        "/auth/register",
        &[("x-api-key", key), ("x-api-key", "other")],
        Some(body.clone()),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "the first header is read: {:?}",
        r.body
    );
}

// ---- bodies --------------------------------------------------------------------------

fn raw(method: Method, path: &str, ct: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(ct) = ct {
        b = b.header(header::CONTENT_TYPE, ct);
    }
    b.body(body.into()).unwrap()
}

#[tokio::test]
async fn hostile_bodies_get_the_envelope() {
    let t = databases("adversarial::bodies").await.remove(0);
    let auth = sentri::create_auth(config(t.db.clone())).unwrap();
    let app = app(&auth);
    let (access, _) = session(&app, "grace", "password1").await;
    let bad = |r: &Reply, what: &str| expect(r, StatusCode::BAD_REQUEST, "VALIDATION_ERROR", what);
    let json = Some("application/json");

    for path in ["/auth/login", "/auth/register"] {
        for (what, ct, body) in [
            (
                "no content type",
                None,
                r#"{"identifier":"a","password":"password1"}"#.as_bytes().to_vec(),
            ),
            (
                "form",
                Some("application/x-www-form-urlencoded"),
                b"identifier=a&password=password1".to_vec(),
            ),
            (
                "json prefix",
                Some("application/jsonx"),
                br#"{"identifier":"a","password":"password1"}"#.to_vec(),
            ),
            ("empty", json, Vec::new()),
            ("null", json, b"null".to_vec()),
            ("array", json, b"[]".to_vec()),
            ("string", json, br#""identifier""#.to_vec()),
            (
                "trailing garbage",
                json,
                br#"{"identifier":"a","password":"password1"} x"#.to_vec(),
            ),
            (
                "two documents",
                json,
                br#"{"identifier":"a","password":"password1"}{}"#.to_vec(),
            ),
            (
                "invalid utf-8",
                json,
                b"{\"identifier\":\"\xff\xfe\",\"password\":\"password1\"}".to_vec(),
            ),
            (
                "lone surrogate",
                json,
                br#"{"identifier":"\ud800","password":"password1"}"#.to_vec(),
            ),
            (
                "identifier array",
                json,
                br#"{"identifier":["a"],"password":"password1"}"#.to_vec(),
            ),
            (
                "identifier object",
                json,
                br#"{"identifier":{"$ne":null},"password":"password1"}"#.to_vec(),
            ),
            (
                "identifier null",
                json,
                br#"{"identifier":null,"password":"password1"}"#.to_vec(),
            ),
            (
                "identifier bool",
                json,
                br#"{"identifier":true,"password":"password1"}"#.to_vec(),
            ),
            (
                "password number",
                json,
                br#"{"identifier":"a","password":12345678}"#.to_vec(),
            ),
            (
                "duplicate password",
                json,
                br#"{"identifier":"a","password":"x","password":"password1"}"#.to_vec(),
            ),
            (
                "NUL identifier",
                json,
                br#"{"identifier":"a\u0000b","password":"password1"}"#.to_vec(),
            ),
            (
                "control identifier",
                json,
                br#"{"identifier":"a\u001bb","password":"password1"}"#.to_vec(),
            ),
            (
                "empty identifier",
                json,
                br#"{"identifier":"","password":"password1"}"#.to_vec(),
            ),
        ] {
            bad(
                &send(&app, raw(Method::POST, path, ct, body)).await,
                &format!("{path}: {what}"),
            );
        }
        // 10 000 levels of nesting inside a real field.
        let deep = format!(
            r#"{{"password":"password1","identifier":{}"x"{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        bad(
            &send(&app, raw(Method::POST, path, json, deep)).await,
            &format!("{path}: deep"),
        );
        let deep_obj = format!(r#"{}1{}"#, r#"{"a":"#.repeat(10_000), "}".repeat(10_000));
        bad(
            &send(&app, raw(Method::POST, path, json, deep_obj)).await,
            &format!("{path}: deep objects"),
        );
        // ...and in an ignored field: skipped without recursion (no stack overflow), the
        // request is then judged on its real fields.
        let ignored = format!(
            r#"{{"identifier":"nobody","password":"password1","x":{}1{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        let r = send(&app, raw(Method::POST, path, json, ignored)).await;
        if path == "/auth/login" {
            expect(
                &r,
                StatusCode::UNAUTHORIZED,
                "INVALID_CREDENTIALS",
                "deep ignored field",
            );
        } else {
            assert_eq!(
                r.status,
                StatusCode::CREATED,
                "deep ignored field: {:?}",
                r.body
            );
        }
        // 10 MiB of valid-looking JSON.
        let big = format!(
            r#"{{"identifier":"{}","password":"password1"}}"#,
            "a".repeat(10 * 1024 * 1024)
        );
        expect(
            &send(&app, raw(Method::POST, path, json, big)).await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            &format!("{path}: 10 MiB"),
        );
        // A streamed body without Content-Length is cut at the limit too.
        let chunks = futures_util::stream::iter(
            (0..160).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 64 * 1024]))),
        );
        expect(
            &send(
                &app,
                raw(Method::POST, path, json, Body::from_stream(chunks)),
            )
            .await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            &format!("{path}: 10 MiB streamed"),
        );
    }
    // +json media types and parameters are accepted; extra fields are ignored.
    let ok = br#"{"identifier":"grace","password":"password1","extra":{"nested":[1,2,3]}}"#;
    for ct in [
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        "application/vnd.api+json",
    ] {
        let r = send(
            &app,
            raw(Method::POST, "/auth/login", Some(ct), ok.to_vec()),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{ct}: {:?}", r.body);
    }
    // Protected bodies: same rules behind protect().
    let authz = bearer(&access);
    for path in ["/auth/change-password", "/auth/change-identifier"] {
        let mut req = raw(Method::POST, path, json, br#"{"identifier":[1]}"#.to_vec());
        req.headers_mut()
            .insert(header::AUTHORIZATION, authz.parse().unwrap());
        bad(&send(&app, req).await, path);
        let mut req = raw(Method::POST, path, json, vec![b' '; 10 * 1024 * 1024]);
        req.headers_mut()
            .insert(header::AUTHORIZATION, authz.parse().unwrap());
        expect(
            &send(&app, req).await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            path,
        );
    }
    // Wrong role types on register.
    for body in [
        json!({"identifier": "h", "password": "password1", "roles": "admin"}),
        json!({"identifier": "h", "password": "password1", "roles": [1]}),
    ] {
        bad(
            &call(&app, Method::POST, "/auth/register", &[], Some(body)).await,
            "roles types",
        );
    }
    let r = call(
        &app,
        Method::POST,
        "/auth/register",
        &[],
        Some(json!({"identifier": "h", "password": "password1", "roles": ["user\u{0}"]})),
    )
    .await;
    expect(&r, StatusCode::BAD_REQUEST, "INVALID_ROLE", "NUL role");
    // A logout with garbage is still a 200 (idempotent), never a 4xx/5xx.
    for body in [
        b"{not json".to_vec(),
        vec![b'['; 10_000],
        vec![b' '; 10 * 1024 * 1024],
    ] {
        let r = send(&app, raw(Method::POST, "/auth/logout", json, body)).await;
        assert_eq!(r.status, StatusCode::OK, "logout garbage: {:?}", r.body);
    }
}

#[tokio::test]
async fn identifiers_sql_metacharacters_lookalikes_and_passwords() {
    for t in databases("adversarial::identifiers").await {
        let n = t.name;
        let auth = sentri::create_auth(config(t.db.clone())).unwrap();
        let app = app(&auth);
        let created = |r: &Reply, what: &str| {
            assert_eq!(r.status, StatusCode::CREATED, "{n} {what}: {:?}", r.body)
        };
        let conflict = |r: &Reply, what: &str| {
            expect(
                r,
                StatusCode::CONFLICT,
                "USER_ALREADY_EXISTS",
                &format!("{n} {what}"),
            )
        };
        let bad = |r: &Reply, what: &str| {
            expect(
                r,
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!("{n} {what}"),
            )
        };

        // SQL metacharacters are data.
        let sqlish = [
            "robert'); drop table sentri_users;--",
            "\" or 1=1 --",
            "' or ''='",
            "%",
            "_",
            "a\\b",
            "`x`; select 1",
            "$1",
            "?",
        ];
        for id in sqlish {
            let r = register(&app, id, "password1").await;
            created(&r, id);
            assert_eq!(
                r.body["data"]["user"]["identifier"], id,
                "{n}: stored verbatim"
            );
            assert_eq!(
                login(&app, id, "password1").await.status,
                StatusCode::OK,
                "{n} {id}"
            );
        }
        assert_eq!(
            t.db.count_users().await.unwrap(),
            sqlish.len() as u64,
            "{n}: tables intact"
        );
        // No wildcard semantics: "%" and "_" are two accounts, "x%" does not match.
        expect(
            &login(&app, "robert%", "password1").await,
            StatusCode::UNAUTHORIZED,
            "INVALID_CREDENTIALS",
            "LIKE",
        );

        // NFKC_Casefold: these collide.
        created(&register(&app, "admin", "password1").await, "admin");
        for twin in [
            "ＡＤＭＩＮ",
            " Admin ",
            "ADMIN",
            "\u{3000}admin\u{3000}",
            "ａｄｍｉｎ",
        ] {
            conflict(&register(&app, twin, "password1").await, twin);
        }
        assert_eq!(
            login(&app, "ＡＤＭＩＮ", "password1").await.status,
            StatusCode::OK,
            "{n}: fullwidth logs in as admin"
        );
        created(&register(&app, "ﬁle", "password1").await, "ligature");
        conflict(&register(&app, "FILE", "password1").await, "ligature twin");
        created(&register(&app, "Å", "password1").await, "precomposed");
        conflict(
            &register(&app, "A\u{30a}", "password1").await,
            "decomposed twin",
        );
        conflict(
            &register(&app, "\u{212b}", "password1").await,
            "angstrom sign twin",
        );
        // Not folded (documented): other scripts are other identifiers.
        created(
            &register(&app, "\u{430}dmin", "password1").await,
            "cyrillic a",
        );
        // Invisible and bidi-control characters are refused (they would make look-alikes).
        for id in [
            "admin\u{200b}",
            "ad\u{200d}min",
            "\u{202e}nimda",
            "admin\u{feff}",
            "\u{2066}admin",
            "ad\u{ad}min",
        ] {
            bad(&register(&app, id, "password1").await, &format!("{id:?}"));
        }

        // Passwords by length (bytes).
        let cases: [(usize, bool); 7] = [
            (0, false),
            (7, false),
            (8, true),
            (72, true),
            (73, true),
            (1024, true),
            (1025, false),
        ];
        for (len, ok) in cases {
            let id = format!("pw{len}");
            let pw: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            let r = register(&app, &id, &pw).await;
            if ok {
                created(&r, &id);
                assert_eq!(
                    login(&app, &id, &pw).await.status,
                    StatusCode::OK,
                    "{n} {id}"
                );
            } else {
                bad(&r, &id);
            }
        }
        // No truncation: 73 bytes differing only in the last byte, and a 72-byte prefix.
        let pw73: String = (0..73).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        let mut other73 = pw73.clone();
        other73.pop();
        other73.push('!');
        expect(
            &login(&app, "pw73", &other73).await,
            StatusCode::UNAUTHORIZED,
            "INVALID_CREDENTIALS",
            "73 vs 73",
        );
        expect(
            &login(&app, "pw73", &pw73[..72]).await,
            StatusCode::UNAUTHORIZED,
            "INVALID_CREDENTIALS",
            "72 prefix",
        );
        let pw1024: String = (0..1024).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        expect(
            &login(&app, "pw1024", &pw1024[..1023]).await,
            StatusCode::UNAUTHORIZED,
            "INVALID_CREDENTIALS",
            "1023 prefix",
        );
        bad(
            &login(&app, "pw1024", &format!("{pw1024}x")).await,
            "login with 1025 bytes",
        );
        bad(&login(&app, "pw8", "").await, "login with empty password");
        // Characters, not bytes, count for the minimum; NUL bytes are not terminators.
        bad(
            &register(&app, "multibyte", "ééééééé").await,
            "7 two-byte chars",
        );
        created(
            &register(&app, "nul", "abcdefgh\u{0}X").await,
            "NUL password",
        );
        expect(
            &login(&app, "nul", "abcdefgh\u{0}Y").await,
            StatusCode::UNAUTHORIZED,
            "INVALID_CREDENTIALS",
            "after NUL",
        );
        expect(
            &login(&app, "nul", "abcdefgh").await,
            StatusCode::UNAUTHORIZED,
            "INVALID_CREDENTIALS",
            "NUL prefix",
        );
        assert_eq!(
            login(&app, "nul", "abcdefgh\u{0}X").await.status,
            StatusCode::OK,
            "{n}"
        );
        t.cleanup().await;
    }
}

// ---- paths ---------------------------------------------------------------------------

#[tokio::test]
async fn user_id_paths() {
    let t = databases("adversarial::paths").await.remove(0);
    let auth = sentri::create_auth(config(t.db.clone())).unwrap();
    let app = app(&auth);
    auth.register(sentri::RegisterInput {
        identifier: "root".into(),
        password: "password1".into(),
        roles: Some(vec!["admin".into()]),
    })
    .await
    .unwrap();
    let admin = login(&app, "root", "password1").await.body["data"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let (user, _) = session(&app, "ivy", "password1").await;
    let body = Some(json!({"roles": ["user"]}));
    let ids = [
        "not-a-uuid".to_owned(),
        "..".to_owned(),
        "%2e%2e".to_owned(),
        "..%2f..%2fetc".to_owned(),
        "%00".to_owned(),
        "%FF%FE".to_owned(),
        "%zz".to_owned(),
        "'%20or%201=1--".to_owned(),
        uuid::Uuid::now_v7().simple().to_string(),
        format!("{}", uuid::Uuid::now_v7()).to_uppercase(),
        "0".repeat(10 * 1024),
        "%41".repeat(4 * 1024),
    ];
    for id in &ids {
        let path = format!("/auth/users/{id}/roles");
        let r = call(
            &app,
            Method::POST,
            &path,
            &[("authorization", &bearer(&admin))],
            body.clone(),
        )
        .await;
        expect(
            &r,
            StatusCode::NOT_FOUND,
            "USER_NOT_FOUND",
            &format!("admin {}", &id[..id.len().min(20)]),
        );
        let r = call(
            &app,
            Method::POST,
            &path,
            &[("authorization", &bearer(&user))],
            body.clone(),
        )
        .await;
        expect(&r, StatusCode::FORBIDDEN, "FORBIDDEN", "non-admin");
        let r = call(&app, Method::POST, &path, &[], body.clone()).await;
        expect(&r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "anonymous");
    }
    let r = call(
        &app,
        Method::POST,
        "/auth/users//roles",
        &[("authorization", &bearer(&admin))],
        body.clone(),
    )
    .await;
    expect(&r, StatusCode::NOT_FOUND, "USER_NOT_FOUND", "empty id");
    for path in ["/auth/users/../roles/x", "/auth/users/a/b/roles"] {
        let r = call(
            &app,
            Method::POST,
            path,
            &[("authorization", &bearer(&admin))],
            body.clone(),
        )
        .await;
        expect(&r, StatusCode::NOT_FOUND, "NOT_FOUND", path);
    }
}
