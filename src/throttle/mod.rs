//! Throttling of every endpoint that checks a secret (OWASP ASVS 2.2.1): attempts are
//! counted per *subject* (the normalised identifier of a login, the user of a
//! password change or a second-factor check) and per *client address*, and refused with
//! `429 TOO_MANY_ATTEMPTS` and `Retry-After` once over the limit, **before** the secret
//! is checked (so a refused attempt costs no bcrypt).
//!
//! How an endpoint uses it (login, change-password and any capability that checks a
//! secret: a second factor, an e-mail code, a reset token):
//!
//! ```no_run
//! # async fn demo(throttle: &sentri::throttle::Throttle) -> sentri::Result<()> {
//! use sentri::throttle::ThrottleKey;
//! let keys = [
//!     ThrottleKey::subject("2fa", "user-id-or-normalised-identifier"),
//!     ThrottleKey::address("203.0.113.7"),
//! ];
//! let attempt = throttle.attempt(&keys).await?; // 429 TOO_MANY_ATTEMPTS + Retry-After
//! let result: sentri::Result<()> = Ok(()); // check the secret here
//! attempt.settle(&result).await; // success resets the subject; a wrong secret keeps the count
//! # result }
//! ```
//!
//! Every attempt is counted *when it starts* (atomically), so N concurrent attempts can
//! never get more than the limit through, on one process or, with Redis, on many.
//! [`Attempt::settle`] then decides: success resets the subject's counter and gives the
//! address its attempt back; `INVALID_CREDENTIALS` (a wrong secret) keeps both counts;
//! anything else (a server error, a halt by a login step) gives both back. An attempt
//! dropped unsettled counts as a failure.
//!
//! Over the limit, a key is locked for [`Limit::lockout`], doubling on each further
//! lockout up to [`Limit::max_lockout`] (exponential backoff); a full quiet window after
//! a lockout forgets the backoff.
//!
//! Stores: per process in memory (bounded, `moka`); with a Redis URL (feature `redis`)
//! one atomic Lua script per key, so several instances together allow the limit, not
//! N× it. Redis keys are hash-tagged (`{sentri:throttle:…}`) and hold no identifier or
//! address in clear (SHA-256). When Redis is unreachable the per-process limiter answers
//! instead (logged at `warn` once per outage, counted in [`Throttle::fallbacks`]):
//! never fail open, never fail every login.

mod memory;
#[cfg(feature = "redis")]
mod redis_store;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
#[cfg(feature = "redis")]
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::core::clock::{Clock, duration_ms};
use crate::core::crypto::sha256_b64;
use crate::core::error::{ErrorCode, Result, SentriError};

/// Which limit a key is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Whose secret is tried: a normalised identifier, a user id. Reset by a success.
    Subject,
    /// The client address. A success gives its attempt back (no reset).
    Address,
    /// Sign-ups from one client address: every registration counts, won or lost (only a
    /// server failure gives it back).
    Registration,
}

impl Scope {
    fn tag(self) -> &'static str {
        match self {
            Scope::Subject => "s",
            Scope::Address => "a",
            Scope::Registration => "r",
        }
    }
}

/// One counter: a scope and an opaque (hashed) id.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ThrottleKey {
    scope: Scope,
    id: String,
}

impl fmt::Debug for ThrottleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The id is a hash; still, keep it short in logs.
        write!(f, "{}:{}…", self.scope.tag(), &self.id[..8])
    }
}

impl ThrottleKey {
    /// The subject key of `value` (normalise identifiers first) on the endpoint
    /// `purpose` (e.g. `"login"`, `"change-password"`, `"2fa"`): endpoints do not share
    /// subject counters.
    pub fn subject(purpose: &str, value: &str) -> Self {
        Self {
            scope: Scope::Subject,
            id: sha256_b64(
                b"sentri-throttle-subject\0",
                &[purpose.as_bytes(), b"\0", value.as_bytes()],
            ),
        }
    }

    /// The address key of a client address (shared by every endpoint). An IPv6
    /// address counts for its whole /64 (one host usually holds all of it).
    pub fn address(ip: &str) -> Self {
        let bucket = match ip.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
                let [a, b, c, d, ..] = v6.segments();
                format!("{a:x}:{b:x}:{c:x}:{d:x}::/64")
            }
            _ => ip.to_owned(),
        };
        Self {
            scope: Scope::Address,
            id: sha256_b64(b"sentri-throttle-address\0", &[bucket.as_bytes()]),
        }
    }

    /// The registration key of a client address (its own counter and limit,
    /// [`Throttling::registration`]; an IPv6 address counts for its /64).
    pub fn registration(ip: &str) -> Self {
        let address = Self::address(ip);
        Self {
            scope: Scope::Registration,
            id: address.id,
        }
    }

    /// The key's scope.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fn storage_key(&self, prefix: &str) -> String {
        // The whole key is the hash tag: one slot per key on Redis Cluster.
        format!("{{{prefix}:{}:{}}}", self.scope.tag(), self.id)
    }
}

/// One limit: at most `max` attempts per `window`; the next one locks the key for
/// `lockout`, doubling per further lockout up to `max_lockout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limit {
    /// Attempts allowed per window.
    pub max: u32,
    /// The counting window (starts at the first attempt).
    pub window: Duration,
    /// The first lockout.
    pub lockout: Duration,
    /// The longest lockout (equal to `lockout`: no backoff).
    pub max_lockout: Duration,
}

impl Limit {
    /// `max` attempts per `window`, then a lockout of one `window` (no backoff).
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            lockout: window,
            max_lockout: window,
        }
    }

    /// Sets the first lockout and the longest one (exponential backoff between them).
    pub fn backoff(mut self, lockout: Duration, max_lockout: Duration) -> Self {
        self.lockout = lockout;
        self.max_lockout = max_lockout;
        self
    }

    fn check(&self, what: &str) -> Result<()> {
        let ok = self.max >= 1
            && !self.window.is_zero()
            && !self.lockout.is_zero()
            && self.max_lockout >= self.lockout
            && self.max_lockout <= Duration::from_secs(30 * 86_400);
        if ok {
            return Ok(());
        }
        Err(SentriError::configuration(format!(
            "throttling: {what} needs max ≥ 1, a non-zero window and lockout, lockout ≤ max_lockout ≤ 30 days"
        )))
    }

    pub(crate) fn ms(&self) -> LimitMs {
        LimitMs {
            max: self.max,
            window: duration_ms(self.window),
            lockout: duration_ms(self.lockout),
            max_lockout: duration_ms(self.max_lockout),
        }
    }
}

/// A limit in milliseconds, as the stores use it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LimitMs {
    pub(crate) max: u32,
    pub(crate) window: i64,
    pub(crate) lockout: i64,
    pub(crate) max_lockout: i64,
}

/// The throttling policy (`ServerConfig::throttling`).
///
/// Defaults: per subject 5 attempts per 15 minutes, then locked 15 minutes, doubling up
/// to 24 hours; per address 100 attempts per 15 minutes, then locked 15 minutes;
/// registrations per address 20 per hour, then locked an hour; a bounded in-memory store of 100 000 keys; the server's `redis_url` (feature `redis`)
/// as the shared store when one is configured.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Throttling {
    /// The per-subject limit (identifier, user).
    pub subject: Limit,
    /// The per-address limit.
    pub address: Limit,
    /// The per-address limit of `POST /register` (sign-ups, counted whatever their
    /// outcome, before the password is hashed).
    pub registration: Limit,
    /// Keys the in-memory store keeps (least recently used beyond it are forgotten).
    pub memory_capacity: u64,
    /// Use the server's `redis_url` when one is configured (default `true`).
    pub shared: bool,
    /// The Redis key prefix (default `sentri:throttle`).
    pub key_prefix: String,
}

impl Default for Throttling {
    fn default() -> Self {
        let quarter = Duration::from_secs(900);
        Self {
            subject: Limit::new(5, quarter).backoff(quarter, Duration::from_secs(86_400)),
            address: Limit::new(100, quarter),
            registration: Limit::new(20, Duration::from_secs(3_600)),
            memory_capacity: 100_000,
            shared: true,
            key_prefix: "sentri:throttle".into(),
        }
    }
}

impl Throttling {
    /// Sets the per-subject limit.
    pub fn subject(mut self, limit: Limit) -> Self {
        self.subject = limit;
        self
    }

    /// Sets the per-address limit.
    pub fn address(mut self, limit: Limit) -> Self {
        self.address = limit;
        self
    }

    /// Sets the per-address registration limit.
    pub fn registration(mut self, limit: Limit) -> Self {
        self.registration = limit;
        self
    }

    /// Keeps the limiter per process even when a `redis_url` is configured.
    pub fn per_process(mut self) -> Self {
        self.shared = false;
        self
    }

    /// Sets the Redis key prefix (inside the `{…}` hash tag).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Sets how many keys the in-memory store keeps.
    pub fn memory_capacity(mut self, keys: u64) -> Self {
        self.memory_capacity = keys;
        self
    }

    fn check(&self) -> Result<()> {
        self.subject.check("subject")?;
        self.address.check("address")?;
        self.registration.check("registration")?;
        if self.memory_capacity < 1_000 {
            return Err(SentriError::configuration(
                "throttling: memory_capacity must be at least 1000",
            ));
        }
        Ok(())
    }
}

/// The counter state of one key (the Redis script keeps the same four fields).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct State {
    /// Attempts in the current window.
    pub(crate) count: u32,
    /// When the current window ends (ms).
    pub(crate) window_end: i64,
    /// Locked until (ms; 0: never locked).
    pub(crate) locked_until: i64,
    /// Lockouts so far (the backoff exponent).
    pub(crate) level: u32,
}

impl State {
    /// Counts one attempt at `now`: `None` when admitted, else the lockout left (ms).
    pub(crate) fn attempt(&mut self, now: i64, limit: LimitMs) -> Option<i64> {
        if self.locked_until > now {
            return Some(self.locked_until - now);
        }
        if now >= self.window_end {
            if self.locked_until > 0 && now >= self.locked_until + limit.window {
                self.level = 0;
            }
            self.count = 0;
            self.window_end = now + limit.window;
        }
        if self.count >= limit.max {
            self.level = (self.level + 1).min(40);
            let grown = limit
                .lockout
                .saturating_mul(1_i64 << (self.level - 1).min(40));
            let lock = grown.min(limit.max_lockout);
            self.locked_until = now + lock;
            self.window_end = self.locked_until;
            self.count = 0;
            return Some(lock);
        }
        self.count += 1;
        None
    }

    /// Gives one attempt back.
    pub(crate) fn refund(&mut self) {
        self.count = self.count.saturating_sub(1);
    }
}

/// What to do with a settled attempt's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settle {
    /// Forget the key.
    Reset,
    /// Give the attempt back.
    Refund,
}

struct Inner {
    policy: Throttling,
    clock: Arc<dyn Clock>,
    memory: memory::MemoryStore,
    #[cfg(feature = "redis")]
    redis: Option<redis_store::RedisStore>,
    #[cfg(feature = "redis")]
    degraded: AtomicBool,
    fallbacks: AtomicU64,
    refused: AtomicU64,
}

/// The limiter every secret-checking endpoint calls (`Core::throttle()`). Cheap to
/// clone. A disabled one admits everything.
#[derive(Clone)]
pub struct Throttle {
    inner: Option<Arc<Inner>>,
}

impl fmt::Debug for Throttle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Throttle");
        match &self.inner {
            None => d.field("enabled", &false),
            Some(i) => d
                .field("subject", &i.policy.subject)
                .field("address", &i.policy.address)
                .field("shared", &i.has_redis()),
        };
        d.finish_non_exhaustive()
    }
}

/// The `429 TOO_MANY_ATTEMPTS` answer, with `Retry-After` in whole seconds (rounded up).
pub fn too_many_attempts(retry_ms: i64) -> SentriError {
    let secs = u64::try_from(retry_ms.max(1)).unwrap_or(1).div_ceil(1000);
    SentriError::new(
        ErrorCode::TooManyAttempts,
        "Too many attempts; try again later",
    )
    .with_retry_after(secs)
}

impl Throttle {
    /// A limiter that admits everything (throttling off).
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// A limiter with `policy`, on `redis_url` when given (feature `redis`).
    pub fn new(policy: Throttling, clock: Arc<dyn Clock>, redis_url: Option<&str>) -> Result<Self> {
        policy.check()?;
        let redis_url = redis_url.filter(|_| policy.shared);
        #[cfg(feature = "redis")]
        let redis = match redis_url {
            Some(url) => Some(redis_store::RedisStore::new(url, &policy.key_prefix)?),
            None => None,
        };
        #[cfg(not(feature = "redis"))]
        if redis_url.is_some() {
            tracing::warn!(
                "redis_url is set but sentri was built without the `redis` feature: throttling is per process"
            );
        }
        let memory = memory::MemoryStore::new(&policy);
        Ok(Self {
            inner: Some(Arc::new(Inner {
                policy,
                clock,
                memory,
                #[cfg(feature = "redis")]
                redis,
                #[cfg(feature = "redis")]
                degraded: AtomicBool::new(false),
                fallbacks: AtomicU64::new(0),
                refused: AtomicU64::new(0),
            })),
        })
    }

    /// `true` unless throttling is off.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// How many throttle operations the per-process limiter answered because Redis was
    /// unreachable.
    pub fn fallbacks(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.fallbacks.load(Ordering::Relaxed))
    }

    /// How many attempts were refused with 429.
    pub fn refused(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.refused.load(Ordering::Relaxed))
    }

    /// Counts one attempt against the client address `ip` alone (an endpoint whose
    /// subject is unknown until the secret is found, e.g. a code or token submitted by
    /// itself); no key without an address. See [`attempt`](Self::attempt).
    pub async fn attempt_from(&self, ip: Option<&str>) -> Result<Attempt> {
        match ip {
            Some(ip) if self.is_enabled() => self.attempt(&[ThrottleKey::address(ip)]).await,
            _ => self.attempt(&[]).await,
        }
    }

    /// Counts one attempt against every key, or refuses with `429 TOO_MANY_ATTEMPTS`
    /// (and `Retry-After`) when any key is over its limit; a refused attempt counts on
    /// no key. Call it before checking the secret.
    pub async fn attempt(&self, keys: &[ThrottleKey]) -> Result<Attempt> {
        let Some(inner) = &self.inner else {
            return Ok(Attempt::none());
        };
        let mut admitted: Vec<ThrottleKey> = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(retry_ms) = inner.attempt(key).await {
                for k in &admitted {
                    inner.settle(k, Settle::Refund).await;
                }
                inner.refused.fetch_add(1, Ordering::Relaxed);
                return Err(too_many_attempts(retry_ms));
            }
            admitted.push(key.clone());
        }
        Ok(Attempt {
            inner: Some(inner.clone()),
            keys: admitted,
        })
    }
}

impl Inner {
    fn limit(&self, scope: Scope) -> LimitMs {
        match scope {
            Scope::Subject => self.policy.subject.ms(),
            Scope::Address => self.policy.address.ms(),
            Scope::Registration => self.policy.registration.ms(),
        }
    }

    #[cfg(feature = "redis")]
    fn has_redis(&self) -> bool {
        self.redis.is_some()
    }

    #[cfg(not(feature = "redis"))]
    fn has_redis(&self) -> bool {
        false
    }

    async fn attempt(&self, key: &ThrottleKey) -> Option<i64> {
        let (now, limit) = (self.clock.now_ms(), self.limit(key.scope));
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            match redis.attempt(key, now, limit).await {
                Ok(v) => {
                    self.recovered();
                    return v;
                }
                Err(err) => self.degrade(&err),
            }
        }
        self.memory.attempt(key, now, limit).await
    }

    async fn settle(&self, key: &ThrottleKey, how: Settle) {
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            match redis.settle(key, how).await {
                Ok(()) => {
                    self.recovered();
                    return;
                }
                Err(err) => self.degrade(&err),
            }
        }
        self.memory.settle(key, how).await;
    }

    #[cfg(feature = "redis")]
    fn degrade(&self, err: &dyn std::error::Error) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %err, "throttle: Redis unreachable; falling back to the per-process limiter");
        }
    }

    #[cfg(feature = "redis")]
    fn recovered(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            tracing::warn!("throttle: Redis reachable again; limits are shared again");
        }
    }
}

/// The answers that mean "the secret presented was wrong": they keep an attempt counted.
const WRONG_SECRET: [ErrorCode; 3] = [
    ErrorCode::InvalidCredentials,
    ErrorCode::TwoFactorInvalid,
    ErrorCode::TokenInvalid,
];

/// One admitted attempt: settle it once the secret was checked.
#[must_use = "settle the attempt once the secret was checked (dropping it counts as a failure)"]
pub struct Attempt {
    inner: Option<Arc<Inner>>,
    keys: Vec<ThrottleKey>,
}

impl fmt::Debug for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attempt").field("keys", &self.keys).finish()
    }
}

impl Attempt {
    fn none() -> Self {
        Self {
            inner: None,
            keys: Vec::new(),
        }
    }

    /// The secret was right: the subject counters are reset, the address counters get
    /// their attempt back.
    pub async fn succeeded(self) {
        self.apply(|scope| match scope {
            Scope::Subject => Some(Settle::Reset),
            Scope::Address => Some(Settle::Refund),
            Scope::Registration => None,
        })
        .await;
    }

    /// The secret was wrong: the attempt stays counted everywhere.
    pub fn failed(self) {}

    /// Not a verdict on the secret (a server error, a halt by a login step): every
    /// counter gets its attempt back.
    pub async fn refund(self) {
        self.apply(|_| Some(Settle::Refund)).await;
    }

    /// Settles from an endpoint's result: `Ok` → [`succeeded`](Self::succeeded), a wrong
    /// secret (`INVALID_CREDENTIALS`, `TWO_FACTOR_INVALID`, `TOKEN_INVALID`) →
    /// [`failed`](Self::failed), anything else → [`refund`](Self::refund).
    pub async fn settle<T>(self, result: &Result<T>) {
        match result {
            Ok(_) => self.succeeded().await,
            Err(e) if WRONG_SECRET.iter().any(|code| e.is(code)) => self.failed(),
            Err(_) => self.refund().await,
        }
    }

    /// Settles an attempt that is spent whatever its verdict (a registration): kept,
    /// unless the server failed (a 5xx gives every counter its attempt back).
    pub async fn spent<T>(self, result: &Result<T>) {
        match result {
            Err(e) if e.status().is_server_error() => self.refund().await,
            _ => self.failed(),
        }
    }

    async fn apply(self, how: impl Fn(Scope) -> Option<Settle>) {
        let Some(inner) = &self.inner else {
            return;
        };
        for key in &self.keys {
            if let Some(h) = how(key.scope) {
                inner.settle(key, h).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockout_doubles_and_a_quiet_window_forgets_it() {
        let limit = Limit::new(2, Duration::from_secs(60))
            .backoff(Duration::from_secs(60), Duration::from_secs(200))
            .ms();
        let mut s = State::default();
        assert_eq!(s.attempt(0, limit), None);
        assert_eq!(s.attempt(1, limit), None);
        assert_eq!(s.attempt(2, limit), Some(60_000));
        assert_eq!(s.attempt(60_001, limit), Some(1));
        assert_eq!(s.attempt(60_002, limit), None);
        assert_eq!(s.attempt(60_003, limit), None);
        assert_eq!(s.attempt(60_004, limit), Some(120_000));
        s.refund();
        // Locked until 180_004; then three windows pass quietly.
        assert_eq!(s.attempt(180_004 + 60_000, limit), None);
        assert_eq!(s.attempt(240_005, limit), None);
        assert_eq!(s.attempt(240_006, limit), Some(60_000));
    }

    #[test]
    fn backoff_is_capped() {
        let limit = Limit::new(1, Duration::from_secs(1))
            .backoff(Duration::from_secs(1), Duration::from_secs(3))
            .ms();
        let mut s = State::default();
        let mut now = 0;
        let mut locks = Vec::new();
        for _ in 0..4 {
            assert_eq!(s.attempt(now, limit), None);
            let lock = s.attempt(now, limit).unwrap();
            locks.push(lock);
            now += lock;
        }
        assert_eq!(locks, [1_000, 2_000, 3_000, 3_000]);
    }
}
