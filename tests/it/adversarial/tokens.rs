//! Forged and damaged tokens: signatures, algorithms, key confusion and rotation,
//! issuer/audience, and tokens of deleted sessions and users.

use axum::Router;
use axum::http::{Method, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sentri::ServerAuth;
use sentri::db::now_ms;
use sentri::token::{Algorithm, SigningKey};
use serde_json::{Value, json};

use crate::support::db::databases;
use crate::support::http::{
    app, bearer, call, expect, invalid, login, profile, profile_with, refresh_with, session,
};
use crate::support::services::{SECRET, config};

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
    let (other, _) = session(&crate::support::http::app(&plain), "carol", "password1").await;
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
        let id = crate::support::common::unique("asym");
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
