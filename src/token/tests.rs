use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header};
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::json;
use tokio::sync::OnceCell;

use super::*;
use crate::ErrorCode;

const SECRET: &str = "test-secret-test-secret-test-secret-0123";

fn user() -> AuthUser {
    AuthUser {
        id: "user-1".into(),
        identifier: "ada@example.com".into(),
        roles: vec!["user".into(), "admin".into()],
    }
}

static RSA_A: OnceCell<SigningKey> = OnceCell::const_new();
static RSA_B: OnceCell<SigningKey> = OnceCell::const_new();

/// RSA key generation is slow: two keys shared by all tests (re-pinned per alg via PEM).
async fn rsa_key(alg: Algorithm) -> SigningKey {
    let base = RSA_A
        .get_or_init(|| async { SigningKey::generate(Algorithm::RS256).await.unwrap() })
        .await;
    if alg == Algorithm::RS256 {
        return base.clone();
    }
    SigningKey::from_pem(alg, &base.to_pkcs8_pem().unwrap()).unwrap()
}

async fn rsa_key_b() -> SigningKey {
    RSA_B
        .get_or_init(|| async { SigningKey::generate(Algorithm::RS256).await.unwrap() })
        .await
        .clone()
}

fn service(keys: Vec<SigningKey>) -> TokenService {
    TokenService::new(keys, TokenOptions::default()).unwrap()
}

fn hs() -> SigningKey {
    SigningKey::hs256(SECRET).unwrap()
}

fn code(r: Result<impl std::fmt::Debug>) -> ErrorCode {
    r.unwrap_err().code().clone()
}

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn valid_access_claims() -> serde_json::Value {
    let now = now_secs();
    json!({
        "sub": "user-1", "identifier": "ada@example.com", "roles": ["user"], "sid": "s1",
        "iat": now, "exp": now + 600, "jti": "j1"
    })
}

/// Signs arbitrary claims with an HS256 key, with a chosen header.
fn forge(header: &Header, claims: &serde_json::Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(header, claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn hs_header(kid: &str, typ: Option<&str>) -> Header {
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some(kid.to_owned());
    h.typ = typ.map(str::to_owned);
    h
}

#[tokio::test]
async fn round_trip_every_algorithm() {
    let mut keys = vec![
        SigningKey::hs256(SECRET).unwrap(),
        SigningKey::hs384(SECRET).unwrap(),
        SigningKey::hs512(SECRET).unwrap(),
        rsa_key(Algorithm::RS256).await,
        rsa_key(Algorithm::RS384).await,
        rsa_key(Algorithm::RS512).await,
        SigningKey::generate(Algorithm::ES256).await.unwrap(),
        SigningKey::generate(Algorithm::EdDSA).await.unwrap(),
    ];
    keys.push(SigningKey::generate(Algorithm::HS512).await.unwrap());
    for key in keys {
        let alg = key.algorithm();
        let svc = service(vec![key.clone()]);
        let (token, claims) = svc.sign_access(&user(), "sess").unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, alg);
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.kid.as_deref(), Some(key.kid()));
        assert_eq!(peek_kid(&token).as_deref(), Some(key.kid()));
        let got = svc.verify_access(&token).unwrap();
        assert_eq!(got, claims, "{alg:?}");
        assert_eq!(got.sub, "user-1");
        assert_eq!(got.roles, vec!["user", "admin"]);
        assert_eq!(got.exp - got.iat, 900);

        let jti = TokenService::new_refresh_jti();
        let refresh = svc.sign_refresh("user-1", "sess", &jti).unwrap();
        let rc = svc.verify_refresh(&refresh).unwrap();
        assert_eq!((rc.sub.as_str(), rc.sid.as_str()), ("user-1", "sess"));
        assert_eq!(rc.jti, jti);
        assert_eq!(rc.exp - rc.iat, 7 * 24 * 3600);
    }
}

#[test]
fn refresh_jti_is_32_random_bytes() {
    let a = TokenService::new_refresh_jti();
    assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 32);
    assert_ne!(a, TokenService::new_refresh_jti());
}

#[test]
fn alg_none_is_rejected() {
    let key = hs();
    let svc = service(vec![key.clone()]);
    let header = json!({"alg": "none", "typ": "at+jwt", "kid": key.kid()});
    let payload = valid_access_claims();
    for sig in ["", "AAAA"] {
        let token = format!("{}.{}.{}", b64(&header), b64(&payload), sig);
        assert_eq!(code(svc.verify_access(&token)), ErrorCode::TokenInvalid);
    }
    // "None" / "NONE" variants too.
    for alg in ["None", "NONE"] {
        let header = json!({"alg": alg, "typ": "at+jwt", "kid": key.kid()});
        let token = format!("{}.{}.", b64(&header), b64(&payload));
        assert_eq!(code(svc.verify_access(&token)), ErrorCode::TokenInvalid);
    }
}

#[tokio::test]
async fn algorithm_confusion_hs256_with_rsa_public_key_is_rejected() {
    let rsa = rsa_key(Algorithm::RS256).await;
    let svc = service(vec![rsa.clone()]);
    let private = rsa::RsaPrivateKey::from_pkcs8_pem(&rsa.to_pkcs8_pem().unwrap()).unwrap();
    let public_pem = private
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let token = forge(
        &hs_header(rsa.kid(), Some("at+jwt")),
        &valid_access_claims(),
        public_pem.as_bytes(),
    );
    assert_eq!(code(svc.verify_access(&token)), ErrorCode::TokenInvalid);
    // Also with the DER bytes of the public key.
    let der = private.to_public_key().to_public_key_der().unwrap();
    let token = forge(
        &hs_header(rsa.kid(), Some("at+jwt")),
        &valid_access_claims(),
        der.as_bytes(),
    );
    assert_eq!(code(svc.verify_access(&token)), ErrorCode::TokenInvalid);
}

#[test]
fn unknown_or_missing_kid_is_rejected() {
    let svc = service(vec![hs()]);
    let claims = valid_access_claims();
    let unknown = forge(
        &hs_header("not-a-kid", Some("at+jwt")),
        &claims,
        SECRET.as_bytes(),
    );
    assert_eq!(code(svc.verify_access(&unknown)), ErrorCode::TokenInvalid);
    let mut h = hs_header("x", Some("at+jwt"));
    h.kid = None;
    let missing = forge(&h, &claims, SECRET.as_bytes());
    assert_eq!(code(svc.verify_access(&missing)), ErrorCode::TokenInvalid);
    assert_eq!(peek_kid(&missing), None);
}

#[test]
fn a_correctly_forged_token_verifies() {
    // Sanity check for the forging helper used by the negative tests.
    let key = hs();
    let svc = service(vec![key.clone()]);
    let token = forge(
        &hs_header(key.kid(), Some("at+jwt")),
        &valid_access_claims(),
        SECRET.as_bytes(),
    );
    assert!(svc.verify_access(&token).is_ok());
    // typ compare is case-insensitive.
    let token = forge(
        &hs_header(key.kid(), Some("AT+JWT")),
        &valid_access_claims(),
        SECRET.as_bytes(),
    );
    assert!(svc.verify_access(&token).is_ok());
}

#[tokio::test]
async fn tampering_and_malformed_tokens_are_rejected() {
    for key in [hs(), SigningKey::generate(Algorithm::EdDSA).await.unwrap()] {
        let svc = service(vec![key]);
        let (token, _) = svc.sign_access(&user(), "s").unwrap();
        let parts: Vec<&str> = token.split('.').collect();

        // Tampered payload (roles elevated).
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        claims["roles"] = json!(["superadmin"]);
        let tampered = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
        // Tampered signature.
        let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        sig[0] ^= 1;
        let bad_sig = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(sig));

        let cases = vec![
            tampered,
            bad_sig,
            token[..token.len() - 5].to_owned(),
            format!("{}.{}", parts[0], parts[1]),
            format!("{token}.extra"),
            format!("{}.{}.@@@not-base64@@@", parts[0], parts[1]),
            format!("{}.***.{}", parts[0], parts[2]),
            format!("!!!.{}.{}", parts[1], parts[2]),
            String::new(),
            "..".to_owned(),
            "a.b.c".to_owned(),
            "x".repeat(1024 * 1024),
            format!("{}.{}.{}", parts[0], "A".repeat(9000), parts[2]),
        ];
        for bad in cases {
            let err = svc.verify_access(&bad).unwrap_err();
            assert_eq!(err.code(), &ErrorCode::TokenInvalid);
            assert_eq!(err.message(), "Invalid token");
        }
    }
}

#[test]
fn expired_beyond_leeway_is_token_expired() {
    let key = hs();
    let svc = service(vec![key.clone()]);
    let mut claims = valid_access_claims();
    let now = now_secs();
    claims["iat"] = json!(now - 100);
    claims["exp"] = json!(now - 30);
    let token = forge(
        &hs_header(key.kid(), Some("at+jwt")),
        &claims,
        SECRET.as_bytes(),
    );
    assert_eq!(code(svc.verify_access(&token)), ErrorCode::TokenExpired);

    // Within the 5 s leeway: still accepted.
    claims["exp"] = json!(now - 2);
    let token = forge(
        &hs_header(key.kid(), Some("at+jwt")),
        &claims,
        SECRET.as_bytes(),
    );
    assert!(svc.verify_access(&token).is_ok());

    // A signed expired refresh token is also TOKEN_EXPIRED.
    let short = TokenService::new(
        vec![key.clone()],
        TokenOptions {
            leeway: Duration::ZERO,
            ..TokenOptions::default()
        },
    )
    .unwrap();
    let mut rc = json!({"sub": "u", "sid": "s", "jti": "j", "iat": now - 100, "exp": now - 10});
    let token = forge(
        &hs_header(key.kid(), Some("refresh+jwt")),
        &rc,
        SECRET.as_bytes(),
    );
    assert_eq!(code(short.verify_refresh(&token)), ErrorCode::TokenExpired);
    rc["exp"] = json!(now + 100);
    let token = forge(
        &hs_header(key.kid(), Some("refresh+jwt")),
        &rc,
        SECRET.as_bytes(),
    );
    assert!(short.verify_refresh(&token).is_ok());
}

#[test]
fn nbf_in_future_and_missing_claims_are_invalid() {
    let key = hs();
    let svc = service(vec![key.clone()]);
    let mut claims = valid_access_claims();
    claims["nbf"] = json!(now_secs() + 3600);
    let token = forge(
        &hs_header(key.kid(), Some("at+jwt")),
        &claims,
        SECRET.as_bytes(),
    );
    assert_eq!(code(svc.verify_access(&token)), ErrorCode::TokenInvalid);

    for missing in ["exp", "sub", "iat", "sid"] {
        let mut claims = valid_access_claims();
        claims.as_object_mut().unwrap().remove(missing);
        let token = forge(
            &hs_header(key.kid(), Some("at+jwt")),
            &claims,
            SECRET.as_bytes(),
        );
        assert_eq!(
            code(svc.verify_access(&token)),
            ErrorCode::TokenInvalid,
            "{missing}"
        );
    }
}

#[test]
fn wrong_issuer_or_audience_is_invalid() {
    let key = hs();
    let opts = |iss: &str, aud: &str| TokenOptions {
        issuer: Some(iss.into()),
        audience: Some(aud.into()),
        ..TokenOptions::default()
    };
    let issuer = TokenService::new(vec![key.clone()], opts("https://auth", "api")).unwrap();
    let (token, claims) = issuer.sign_access(&user(), "s").unwrap();
    assert_eq!(claims.iss.as_deref(), Some("https://auth"));
    assert_eq!(claims.aud.as_deref(), Some("api"));
    assert!(issuer.verify_access(&token).is_ok());

    let other_iss = TokenService::new(vec![key.clone()], opts("https://evil", "api")).unwrap();
    assert_eq!(
        code(other_iss.verify_access(&token)),
        ErrorCode::TokenInvalid
    );
    let other_aud = TokenService::new(vec![key.clone()], opts("https://auth", "other")).unwrap();
    assert_eq!(
        code(other_aud.verify_access(&token)),
        ErrorCode::TokenInvalid
    );

    // A token without iss/aud is refused by a service that requires them.
    let plain = service(vec![key.clone()]);
    let (plain_token, _) = plain.sign_access(&user(), "s").unwrap();
    assert_eq!(
        code(issuer.verify_access(&plain_token)),
        ErrorCode::TokenInvalid
    );
    // A token with an aud is refused by a service that has none configured.
    assert_eq!(code(plain.verify_access(&token)), ErrorCode::TokenInvalid);
}

#[tokio::test]
async fn access_and_refresh_tokens_are_not_interchangeable() {
    for key in [hs(), SigningKey::generate(Algorithm::ES256).await.unwrap()] {
        let svc = service(vec![key]);
        let (access, _) = svc.sign_access(&user(), "s").unwrap();
        let refresh = svc.sign_refresh("user-1", "s", "jti").unwrap();
        assert_eq!(code(svc.verify_access(&refresh)), ErrorCode::TokenInvalid);
        assert_eq!(code(svc.verify_refresh(&access)), ErrorCode::TokenInvalid);
    }
}

#[test]
fn typ_jwt_or_missing_typ_is_rejected() {
    let key = hs();
    let svc = service(vec![key.clone()]);
    for typ in [Some("JWT"), None, Some("at+jwt "), Some("application/json")] {
        let token = forge(
            &hs_header(key.kid(), typ),
            &valid_access_claims(),
            SECRET.as_bytes(),
        );
        assert_eq!(
            code(svc.verify_access(&token)),
            ErrorCode::TokenInvalid,
            "{typ:?}"
        );
        assert_eq!(
            code(svc.verify_refresh(&token)),
            ErrorCode::TokenInvalid,
            "{typ:?}"
        );
    }
}

#[tokio::test]
async fn rotation_old_key_verifies_until_removed() {
    let old = rsa_key(Algorithm::RS256).await;
    let new = SigningKey::generate(Algorithm::ES256).await.unwrap();
    let hs_old = hs();

    let before = service(vec![old.clone()]);
    let (token, _) = before.sign_access(&user(), "s").unwrap();

    let rotated = service(vec![new.clone(), old.clone(), hs_old.clone()]);
    assert!(rotated.verify_access(&token).is_ok());
    let (new_token, _) = rotated.sign_access(&user(), "s").unwrap();
    assert_eq!(peek_kid(&new_token).as_deref(), Some(new.kid()));
    assert_eq!(
        jsonwebtoken::decode_header(&new_token).unwrap().alg,
        Algorithm::ES256
    );

    let after = service(vec![new.clone()]);
    assert_eq!(code(after.verify_access(&token)), ErrorCode::TokenInvalid);
    assert!(after.verify_access(&new_token).is_ok());

    // HMAC rotation.
    let hs_new = SigningKey::hs256("a-brand-new-secret-of-32-bytes-or-more").unwrap();
    let (hs_token, _) = service(vec![hs_old.clone()])
        .sign_access(&user(), "s")
        .unwrap();
    assert!(
        service(vec![hs_new.clone(), hs_old])
            .verify_access(&hs_token)
            .is_ok()
    );
    assert_eq!(
        code(service(vec![hs_new]).verify_access(&hs_token)),
        ErrorCode::TokenInvalid
    );
}

#[tokio::test]
async fn mixed_keys_verify_only_their_own_algorithm() {
    // An HS256 key and an RSA key in one service: a token claiming RS256 under the HMAC
    // kid (or HS256 under the RSA kid) is refused.
    let h = hs();
    let r = rsa_key(Algorithm::RS256).await;
    let svc = service(vec![h.clone(), r.clone()]);
    let token = forge(
        &hs_header(r.kid(), Some("at+jwt")),
        &valid_access_claims(),
        SECRET.as_bytes(),
    );
    assert_eq!(code(svc.verify_access(&token)), ErrorCode::TokenInvalid);
    let rs_only = service(vec![r.clone()]);
    let (rs_token, _) = rs_only.sign_access(&user(), "s").unwrap();
    let parts: Vec<&str> = rs_token.split('.').collect();
    let header = json!({"alg": "RS256", "typ": "at+jwt", "kid": h.kid()});
    let swapped = format!("{}.{}.{}", b64(&header), parts[1], parts[2]);
    assert_eq!(code(svc.verify_access(&swapped)), ErrorCode::TokenInvalid);
    assert!(svc.verify_access(&rs_token).is_ok());
}

#[test]
fn configuration_errors() {
    assert_eq!(
        code(TokenService::new(vec![], TokenOptions::default())),
        ErrorCode::ConfigurationError
    );
    assert_eq!(
        code(TokenService::new(vec![hs(), hs()], TokenOptions::default())),
        ErrorCode::ConfigurationError
    );
    assert_eq!(
        code(SigningKey::hs256("short")),
        ErrorCode::ConfigurationError
    );
}

#[tokio::test]
async fn jwks_lists_public_keys_current_first_without_private_members() {
    let current = SigningKey::generate(Algorithm::EdDSA).await.unwrap();
    let previous = rsa_key(Algorithm::RS256).await;
    let ec = SigningKey::generate(Algorithm::ES256).await.unwrap();
    let svc = service(vec![current.clone(), hs(), previous.clone(), ec.clone()]);
    assert!(svc.has_public_keys());
    assert!(!service(vec![hs()]).has_public_keys());
    assert_eq!(service(vec![hs()]).jwks(), json!({"keys": []}));

    let jwks = svc.jwks();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3);
    assert_eq!(keys[0]["kid"], current.kid());
    assert_eq!(keys[0]["kty"], "OKP");
    assert_eq!(keys[0]["crv"], "Ed25519");
    assert_eq!(keys[1]["kid"], previous.kid());
    assert_eq!(keys[1]["kty"], "RSA");
    assert_eq!(keys[1]["e"], "AQAB");
    assert_eq!(keys[2]["kty"], "EC");
    assert_eq!(keys[2]["crv"], "P-256");
    for k in keys {
        assert_eq!(k["use"], "sig");
        for private in ["d", "p", "q", "dp", "dq", "qi", "k", "oth"] {
            assert!(k.get(private).is_none(), "{private}");
        }
    }
    let text = jwks.to_string();
    assert!(!text.contains(SECRET));
    let dbg = format!("{svc:?}");
    assert!(!dbg.contains(SECRET) && !dbg.contains("PRIVATE"));
}

#[tokio::test]
async fn verifier_from_jwks_round_trip() {
    let ed = SigningKey::generate(Algorithm::EdDSA).await.unwrap();
    let ec = SigningKey::generate(Algorithm::ES256).await.unwrap();
    let rs = rsa_key(Algorithm::RS512).await;
    let old = rsa_key_b().await;
    let opts = TokenOptions {
        issuer: Some("https://auth".into()),
        ..TokenOptions::default()
    };
    let all = [
        Algorithm::RS256,
        Algorithm::RS512,
        Algorithm::ES256,
        Algorithm::EdDSA,
    ];
    for key in [ed, ec, rs] {
        let svc = TokenService::new(vec![key.clone(), old.clone()], opts.clone()).unwrap();
        let jwks: serde_json::Value = serde_json::from_str(&svc.jwks().to_string()).unwrap();
        let (verifier, warnings) = Verifier::from_jwks(&jwks, &all, &opts);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(!verifier.is_empty());
        assert!(verifier.has_kid(key.kid()) && verifier.has_kid(old.kid()));
        assert!(!verifier.has_kid("nope"));

        let (token, claims) = svc.sign_access(&user(), "s").unwrap();
        assert_eq!(verifier.verify_access(&token).unwrap(), claims);
        let old_token = TokenService::new(vec![old.clone()], opts.clone())
            .unwrap()
            .sign_access(&user(), "s")
            .unwrap()
            .0;
        assert!(verifier.verify_access(&old_token).is_ok());
        // Refresh tokens are not access tokens for the client either.
        let refresh = svc.sign_refresh("u", "s", "j").unwrap();
        assert_eq!(
            code(verifier.verify_access(&refresh)),
            ErrorCode::TokenInvalid
        );

        // Restricting the allowed algorithms drops keys, with a warning.
        let (only_rs256, warnings) = Verifier::from_jwks(&jwks, &[Algorithm::RS256], &opts);
        assert!(only_rs256.has_kid(old.kid()));
        assert_eq!(warnings.len(), 1);
        assert_eq!(
            code(only_rs256.verify_access(&token)),
            ErrorCode::TokenInvalid
        );
    }
}

#[test]
fn verifier_never_accepts_hmac() {
    let key = hs();
    let oct = json!({"keys": [{
        "kty": "oct", "kid": key.kid(), "alg": "HS256", "use": "sig",
        "k": URL_SAFE_NO_PAD.encode(SECRET)
    }]});
    let all = [Algorithm::HS256, Algorithm::RS256, Algorithm::EdDSA];
    let (verifier, warnings) = Verifier::from_jwks(&oct, &all, &TokenOptions::default());
    assert!(verifier.is_empty());
    assert_eq!(warnings.len(), 1);
    assert!(!warnings[0].contains(&URL_SAFE_NO_PAD.encode(SECRET)));
    let (token, _) = service(vec![key]).sign_access(&user(), "s").unwrap();
    assert_eq!(
        code(verifier.verify_access(&token)),
        ErrorCode::TokenInvalid
    );
}

#[tokio::test]
async fn verifier_skips_bad_jwks_with_warnings() {
    let ed = SigningKey::generate(Algorithm::EdDSA).await.unwrap();
    let good = ed.public_jwk().unwrap();
    let mut no_kid = good.clone();
    no_kid.as_object_mut().unwrap().remove("kid");
    let mut no_alg = good.clone();
    no_alg.as_object_mut().unwrap().remove("alg");
    let mut wrong_kty = good.clone();
    wrong_kty["kty"] = json!("EC");
    let mut short_x = good.clone();
    short_x["x"] = json!("AAAA");
    let mut enc = good.clone();
    enc["use"] = json!("enc");
    let weak_rsa = json!({"kty": "RSA", "kid": "w", "alg": "RS256", "n": URL_SAFE_NO_PAD.encode([0xffu8; 128]), "e": "AQAB"});
    let off_curve = json!({"kty": "EC", "crv": "P-256", "kid": "c", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode([1u8; 32]), "y": URL_SAFE_NO_PAD.encode([2u8; 32])});
    let jwks = json!({"keys": [no_kid, no_alg, wrong_kty, short_x, enc, weak_rsa, off_curve, 42, good.clone(), good]});
    let (v, warnings) = Verifier::from_jwks(
        &jwks,
        &[Algorithm::EdDSA, Algorithm::RS256, Algorithm::ES256],
        &TokenOptions::default(),
    );
    assert_eq!(warnings.len(), 9, "{warnings:?}");
    assert!(v.has_kid(ed.kid()));
    let (empty, w) = Verifier::from_jwks(&json!({}), &[Algorithm::EdDSA], &TokenOptions::default());
    assert!(empty.is_empty() && w.len() == 1);
}

#[test]
fn crit_header_is_rejected() {
    let key = hs();
    let svc = service(vec![key.clone()]);
    let mut h = hs_header(key.kid(), Some("at+jwt"));
    h.crit = Some(vec!["exp".into()]);
    let token = forge(&h, &valid_access_claims(), SECRET.as_bytes());
    assert_eq!(code(svc.verify_access(&token)), ErrorCode::TokenInvalid);
}

#[test]
fn peek_kid_handles_garbage() {
    assert_eq!(peek_kid(""), None);
    assert_eq!(peek_kid("a.b.c"), None);
    assert_eq!(peek_kid(&"x".repeat(10_000)), None);
    let header = json!({"alg": "none", "kid": "k1"});
    assert_eq!(
        peek_kid(&format!("{}.e30.", b64(&header))).as_deref(),
        Some("k1")
    );
}

/// Every one-byte change of a token whose exact bytes are cached is a miss and fails
/// full verification, for each algorithm family (the sibling stays cached and valid).
#[tokio::test]
async fn a_token_one_byte_off_a_cached_sibling_never_hits() {
    for key in [
        hs(),
        rsa_key(Algorithm::RS256).await,
        SigningKey::generate(Algorithm::ES256).await.unwrap(),
        SigningKey::generate(Algorithm::EdDSA).await.unwrap(),
    ] {
        let alg = key.algorithm();
        let svc = service(vec![key]);
        let (token, claims) = svc.sign_access(&user(), "s").unwrap();
        assert_eq!(svc.verify_access(&token).unwrap(), claims);
        assert!(
            svc.inner.keyring.load().verifier.cached_bytes() > 0,
            "{alg:?}"
        );
        let bytes = token.as_bytes();
        let mut accepted = Vec::new();
        for i in 0..bytes.len() {
            for replacement in [b'A', b'x', b'_'] {
                if bytes[i] == replacement || bytes[i] == b'.' {
                    continue;
                }
                let mut forged = bytes.to_vec();
                forged[i] = replacement;
                let forged = String::from_utf8(forged).unwrap();
                if let Ok(c) = svc.verify_access(&forged) {
                    accepted.push((i, c));
                }
            }
        }
        // Base64url's last character may carry unused bits: a change there can decode to
        // the same signature bytes, which is the same token to every verifier. Anything
        // else accepted would be a forgery.
        for (i, c) in &accepted {
            assert_eq!(
                *i,
                bytes.len() - 1,
                "{alg:?}: byte {i} changed and accepted"
            );
            assert_eq!(c, &claims);
        }
        assert_eq!(svc.verify_access(&token).unwrap(), claims, "{alg:?}");
    }
}

/// Replacing the keys keeps cached tokens only while every key that verified them is
/// still there: a removed (retired, revoked) key's tokens never hit afterwards.
#[tokio::test]
async fn removing_a_key_drops_the_tokens_it_verified_from_the_cache() {
    let old = SigningKey::generate(Algorithm::EdDSA).await.unwrap();
    let new = SigningKey::generate(Algorithm::ES256).await.unwrap();
    let svc = service(vec![old.clone()]);
    let (token, _) = svc.sign_access(&user(), "s").unwrap();
    svc.verify_access(&token).unwrap();
    let cached = || svc.inner.keyring.load().verifier.cached_bytes();
    let before = cached();
    assert!(before > 0);

    // A key published ahead: the cache (and the token in it) carries over.
    svc.replace_keys(vec![new.clone(), old.clone()]).unwrap();
    assert_eq!(cached(), before);
    assert!(svc.verify_access(&token).is_ok());

    // The old key removed: the token no longer verifies, cached or not.
    svc.replace_keys(vec![new.clone()]).unwrap();
    assert_eq!(cached(), 0);
    assert_eq!(code(svc.verify_access(&token)), ErrorCode::TokenInvalid);
}

/// With the cache off every verification runs in full; with it on, results are the same.
#[tokio::test]
async fn the_cache_can_be_turned_off_and_changes_no_answer() {
    let key = SigningKey::generate(Algorithm::EdDSA).await.unwrap();
    let off = TokenService::new(
        vec![key.clone()],
        TokenOptions {
            verified_cache_bytes: 0,
            ..TokenOptions::default()
        },
    )
    .unwrap();
    let on = service(vec![key]);
    let (token, claims) = on.sign_access(&user(), "s").unwrap();
    for _ in 0..3 {
        assert_eq!(off.verify_access(&token).unwrap(), claims);
        assert_eq!(on.verify_access(&token).unwrap(), claims);
    }
    assert_eq!(off.inner.keyring.load().verifier.cached_bytes(), 0);
    let refresh = on.sign_refresh("user-1", "s", "jti").unwrap();
    // A refresh token is never an access token, cached or not.
    assert_eq!(code(on.verify_access(&refresh)), ErrorCode::TokenInvalid);
    assert_eq!(code(on.verify_access(&refresh)), ErrorCode::TokenInvalid);
}
