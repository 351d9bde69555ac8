//! Time as sentri's session logic sees it: a [`Clock`] that tests can move.
//!
//! Session expiry, the absolute session lifetime, the refresh grace window and the
//! expired-session purge read the time from the configured clock
//! ([`ServerConfig::clock`](crate::ServerConfig::clock)); the JWT `exp`/`nbf` checks use
//! the system time (they are verified by `jsonwebtoken`).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current time in unix epoch milliseconds.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time, unix epoch milliseconds.
    fn now_ms(&self) -> i64;
}

/// The system clock (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        system_now_ms()
    }
}

/// The system time as unix epoch milliseconds.
pub(crate) fn system_now_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        // A clock before 1970: report it as a negative offset.
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// A clock that only moves when told to: for tests of time-based rules (grace window,
/// expiry, purge) without sleeping. Clones share the same time.
///
/// ```
/// use std::time::Duration;
/// use sentri::clock::{Clock, ManualClock};
/// let clock = ManualClock::starting_now();
/// let t0 = clock.now_ms();
/// clock.advance(Duration::from_secs(11));
/// assert_eq!(clock.now_ms() - t0, 11_000);
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<AtomicI64>,
}

impl ManualClock {
    /// A manual clock set to the current system time.
    pub fn starting_now() -> Self {
        Self {
            now: Arc::new(AtomicI64::new(system_now_ms())),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.now.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }
}

/// Milliseconds of a duration, saturating.
pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
