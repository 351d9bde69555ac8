//! Signing keys: HMAC secrets and RSA / P-256 / Ed25519 key pairs.
//!
//! The `rsa` crate is used only to generate RSA keys, parse and encode PEM and read the
//! public modulus / exponent. Every signature is produced and checked by `jsonwebtoken`
//! on aws-lc-rs (the `rsa` crate's own signing is not constant time, RUSTSEC-2023-0071).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use rsa::RsaPrivateKey;
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding, SecretDocument};
use rsa::traits::PublicKeyParts;

use super::ensure_crypto_provider;
use crate::core::error::{Result, SentriError};

/// Minimum HMAC secret length in bytes.
const MIN_HMAC_SECRET: usize = 32;
/// Minimum RSA modulus size in bits.
const MIN_RSA_BITS: usize = 2048;
/// Size of generated RSA keys in bits.
const GENERATED_RSA_BITS: usize = 2048;
/// Message MAC'ed with an HMAC secret to derive its `kid`.
const HMAC_KID_LABEL: &[u8] = b"sentri-kid-v1";

/// A key that signs (and verifies) tokens, pinned to one algorithm.
///
/// Supported algorithms: `HS256`, `HS384`, `HS512` (shared secret, at least 32 bytes),
/// `RS256`, `RS384`, `RS512` (RSA, at least 2048 bits), `ES256` (P-256) and `EdDSA`
/// (Ed25519). The key's `kid` is derived from the key itself (see [`SigningKey::kid`]).
///
/// `Debug` shows only the algorithm and the `kid`, never key material.
///
/// ```
/// use sentri::token::{Algorithm, SigningKey};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// // A shared secret (at least 32 bytes)...
/// let hs = SigningKey::hs256("an-example-secret-of-at-least-32-bytes!!")?;
/// assert_eq!(hs.algorithm(), Algorithm::HS256);
/// assert!(hs.public_jwk().is_none());
///
/// // ...or a fresh key pair whose public half can be published in a JWKS.
/// let ed = SigningKey::generate(Algorithm::EdDSA).await?;
/// let jwk = ed.public_jwk().unwrap();
/// assert_eq!(jwk["kty"], "OKP");
/// assert_eq!(jwk["kid"], ed.kid());
///
/// // Persist it and load it again: same kid.
/// let pem = ed.to_pkcs8_pem().unwrap();
/// let again = SigningKey::from_pem(Algorithm::EdDSA, &pem)?;
/// assert_eq!(again.kid(), ed.kid());
/// # Ok::<(), sentri::SentriError>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct SigningKey {
    inner: Arc<KeyInner>,
}

struct KeyInner {
    alg: Algorithm,
    kid: String,
    material: Material,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// What is kept besides the jsonwebtoken keys: the public components (for the JWK) and,
/// for asymmetric keys, the private key (for [`SigningKey::to_pkcs8_pem`]).
enum Material {
    Hmac,
    Rsa {
        private: Box<RsaPrivateKey>,
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Ec {
        pkcs8: Vec<u8>,
        x: Vec<u8>,
        y: Vec<u8>,
    },
    Ed {
        pkcs8: Vec<u8>,
        x: Vec<u8>,
    },
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.inner.alg)
            .field("kid", &self.inner.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// An `HS256` key from a shared secret of at least 32 bytes.
    pub fn hs256(secret: impl AsRef<[u8]>) -> Result<Self> {
        Self::hmac(Algorithm::HS256, secret.as_ref())
    }

    /// An `HS384` key from a shared secret of at least 32 bytes.
    pub fn hs384(secret: impl AsRef<[u8]>) -> Result<Self> {
        Self::hmac(Algorithm::HS384, secret.as_ref())
    }

    /// An `HS512` key from a shared secret of at least 32 bytes.
    pub fn hs512(secret: impl AsRef<[u8]>) -> Result<Self> {
        Self::hmac(Algorithm::HS512, secret.as_ref())
    }

    /// A key from a PEM-encoded private key.
    ///
    /// - `RS256` / `RS384` / `RS512`: PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`),
    ///   modulus of at least 2048 bits;
    /// - `ES256`: PKCS#8 P-256 key;
    /// - `EdDSA`: PKCS#8 Ed25519 key.
    ///
    /// Any other algorithm, unparsable PEM or a weak key is a `CONFIGURATION_ERROR`.
    pub fn from_pem(alg: Algorithm, pem: &str) -> Result<Self> {
        match alg {
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => Self::rsa_pem(alg, pem),
            Algorithm::ES256 => Self::ec_pem(pem),
            Algorithm::EdDSA => Self::ed_pem(pem),
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Err(
                SentriError::configuration("HMAC keys are built from a secret, not from PEM"),
            ),
            _ => Err(unsupported(alg)),
        }
    }

    /// An RSA key (`RS256`, `RS384` or `RS512`) from a PKCS#8 or PKCS#1 PEM.
    pub fn rsa_pem(alg: Algorithm, pem: &str) -> Result<Self> {
        if !is_rsa(alg) {
            return Err(unsupported(alg));
        }
        let private = RsaPrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem))
            .map_err(|_| SentriError::configuration("invalid RSA private key PEM"))?;
        Self::from_rsa_private(alg, private)
    }

    /// An `ES256` key from a PKCS#8 P-256 PEM.
    pub fn ec_pem(pem: &str) -> Result<Self> {
        let der = pkcs8_der_from_pem(pem)?;
        Self::from_ec_pkcs8(der.as_bytes())
    }

    /// An `EdDSA` key from a PKCS#8 Ed25519 PEM.
    pub fn ed_pem(pem: &str) -> Result<Self> {
        let der = pkcs8_der_from_pem(pem)?;
        Self::from_ed_pkcs8(der.as_bytes())
    }

    /// Generates a fresh key for `alg` on the blocking thread pool.
    ///
    /// RSA keys are 2048 bits; `ES256` uses P-256, `EdDSA` Ed25519; HMAC algorithms get
    /// a random secret of 32, 48 or 64 bytes.
    pub async fn generate(alg: Algorithm) -> Result<Self> {
        tokio::task::spawn_blocking(move || Self::generate_blocking(alg))
            .await
            .map_err(SentriError::internal)?
    }

    fn generate_blocking(alg: Algorithm) -> Result<Self> {
        let keygen_failed = || SentriError::configuration("key generation failed");
        match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                let len = match alg {
                    Algorithm::HS256 => 32,
                    Algorithm::HS384 => 48,
                    _ => 64,
                };
                let mut secret = vec![0u8; len];
                aws_lc_rs::rand::fill(&mut secret).map_err(|_| keygen_failed())?;
                let key = Self::hmac(alg, &secret);
                secret.fill(0);
                key
            }
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => {
                let private = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, GENERATED_RSA_BITS)
                    .map_err(|_| keygen_failed())?;
                Self::from_rsa_private(alg, private)
            }
            Algorithm::ES256 => {
                let rng = aws_lc_rs::rand::SystemRandom::new();
                let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| keygen_failed())?;
                Self::from_ec_pkcs8(doc.as_ref())
            }
            Algorithm::EdDSA => {
                let rng = aws_lc_rs::rand::SystemRandom::new();
                let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| keygen_failed())?;
                Self::from_ed_pkcs8(doc.as_ref())
            }
            _ => Err(unsupported(alg)),
        }
    }

    /// The algorithm this key signs with (and the only one it verifies).
    pub fn algorithm(&self) -> Algorithm {
        self.inner.alg
    }

    /// The key id put in every token's header.
    ///
    /// For asymmetric keys this is the RFC 7638 JWK thumbprint (base64url SHA-256).
    /// For HMAC keys the thumbprint would be a plain hash of the secret, published in
    /// every token; instead the kid is the first 22 characters of
    /// `base64url(HMAC-SHA256(secret, "sentri-kid-v1"))`, which reveals nothing
    /// usable about the secret.
    pub fn kid(&self) -> &str {
        &self.inner.kid
    }

    /// `true` for HMAC keys (no public half).
    pub fn is_symmetric(&self) -> bool {
        matches!(self.inner.material, Material::Hmac)
    }

    /// The public key as a JWK (`kty`, the public members, `kid`, `alg`, `use: "sig"`);
    /// `None` for HMAC keys.
    pub fn public_jwk(&self) -> Option<serde_json::Value> {
        let mut members = public_members(&self.inner.material)?;
        members.insert("kid", self.inner.kid.clone());
        members.insert("alg", alg_name(self.inner.alg).to_owned());
        members.insert("use", "sig".to_owned());
        serde_json::to_value(members).ok()
    }

    /// The private key as a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), so that a
    /// generated key can be persisted; `None` for HMAC keys.
    ///
    /// The result is secret: store it like a password, never log it.
    pub fn to_pkcs8_pem(&self) -> Option<String> {
        match &self.inner.material {
            Material::Hmac => None,
            Material::Rsa { private, .. } => private
                .to_pkcs8_pem(LineEnding::LF)
                .ok()
                .map(|pem| pem.as_str().to_owned()),
            Material::Ec { pkcs8, .. } | Material::Ed { pkcs8, .. } => Some(pem_wrap(pkcs8)),
        }
    }

    pub(crate) fn encoding_key(&self) -> &EncodingKey {
        &self.inner.encoding
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.inner.decoding
    }

    // ---- constructors from parsed material ---------------------------------------------

    fn hmac(alg: Algorithm, secret: &[u8]) -> Result<Self> {
        ensure_crypto_provider();
        if secret.len() < MIN_HMAC_SECRET {
            return Err(SentriError::configuration(
                "HMAC secret must be at least 32 bytes",
            ));
        }
        let mac_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
        let tag = aws_lc_rs::hmac::sign(&mac_key, HMAC_KID_LABEL);
        let mut kid = URL_SAFE_NO_PAD.encode(tag.as_ref());
        kid.truncate(22);
        Ok(Self::assemble(
            alg,
            kid,
            Material::Hmac,
            EncodingKey::from_secret(secret),
            DecodingKey::from_secret(secret),
        ))
    }

    fn from_rsa_private(alg: Algorithm, private: RsaPrivateKey) -> Result<Self> {
        ensure_crypto_provider();
        if private.n().bits() < MIN_RSA_BITS {
            return Err(SentriError::configuration(
                "RSA key must be at least 2048 bits",
            ));
        }
        let pkcs1 = private
            .to_pkcs1_der()
            .map_err(|_| SentriError::configuration("invalid RSA private key"))?;
        // Make sure aws-lc-rs (which does the signing) accepts the key now, not per request.
        RsaKeyPair::from_der(pkcs1.as_bytes())
            .map_err(|_| SentriError::configuration("RSA key rejected by the crypto backend"))?;
        let n = private.n().to_bytes_be();
        let e = private.e().to_bytes_be();
        let encoding = EncodingKey::from_rsa_der(pkcs1.as_bytes());
        let decoding = DecodingKey::from_rsa_raw_components(&n, &e);
        let material = Material::Rsa {
            private: Box::new(private),
            n,
            e,
        };
        let kid = kid_for(&material)?;
        Ok(Self::assemble(alg, kid, material, encoding, decoding))
    }

    fn from_ec_pkcs8(pkcs8: &[u8]) -> Result<Self> {
        ensure_crypto_provider();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
            .map_err(|_| SentriError::configuration("invalid PKCS#8 P-256 private key"))?;
        let point = pair.public_key().as_ref();
        // Uncompressed SEC1 point: 0x04 || x (32) || y (32).
        if point.len() != 65 || point[0] != 0x04 {
            return Err(SentriError::configuration("unexpected P-256 public key"));
        }
        let (x, y) = (point[1..33].to_vec(), point[33..].to_vec());
        let decoding = DecodingKey::from_ec_der(point);
        let material = Material::Ec {
            pkcs8: pkcs8.to_vec(),
            x,
            y,
        };
        let kid = kid_for(&material)?;
        Ok(Self::assemble(
            Algorithm::ES256,
            kid,
            material,
            EncodingKey::from_ec_der(pkcs8),
            decoding,
        ))
    }

    fn from_ed_pkcs8(pkcs8: &[u8]) -> Result<Self> {
        ensure_crypto_provider();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|_| SentriError::configuration("invalid PKCS#8 Ed25519 private key"))?;
        let x = pair.public_key().as_ref().to_vec();
        let decoding = DecodingKey::from_ed_der(&x);
        let material = Material::Ed {
            pkcs8: pkcs8.to_vec(),
            x,
        };
        let kid = kid_for(&material)?;
        Ok(Self::assemble(
            Algorithm::EdDSA,
            kid,
            material,
            EncodingKey::from_ed_der(pkcs8),
            decoding,
        ))
    }

    fn assemble(
        alg: Algorithm,
        kid: String,
        material: Material,
        encoding: EncodingKey,
        decoding: DecodingKey,
    ) -> Self {
        Self {
            inner: Arc::new(KeyInner {
                alg,
                kid,
                material,
                encoding,
                decoding,
            }),
        }
    }
}

fn is_rsa(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512)
}

fn unsupported(alg: Algorithm) -> SentriError {
    SentriError::configuration(format!("unsupported signing algorithm {alg:?}"))
}

/// The JOSE name of an algorithm.
pub(crate) fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
        // `Algorithm` is non-exhaustive; sentri never builds keys for other algorithms.
        _ => "unsupported",
    }
}

fn pkcs8_der_from_pem(pem: &str) -> Result<SecretDocument> {
    let (label, doc) = SecretDocument::from_pem(pem)
        .map_err(|_| SentriError::configuration("invalid private key PEM"))?;
    if label != "PRIVATE KEY" {
        return Err(SentriError::configuration(
            "expected an unencrypted PKCS#8 PEM (-----BEGIN PRIVATE KEY-----)",
        ));
    }
    Ok(doc)
}

fn pem_wrap(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 64);
    out.push_str("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END PRIVATE KEY-----\n");
    out
}

/// The RFC 7638 required members of a public key, base64url-encoded.
fn public_members(material: &Material) -> Option<BTreeMap<&'static str, String>> {
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let mut m = BTreeMap::new();
    match material {
        Material::Hmac => return None,
        Material::Rsa { n, e, .. } => {
            m.insert("kty", "RSA".to_owned());
            m.insert("n", b64(n));
            m.insert("e", b64(e));
        }
        Material::Ec { x, y, .. } => {
            m.insert("kty", "EC".to_owned());
            m.insert("crv", "P-256".to_owned());
            m.insert("x", b64(x));
            m.insert("y", b64(y));
        }
        Material::Ed { x, .. } => {
            m.insert("kty", "OKP".to_owned());
            m.insert("crv", "Ed25519".to_owned());
            m.insert("x", b64(x));
        }
    }
    Some(m)
}

fn kid_for(material: &Material) -> Result<String> {
    let members = public_members(material)
        .ok_or_else(|| SentriError::configuration("no public key to derive a kid from"))?;
    jwk_thumbprint(&members)
}

/// RFC 7638 thumbprint: base64url(SHA-256(canonical JSON of the required members)).
///
/// `members` must hold exactly the required members; a `BTreeMap` serialises them in
/// lexicographic order with no whitespace, which is the canonical form.
pub(crate) fn jwk_thumbprint(members: &BTreeMap<&str, String>) -> Result<String> {
    let canonical = serde_json::to_string(members).map_err(SentriError::internal)?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    Ok(URL_SAFE_NO_PAD.encode(digest.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn rfc7638_thumbprint_example() {
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let mut m = BTreeMap::new();
        m.insert("kty", "RSA".to_owned());
        m.insert("n", n.to_owned());
        m.insert("e", "AQAB".to_owned());
        assert_eq!(
            jwk_thumbprint(&m).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn short_hmac_secret_is_a_configuration_error() {
        for r in [
            SigningKey::hs256([0u8; 31]),
            SigningKey::hs384(b"short"),
            SigningKey::hs512(""),
        ] {
            assert_eq!(r.unwrap_err().code(), &ErrorCode::ConfigurationError);
        }
    }

    #[test]
    fn hmac_kid_is_not_the_secret_hash_and_debug_hides_the_secret() {
        let secret = "0123456789abcdef0123456789abcdef-secret";
        let k = SigningKey::hs256(secret).unwrap();
        assert_eq!(k.kid().len(), 22);
        let dbg = format!("{k:?}");
        assert!(dbg.contains("HS256") && dbg.contains(k.kid()));
        assert!(!dbg.contains(secret));
        assert!(k.public_jwk().is_none() && k.to_pkcs8_pem().is_none());
        // Same secret, same kid; different secret, different kid.
        assert_eq!(SigningKey::hs512(secret).unwrap().kid(), k.kid());
        assert_ne!(
            SigningKey::hs256("another-secret-of-at-least-32-bytes!!")
                .unwrap()
                .kid(),
            k.kid()
        );
    }

    #[test]
    fn garbage_pem_is_a_configuration_error() {
        for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
            for pem in [
                "",
                "garbage",
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            ] {
                let err = SigningKey::from_pem(alg, pem).unwrap_err();
                assert_eq!(err.code(), &ErrorCode::ConfigurationError, "{alg:?} {pem}");
            }
        }
        assert_eq!(
            SigningKey::from_pem(Algorithm::HS256, "x")
                .unwrap_err()
                .code(),
            &ErrorCode::ConfigurationError
        );
    }

    #[tokio::test]
    async fn pem_of_the_wrong_key_type_is_rejected() {
        let ed = SigningKey::generate(Algorithm::EdDSA).await.unwrap();
        let pem = ed.to_pkcs8_pem().unwrap();
        assert!(SigningKey::from_pem(Algorithm::ES256, &pem).is_err());
        assert!(SigningKey::from_pem(Algorithm::RS256, &pem).is_err());
    }

    #[test]
    fn rsa_1024_is_a_configuration_error() {
        let weak = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
        let pem = weak.to_pkcs8_pem(LineEnding::LF).unwrap();
        let err = SigningKey::from_pem(Algorithm::RS256, &pem).unwrap_err();
        assert_eq!(err.code(), &ErrorCode::ConfigurationError);
        let pem1 = weak.to_pkcs1_pem(LineEnding::LF).unwrap();
        let err = SigningKey::from_pem(Algorithm::RS256, &pem1).unwrap_err();
        assert_eq!(err.code(), &ErrorCode::ConfigurationError);
    }

    #[tokio::test]
    async fn generated_keys_round_trip_through_pem_and_expose_public_jwk() {
        for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
            let k = SigningKey::generate(alg).await.unwrap();
            let pem = k.to_pkcs8_pem().unwrap();
            let again = SigningKey::from_pem(alg, &pem).unwrap();
            assert_eq!(again.kid(), k.kid());
            let jwk = k.public_jwk().unwrap();
            assert_eq!(jwk["kid"], k.kid());
            assert_eq!(jwk["alg"], alg_name(alg));
            assert_eq!(jwk["use"], "sig");
            for private in ["d", "p", "q", "dp", "dq", "qi"] {
                assert!(jwk.get(private).is_none());
            }
            assert!(!format!("{k:?}").contains("BEGIN"));
        }
    }

    #[tokio::test]
    async fn rsa_pkcs1_pem_is_accepted() {
        let k = SigningKey::generate(Algorithm::RS384).await.unwrap();
        let pem = k.to_pkcs8_pem().unwrap();
        let private = RsaPrivateKey::from_pkcs8_pem(&pem).unwrap();
        let pkcs1 = private.to_pkcs1_pem(LineEnding::LF).unwrap();
        let again = SigningKey::rsa_pem(Algorithm::RS384, &pkcs1).unwrap();
        assert_eq!(again.kid(), k.kid());
        assert_eq!(again.algorithm(), Algorithm::RS384);
    }
}
