//! Tokens: signing keys, claims, verification and JWKS.
//!
//! Access tokens are short-lived JWTs (header `typ: at+jwt`, RFC 9068); refresh tokens
//! are JWTs with `typ: refresh+jwt`. The two are told apart by the header `typ`, checked
//! exactly on every verification, so one can never be used as the other.
//!
//! Following RFC 8725: every key is pinned to one algorithm and verifies only that one;
//! `alg: none` is never accepted; tokens are looked up by `kid`; all signing and
//! verification goes through `jsonwebtoken` on aws-lc-rs.
//!
//! - [`SigningKey`]: an HMAC secret or an RSA / P-256 / Ed25519 key pair.
//! - [`TokenService`]: signs and verifies (the first key signs, every key verifies, for
//!   key rotation) and publishes the JWKS.
//! - [`Verifier`]: client mode, verifies access tokens against an auth server's JWKS.
//! - `cache`: the verified-token cache both share (exact token bytes → claims, until `exp`).

mod cache;
mod keys;
#[cfg(any(feature = "client", feature = "sso"))]
pub(crate) mod remote;
mod verify;

use std::fmt;
use std::sync::{Arc, Once};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Header;
use serde::{Deserialize, Serialize};

pub use cache::DEFAULT_VERIFIED_CACHE_BYTES;
pub use jsonwebtoken::Algorithm;
pub use keys::SigningKey;
pub use verify::{Verifier, peek_kid};

use crate::core::error::{Result, SentriError};
use crate::core::principal::{Assurance, AuthUser};
use verify::TokenKind;

/// Header `typ` of access tokens (RFC 9068).
pub const TYP_ACCESS: &str = "at+jwt";
/// Header `typ` of refresh tokens.
pub const TYP_REFRESH: &str = "refresh+jwt";
/// Tokens longer than this (in bytes) are rejected before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Installs jsonwebtoken's aws-lc-rs crypto provider for the process (once; a provider
/// installed by someone else is left in place).
pub(crate) fn ensure_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means a provider is already installed: fine.
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    });
}

/// Token settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOptions {
    /// `iss` put in every token and required on verification, when set.
    pub issuer: Option<String>,
    /// `aud` put in every token and required on verification, when set.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` / `nbf` (whole seconds; default 5 s).
    pub leeway: Duration,
    /// Access token lifetime (default 15 minutes).
    pub access_ttl: Duration,
    /// Refresh token lifetime (default 7 days).
    pub refresh_ttl: Duration,
    /// Memory bound, in bytes, of the verified-access-token cache (default 16 MiB; 0
    /// turns it off): a token seen before skips its signature check until its `exp`.
    /// Only the exact bytes of a token that verified hit; the session check still runs.
    pub verified_cache_bytes: u64,
}

impl Default for TokenOptions {
    fn default() -> Self {
        Self {
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(5),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(7 * 24 * 3600),
            verified_cache_bytes: cache::DEFAULT_VERIFIED_CACHE_BYTES,
        }
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Subject: the user id.
    pub sub: String,
    /// The user's login identifier.
    pub identifier: String,
    /// The user's roles at the time the token was issued.
    pub roles: Vec<String>,
    /// The session id the token belongs to.
    pub sid: String,
    /// Issued at (seconds since the Unix epoch).
    pub iat: i64,
    /// Expires at (seconds since the Unix epoch).
    pub exp: i64,
    /// Unique token id (a random UUID v4).
    pub jti: String,
    /// Issuer, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// How the user authenticated (RFC 8176 values such as `pwd`, `otp`, `mfa`), when
    /// the session records it (absent on tokens of sessions older than that record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amr: Option<Vec<String>>,
    /// The assurance level of the session (1: one factor, 2: two), when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aal: Option<u8>,
    /// When the user last authenticated in this session (unix seconds; OpenID Connect's
    /// `auth_time`): the login or the latest re-authentication, never a refresh.
    /// Sensitive operations need it within the re-authentication window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    /// The user's authorization version when the token was signed (absent: 0). A role
    /// change bumps the stored version; `protect()` then treats this token as stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub av: Option<i64>,
    /// The workspace (tenant) the token is bound to; absent on a personal token. Set by
    /// switching the session to a workspace; the tenant guard requires it to equal the
    /// request's workspace header and the caller's membership to be active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wid: Option<String>,
}

impl AccessClaims {
    /// The assurance the token carries (`None` when it has no `aal` claim).
    pub fn assurance(&self) -> Option<Assurance> {
        Some(Assurance {
            amr: self.amr.clone().unwrap_or_default(),
            level: self.aal?,
            auth_time: self.auth_time,
        })
    }
}

/// What a session grants each access token it issues beyond the user: how the login
/// was authenticated, the user's authorization version and the workspace the session is
/// bound to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessGrant {
    /// The session's assurance (claims `amr`, `aal`), when recorded.
    pub assurance: Option<Assurance>,
    /// The user's authorization version (claim `av`, left out when 0).
    pub av: i64,
    /// The workspace the session is bound to (claim `wid`), if any.
    pub workspace: Option<String>,
}

/// The claims of a refresh token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshClaims {
    /// Subject: the user id.
    pub sub: String,
    /// The session id the token belongs to.
    pub sid: String,
    /// Token id, chosen by the caller (see [`TokenService::new_refresh_jti`]); used to
    /// detect refresh token reuse.
    pub jti: String,
    /// Issued at (seconds since the Unix epoch).
    pub iat: i64,
    /// Expires at (seconds since the Unix epoch).
    pub exp: i64,
    /// Issuer, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// Signs and verifies access and refresh tokens.
///
/// The first key signs; every key verifies (only its own algorithm), so a key can be
/// rotated by putting the new one first and keeping the old one until its tokens have
/// expired. Cheap to clone; `Debug` shows algorithms and kids only.
///
/// ```
/// use sentri::AuthUser;
/// use sentri::token::{SigningKey, TokenOptions, TokenService};
///
/// let key = SigningKey::hs256("an-example-secret-of-at-least-32-bytes!!")?;
/// let tokens = TokenService::new(vec![key], TokenOptions::default())?;
///
/// let user = AuthUser { id: "u1".into(), identifier: "ada@example.com".into(), roles: vec!["user".into()] };
/// let (access, claims) = tokens.sign_access(&user, "session-1")?;
/// assert_eq!(tokens.verify_access(&access)?, claims);
///
/// let jti = TokenService::new_refresh_jti();
/// let refresh = tokens.sign_refresh(&user.id, "session-1", &jti)?;
/// assert_eq!(tokens.verify_refresh(&refresh)?.jti, jti);
/// // A refresh token is not an access token.
/// assert!(tokens.verify_access(&refresh).is_err());
/// # Ok::<(), sentri::SentriError>(())
/// ```
#[derive(Clone)]
pub struct TokenService {
    inner: Arc<ServiceInner>,
}

struct ServiceInner {
    /// The key set; replaced whole by [`TokenService::replace_keys`] (a database key
    /// store refreshing), read without locking on every sign and verify.
    keyring: ArcSwap<Keyring>,
    opts: TokenOptions,
}

/// One immutable key set: the signer, every verifying key, and what they publish.
struct Keyring {
    signer: SigningKey,
    keys: Vec<SigningKey>,
    verifier: Verifier,
    jwks: serde_json::Value,
    has_public_keys: bool,
}

impl Keyring {
    fn new(keys: Vec<SigningKey>, opts: &TokenOptions) -> Result<Self> {
        let signer = keys
            .first()
            .cloned()
            .ok_or_else(|| SentriError::configuration("at least one signing key is required"))?;
        let verifier = Verifier::from_signing_keys(&keys, opts)?;
        let public: Vec<serde_json::Value> = keys.iter().filter_map(|k| k.public_jwk()).collect();
        let has_public_keys = !public.is_empty();
        let jwks = serde_json::json!({ "keys": public });
        Ok(Self {
            signer,
            keys,
            verifier,
            jwks,
            has_public_keys,
        })
    }
}

impl fmt::Debug for TokenService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenService")
            .field("keys", &self.inner.keyring.load().keys)
            .field("options", &self.inner.opts)
            .finish()
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn ttl_secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl TokenService {
    /// A service whose first key signs and whose keys all verify.
    ///
    /// An empty list, or the same key twice, is a `CONFIGURATION_ERROR`.
    pub fn new(keys: Vec<SigningKey>, opts: TokenOptions) -> Result<Self> {
        ensure_crypto_provider();
        if opts.access_ttl.is_zero() || opts.refresh_ttl.is_zero() {
            return Err(SentriError::configuration(
                "token lifetimes must be positive",
            ));
        }
        let keyring = Keyring::new(keys, &opts)?;
        Ok(Self {
            inner: Arc::new(ServiceInner {
                keyring: ArcSwap::from_pointee(keyring),
                opts,
            }),
        })
    }

    /// Replaces the key set at once for this service and all its clones: the first key
    /// signs from now on, every key verifies. In-flight signs and verifies finish with
    /// the set they started with. An empty list, or the same key twice, is a
    /// `CONFIGURATION_ERROR` (and the set in place stays).
    pub fn replace_keys(&self, keys: Vec<SigningKey>) -> Result<()> {
        let mut keyring = Keyring::new(keys, &self.inner.opts)?;
        // Tokens verified with keys that are all still here stay verified.
        keyring
            .verifier
            .adopt_cache(&self.inner.keyring.load().verifier);
        self.inner.keyring.store(Arc::new(keyring));
        Ok(())
    }

    /// `true` when a key with this `kid` currently verifies.
    pub fn knows_kid(&self, kid: &str) -> bool {
        self.inner
            .keyring
            .load()
            .keys
            .iter()
            .any(|k| k.kid() == kid)
    }

    fn encode<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String> {
        let keyring = self.inner.keyring.load();
        let signer = &keyring.signer;
        let mut header = Header::new(signer.algorithm());
        header.kid = Some(signer.kid().to_owned());
        header.typ = Some(typ.to_owned());
        jsonwebtoken::encode(&header, claims, signer.encoding_key()).map_err(SentriError::internal)
    }

    /// Signs an access token for `user` in session `sid`; returns the token and its claims.
    pub fn sign_access(&self, user: &AuthUser, sid: &str) -> Result<(String, AccessClaims)> {
        self.sign_access_with(user, sid, None)
    }

    /// Signs an access token carrying the session's `assurance` (claims `amr`, `aal`).
    pub fn sign_access_with(
        &self,
        user: &AuthUser,
        sid: &str,
        assurance: Option<&Assurance>,
    ) -> Result<(String, AccessClaims)> {
        let grant = AccessGrant {
            assurance: assurance.cloned(),
            ..AccessGrant::default()
        };
        self.sign_access_granted(user, sid, &grant)
    }

    /// Signs an access token of session `sid` with everything the session grants
    /// (assurance, authorization version, workspace).
    pub fn sign_access_granted(
        &self,
        user: &AuthUser,
        sid: &str,
        grant: &AccessGrant,
    ) -> Result<(String, AccessClaims)> {
        let iat = now_secs();
        let assurance = grant.assurance.as_ref();
        let claims = AccessClaims {
            sub: user.id.clone(),
            identifier: user.identifier.clone(),
            roles: user.roles.clone(),
            sid: sid.to_owned(),
            iat,
            exp: iat.saturating_add(ttl_secs(self.inner.opts.access_ttl)),
            jti: uuid::Uuid::new_v4().to_string(),
            iss: self.inner.opts.issuer.clone(),
            aud: self.inner.opts.audience.clone(),
            amr: assurance.map(|a| a.amr.clone()),
            aal: assurance.map(|a| a.level),
            auth_time: assurance.and_then(|a| a.auth_time),
            av: (grant.av != 0).then_some(grant.av),
            wid: grant.workspace.clone(),
        };
        let token = self.encode(TYP_ACCESS, &claims)?;
        Ok((token, claims))
    }

    /// Signs a refresh token for user `user_id` in session `sid` with the caller's `jti`.
    pub fn sign_refresh(&self, user_id: &str, sid: &str, jti: &str) -> Result<String> {
        let iat = now_secs();
        let claims = RefreshClaims {
            sub: user_id.to_owned(),
            sid: sid.to_owned(),
            jti: jti.to_owned(),
            iat,
            exp: iat.saturating_add(ttl_secs(self.inner.opts.refresh_ttl)),
            iss: self.inner.opts.issuer.clone(),
            aud: self.inner.opts.audience.clone(),
        };
        self.encode(TYP_REFRESH, &claims)
    }

    /// A fresh refresh token id: 32 random bytes, base64url.
    pub fn new_refresh_jti() -> String {
        let mut bytes = [0u8; 32];
        if aws_lc_rs::rand::fill(&mut bytes).is_err() {
            // The system RNG does not fail in practice; fall back to two v4 UUIDs
            // (also drawn from the OS RNG) rather than panicking.
            bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
            bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        }
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Verifies an access token. Expired → `TOKEN_EXPIRED`; anything else → `TOKEN_INVALID`.
    pub fn verify_access(&self, token: &str) -> Result<AccessClaims> {
        self.inner.keyring.load().verifier.verify_access(token)
    }

    /// Verifies a refresh token. Expired → `TOKEN_EXPIRED`; anything else → `TOKEN_INVALID`.
    pub fn verify_refresh(&self, token: &str) -> Result<RefreshClaims> {
        self.inner
            .keyring
            .load()
            .verifier
            .verify(token, TokenKind::Refresh)
    }

    /// Bytes the verified-token cache of the current key set holds (estimated; for
    /// benchmarks and tests).
    #[doc(hidden)]
    pub fn verified_cache_bytes(&self) -> u64 {
        self.inner.keyring.load().verifier.cached_bytes()
    }

    /// Access token lifetime.
    pub fn access_ttl(&self) -> Duration {
        self.inner.opts.access_ttl
    }

    /// Refresh token lifetime.
    pub fn refresh_ttl(&self) -> Duration {
        self.inner.opts.refresh_ttl
    }

    /// The options the service was built with.
    pub fn options(&self) -> &TokenOptions {
        &self.inner.opts
    }

    /// The key that signs new tokens (a copy: the set may be replaced at run time).
    pub fn current_key(&self) -> SigningKey {
        self.inner.keyring.load().signer.clone()
    }

    /// The JWKS (`{"keys": [...]}`) with every asymmetric public key, current first.
    pub fn jwks(&self) -> serde_json::Value {
        self.inner.keyring.load().jwks.clone()
    }

    /// `true` when at least one key is asymmetric (the JWKS is not empty).
    pub fn has_public_keys(&self) -> bool {
        self.inner.keyring.load().has_public_keys
    }
}

#[cfg(test)]
mod tests;
