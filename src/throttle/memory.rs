//! The per-process store: a bounded `moka` cache of counters, one mutex per key.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::{LimitMs, Settle, State, ThrottleKey, Throttling};

pub(crate) struct MemoryStore {
    cache: moka::future::Cache<ThrottleKey, Arc<Mutex<State>>>,
}

impl MemoryStore {
    pub(crate) fn new(policy: &Throttling) -> Self {
        // A key idle this long has no lockout left and no backoff to remember.
        let longest = [&policy.subject, &policy.address]
            .iter()
            .map(|l| l.max_lockout + l.window * 2)
            .max()
            .unwrap_or(Duration::from_secs(3600));
        Self {
            cache: moka::future::Cache::builder()
                .max_capacity(policy.memory_capacity)
                .time_to_idle(longest)
                .build(),
        }
    }

    pub(crate) async fn attempt(&self, key: &ThrottleKey, now: i64, limit: LimitMs) -> Option<i64> {
        let cell = self
            .cache
            .get_with_by_ref(key, async { Arc::new(Mutex::new(State::default())) })
            .await;
        let mut state = cell.lock().unwrap_or_else(PoisonError::into_inner);
        state.attempt(now, limit)
    }

    pub(crate) async fn settle(&self, key: &ThrottleKey, how: Settle) {
        match how {
            Settle::Reset => self.cache.invalidate(key).await,
            Settle::Refund => {
                if let Some(cell) = self.cache.get(key).await {
                    cell.lock().unwrap_or_else(PoisonError::into_inner).refund();
                }
            }
        }
    }
}
