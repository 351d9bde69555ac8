//! The membership cache of the tenant guard: `(workspace, user)` → the member's roles
//! while active (or "not an active member"), for `session_cache_ttl`.
//!
//! A change of a membership drops its entry here at once and (with Redis) in the other
//! processes when the message arrives; a change of a whole workspace (deletion) drops
//! every entry. A store read racing a change can never put a stale answer back: every
//! change first bumps `epoch`, then drops entries; a fill inserts first, then looks at
//! `epoch` and undoes itself if a change happened since its read began.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::time::Duration;

use moka::Equivalent;

use crate::http::tenant::MemberRoles;

/// The membership cache.
pub(super) struct MemberCache {
    map: moka::sync::Cache<MemberKey, Option<MemberRoles>>,
    epoch: AtomicU64,
}

/// A cached membership: `(workspace, user)`.
#[derive(Clone, PartialEq, Eq)]
struct MemberKey(Box<str>, Box<str>);

/// How many trailing bytes of each id are hashed: ids are UUID v7, whose tails are
/// random, and hashing 24 bytes instead of 72 is most of a lookup's cost. Lookups still
/// compare whole ids.
const HASHED_TAIL: usize = 12;

fn hash_tails<H: Hasher>(workspace: &str, user: &str, state: &mut H) {
    for id in [workspace.as_bytes(), user.as_bytes()] {
        state.write(&id[id.len().saturating_sub(HASHED_TAIL)..]);
    }
}

impl Hash for MemberKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_tails(&self.0, &self.1, state);
    }
}

/// A lookup of a [`MemberKey`] without building one (no allocation on the hot path).
struct Lookup<'a>(&'a str, &'a str);

impl Hash for Lookup<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_tails(self.0, self.1, state);
    }
}

impl Equivalent<MemberKey> for Lookup<'_> {
    fn equivalent(&self, key: &MemberKey) -> bool {
        *self.0 == *key.0 && *self.1 == *key.1
    }
}

fn key(workspace: &str, user: &str) -> MemberKey {
    MemberKey(workspace.into(), user.into())
}

impl MemberCache {
    pub(super) fn new(ttl: Duration, capacity: u64) -> Self {
        Self {
            map: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl.max(Duration::from_millis(1)))
                .build(),
            epoch: AtomicU64::new(0),
        }
    }

    /// The cached answer, when there is one.
    pub(super) fn get(&self, workspace: &str, user: &str) -> Option<Option<MemberRoles>> {
        self.map.get(&Lookup(workspace, user))
    }

    /// The epoch a fill must capture before its store read.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Caches a store answer read since `epoch`, unless a change happened since.
    pub(super) fn fill(&self, workspace: &str, user: &str, roles: Option<Vec<String>>, epoch: u64) {
        let k = key(workspace, user);
        self.map.insert(k.clone(), roles.map(Arc::from));
        fence(Ordering::SeqCst);
        if self.epoch.load(Ordering::SeqCst) != epoch {
            self.map.invalidate(&k);
        }
    }

    /// Drops one membership (it changed).
    pub(super) fn forget(&self, workspace: &str, user: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.map.invalidate(&Lookup(workspace, user));
    }

    /// Drops every membership (a workspace changed as a whole).
    pub(super) fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.map.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_during_a_read_is_never_cached_over() {
        let cache = MemberCache::new(Duration::from_secs(60), 100);
        let before = cache.epoch();
        cache.forget("w", "u");
        cache.fill("w", "u", Some(vec!["member".into()]), before);
        assert_eq!(cache.get("w", "u"), None);
        let now = cache.epoch();
        cache.fill("w", "u", None, now);
        assert_eq!(cache.get("w", "u"), Some(None));
        cache.clear();
        assert_eq!(cache.get("w", "u"), None);
    }
}
