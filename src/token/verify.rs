//! Token verification, shared by [`TokenService`](super::TokenService) and the
//! client-mode [`Verifier`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::cache::VerifiedCache;
use super::keys::alg_name;
use super::{
    AccessClaims, MAX_TOKEN_BYTES, SigningKey, TYP_ACCESS, TokenOptions, ensure_crypto_provider,
    now_secs,
};
use crate::core::error::{Result, SentriError};

/// One verification key: its pinned algorithm, the key and a ready `Validation`.
struct VerifyKey {
    alg: Algorithm,
    decoding: DecodingKey,
    validation: Validation,
}

/// Verifies access tokens against a set of public keys, e.g. an auth server's JWKS
/// (client mode: an application that trusts tokens it did not issue).
///
/// Each key verifies only the algorithm it is published with; HMAC is never accepted.
/// Access tokens that verified are remembered (exact bytes → claims, until `exp`; see
/// [`TokenOptions::verified_cache_bytes`]). Cheap to clone (clones share the cache).
#[derive(Clone)]
pub struct Verifier {
    keys: Arc<HashMap<String, VerifyKey>>,
    cache: Option<Arc<VerifiedCache>>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<(&str, &str)> = self
            .keys
            .iter()
            .map(|(kid, k)| (kid.as_str(), alg_name(k.alg)))
            .collect();
        kids.sort_unstable();
        f.debug_struct("Verifier").field("keys", &kids).finish()
    }
}

/// The header members sentri looks at. `alg` is parsed as an [`Algorithm`], so `none`
/// (or anything unknown) fails here.
#[derive(Deserialize)]
struct MinimalHeader {
    alg: Algorithm,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    /// RFC 7515 §4.1.11: sentri understands no header extension, so any `crit` is refused.
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct KidOnly {
    #[serde(default)]
    kid: Option<String>,
}

fn invalid() -> SentriError {
    SentriError::token_invalid("Invalid token")
}

/// Decodes the (unverified) header segment of a compact JWS.
fn decode_header_segment<T: DeserializeOwned>(token: &str) -> Option<T> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let mut parts = token.split('.');
    let header = parts.next()?;
    let _payload = parts.next()?;
    let _signature = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(header).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The `kid` of a token's header, without verifying anything.
///
/// For a client's "unknown kid: refetch the JWKS" logic; never trust the result.
pub fn peek_kid(token: &str) -> Option<String> {
    decode_header_segment::<KidOnly>(token)?.kid
}

/// The `Validation` for one key: algorithm pinned, leeway, iss/aud when configured,
/// `exp` / `sub` required (`iat` is required by the claim types), `nbf` checked.
pub(crate) fn build_validation(alg: Algorithm, opts: &TokenOptions) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = opts.leeway.as_secs();
    v.validate_exp = true;
    v.validate_nbf = true;
    v.validate_aud = true;
    let mut required = vec!["exp", "sub"];
    if let Some(iss) = &opts.issuer {
        v.set_issuer(&[iss]);
        required.push("iss");
    }
    if let Some(aud) = &opts.audience {
        v.set_audience(&[aud]);
        required.push("aud");
    }
    v.set_required_spec_claims(&required);
    v
}

/// Which token type a verification expects (the header `typ`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenKind {
    Access,
    Refresh,
    /// An OpenID Connect ID token of an external provider: header `typ` absent or `JWT`.
    #[cfg(feature = "sso")]
    IdToken,
}

impl TokenKind {
    pub(crate) fn typ(self) -> &'static str {
        match self {
            Self::Access => TYP_ACCESS,
            Self::Refresh => super::TYP_REFRESH,
            #[cfg(feature = "sso")]
            Self::IdToken => "JWT",
        }
    }
}

impl Verifier {
    /// Builds a verifier from the signing keys of a [`TokenService`](super::TokenService).
    pub(crate) fn from_signing_keys(keys: &[SigningKey], opts: &TokenOptions) -> Result<Self> {
        ensure_crypto_provider();
        let mut map = HashMap::with_capacity(keys.len());
        for key in keys {
            let vk = VerifyKey {
                alg: key.algorithm(),
                decoding: key.decoding_key().clone(),
                validation: build_validation(key.algorithm(), opts),
            };
            if map.insert(key.kid().to_owned(), vk).is_some() {
                return Err(SentriError::configuration(
                    "the same signing key is configured twice",
                ));
            }
        }
        Ok(Self::assemble(map, opts))
    }

    fn assemble(keys: HashMap<String, VerifyKey>, opts: &TokenOptions) -> Self {
        Self {
            keys: Arc::new(keys),
            cache: VerifiedCache::new(opts.verified_cache_bytes, opts.leeway).map(Arc::new),
        }
    }

    /// Takes over `old`'s verified-token cache when every key `old` verifies with is
    /// also here with the same algorithm (kids name key material, so the same kid is the
    /// same key): a key added keeps the cache, a key removed drops it.
    pub(crate) fn adopt_cache(&mut self, old: &Verifier) {
        let kept = old
            .keys
            .iter()
            .all(|(kid, k)| self.keys.get(kid).is_some_and(|n| n.alg == k.alg));
        if kept && self.cache.is_some() {
            self.cache.clone_from(&old.cache);
        }
    }

    /// Builds a verifier from a JWKS (`{"keys": [...]}`).
    ///
    /// Accepts RSA (`RS256`/`RS384`/`RS512`, at least 2048 bits), EC P-256 (`ES256`) and
    /// OKP Ed25519 (`EdDSA`) keys. Every key needs a `kid` and an `alg` that is in
    /// `allowed`; HMAC (`kty: "oct"`, `HS*`) is never accepted, whatever `allowed` says.
    /// Keys that do not qualify are skipped; the second value lists why, one warning
    /// per skipped key (no key material in them).
    pub fn from_jwks(
        jwks: &serde_json::Value,
        allowed: &[Algorithm],
        opts: &TokenOptions,
    ) -> (Verifier, Vec<String>) {
        Self::from_jwks_with(jwks, allowed, opts, false)
    }

    /// [`from_jwks`](Self::from_jwks); with `infer_alg`, a key without `alg` is pinned
    /// to the one algorithm its type implies for OpenID Connect (RSA → RS256, P-256 →
    /// ES256, Ed25519 → EdDSA), as identity providers often omit the member.
    pub(crate) fn from_jwks_with(
        jwks: &serde_json::Value,
        allowed: &[Algorithm],
        opts: &TokenOptions,
        infer_alg: bool,
    ) -> (Verifier, Vec<String>) {
        ensure_crypto_provider();
        let mut warnings = Vec::new();
        let mut map = HashMap::new();
        let Some(list) = jwks.get("keys").and_then(|k| k.as_array()) else {
            warnings.push("JWKS has no \"keys\" array".to_owned());
            return (Self::assemble(map, opts), warnings);
        };
        for (i, jwk) in list.iter().enumerate() {
            match parse_jwk(jwk, allowed, infer_alg) {
                Ok((kid, alg, decoding)) => {
                    if map.contains_key(&kid) {
                        warnings.push(format!("JWK #{i} (kid {kid}): duplicate kid, skipped"));
                        continue;
                    }
                    let validation = build_validation(alg, opts);
                    map.insert(
                        kid,
                        VerifyKey {
                            alg,
                            decoding,
                            validation,
                        },
                    );
                }
                Err(reason) => warnings.push(format!("JWK #{i}: {reason}, skipped")),
            }
        }
        (Self::assemble(map, opts), warnings)
    }

    /// Verifies an access token (`typ: at+jwt`) and returns its claims.
    ///
    /// Expired → `TOKEN_EXPIRED`; anything else wrong → `TOKEN_INVALID`.
    pub fn verify_access(&self, token: &str) -> Result<AccessClaims> {
        if let Some(hit) = self.cached_access(token) {
            return hit;
        }
        let claims: AccessClaims = self.verify(token, TokenKind::Access)?;
        if let Some(cache) = &self.cache {
            cache.insert(token, &claims);
        }
        Ok(claims)
    }

    /// The claims of `token` when the cache holds it (and it has not expired); `None`
    /// means "verify it": the caller may skip key lookups on a hit.
    pub(crate) fn cached_access(&self, token: &str) -> Option<Result<AccessClaims>> {
        let hit = self.cache.as_ref()?.get(token, now_secs())?;
        Some(hit.map_err(|()| SentriError::token_expired()))
    }

    /// Bytes the verified-token cache holds (estimated; 0 when off).
    #[doc(hidden)]
    pub fn cached_bytes(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| c.weighted_bytes())
    }

    /// Verifies an OpenID Connect ID token (header `typ` absent or `JWT`; never an
    /// access or refresh token of sentri's own) through the same path: pinned algorithm
    /// per key, signature, `exp` / `nbf`, and the `iss` / `aud` this verifier was built
    /// with. The caller checks `nonce`, `azp` and `iat`.
    #[cfg(feature = "sso")]
    pub(crate) fn verify_id_token<T: DeserializeOwned>(&self, token: &str) -> Result<T> {
        self.verify(token, TokenKind::IdToken)
    }

    /// `true` when a key with this `kid` is known.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// `true` when the verifier has no key (every token is rejected).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The one verification path: size limit, header (kid, alg, typ), then signature and
    /// claims through the key's precomputed `Validation`.
    pub(crate) fn verify<T: DeserializeOwned>(&self, token: &str, kind: TokenKind) -> Result<T> {
        let header: MinimalHeader = decode_header_segment(token).ok_or_else(invalid)?;
        if header.crit.is_some() {
            return Err(invalid());
        }
        let key = match header.kid.as_deref() {
            Some(kid) => self.keys.get(kid),
            // OpenID Connect Core §10.1: an ID token may omit `kid` when the provider's
            // JWKS holds a single key; that key (and its pinned algorithm) is the one.
            #[cfg(feature = "sso")]
            None if kind == TokenKind::IdToken && self.keys.len() == 1 => self.keys.values().next(),
            None => None,
        }
        .ok_or_else(invalid)?;
        if header.alg != key.alg {
            return Err(invalid());
        }
        match header.typ.as_deref() {
            Some(typ) if typ.eq_ignore_ascii_case(kind.typ()) => {}
            #[cfg(feature = "sso")]
            None if kind == TokenKind::IdToken => {}
            _ => return Err(invalid()),
        }
        match jsonwebtoken::decode::<T>(token, &key.decoding, &key.validation) {
            Ok(data) => Ok(data.claims),
            Err(err) => match err.kind() {
                ErrorKind::ExpiredSignature => Err(SentriError::token_expired()),
                _ => Err(invalid()),
            },
        }
    }
}

fn str_member<'a>(jwk: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    jwk.get(name).and_then(|v| v.as_str())
}

fn b64_member(jwk: &serde_json::Value, name: &str) -> std::result::Result<Vec<u8>, String> {
    let s = str_member(jwk, name).ok_or_else(|| format!("missing \"{name}\""))?;
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| format!("\"{name}\" is not base64url"))
}

fn parse_jwk(
    jwk: &serde_json::Value,
    allowed: &[Algorithm],
    infer_alg: bool,
) -> std::result::Result<(String, Algorithm, DecodingKey), String> {
    let kid = str_member(jwk, "kid")
        .filter(|k| !k.is_empty())
        .ok_or("missing \"kid\"")?
        .to_owned();
    let kty = str_member(jwk, "kty").ok_or("missing \"kty\"")?;
    let implied = match (kty, str_member(jwk, "crv")) {
        _ if !infer_alg => None,
        ("RSA", _) => Some("RS256"),
        ("EC", Some("P-256")) => Some("ES256"),
        ("OKP", Some("Ed25519")) => Some("EdDSA"),
        _ => None,
    };
    let alg_str = str_member(jwk, "alg")
        .or(implied)
        .ok_or("missing \"alg\"")?;
    let alg: Algorithm = alg_str.parse().map_err(|_| "unknown \"alg\"".to_owned())?;
    if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) || kty == "oct" {
        return Err("symmetric keys are never accepted from a JWKS".to_owned());
    }
    if !allowed.contains(&alg) {
        return Err(format!("algorithm {alg_str} is not allowed"));
    }
    if let Some(u) = jwk.get("use")
        && u.as_str() != Some("sig")
    {
        return Err("\"use\" is not \"sig\"".to_owned());
    }
    let decoding = match (kty, alg) {
        ("RSA", Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512) => {
            let n = b64_member(jwk, "n")?;
            let e = b64_member(jwk, "e")?;
            let n_trimmed: &[u8] = {
                let start = n.iter().position(|b| *b != 0).unwrap_or(n.len());
                &n[start..]
            };
            let bits =
                n_trimmed.len() * 8 - n_trimmed.first().map_or(0, |b| b.leading_zeros() as usize);
            if bits < 2048 {
                return Err("RSA modulus is shorter than 2048 bits".to_owned());
            }
            if e.is_empty() {
                return Err("empty RSA exponent".to_owned());
            }
            DecodingKey::from_rsa_raw_components(n_trimmed, &e)
        }
        ("EC", Algorithm::ES256) => {
            if str_member(jwk, "crv") != Some("P-256") {
                return Err("EC key is not on P-256".to_owned());
            }
            let x = b64_member(jwk, "x")?;
            let y = b64_member(jwk, "y")?;
            if x.len() != 32 || y.len() != 32 {
                return Err("bad P-256 coordinates".to_owned());
            }
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            // Reject points that are not on the curve now rather than per request.
            aws_lc_rs::signature::ParsedPublicKey::new(
                &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
                &point,
            )
            .map_err(|_| "invalid P-256 public key".to_owned())?;
            DecodingKey::from_ec_der(&point)
        }
        ("OKP", Algorithm::EdDSA) => {
            if str_member(jwk, "crv") != Some("Ed25519") {
                return Err("OKP key is not Ed25519".to_owned());
            }
            let x = b64_member(jwk, "x")?;
            if x.len() != 32 {
                return Err("bad Ed25519 public key".to_owned());
            }
            DecodingKey::from_ed_der(&x)
        }
        _ => return Err(format!("\"kty\" {kty} does not match \"alg\" {alg_str}")),
    };
    Ok((kid, alg, decoding))
}
