//! The live-session cache of `protect()` (moka's synchronous cache: a hit is a lock-free
//! read, no future to poll on the hot path).

use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::time::Duration;

/// The live-session cache of `protect()`, safe against a revocation racing an insert.
///
/// `live` holds session ids known to be live, for `session_cache_ttl`. `revoked` holds
/// ids revoked recently (longer than any store read can take). A revocation first marks
/// the id revoked, then drops it from `live`; an insert first adds to `live`, then looks
/// at `revoked` and undoes itself if the id is there. With a sequentially consistent fence
/// between each pair of steps, one of the two always sees the other: a live entry can
/// never survive a revocation that this process has seen.
///
/// Each live entry holds the authorization version of the session's user read with
/// it. `floors` holds, per user, the lowest version still current after a role change
/// this process saw (made here or announced through Redis): a cached entry read
/// before that change counts as that version, so a role change needs no eviction race.
pub(crate) struct SessionCache {
    live: moka::sync::Cache<String, i64>,
    revoked: moka::sync::Cache<String, ()>,
    floors: moka::sync::Cache<String, i64>,
    /// Set by the first [`raise`](Self::raise): until then no floor exists and
    /// `protect()` skips the lookup.
    any_floor: AtomicBool,
    /// How long a live entry is trusted (`session_cache_ttl`).
    ttl: Duration,
}

impl SessionCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            live: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl.max(Duration::from_millis(1)))
                .build(),
            revoked: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(120))
                .build(),
            // Outlives any live entry read before the change it records.
            floors: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl.saturating_add(Duration::from_secs(120)))
                .build(),
            any_floor: AtomicBool::new(false),
            ttl,
        }
    }

    /// How long an entry is trusted without the store (`session_cache_ttl`): also the
    /// bound of other caches that follow the sessions' (memberships).
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// `true` when `sid` is cached as live.
    pub(crate) fn contains(&self, sid: &str) -> bool {
        self.live.contains_key(sid)
    }

    /// The authorization version of `user` when `sid` is cached as live.
    pub(crate) fn version(&self, sid: &str, user: &str) -> Option<i64> {
        let cached = self.live.get(sid)?;
        Some(self.floor(user, cached))
    }

    /// `version`, raised to the floor recorded for `user`.
    pub(crate) fn floor(&self, user: &str, version: i64) -> i64 {
        if !self.any_floor.load(Ordering::SeqCst) {
            return version;
        }
        match self.floors.get(user) {
            Some(floor) => floor.max(version),
            None => version,
        }
    }

    /// Records that `user`'s roles changed: versions below `version` are stale.
    pub(crate) fn raise(&self, user: &str, version: i64) {
        self.any_floor.store(true, Ordering::SeqCst);
        self.floors
            .entry(user.to_owned())
            .and_upsert_with(|old| old.map_or(version, |o| (*o.value()).max(version)));
    }

    /// Remembers `sid` as live (its user at authorization `version`) unless it was
    /// revoked meanwhile.
    pub(crate) fn remember(&self, sid: &str, version: i64) {
        self.live.insert(sid.to_owned(), version);
        fence(Ordering::SeqCst);
        if self.revoked.contains_key(sid) {
            self.live.invalidate(sid);
        }
    }

    /// Marks `sid` revoked and drops it from the live cache (this process only).
    pub(crate) fn forget(&self, sid: &str) {
        self.revoked.insert(sid.to_owned(), ());
        fence(Ordering::SeqCst);
        self.live.invalidate(sid);
    }
}
