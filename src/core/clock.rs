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

use crate::core::error::{Result, SentriError};

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
pub fn system_now_ms() -> i64 {
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
pub fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Parses a duration written as `"30s"`, `"15m"`, `"1h"`, `"7d"`, or plain seconds (`"900"`).
///
/// ```
/// use std::time::Duration;
/// assert_eq!(sentri::clock::parse_duration("15m").unwrap(), Duration::from_secs(900));
/// assert_eq!(sentri::clock::parse_duration("7d").unwrap(), Duration::from_secs(604_800));
/// assert_eq!(sentri::clock::parse_duration("45").unwrap(), Duration::from_secs(45));
/// assert!(sentri::clock::parse_duration("0s").is_err());
/// assert!(sentri::clock::parse_duration("-5m").is_err());
/// assert!(sentri::clock::parse_duration("soon").is_err());
/// ```
pub fn parse_duration(input: &str) -> Result<Duration> {
    let s = input.trim();
    let bad = || {
        SentriError::configuration(
            "invalid duration: use a positive number of seconds or a value like \"30s\", \"15m\", \"1h\", \"7d\"",
        )
    };
    if s.is_empty() || s.len() > 20 {
        return Err(bad());
    }
    let (digits, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        'w' => 604_800,
        _ => return Err(bad()),
    };
    let secs = n.checked_mul(mult).ok_or_else(bad)?;
    // Ten years is plenty for any token; larger values overflow timestamp arithmetic.
    if secs == 0 || secs > 10 * 365 * 86_400 {
        return Err(bad());
    }
    Ok(Duration::from_secs(secs))
}

/// A time-to-live as configured: a string like `"15m"`, seconds, or a [`Duration`].
/// Checked by `create_auth`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ttl {
    /// `"30s"`, `"15m"`, `"1h"`, `"7d"` or `"900"`.
    Text(String),
    /// Seconds (must be positive).
    Seconds(i64),
    /// An exact duration (must be non-zero).
    Exact(Duration),
}

impl Ttl {
    /// Resolves to a positive [`Duration`], or `CONFIGURATION_ERROR`.
    pub fn resolve(&self) -> Result<Duration> {
        match self {
            Ttl::Text(s) => parse_duration(s),
            Ttl::Seconds(n) if *n > 0 => parse_duration(&n.to_string()),
            Ttl::Seconds(_) => Err(SentriError::configuration("TTL must be positive")),
            Ttl::Exact(d) if !d.is_zero() => Ok(*d),
            Ttl::Exact(_) => Err(SentriError::configuration("TTL must be positive")),
        }
    }
}

impl From<&str> for Ttl {
    fn from(s: &str) -> Self {
        Ttl::Text(s.to_owned())
    }
}
impl From<String> for Ttl {
    fn from(s: String) -> Self {
        Ttl::Text(s)
    }
}
impl From<i64> for Ttl {
    fn from(n: i64) -> Self {
        Ttl::Seconds(n)
    }
}
impl From<Duration> for Ttl {
    fn from(d: Duration) -> Self {
        Ttl::Exact(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_reject() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("1.5h").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(Ttl::Seconds(0).resolve().is_err());
        assert!(Ttl::Seconds(-1).resolve().is_err());
        assert!(Ttl::Exact(Duration::ZERO).resolve().is_err());
    }
}
