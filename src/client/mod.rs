//! Client mode: an application that trusts a sentri auth server.
//!
//! [`ClientAuth`] verifies access tokens against the auth server's published JWKS
//! (`GET {prefix}/keys`). It has no database and no secret: it only needs the URL of
//! the key set. Routes are guarded with the same `protect()`, `authorize(..)` and
//! `permit(..)` layers as in server mode, and handlers use the same
//! [`CurrentUser`] extractor, so a route written for one mode
//! compiles against the other.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sentri::SentriError> {
//! use axum::{Router, routing::get};
//! use sentri::{create_auth, ClientConfig, CurrentUser};
//!
//! let auth = create_auth(
//!     ClientConfig::new("https://auth.example.com/auth/keys")
//!         .valid_roles(["user", "admin"])
//!         .issuer("https://auth.example.com"),
//! )?;
//! auth.prefetch().await?; // optional: load the keys before serving
//!
//! let app: Router = Router::new()
//!     .route("/api/profile", get(|u: CurrentUser| async move { u.user.identifier }))
//!     .route_layer(auth.protect())
//!     .route("/api/admin", get(|| async { "admin" }).route_layer(auth.authorize(["admin"])))
//!     .layer(auth.error_handler());
//! # Ok(()) }
//! ```
//!
//! # Keys
//!
//! - Keys are fetched lazily on first use (or by [`ClientAuth::prefetch`]); concurrent
//!   first requests share one fetch.
//! - A token whose `kid` is not in the cache triggers a refetch, at most once per
//!   [`ClientConfig::refetch_cooldown`], so key rotation on the server is picked up
//!   without a restart while a flood of made-up `kid`s cannot make the client hammer
//!   the auth server.
//! - Keys are refetched in the background when they are older than the cache lifetime
//!   (the response's `Cache-Control: max-age`, else [`ClientConfig::cache_ttl`]).
//! - When the key endpoint is down or answers garbage, the client keeps verifying with
//!   the keys it has, logs a warning and retries later. Until it has obtained keys at
//!   least once, protected routes answer 503 `SERVICE_UNAVAILABLE`.
//! - HMAC is never accepted in client mode (a shared secret cannot be published).
//! - `key_uri` must be `https` (plain `http` only on a loopback host or with
//!   [`ClientConfig::allow_insecure_http`]). A fetch follows at most 5 redirects, only to
//!   the same host and port and never from https to http; any other redirect fails the
//!   fetch (logged, old keys kept).
//!
//! # Sessions and revocation
//!
//! There is no silent refresh in client mode: the auth server owns sessions, and the
//! front-end refreshes its tokens there. Because a client app does not look sessions
//! up, **a logout or revocation on the auth server takes effect in client apps when
//! the access token expires** (keep access tokens short-lived). Apps that share a
//! revocation list with the server (e.g. a Redis set of revoked session ids) can plug
//! it in with [`ClientConfig::is_token_revoked`]; it runs with the token's `sid` after
//! the signature and claims have been verified.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::http::request::Parts;

use crate::core::AuthConfig;
use crate::core::crypto::redact_url;
use crate::core::error::{Result, SentriError};
use crate::core::{BoxFuture, RevocationCheck};
use crate::http::cookies;
use crate::http::{Authenticate, Authenticated, CurrentUser};
use crate::token::remote::{JwksSource, RemoteJwks, http_client, is_loopback};
use crate::token::{AccessClaims, Algorithm, MAX_TOKEN_BYTES, TokenOptions};

pub use crate::token::remote::MAX_JWKS_BYTES;
/// Shortest accepted [`ClientConfig::refetch_cooldown`].
pub const MIN_REFETCH_COOLDOWN: Duration = Duration::from_secs(1);

/// Client-mode configuration: where the auth server publishes its keys and what tokens
/// must look like.
///
/// Build it with [`ClientConfig::new`] and the builder methods, then pass it to
/// [`create_auth`](crate::create_auth). `Debug` hides any credentials in `key_uri`.
///
/// ```no_run
/// use std::time::Duration;
/// use sentri::{create_auth, ClientConfig, token::Algorithm};
///
/// let auth = create_auth(
///     ClientConfig::new("https://auth.example.com/auth/keys")
///         .valid_roles(["user", "admin"])
///         .issuer("https://auth.example.com")
///         .audience("my-api")
///         .algorithms([Algorithm::ES256])
///         .cache_ttl(Duration::from_secs(300))
///         .refetch_cooldown(Duration::from_secs(30)),
/// )?;
/// # Ok::<(), sentri::SentriError>(())
/// ```
#[non_exhaustive]
#[derive(Clone)]
pub struct ClientConfig {
    /// URL of the auth server's JWKS, e.g. `https://auth.example.com/auth/keys`. Must be
    /// `https`, except on a loopback host (`localhost`, `127.0.0.0/8`, `::1`) or with
    /// [`allow_insecure_http`](Self::allow_insecure_http).
    pub key_uri: String,
    /// Accept a plain `http` `key_uri` on a non-loopback host (default `false`). Only for
    /// a private network you trust: anyone on the path can swap the keys and mint tokens.
    pub allow_insecure_http: bool,
    /// When set, `authorize(..)` / `permit(..)` check role names against it when the
    /// layer is built (and panic on an unknown one, like server mode).
    pub valid_roles: Option<Vec<String>>,
    /// `iss` required on every token, when set.
    pub issuer: Option<String>,
    /// `aud` required on every token, when set.
    pub audience: Option<String>,
    /// Accepted algorithms (default: RS256, RS384, RS512, ES256, EdDSA). HMAC is a
    /// `CONFIGURATION_ERROR`.
    pub algorithms: Vec<Algorithm>,
    /// How long fetched keys are used before a background refetch, when the response
    /// has no `Cache-Control: max-age` (default 10 minutes).
    pub cache_ttl: Duration,
    /// Minimum time between key fetches caused by unknown `kid`s (default 30 s, at
    /// least [`MIN_REFETCH_COOLDOWN`]); also bounds how often a failed fetch is retried.
    pub refetch_cooldown: Duration,
    /// Timeout of one key fetch (default 5 s).
    pub http_timeout: Duration,
    /// Clock skew tolerated on `exp` / `nbf` (default 5 s, at most 60 s).
    pub leeway: Duration,
    /// Memory bound, in bytes, of the verified-access-token cache (default 16 MiB, 0:
    /// off): a token that verified skips its signature check when it comes again, until
    /// its `exp`. Only the exact token bytes hit; the session and revocation checks
    /// still run on every request.
    pub verified_token_cache_bytes: u64,
    /// Optional revocation check, run with the token's `sid`; `true` → 401 `TOKEN_INVALID`.
    pub is_token_revoked: Option<RevocationCheck>,
    /// Name of the cookie the access token is read from when there is no
    /// `Authorization: Bearer` header (default `access_token`; `None`: header only).
    pub access_cookie: Option<String>,
}

/// The algorithms accepted by default: every asymmetric one sentri signs with.
pub const DEFAULT_ALGORITHMS: [Algorithm; 5] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::ES256,
    Algorithm::EdDSA,
];

impl ClientConfig {
    /// A configuration with defaults for the JWKS at `key_uri`.
    ///
    /// ```
    /// let config = sentri::ClientConfig::new("https://auth.example.com/auth/keys");
    /// assert_eq!(config.access_cookie.as_deref(), Some("access_token"));
    /// ```
    pub fn new(key_uri: impl Into<String>) -> Self {
        Self {
            key_uri: key_uri.into(),
            allow_insecure_http: false,
            valid_roles: None,
            issuer: None,
            audience: None,
            algorithms: DEFAULT_ALGORITHMS.to_vec(),
            cache_ttl: Duration::from_secs(10 * 60),
            refetch_cooldown: Duration::from_secs(30),
            http_timeout: Duration::from_secs(5),
            leeway: Duration::from_secs(5),
            verified_token_cache_bytes: crate::token::DEFAULT_VERIFIED_CACHE_BYTES,
            is_token_revoked: None,
            access_cookie: Some("access_token".into()),
        }
    }

    /// Sets the role names `authorize(..)` / `permit(..)` are checked against.
    pub fn valid_roles<R, S>(mut self, roles: R) -> Self
    where
        R: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.valid_roles = Some(roles.into_iter().map(Into::into).collect());
        self
    }

    /// Requires this `iss` on every token.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Requires this `aud` on every token.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Sets the accepted algorithms (HMAC ones are a `CONFIGURATION_ERROR`).
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// Sets the key cache lifetime used when the JWKS response has no `max-age`.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// Accepts a plain `http` `key_uri` on a non-loopback host. For private networks
    /// only: over plain http anyone on the path can replace the keys and forge tokens.
    ///
    /// ```
    /// let config = sentri::ClientConfig::new("http://auth.internal/auth/keys")
    ///     .allow_insecure_http(true);
    /// assert!(sentri::create_auth(config).is_ok());
    /// ```
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self
    }

    /// Sets the minimum time between fetches caused by unknown `kid`s (at least
    /// [`MIN_REFETCH_COOLDOWN`]).
    pub fn refetch_cooldown(mut self, cooldown: Duration) -> Self {
        self.refetch_cooldown = cooldown;
        self
    }

    /// Sets the timeout of one key fetch.
    pub fn http_timeout(mut self, timeout: Duration) -> Self {
        self.http_timeout = timeout;
        self
    }

    /// Sets the memory bound of the verified-access-token cache (0 turns it off).
    pub fn verified_token_cache_bytes(mut self, bytes: u64) -> Self {
        self.verified_token_cache_bytes = bytes;
        self
    }

    /// Sets the clock skew tolerated on `exp` / `nbf`.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Sets the revocation check (run with the token's `sid`; `true` means revoked).
    ///
    /// ```
    /// use std::sync::Arc;
    /// let config = sentri::ClientConfig::new("https://auth.example.com/auth/keys")
    ///     .is_token_revoked(Arc::new(|sid: String| Box::pin(async move { sid == "revoked" })));
    /// ```
    pub fn is_token_revoked(mut self, check: RevocationCheck) -> Self {
        self.is_token_revoked = Some(check);
        self
    }

    /// Sets the access-token cookie name (`None`: read the `Authorization` header only).
    pub fn access_cookie(mut self, name: Option<String>) -> Self {
        self.access_cookie = name;
        self
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("key_uri", &redact_url(&self.key_uri))
            .field("allow_insecure_http", &self.allow_insecure_http)
            .field("valid_roles", &self.valid_roles)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("algorithms", &self.algorithms)
            .field("cache_ttl", &self.cache_ttl)
            .field("refetch_cooldown", &self.refetch_cooldown)
            .field("http_timeout", &self.http_timeout)
            .field("leeway", &self.leeway)
            .field(
                "verified_token_cache_bytes",
                &self.verified_token_cache_bytes,
            )
            .field("is_token_revoked", &self.is_token_revoked.is_some())
            .field("access_cookie", &self.access_cookie)
            .finish()
    }
}

impl AuthConfig for ClientConfig {
    type Auth = ClientAuth;
    fn build(self) -> Result<ClientAuth> {
        ClientAuth::from_config(self)
    }
}

/// Parses `key_uri`: an http(s) URL with a host; plain http only on loopback or with
/// the opt-in.
fn check_key_uri(config: &ClientConfig) -> Result<reqwest::Url> {
    let url = reqwest::Url::parse(&config.key_uri)
        .map_err(|e| SentriError::configuration("key_uri is not a valid URL").with_source(e))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(SentriError::configuration(
            "key_uri must be an http:// or https:// URL",
        ));
    }
    if url.scheme() == "http" && !is_loopback(&url) {
        if !config.allow_insecure_http {
            return Err(SentriError::configuration(
                "key_uri must be https (plain http only on loopback, or with allow_insecure_http)",
            ));
        }
        tracing::warn!(key_uri = %redact_url(&config.key_uri), "sentri: key_uri uses plain http (allow_insecure_http)");
    }
    Ok(url)
}

/// sentri in client mode: verifies access tokens issued by a sentri auth server
/// against its published JWKS. No database, no secret.
///
/// Cheap to clone (an `Arc` inside). Built by [`create_auth`](crate::create_auth) from a
/// [`ClientConfig`]. Offers the same `protect()`, `authorize(..)`, `permit(..)` and
/// `error_handler()` as [`ServerAuth`](crate::ServerAuth).
///
/// ```no_run
/// # async fn demo() -> Result<(), sentri::SentriError> {
/// use axum::{Router, routing::get};
/// use sentri::{create_auth, ClientAuth, ClientConfig, CurrentUser};
///
/// let auth: ClientAuth = create_auth(ClientConfig::new("https://auth.example.com/auth/keys"))?;
/// let app: Router = Router::new()
///     .route("/me", get(|u: CurrentUser| async move { u.user.id }))
///     .route_layer(auth.protect())
///     .layer(auth.error_handler());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClientAuth {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    keys: RemoteJwks,
    valid_roles: Option<Vec<String>>,
    algorithms: Vec<Algorithm>,
    is_token_revoked: Option<RevocationCheck>,
    access_cookie: Option<String>,
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.inner.keys.current();
        f.debug_struct("ClientAuth")
            .field("key_uri", &self.inner.keys.display_uri())
            .field("valid_roles", &self.inner.valid_roles)
            .field("algorithms", &self.inner.algorithms)
            .field("keys", &keys)
            .finish_non_exhaustive()
    }
}

fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// Checks a client configuration (`CONFIGURATION_ERROR`).
fn check_config(config: &ClientConfig) -> Result<()> {
    check_key_uri(config)?;
    if config.algorithms.is_empty() {
        return Err(SentriError::configuration("algorithms must not be empty"));
    }
    if let Some(alg) = config.algorithms.iter().find(|a| is_hmac(**a)) {
        return Err(SentriError::configuration(format!(
            "algorithm {alg:?} is not allowed in client mode: HMAC keys cannot be published"
        )));
    }
    if let Some(roles) = &config.valid_roles {
        if roles.is_empty() {
            return Err(SentriError::configuration(
                "valid_roles must not be empty when set",
            ));
        }
        if roles.iter().any(|r| r.trim().is_empty()) {
            return Err(SentriError::configuration(
                "valid_roles must not contain empty names",
            ));
        }
    }
    if config.leeway > Duration::from_secs(60) {
        return Err(SentriError::configuration("leeway must be at most 60 s"));
    }
    if config.cache_ttl.is_zero() {
        return Err(SentriError::configuration("cache_ttl must be positive"));
    }
    if config.refetch_cooldown < MIN_REFETCH_COOLDOWN {
        return Err(SentriError::configuration(
            "refetch_cooldown must be at least 1 s",
        ));
    }
    if config.http_timeout.is_zero() {
        return Err(SentriError::configuration("http_timeout must be positive"));
    }
    if config.access_cookie.as_deref().is_some_and(str::is_empty) {
        return Err(SentriError::configuration(
            "access_cookie name must not be empty",
        ));
    }
    Ok(())
}

impl ClientAuth {
    fn from_config(config: ClientConfig) -> Result<Self> {
        check_config(&config)?;
        let token_options = TokenOptions {
            issuer: config.issuer,
            audience: config.audience,
            leeway: config.leeway,
            verified_cache_bytes: config.verified_token_cache_bytes,
            ..TokenOptions::default()
        };
        let keys = RemoteJwks::new(JwksSource {
            display_uri: redact_url(&config.key_uri).into_owned(),
            uri: config.key_uri,
            algorithms: config.algorithms.clone(),
            token_options,
            cache_ttl: config.cache_ttl,
            refetch_cooldown: config.refetch_cooldown,
            http: http_client(config.http_timeout)?,
            infer_alg: false,
        });
        Ok(Self {
            inner: Arc::new(ClientInner {
                keys,
                valid_roles: config.valid_roles,
                algorithms: config.algorithms,
                is_token_revoked: config.is_token_revoked,
                access_cookie: config.access_cookie,
            }),
        })
    }

    /// Fetches the keys now (e.g. before serving), whatever the cache state.
    ///
    /// Fails with `SERVICE_UNAVAILABLE` when the key endpoint cannot be reached or
    /// answers something that is not a usable JWKS; keys already held are kept.
    ///
    /// ```no_run
    /// # async fn demo(auth: sentri::ClientAuth) -> Result<(), sentri::SentriError> {
    /// auth.prefetch().await?;
    /// # Ok(()) }
    /// ```
    pub async fn prefetch(&self) -> Result<()> {
        self.inner
            .keys
            .prefetch()
            .await
            .map_err(SentriError::unavailable)
    }

    /// Verifies an access token: signature with the key named by its `kid` (refetching
    /// the JWKS for an unknown `kid`, within the cooldown), algorithm, `typ`,
    /// `exp`/`nbf`, and `iss`/`aud` when configured. Does not run `is_token_revoked`.
    ///
    /// Expired → `TOKEN_EXPIRED`; otherwise invalid → `TOKEN_INVALID`; no keys could
    /// ever be obtained → `SERVICE_UNAVAILABLE`.
    ///
    /// ```no_run
    /// # async fn demo(auth: sentri::ClientAuth, token: &str) -> Result<(), sentri::SentriError> {
    /// let claims = auth.verify_access_token(token).await?;
    /// println!("user {} in session {}", claims.sub, claims.sid);
    /// # Ok(()) }
    /// ```
    pub async fn verify_access_token(&self, token: &str) -> Result<AccessClaims> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(SentriError::token_invalid("Invalid token"));
        }
        let verifier = self.inner.keys.verifier().await?;
        // A token verified before skips the kid lookup and the signature check.
        if let Some(hit) = verifier.cached_access(token) {
            return hit;
        }
        let verifier = self.inner.keys.knowing_kid_of(verifier, token).await;
        verifier.verify_access(token)
    }

    /// The access token of a request: `Authorization: Bearer` first, else the access
    /// cookie. `None` when there is none (or the bearer header is malformed).
    ///
    /// ```no_run
    /// # fn demo(auth: &sentri::ClientAuth, parts: &axum::http::request::Parts) {
    /// let has_token = auth.get_current_access_token(parts).is_some();
    /// # }
    /// ```
    pub fn get_current_access_token<'a>(&self, parts: &'a Parts) -> Option<&'a str> {
        match cookies::bearer_token(&parts.headers) {
            Ok(Some(t)) => Some(t),
            Ok(None) => self.cookie_token(parts),
            Err(()) => None,
        }
    }

    fn cookie_token<'a>(&self, parts: &'a Parts) -> Option<&'a str> {
        self.inner
            .access_cookie
            .as_deref()
            .and_then(|name| cookies::read_cookie(&parts.headers, name))
    }

    /// The configured role names, if any.
    pub fn valid_roles(&self) -> Option<&[String]> {
        self.inner.valid_roles.as_deref()
    }

    crate::http::guard::guard_methods!();

    async fn authenticate_request(&self, parts: &Parts) -> Result<Authenticated> {
        let token = match cookies::bearer_token(&parts.headers) {
            Ok(Some(t)) => t,
            Ok(None) => self
                .cookie_token(parts)
                .ok_or_else(|| SentriError::unauthorized("Authentication required"))?,
            Err(()) => {
                return Err(SentriError::token_invalid("Malformed Authorization header"));
            }
        };
        let claims = self.verify_access_token(token).await?;
        if let Some(check) = &self.inner.is_token_revoked
            && check(claims.sid.clone()).await
        {
            return Err(SentriError::token_invalid("Token has been revoked"));
        }
        Ok(Authenticated {
            assurance: claims.assurance(),
            user: CurrentUser::from(claims),
            set_cookies: Vec::new(),
        })
    }
}

impl Authenticate for ClientAuth {
    /// Client mode knows only access tokens (sessions): every guard admits them.
    fn authenticate<'a>(
        &'a self,
        parts: &'a Parts,
        _admits: &'a crate::http::Admits,
    ) -> BoxFuture<'a, Result<Authenticated>> {
        Box::pin(self.authenticate_request(parts))
    }

    fn valid_roles(&self) -> Option<&[String]> {
        self.inner.valid_roles.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials_in_uri() {
        let shown = redact_url("https://user:pass@auth.example.com/keys");
        assert!(!shown.contains("pass"), "{shown}");
        assert!(!shown.contains("user:"), "{shown}");
    }
}
