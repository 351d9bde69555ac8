//! API keys: hashed, prefixed, scoped, expiring keys that authenticate machines
//! (services, CLIs, integrations) on the routes guarded by `protect()`.
//!
//! Not to be confused with the **registration key** (`ServerConfig::api_key`, header
//! `X-Api-Key` on `POST /register` only), which guards who may register. An API key
//! authenticates a caller as its owner, with the key's scopes.
//!
//! - **Format**: `sk_[<env>_]<43 base62 characters: 256 random bits><6 base62: CRC32>`,
//!   e.g. `sk_live_4eC39HqLyjWDarjtT1zdp7dc…`. The checksum catches typos, truncations
//!   and other issuers' strings without a lookup. The secret is shown once, at
//!   creation; the store keeps its SHA-256, its prefix and its last four characters.
//! - **Presenting**: `Authorization: Bearer sk_…` or the header `X-Sentri-Key: sk_…`
//!   (configurable). Refused keys answer 401 `API_KEY_INVALID` (malformed, wrong
//!   checksum, unknown, revoked, owner deleted) or `API_KEY_EXPIRED`.
//! - **Principal**: [`CurrentUser::credential`](crate::http::CurrentUser::credential)
//!   says `kind: "api_key"`, the key id and its scopes; `CurrentUser::user` is the
//!   owner, with the roles the key was created with that the owner still has (none by
//!   default): `authorize(roles)` never lets a key do more than its owner.
//! - **Scopes**: strings from [`ApiKeys::scopes`]; `auth.require_scopes([...])` answers
//!   403 `INSUFFICIENT_SCOPE` to a key lacking one (sessions are not scoped and pass).
//! - **Routes** (a signed-in session, never a key): `POST /api-keys`, `GET /api-keys`,
//!   `GET /api-keys/{id}`, `PATCH /api-keys/{id}`, `DELETE /api-keys/{id}` (revoke);
//!   admins: `GET /users/{userId}/api-keys`, `DELETE /users/{userId}/api-keys/{id}`.
//! - **Cache**: a verified key is trusted for `cache_ttl` (default 5 s) without a
//!   database read; a revocation drops it at once in the revoking process and, with a
//!   `redis_url`, in the others when the message arrives.
//! - **Recovery**: a password reset, a password change and `logout-all` revoke every
//!   key of the account (one statement, then the same cache eviction and broadcast as
//!   `DELETE`), before they answer; [`ApiKeys::keep_on_credential_reset`] keeps them.
//!   A key whose creation races that revocation is revoked again (its session is gone).
//!
//! Workspaces have not landed: keys are not bound to a workspace yet.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sentri::SentriError> {
//! use axum::{Router, routing::get};
//! use sentri::{ServerConfig, capability::api_keys::ApiKeys, create_auth, db::Database};
//! use sentri::token::SigningKey;
//! let db = Database::connect("sqlite::memory:").await?;
//! let key = SigningKey::hs256(b"a secret of at least thirty-two bytes!!")?;
//! let keys = ApiKeys::default().scopes(["orders:read", "orders:write"]);
//! let auth = create_auth(ServerConfig::new(db, key, ["user", "admin"]).with(keys))?;
//! auth.migrate().await?;
//! let app: Router = Router::new()
//!     .nest("/auth", auth.router())
//!     .route(
//!         "/api/orders",
//!         get(|| async { "orders" }).route_layer(auth.require_scopes(["orders:read"])),
//!     );
//! # Ok(()) }
//! ```

mod cache;
mod format;
mod routes;
mod service;
mod store;

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::http::request::Parts;
use axum::http::{HeaderName, StatusCode};

use super::{Capability, Core, Credential, CredentialReset};
use crate::core::BoxFuture;
use crate::core::error::{Result, SentriError};
use crate::db::Migration;
use crate::http::guard::CurrentUser;
use service::{KeyService, Settings};

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "sk";
/// The default header an API key may be sent in (besides `Authorization: Bearer`).
/// Distinct from `X-Api-Key`, the registration key's header.
pub const DEFAULT_HEADER: &str = "x-sentri-key";
/// The longest `cache_ttl`.
const MAX_CACHE_TTL: Duration = Duration::from_secs(60);

/// The API keys capability and its settings. Build one per server.
///
/// | setting | default |
/// |---|---|
/// | [`prefix`](Self::prefix) | `"sk"` |
/// | [`environment`](Self::environment) | none |
/// | [`header`](Self::header) | `X-Sentri-Key` |
/// | [`scopes`](Self::scopes) | none (keys can still use routes without `require_scopes`) |
/// | [`cache_ttl`](Self::cache_ttl) | 5 s (at most 60 s) |
/// | [`cache_capacity`](Self::cache_capacity) | 10 000 keys |
/// | [`max_lifetime`](Self::max_lifetime) | none: keys without `expiresIn` never expire |
/// | [`max_keys_per_user`](Self::max_keys_per_user) | 100 unrevoked keys |
/// | [`keep_on_credential_reset`](Self::keep_on_credential_reset) | off: a password reset, a password change and logout-all revoke every key of the account |
#[derive(Clone)]
#[non_exhaustive]
pub struct ApiKeys {
    prefix: String,
    environment: Option<String>,
    header: HeaderName,
    scopes: Vec<String>,
    cache_ttl: Duration,
    cache_capacity: u64,
    max_lifetime: Option<Duration>,
    max_keys_per_user: u32,
    keep_on_credential_reset: bool,
    state: Arc<OnceLock<Arc<KeyService>>>,
}

impl Default for ApiKeys {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
            environment: None,
            header: HeaderName::from_static(DEFAULT_HEADER),
            scopes: Vec::new(),
            cache_ttl: Duration::from_secs(5),
            cache_capacity: 10_000,
            max_lifetime: None,
            max_keys_per_user: 100,
            keep_on_credential_reset: false,
            state: Arc::new(OnceLock::new()),
        }
    }
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeys")
            .field("prefix", &self.prefix)
            .field("environment", &self.environment)
            .field("header", &self.header)
            .field("scopes", &self.scopes)
            .field("cache_ttl", &self.cache_ttl)
            .field("cache_capacity", &self.cache_capacity)
            .field("max_lifetime", &self.max_lifetime)
            .field("max_keys_per_user", &self.max_keys_per_user)
            .field("keep_on_credential_reset", &self.keep_on_credential_reset)
            .finish()
    }
}

impl ApiKeys {
    /// The key prefix (default `"sk"`): 1 to 16 lowercase letters and digits.
    ///
    /// # Panics
    /// On any other prefix (a start-up configuration error).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        assert!(
            format::valid_tag(&prefix),
            "sentri: api key prefix must be 1 to {} lowercase letters and digits",
            format::MAX_TAG_LEN
        );
        self.prefix = prefix;
        self
    }

    /// An environment tag after the prefix (e.g. `"live"` → `sk_live_…`): keys of
    /// another environment are refused without a lookup. 1 to 16 lowercase letters and
    /// digits.
    ///
    /// # Panics
    /// On any other tag (a start-up configuration error).
    pub fn environment(mut self, env: impl Into<String>) -> Self {
        let env = env.into();
        assert!(
            format::valid_tag(&env),
            "sentri: api key environment must be 1 to {} lowercase letters and digits",
            format::MAX_TAG_LEN
        );
        self.environment = Some(env);
        self
    }

    /// The header a key may be sent in besides `Authorization: Bearer` (default
    /// `X-Sentri-Key`).
    pub fn header(mut self, header: HeaderName) -> Self {
        self.header = header;
        self
    }

    /// The scopes keys may be given (a key's scopes must be a subset).
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// How long a verified key is trusted without a database read (default 5 s,
    /// clamped to at most 60 s): the bound on a revocation reaching a process that
    /// missed the Redis message, and on an owner's deletion or role change.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl.min(MAX_CACHE_TTL);
        self
    }

    /// How many verified keys each process caches (default 10 000).
    pub fn cache_capacity(mut self, keys: u64) -> Self {
        self.cache_capacity = keys.max(1);
        self
    }

    /// The longest lifetime of a key (default none). When set, a key created without
    /// `expiresIn` expires after it.
    pub fn max_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_lifetime = Some(lifetime);
        self
    }

    /// How many unrevoked keys one user may have (default 100).
    pub fn max_keys_per_user(mut self, n: u32) -> Self {
        self.max_keys_per_user = n;
        self
    }

    /// Keep the account's keys when a password reset, a password change or logout-all
    /// ends every other credential of the account (default off: they end too, so a key
    /// an intruder created does not outlive the recovery). The first proof of the
    /// account's address on an account registered without it
    /// ([`CredentialReset::AddressProven`]) revokes every key whatever this says.
    pub fn keep_on_credential_reset(mut self, keep: bool) -> Self {
        self.keep_on_credential_reset = keep;
        self
    }

    fn settings(&self) -> Settings {
        Settings {
            lead: format::lead(&self.prefix, self.environment.as_deref()),
            claim: format::lead(&self.prefix, None),
            header: self.header.clone(),
            scopes: self.scopes.clone(),
            cache_ttl: self.cache_ttl,
            cache_capacity: self.cache_capacity,
            max_lifetime: self.max_lifetime,
            max_keys_per_user: self.max_keys_per_user,
        }
    }

    /// The service of `core`'s server, started on first use.
    fn service(&self, core: &Core) -> Result<&Arc<KeyService>> {
        let svc = self
            .state
            .get_or_init(|| Arc::new(KeyService::start(core.clone(), self.settings())));
        if !Arc::ptr_eq(&svc.core.sessions, &core.sessions) {
            return Err(SentriError::configuration(
                "one ApiKeys value is used by two servers: build one per server",
            ));
        }
        Ok(svc)
    }
}

/// The guard's view of the capability.
/// The credential kind of an API key ([`CredentialInfo::kind`](crate::http::CredentialInfo)).
pub const KIND: &str = "api_key";

/// The guard's view of API keys: how to spot one (header, bearer prefix) and how to
/// check it.
struct KeyCredential {
    keys: ApiKeys,
    header: HeaderName,
    /// `Authorization: Bearer <claim>…` is an API key.
    claim: String,
}

impl KeyCredential {
    fn new(keys: ApiKeys) -> Self {
        Self {
            header: keys.header.clone(),
            claim: format::lead(&keys.prefix, None),
            keys,
        }
    }
}

impl Credential for KeyCredential {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn presented(&self, parts: &Parts) -> bool {
        parts.headers.contains_key(&self.header)
            || matches!(
                crate::http::cookies::bearer_token(&parts.headers),
                Ok(Some(token)) if token.starts_with(&self.claim)
            )
    }

    fn authenticate<'a>(
        &'a self,
        core: &'a Core,
        parts: &'a Parts,
    ) -> BoxFuture<'a, Result<Option<CurrentUser>>> {
        Box::pin(async move { self.keys.service(core)?.authenticate(parts).await })
    }
}

impl Capability for ApiKeys {
    fn name(&self) -> &'static str {
        "api_keys"
    }

    fn migrations(&self) -> &'static [Migration] {
        store::MIGRATIONS
    }

    fn error_codes(&self) -> &'static [(&'static str, StatusCode)] {
        &[
            ("API_KEY_INVALID", StatusCode::UNAUTHORIZED),
            ("API_KEY_EXPIRED", StatusCode::UNAUTHORIZED),
            ("API_KEY_NOT_FOUND", StatusCode::NOT_FOUND),
            ("INSUFFICIENT_SCOPE", StatusCode::FORBIDDEN),
            ("INVALID_SCOPE", StatusCode::BAD_REQUEST),
        ]
    }

    /// # Panics
    /// When this `ApiKeys` value already serves another server.
    fn routes(&self, core: &Core) -> Router {
        match self.service(core) {
            Ok(svc) => routes::router(svc.clone(), core),
            Err(err) => panic!("sentri: {}", err.message()),
        }
    }

    #[cfg(feature = "openapi")]
    fn openapi(&self, doc: &crate::http::openapi::ApiDoc) -> utoipa::openapi::OpenApi {
        routes::openapi(doc)
    }

    #[cfg(feature = "openapi")]
    fn openapi_credential(
        &self,
    ) -> Option<(
        crate::http::openapi::CredentialDoc,
        utoipa::openapi::security::SecurityScheme,
    )> {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
        let doc = crate::http::openapi::CredentialDoc {
            scheme: "apiKey",
            codes: &[
                crate::ErrorCode::ApiKeyInvalid,
                crate::ErrorCode::ApiKeyExpired,
                crate::ErrorCode::InsufficientScope,
            ],
        };
        let scheme = SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            self.header.as_str(),
            "An API key (`sk_…`; also accepted as `Authorization: Bearer sk_…`)",
        )));
        Some((doc, scheme))
    }

    fn credential(&self) -> Option<Arc<dyn Credential>> {
        Some(Arc::new(KeyCredential::new(self.clone())))
    }

    /// Revokes every key of the user (one statement), drops them from this process's
    /// cache and broadcasts the revocations, before returning; unless
    /// [`keep_on_credential_reset`](ApiKeys::keep_on_credential_reset) is on and the
    /// reason is not [`CredentialReset::AddressProven`].
    fn end_credentials<'a>(
        &'a self,
        core: &'a Core,
        user_id: &'a str,
        reset: CredentialReset,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if self.keep_on_credential_reset && reset != CredentialReset::AddressProven {
                return Ok(());
            }
            self.service(core)?.revoke_all(user_id).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::error::ErrorCode;

    #[test]
    fn error_codes_match_their_statuses() {
        let codes = [
            ErrorCode::ApiKeyInvalid,
            ErrorCode::ApiKeyExpired,
            ErrorCode::ApiKeyNotFound,
            ErrorCode::InsufficientScope,
            ErrorCode::InvalidScope,
        ];
        for ((name, status), code) in ApiKeys::default().error_codes().iter().zip(codes) {
            assert_eq!((*name, *status), (code.as_str(), code.status()));
        }
    }
}
