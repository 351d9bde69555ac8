//! The membership cache of the tenant guard: `(workspace, user)` → the member's roles
//! while active (or "not an active member"), for `session_cache_ttl`.
//!
//! A change of a membership drops its entry here at once and (with Redis) in the other
//! processes when the message arrives; a change of a whole workspace (deletion) drops
//! every entry. A store read racing a change can never put a stale answer back: every
//! change first bumps `epoch`, then drops entries; a fill inserts first, then looks at
//! `epoch` and undoes itself if a change happened since its read began.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::time::Duration;

use crate::http::tenant::MemberRoles;

/// The membership cache.
pub(super) struct MemberCache {
    map: moka::sync::Cache<String, Option<MemberRoles>>,
    epoch: AtomicU64,
}

/// The cache key of a membership (ids never contain a NUL).
fn key(workspace: &str, user: &str) -> String {
    let mut k = String::with_capacity(workspace.len() + user.len() + 1);
    k.push_str(workspace);
    k.push('\0');
    k.push_str(user);
    k
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
        self.map.get(&key(workspace, user))
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
        self.map.invalidate(&key(workspace, user));
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
