//! The live-session cache of `protect()`.

use std::sync::atomic::{Ordering, fence};
use std::time::Duration;

/// The live-session cache of `protect()`, safe against a revocation racing an insert.
///
/// `live` holds session ids known to be live, for `session_cache_ttl`. `revoked` holds
/// ids revoked recently (longer than any store read can take). A revocation first marks
/// the id revoked, then drops it from `live`; an insert first adds to `live`, then looks
/// at `revoked` and undoes itself if the id is there. With a sequentially consistent fence
/// between each pair of steps, one of the two always sees the other: a live entry can
/// never survive a revocation that this process has seen.
pub(crate) struct SessionCache {
    live: moka::future::Cache<String, ()>,
    revoked: moka::future::Cache<String, ()>,
}

impl SessionCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            live: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl.max(Duration::from_millis(1)))
                .build(),
            revoked: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(120))
                .build(),
        }
    }

    /// `true` when `sid` is cached as live.
    pub(crate) fn contains(&self, sid: &str) -> bool {
        self.live.contains_key(sid)
    }

    /// Remembers `sid` as live unless it was revoked meanwhile.
    pub(crate) async fn remember(&self, sid: &str) {
        self.live.insert(sid.to_owned(), ()).await;
        fence(Ordering::SeqCst);
        if self.revoked.contains_key(sid) {
            self.live.invalidate(sid).await;
        }
    }

    /// Marks `sid` revoked and drops it from the live cache (this process only).
    pub(crate) async fn forget(&self, sid: &str) {
        self.revoked.insert(sid.to_owned(), ()).await;
        fence(Ordering::SeqCst);
        self.live.invalidate(sid).await;
    }
}
