//! The verified-key cache: the hot path of a key does no database read.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering, fence};
use std::time::Duration;

use crate::core::principal::AuthUser;
use crate::http::guard::{CredentialInfo, CurrentUser};

/// A key verified against the store at `verified_at` (the configured clock).
pub(super) struct CachedKey {
    pub(super) id: String,
    /// The owner, with the roles the key may use (its own ∩ the owner's).
    pub(super) user: AuthUser,
    /// The owner's authorization version read with those roles: once a role change of
    /// the owner raised it (here, or in another process through Redis), the entry is
    /// stale and the key is read again.
    pub(super) owner_version: i64,
    pub(super) credential: Arc<CredentialInfo>,
    pub(super) expires_at: Option<i64>,
    pub(super) verified_at: i64,
    /// The last `last_used_at` this process wrote or read (throttles the writes).
    pub(super) last_touch: AtomicI64,
}

impl CachedKey {
    /// The principal of a request authenticated by this key (no session).
    pub(super) fn current_user(&self) -> CurrentUser {
        CurrentUser {
            user: self.user.clone(),
            session_id: String::new(),
            credential: Some(self.credential.clone()),
            workspace_id: None,
        }
    }
}

/// Keys by the SHA-256 of their secret, safe against a revocation racing an insert
/// (the pattern of the session cache): a revocation marks the hash revoked, then drops
/// it; an insert adds it, then undoes itself when the hash is marked.
pub(super) struct KeyCache {
    live: moka::future::Cache<String, Arc<CachedKey>>,
    revoked: moka::future::Cache<String, ()>,
}

impl KeyCache {
    pub(super) fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            live: moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl.max(Duration::from_millis(1)))
                .build(),
            revoked: moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(Duration::from_secs(120))
                .build(),
        }
    }

    /// The cached key, unless it is marked revoked (an insert racing a revocation may
    /// sit in `live` for an instant before it undoes itself).
    pub(super) async fn get(&self, hash: &str) -> Option<Arc<CachedKey>> {
        let key = self.live.get(hash).await?;
        fence(Ordering::SeqCst);
        (!self.is_revoked(hash)).then_some(key)
    }

    /// `true` when this process saw the key revoked (in the last two minutes).
    pub(super) fn is_revoked(&self, hash: &str) -> bool {
        self.revoked.contains_key(hash)
    }

    /// Caches a verified key unless it was revoked meanwhile.
    pub(super) async fn remember(&self, hash: &str, key: Arc<CachedKey>) {
        self.live.insert(hash.to_owned(), key).await;
        fence(Ordering::SeqCst);
        if self.revoked.contains_key(hash) {
            self.live.invalidate(hash).await;
        }
    }

    /// Marks a key revoked and drops it (this process only).
    pub(super) async fn forget(&self, hash: &str) {
        self.revoked.insert(hash.to_owned(), ()).await;
        fence(Ordering::SeqCst);
        self.live.invalidate(hash).await;
    }

    /// Drops a key whose scopes or roles changed (it is read again on next use); a read
    /// racing this may cache the old state for at most the cache TTL.
    pub(super) async fn refresh(&self, hash: &str) {
        self.live.invalidate(hash).await;
    }

    /// Drops every cached key (a revocation listener that fell behind).
    pub(super) fn clear(&self) {
        self.live.invalidate_all();
    }
}
