//! The API key service: create, list, update, revoke, and authenticate a request.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use axum::http::HeaderName;
use axum::http::request::Parts;
use serde::Serialize;

use super::cache::{CachedKey, KeyCache};
use super::format;
use super::store::{KeyChange, KeyRecord, Store};
use crate::capability::Core;
use crate::core::crypto::sha256_hex;
use crate::core::error::{ErrorCode, Result, SentriError};
use crate::core::events::{AuthEvent, AuthEventKind};
use crate::core::principal::AuthUser;
use crate::http::cookies::bearer_token;
use crate::http::guard::{CredentialInfo, CurrentUser};
use crate::http::parts_meta;
use crate::identity::dedupe;

/// `last_used_at` is written at most this often per key.
const TOUCH_EVERY_MS: i64 = 60_000;
/// At most this many `last_used_at` writes in flight; more are skipped.
const TOUCHES_IN_FLIGHT: usize = 16;
/// At most this many `api_key_rejected` events per second; the rest are counted.
const REJECTIONS_PER_SECOND: u64 = 10;
/// The longest key name, in characters.
const MAX_NAME_CHARS: usize = 100;
/// The largest metadata object, serialized.
const MAX_METADATA_BYTES: usize = 4096;
/// The shortest lifetime a key may be created with.
const MIN_LIFETIME_SECS: u64 = 60;
/// The longest lifetime a key may be created with when no maximum is configured.
const MAX_LIFETIME_SECS: u64 = 10 * 366 * 86_400;
/// Cache messages: a revoked key (never valid again) or a changed one (read again).
const REVOKED: &str = "r:";
const CHANGED: &str = "u:";

/// The checked settings of the capability.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    /// Every key starts with it: `prefix_` or `prefix_env_`.
    pub(super) lead: String,
    /// `prefix_`: a bearer token starting with it is an API key (of this issuer or not).
    pub(super) claim: String,
    pub(super) header: HeaderName,
    pub(super) scopes: Vec<String>,
    pub(super) cache_ttl: Duration,
    pub(super) cache_capacity: u64,
    pub(super) max_lifetime: Option<Duration>,
    pub(super) max_keys_per_user: u32,
}

/// What `POST /api-keys` asks for.
#[derive(Debug)]
pub(super) struct NewKey {
    pub(super) name: String,
    pub(super) scopes: Vec<String>,
    pub(super) roles: Vec<String>,
    pub(super) expires_in: Option<u64>,
    pub(super) metadata: Option<serde_json::Value>,
}

/// What `PATCH /api-keys/{id}` asks for (`None`: unchanged).
#[derive(Debug, Default)]
pub(super) struct KeyUpdate {
    pub(super) name: Option<String>,
    pub(super) scopes: Option<Vec<String>>,
    pub(super) roles: Option<Vec<String>>,
}

/// A key as the routes show it: never the secret, only its prefix and last four.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct KeyView {
    id: String,
    user_id: String,
    name: String,
    prefix: String,
    last_four: String,
    scopes: Vec<String>,
    roles: Vec<String>,
    metadata: Option<serde_json::Value>,
    created_at: i64,
    expires_at: Option<i64>,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl From<KeyRecord> for KeyView {
    fn from(k: KeyRecord) -> Self {
        KeyView {
            id: k.id,
            user_id: k.user_id,
            name: k.name,
            prefix: k.prefix,
            last_four: k.last_four,
            scopes: k.scopes,
            roles: k.roles,
            metadata: k.metadata,
            created_at: k.created_at,
            expires_at: k.expires_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// A created key: the secret (shown once) and its record.
pub(super) struct Created {
    pub(super) secret: String,
    pub(super) key: KeyRecord,
}

/// Rate-limits `api_key_rejected` events to [`REJECTIONS_PER_SECOND`].
#[derive(Default)]
struct RejectLimiter {
    second: AtomicI64,
    count: AtomicU64,
}

impl RejectLimiter {
    fn allow(&self, now_ms: i64) -> bool {
        let second = now_ms.div_euclid(1000);
        let previous = self.second.swap(second, Ordering::Relaxed);
        if previous != second {
            let over = self
                .count
                .swap(0, Ordering::Relaxed)
                .saturating_sub(REJECTIONS_PER_SECOND);
            if over > 0 {
                tracing::warn!(
                    suppressed = over,
                    "sentri: api_key_rejected events suppressed (rate limit)"
                );
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed) < REJECTIONS_PER_SECOND
    }
}

/// The service of one server: its store, its cache and its settings.
pub(super) struct KeyService {
    pub(super) core: Core,
    store: Store,
    pub(super) settings: Settings,
    cache: Arc<KeyCache>,
    touches: Arc<tokio::sync::Semaphore>,
    rejections: RejectLimiter,
}

fn invalid() -> SentriError {
    SentriError::new(ErrorCode::ApiKeyInvalid, "Invalid API key")
}

fn not_found() -> SentriError {
    SentriError::new(ErrorCode::ApiKeyNotFound, "API key not found")
}

impl KeyService {
    /// The service for `core`, listening to key revocations (local and remote).
    pub(super) fn start(core: Core, settings: Settings) -> Self {
        let cache = Arc::new(KeyCache::new(settings.cache_capacity, settings.cache_ttl));
        listen(&core, &cache);
        Self {
            store: Store {
                db: core.identity.db.clone(),
            },
            core,
            settings,
            cache,
            touches: Arc::new(tokio::sync::Semaphore::new(TOUCHES_IN_FLIGHT)),
            rejections: RejectLimiter::default(),
        }
    }

    // ---- authentication --------------------------------------------------------------

    /// The key of a request: the configured header, else a bearer token that starts
    /// with `prefix_`. `Ok(None)`: the request carries no API key.
    fn presented<'a>(&self, parts: &'a Parts) -> Result<Option<&'a str>> {
        let mut values = parts.headers.get_all(&self.settings.header).iter();
        if let Some(value) = values.next() {
            if values.next().is_some() {
                return Err(invalid());
            }
            return value.to_str().map(Some).map_err(|_| invalid());
        }
        match bearer_token(&parts.headers) {
            Ok(Some(token)) if token.starts_with(&self.settings.claim) => Ok(Some(token)),
            _ => Ok(None),
        }
    }

    /// Authenticates a request by its API key, or says it carries none.
    pub(super) async fn authenticate(&self, parts: &Parts) -> Result<Option<CurrentUser>> {
        let Some(key) = self.presented(parts)? else {
            return Ok(None);
        };
        match self.verify(key).await {
            Ok(user) => Ok(Some(user)),
            Err((err, key)) => {
                if !err.status().is_server_error() {
                    self.rejected(parts, &err, key.as_deref());
                }
                Err(err)
            }
        }
    }

    /// Checks a presented key: its shape and checksum first (no lookup), then the cache,
    /// then the store. The error carries the key when it was found.
    async fn verify(
        &self,
        key: &str,
    ) -> std::result::Result<CurrentUser, (SentriError, Option<Arc<CachedKey>>)> {
        if !format::well_formed(key, &self.settings.lead) {
            return Err((invalid(), None));
        }
        let hash = sha256_hex(key);
        let now = self.core.now_ms();
        let ttl = i64::try_from(self.settings.cache_ttl.as_millis()).unwrap_or(i64::MAX);
        let entry = match self.cache.get(&hash).await {
            Some(entry)
                if now.saturating_sub(entry.verified_at) < ttl && self.owner_current(&entry) =>
            {
                entry
            }
            _ => self.load(&hash, now).await.map_err(|e| (e, None))?,
        };
        if entry.expires_at.is_some_and(|at| at <= now) {
            let err = SentriError::new(ErrorCode::ApiKeyExpired, "API key expired");
            return Err((err, Some(entry)));
        }
        self.touch(&entry, now);
        Ok(entry.current_user())
    }

    /// `true` while no role change of the key's owner is known (in this process, or
    /// announced by another through Redis) since the entry's roles were read: the
    /// owner's tokens turn stale on the same signal (the session cache's version
    /// floors), so a key never keeps a role its owner lost.
    fn owner_current(&self, entry: &CachedKey) -> bool {
        let floor = self
            .core
            .sessions
            .cache
            .floor(&entry.user.id, entry.owner_version);
        floor <= entry.owner_version
    }

    /// Reads a key from the store and caches it. Unknown, revoked, or of a deleted
    /// owner: `API_KEY_INVALID`. The key's roles are its granted roles that its owner
    /// holds now.
    async fn load(&self, hash: &str, now: i64) -> Result<Arc<CachedKey>> {
        let Some((key, owner, owner_version)) = self.store.find_by_hash(hash).await? else {
            return Err(invalid());
        };
        if key.revoked_at.is_some() || self.cache.is_revoked(hash) {
            return Err(invalid());
        }
        let roles = key
            .roles
            .iter()
            .filter(|r| owner.roles.contains(r))
            .cloned()
            .collect();
        let entry = Arc::new(CachedKey {
            credential: Arc::new(CredentialInfo::new(super::KIND, key.id.clone(), key.scopes)),
            id: key.id,
            user: AuthUser { roles, ..owner },
            owner_version,
            expires_at: key.expires_at,
            verified_at: now,
            last_touch: AtomicI64::new(key.last_used_at.unwrap_or(i64::MIN)),
        });
        self.cache.remember(hash, entry.clone()).await;
        Ok(entry)
    }

    /// Writes `last_used_at` off the request path, at most once a minute per key
    /// (skipped when [`TOUCHES_IN_FLIGHT`] writes are already running).
    fn touch(&self, entry: &CachedKey, now: i64) {
        let last = entry.last_touch.load(Ordering::Relaxed);
        if now.saturating_sub(last) < TOUCH_EVERY_MS
            || entry
                .last_touch
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let Ok(permit) = self.touches.clone().try_acquire_owned() else {
            return;
        };
        let (store, id) = (self.store.clone(), entry.id.clone());
        tokio::spawn(async move {
            if let Err(err) = store.touch(&id, now, TOUCH_EVERY_MS).await {
                tracing::debug!(error = %err, "sentri: api key last_used_at not written");
            }
            drop(permit);
        });
    }

    /// Emits a rate-limited `api_key_rejected` event (no key material).
    fn rejected(&self, parts: &Parts, err: &SentriError, key: Option<&CachedKey>) {
        let now = self.core.now_ms();
        if !self.rejections.allow(now) {
            return;
        }
        let mut event = AuthEvent::new(AuthEventKind::ApiKeyRejected, now).meta(parts_meta(parts));
        if let Some(key) = key {
            event = event.user(&key.user.id);
            event.key_id = Some(key.id.clone());
        }
        event.error = Some(err.clone());
        self.core.emit(event);
    }

    // ---- management ------------------------------------------------------------------

    /// Creates a key for `owner_id`, asked by its session `session_id`; the secret is
    /// returned here and never again.
    ///
    /// A creation racing the end of every credential of the owner (a password reset,
    /// …) must not leave a live key behind: once stored, the key stands only if the
    /// session that asked for it is still live in the store, else it is revoked again
    /// and the request refused (`TOKEN_INVALID`). The end of every credential revokes
    /// the sessions before the keys, so either its key revocation sees this key, or
    /// this check sees the revoked session.
    pub(super) async fn create(
        &self,
        owner_id: &str,
        session_id: &str,
        input: NewKey,
    ) -> Result<Created> {
        let owner = self.core.identity.get_user(owner_id).await?;
        let name = check_name(&input.name)?;
        let scopes = self.check_scopes(input.scopes)?;
        let roles = self.check_roles(&owner, input.roles)?;
        let metadata = check_metadata(input.metadata)?;
        let now = self.core.now_ms();
        let expires_at = self.expiry(input.expires_in, now)?;
        let live = self.store.count_live(owner_id).await?;
        if live >= i64::from(self.settings.max_keys_per_user) {
            return Err(SentriError::validation(format!(
                "A user can have at most {} API keys",
                self.settings.max_keys_per_user
            )));
        }
        let secret = format::generate(&self.settings.lead).ok_or_else(|| {
            SentriError::internal(std::io::Error::other("system RNG unavailable"))
        })?;
        let key = KeyRecord {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: owner.id,
            name,
            key_hash: sha256_hex(&secret),
            prefix: self.settings.lead.clone(),
            last_four: format::last_four(&secret).to_owned(),
            scopes,
            roles,
            metadata,
            created_at: now,
            expires_at,
            last_used_at: None,
            revoked_at: None,
        };
        self.store.insert(&key).await?;
        let db = &self.core.identity.db;
        if !db.family_active(session_id, self.core.now_ms()).await? {
            self.store
                .revoke(owner_id, &key.id, self.core.now_ms())
                .await?;
            self.cache.forget(&key.key_hash).await;
            return Err(SentriError::token_invalid("Token has been revoked"));
        }
        self.emit(AuthEventKind::ApiKeyCreated, &key);
        Ok(Created { secret, key })
    }

    /// Every key of `user_id`, revoked ones included.
    pub(super) async fn list(&self, user_id: &str) -> Result<Vec<KeyRecord>> {
        self.store.list(user_id).await
    }

    /// The key `id` of `user_id` (`API_KEY_NOT_FOUND` when it is someone else's).
    pub(super) async fn get(&self, user_id: &str, id: &str) -> Result<KeyRecord> {
        self.store.find(user_id, id).await?.ok_or_else(not_found)
    }

    /// Renames and/or rescopes a live key; roles stay within its owner's.
    pub(super) async fn update(
        &self,
        user_id: &str,
        id: &str,
        input: KeyUpdate,
    ) -> Result<KeyRecord> {
        let key = self.get(user_id, id).await?;
        if key.revoked_at.is_some() {
            return Err(not_found());
        }
        let name = input.name.as_deref().map(check_name).transpose()?;
        let scopes = input.scopes.map(|s| self.check_scopes(s)).transpose()?;
        let roles = match input.roles {
            Some(roles) => {
                let owner = self.core.identity.get_user(user_id).await?;
                Some(self.check_roles(&owner, roles)?)
            }
            None => None,
        };
        let change = KeyChange {
            name: name.as_deref(),
            scopes: scopes.as_deref(),
            roles: roles.as_deref(),
        };
        self.store.update(user_id, id, &change).await?;
        self.cache.refresh(&key.key_hash).await;
        self.publish(CHANGED, &key.key_hash).await;
        self.get(user_id, id).await
    }

    /// Revokes the key `id` of `user_id` (idempotent): refused at once by this process,
    /// and by the others as soon as the Redis message arrives (else within the cache
    /// TTL).
    pub(super) async fn revoke(&self, user_id: &str, id: &str) -> Result<KeyRecord> {
        let key = self.get(user_id, id).await?;
        if key.revoked_at.is_some() {
            return Ok(key);
        }
        let now = self.core.now_ms();
        let revoked = self.store.revoke(user_id, id, now).await?;
        self.cache.forget(&key.key_hash).await;
        self.publish(REVOKED, &key.key_hash).await;
        if revoked {
            self.emit(AuthEventKind::ApiKeyRevoked, &key);
        }
        self.get(user_id, id).await
    }

    /// Revokes every live key of `user_id` in one statement, then drops each from this
    /// process's cache and tells the other processes (Redis), before returning: from
    /// then on no request of this process authenticates with any of them, and the
    /// others refuse them as soon as the message arrives (else within the cache TTL).
    /// One `api_key_revoked` event per key.
    pub(super) async fn revoke_all(&self, user_id: &str) -> Result<()> {
        let now = self.core.now_ms();
        self.store.revoke_all(user_id, now).await?;
        for key in self.store.revoked_since(user_id, now).await? {
            self.cache.forget(&key.key_hash).await;
            self.publish(REVOKED, &key.key_hash).await;
            self.emit(AuthEventKind::ApiKeyRevoked, &key);
        }
        Ok(())
    }

    async fn publish(&self, kind: &str, hash: &str) {
        let message = format!("{kind}{hash}");
        self.core.sessions.bus.publish_credential(&message).await;
    }

    fn emit(&self, kind: AuthEventKind, key: &KeyRecord) {
        let mut event = AuthEvent::new(kind, self.core.now_ms()).user(&key.user_id);
        event.key_id = Some(key.id.clone());
        self.core.emit(event);
    }

    // ---- input checks ----------------------------------------------------------------

    /// Scopes from the configured list (`INVALID_SCOPE` otherwise), deduplicated.
    fn check_scopes(&self, scopes: Vec<String>) -> Result<Vec<String>> {
        // A fixed message: the refused scope is the caller's input, never echoed.
        if scopes.iter().any(|s| !self.settings.scopes.contains(s)) {
            return Err(SentriError::new(ErrorCode::InvalidScope, "Unknown scope"));
        }
        Ok(dedupe(scopes))
    }

    /// Roles that are valid and that the owner has: a key never has more than its owner.
    fn check_roles(&self, owner: &AuthUser, roles: Vec<String>) -> Result<Vec<String>> {
        if roles.is_empty() {
            return Ok(roles);
        }
        self.core.identity.roles.check(&roles)?;
        if roles.iter().any(|r| !owner.roles.contains(r)) {
            return Err(SentriError::forbidden(
                "An API key cannot have a role its owner lacks",
            ));
        }
        Ok(dedupe(roles))
    }

    /// The expiry of a new key: `expires_in` seconds from now (at least a minute, at most
    /// `max_lifetime`), or `max_lifetime` when none is asked, or never.
    fn expiry(&self, expires_in: Option<u64>, now: i64) -> Result<Option<i64>> {
        let max = self
            .settings
            .max_lifetime
            .map_or(MAX_LIFETIME_SECS, |d| d.as_secs());
        let secs = match (expires_in, self.settings.max_lifetime) {
            (Some(secs), _) => secs,
            (None, Some(max)) => max.as_secs(),
            (None, None) => return Ok(None),
        };
        if !(MIN_LIFETIME_SECS..=max).contains(&secs) {
            return Err(SentriError::validation(format!(
                "expiresIn must be between {MIN_LIFETIME_SECS} and {max} seconds"
            )));
        }
        let ms = i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        Ok(Some(now.saturating_add(ms)))
    }
}

fn check_name(name: &str) -> Result<String> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(SentriError::validation(format!(
            "name must be 1 to {MAX_NAME_CHARS} characters, without control characters"
        )));
    }
    Ok(name.to_owned())
}

fn check_metadata(metadata: Option<serde_json::Value>) -> Result<Option<serde_json::Value>> {
    let Some(metadata) = metadata else {
        return Ok(None);
    };
    if !metadata.is_object() {
        return Err(SentriError::validation("metadata must be a JSON object"));
    }
    let size = serde_json::to_string(&metadata)
        .map_err(SentriError::internal)?
        .len();
    if size > MAX_METADATA_BYTES {
        return Err(SentriError::validation(format!(
            "metadata must be at most {MAX_METADATA_BYTES} bytes"
        )));
    }
    Ok(Some(metadata))
}

/// Drops keys from `cache` as revocations arrive (from this process or, with Redis,
/// from the others). A listener that fell behind drops the whole cache.
fn listen(core: &Core, cache: &Arc<KeyCache>) {
    let on_message = |cache: Arc<KeyCache>, m: String| -> crate::core::BoxFuture<'static, ()> {
        Box::pin(async move {
            if let Some(hash) = m.strip_prefix(REVOKED) {
                cache.forget(hash).await;
            } else if let Some(hash) = m.strip_prefix(CHANGED) {
                cache.refresh(hash).await;
            }
        })
    };
    core.sessions
        .bus
        .follow_credentials(cache, "api keys", on_message, KeyCache::clear);
}
