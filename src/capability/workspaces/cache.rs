//! The membership cache of the tenant guard: `(workspace, user)` → the member's roles
//! while active (or "not an active member"), for `session_cache_ttl`.
//!
//! A change of a membership drops its entry here at once and (with Redis) in the other
//! processes when the message arrives; a change of a whole workspace (deletion) drops
//! every entry. A store read racing a change can never put a stale answer back: every
//! change first bumps `epoch`, then drops entries; a fill inserts first, then looks at
//! `epoch` and undoes itself if a change happened since its read began.
//!
//! A plain map per user behind a read-write lock: a warm lookup is one uncontended read
//! lock, one hash of the user id and a scan of that user's few workspaces (a tenant
//! guard adds this to every request, so it is kept cheaper than a general cache).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::sync::{RwLock, RwLockWriteGuard};
use std::time::{Duration, Instant};

use crate::http::tenant::MemberRoles;

/// How many workspaces of one user are cached at most.
const PER_USER: usize = 64;

/// One cached membership of a user.
struct Slot {
    workspace: Box<str>,
    roles: Option<MemberRoles>,
    until: Instant,
}

/// The membership cache.
pub(super) struct MemberCache {
    map: RwLock<HashMap<Box<str>, Vec<Slot>>>,
    ttl: Duration,
    capacity: usize,
    epoch: AtomicU64,
}

impl MemberCache {
    /// A cache trusting an answer for `ttl`, of at most `capacity` users (all dropped
    /// when full: simple, and a refill is one indexed read per membership).
    pub(super) fn new(ttl: Duration, capacity: u64) -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
            ttl: ttl.max(Duration::from_millis(1)),
            capacity: usize::try_from(capacity).unwrap_or(usize::MAX).max(1),
            epoch: AtomicU64::new(0),
        }
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<Box<str>, Vec<Slot>>> {
        // A panic while holding the lock leaves a consistent map (every write is one
        // small step): keep using it.
        self.map.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached answer, when there is one.
    pub(super) fn get(&self, workspace: &str, user: &str) -> Option<Option<MemberRoles>> {
        let map = self.map.read().ok()?;
        let slot = map.get(user)?.iter().find(|s| &*s.workspace == workspace)?;
        (slot.until > Instant::now()).then(|| slot.roles.clone())
    }

    /// The epoch a fill must capture before its store read.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Caches a store answer read since `epoch`, unless a change happened since.
    pub(super) fn fill(&self, workspace: &str, user: &str, roles: Option<Vec<String>>, epoch: u64) {
        let now = Instant::now();
        {
            let mut map = self.write();
            if map.len() >= self.capacity && !map.contains_key(user) {
                map.clear();
            }
            let slots = map.entry(user.into()).or_default();
            slots.retain(|s| &*s.workspace != workspace && s.until > now);
            if slots.len() < PER_USER {
                slots.push(Slot {
                    workspace: workspace.into(),
                    roles: roles.map(MemberRoles::from),
                    until: now + self.ttl,
                });
            }
        }
        fence(Ordering::SeqCst);
        if self.epoch.load(Ordering::SeqCst) != epoch {
            self.drop_slot(workspace, user);
        }
    }

    fn drop_slot(&self, workspace: &str, user: &str) {
        let mut map = self.write();
        if let Some(slots) = map.get_mut(user) {
            slots.retain(|s| &*s.workspace != workspace);
            if slots.is_empty() {
                map.remove(user);
            }
        }
    }

    /// Drops one membership (it changed).
    pub(super) fn forget(&self, workspace: &str, user: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.drop_slot(workspace, user);
    }

    /// Drops every membership (a workspace changed as a whole).
    pub(super) fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.write().clear();
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
        cache.fill("w2", "u", Some(vec!["owner".into()]), now);
        assert_eq!(cache.get("w", "u"), Some(None));
        assert_eq!(
            cache.get("w2", "u").flatten().as_deref(),
            Some(&["owner".to_owned()][..])
        );
        cache.clear();
        assert_eq!(cache.get("w", "u"), None);
    }

    #[test]
    fn entries_expire_and_capacity_is_bounded() {
        let cache = MemberCache::new(Duration::from_millis(1), 2);
        cache.fill("w", "u", None, cache.epoch());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(cache.get("w", "u"), None);
        for user in ["a", "b", "c"] {
            cache.fill("w", user, None, cache.epoch());
        }
        assert!(cache.map.read().map(|m| m.len()).unwrap_or(0) <= 2);
    }
}
