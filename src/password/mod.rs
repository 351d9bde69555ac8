//! Password hashing (bcrypt on the blocking pool, with a bounded queue).
//!
//! bcrypt reads at most 72 bytes of its input; sentri never truncates when it hashes.
//! The stored hash says which of two schemes was used:
//!
//! - **plain bcrypt** (`$2b$…`) for passwords shorter than 72 bytes, hashed with bcrypt's
//!   non-truncating API. These hashes are interchangeable with the TypeScript sentri's.
//! - **pre-hashed** (`$sentri-sha256$` + `$2b$…`) for passwords of 72 bytes or more: the
//!   bcrypt input is `base64(SHA-256("sentri-prehash-v1" || password))` (44 ASCII bytes),
//!   so every byte of a long password counts.
//!
//! Verification dispatches on the stored hash only: a prefixed hash *always* pre-hashes
//! the presented password, an unprefixed one *never* does. The two domains therefore
//! never collide: presenting the 44-character pre-hash string itself does not match a
//! long password's hash (it would be pre-hashed again).
//!
//! # Hashes made by other bcrypt libraries
//!
//! An unprefixed hash (`$2a$`, `$2b$`, `$2x$`, `$2y$`) is checked the way every other
//! bcrypt library checks it: over the first 72 bytes of the presented password. Those
//! libraries truncated long passwords when they hashed them, so a hash they made for a
//! 100-byte password also accepts any password sharing its first 72 bytes. When such a
//! hash matches a password of 72 bytes or more, [`PasswordHasher::check`] answers
//! [`PasswordCheck::MatchNeedsUpgrade`]: the caller stores [`PasswordHasher::hash`] of
//! the password instead (pre-hashed), after which only the exact password matches. A
//! hash whose bcrypt cost is lower than the configured one is upgraded the same way.
//!
//! # Timing
//!
//! Every check runs exactly one bcrypt computation at the stored hash's cost, whatever
//! the password's length: a malformed stored hash is checked against a dummy hash
//! instead, and [`PasswordHasher::verify_dummy`] (for unknown users) checks against a
//! dummy hash of the configured cost in the scheme the password's length calls for.
//!
//! # Load shedding
//!
//! At most one hash runs per core ([`PasswordHasher::concurrency`]), and at most
//! [`PasswordHasher::queue_limit`] more wait for a turn. Beyond that, `hash`, `check`,
//! `verify` and `verify_dummy` fail at once with 503 `SERVICE_UNAVAILABLE` and
//! `Retry-After: 1`, so a login flood is shed instead of queueing without bound.
//!
//! All bcrypt work runs in `tokio::task::spawn_blocking`.
//!
//! # Argon2id (feature `argon2`)
//!
//! [`PasswordHasher::argon2id`] makes new hashes with Argon2id (PHC strings,
//! `$argon2id$v=19$m=19456,t=2,p=1$…`; OWASP's parameters by default, see
//! [`Argon2Params`]). Stored hashes are checked by what they are: bcrypt hashes (plain or
//! pre-hashed) keep verifying, and a match on a hash of *another algorithm* (bcrypt when
//! Argon2id is configured, Argon2 when bcrypt is) or of *weaker parameters* (lower bcrypt
//! cost; lower Argon2 memory, iterations or lanes, or Argon2i/Argon2d) answers
//! [`PasswordCheck::MatchNeedsUpgrade`], so the login re-hashes it with the current
//! setting. Argon2 reads the whole password, so it needs no pre-hashing. Argon2 runs on
//! the same bounded blocking pool as bcrypt.

#[cfg(feature = "argon2")]
mod argon;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tokio::sync::Semaphore;

use crate::core::error::{ErrorCode, Result, SentriError};

#[cfg(feature = "argon2")]
#[cfg_attr(docsrs, doc(cfg(feature = "argon2")))]
pub use argon::Argon2Params;

/// Prefix of pre-hashed (long password) hashes.
const PREHASH_PREFIX: &str = "$sentri-sha256$";
/// Domain separation label of the pre-hash.
const PREHASH_LABEL: &[u8] = b"sentri-prehash-v1";
/// Passwords of this many bytes or more are pre-hashed (bcrypt's non-truncating API
/// accepts at most 71 bytes, as it counts the terminating NUL).
const PREHASH_FROM: usize = 72;
/// The bcrypt cost sentri configures by default.
pub const DEFAULT_BCRYPT_COST: u32 = 12;
/// What [`PasswordHasher::build`] takes for Argon2id.
#[cfg(feature = "argon2")]
type ArgonSetting = Argon2Params;
#[cfg(not(feature = "argon2"))]
type ArgonSetting = std::convert::Infallible;
/// Waiting hashes allowed per core by default (see [`PasswordHasher::new`]).
pub const DEFAULT_QUEUE_PER_CORE: usize = 64;
/// `Retry-After` (seconds) of a request shed because the queue is full.
const BUSY_RETRY_AFTER_SECS: u64 = 1;
/// Salt and digest of the dummy hash: a real bcrypt (cost 4) of a throwaway password,
/// relabelled with the configured cost. Checking against it costs one bcrypt at that
/// cost; its result is never used.
const DUMMY_SALT_AND_DIGEST: &str = "a0TsbFHnJUPzZUz3JVLqb.bQcMFbgntUAdxZwLXAoW4j0nnMtouFC";

/// Outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordCheck {
    /// The password does not match (or the stored hash is malformed).
    Mismatch,
    /// The password matches and the stored hash is current.
    Match,
    /// The password matches, but the stored hash should be replaced by
    /// [`PasswordHasher::hash`] of the password: it is another library's truncating
    /// hash of a password of 72 bytes or more, its cost is below the configured one, or
    /// it uses another algorithm than the configured one (bcrypt / Argon2id).
    MatchNeedsUpgrade,
}

impl PasswordCheck {
    /// `true` for [`Match`](Self::Match) and [`MatchNeedsUpgrade`](Self::MatchNeedsUpgrade).
    pub fn is_match(self) -> bool {
        self != Self::Mismatch
    }
}

/// Shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted, in bytes (longer ones are refused before hashing).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Checks a new password against the default [`PasswordPolicy`]: at least 8
/// characters, at most 1024 bytes.
pub fn validate_password(password: &str) -> Result<()> {
    PasswordPolicy::default().validate(password)
}

/// An application's own password rule: `Err` (usually `VALIDATION_ERROR`) refuses it.
pub type PasswordCheckFn = Arc<dyn Fn(&str) -> Result<()> + Send + Sync>;

/// The one password policy, applied to every new password: registration, change,
/// reset and provisioning. Cheap to clone.
///
/// ```
/// use sentri::password::PasswordPolicy;
/// let policy = PasswordPolicy::default().min_chars(12).check(|pw| {
///     if pw.contains("password") {
///         return Err(sentri::SentriError::validation("password is too guessable"));
///     }
///     Ok(())
/// });
/// assert!(policy.validate("short").is_err());
/// assert!(policy.validate("my password is long").is_err());
/// assert!(policy.validate("correct horse battery").is_ok());
/// ```
#[derive(Clone)]
pub struct PasswordPolicy {
    min_chars: usize,
    max_bytes: usize,
    check: Option<PasswordCheckFn>,
}

impl Default for PasswordPolicy {
    /// At least [`MIN_PASSWORD_CHARS`] (8) characters, at most [`MAX_PASSWORD_BYTES`]
    /// (1024) bytes, no application check.
    fn default() -> Self {
        Self {
            min_chars: MIN_PASSWORD_CHARS,
            max_bytes: MAX_PASSWORD_BYTES,
            check: None,
        }
    }
}

impl fmt::Debug for PasswordPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordPolicy")
            .field("min_chars", &self.min_chars)
            .field("max_bytes", &self.max_bytes)
            .field("check", &self.check.is_some())
            .finish()
    }
}

impl PasswordPolicy {
    /// Sets the shortest password, in characters (at least 1).
    pub fn min_chars(mut self, n: usize) -> Self {
        self.min_chars = n.max(1);
        self
    }

    /// Sets the longest password, in bytes (at most [`MAX_PASSWORD_BYTES`]).
    pub fn max_bytes(mut self, n: usize) -> Self {
        self.max_bytes = n.clamp(1, MAX_PASSWORD_BYTES);
        self
    }

    /// Adds the application's own rule, run after the length checks.
    pub fn check<F>(mut self, f: F) -> Self
    where
        F: Fn(&str) -> Result<()> + Send + Sync + 'static,
    {
        self.check = Some(Arc::new(f));
        self
    }

    /// `VALIDATION_ERROR` unless `password` follows the policy (the password is never
    /// echoed).
    pub fn validate(&self, password: &str) -> Result<()> {
        if password.len() > self.max_bytes {
            return Err(SentriError::validation(format!(
                "password must be at most {} bytes",
                self.max_bytes
            )));
        }
        if password.chars().count() < self.min_chars {
            return Err(SentriError::validation(format!(
                "password must be at least {} characters",
                self.min_chars
            )));
        }
        match &self.check {
            Some(check) => check(password),
            None => Ok(()),
        }
    }
}

/// Hashes and verifies passwords with bcrypt. Cheap to clone; `Debug` shows the cost
/// and the queue limit.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use sentri::password::{PasswordCheck, PasswordHasher};
/// let hasher = PasswordHasher::new(4)?;
/// let hash = hasher.hash("correct horse").await?;
/// assert!(hasher.verify("correct horse", &hash).await?);
/// assert_eq!(hasher.check("wrong", &hash).await?, PasswordCheck::Mismatch);
/// # Ok::<(), sentri::SentriError>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

struct Inner {
    cost: u32,
    /// Set when new hashes use Argon2id instead of bcrypt.
    #[cfg(feature = "argon2")]
    argon2: Option<argon::Argon2id>,
    /// Hashes that run at once (cores).
    running: usize,
    /// Hashes that may wait for a core.
    max_queue: usize,
    /// A well-formed plain bcrypt hash of the configured cost (see [`DUMMY_SALT_AND_DIGEST`]).
    dummy: String,
    /// One permit per core the process may run on: at most that many hashes run at
    /// once. bcrypt is pure CPU work, so more concurrent hashes do not raise login
    /// throughput; they only crowd out the async workers (with 8 hashes on the one core
    /// of a pinned server, a worker got ~1/9 of the CPU and p99 of every other route
    /// grew ~6x). Admitted requests wait for a permit in FIFO order.
    permits: Arc<Semaphore>,
    /// Running plus waiting hashes: `permits` + `max_queue`. Taken without waiting;
    /// none left means the request is shed.
    admission: Arc<Semaphore>,
    /// bcrypt computations completed (hashes and checks, dummy ones included).
    runs: AtomicU64,
}

impl fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("PasswordHasher");
        #[cfg(feature = "argon2")]
        if let Some(argon2) = &self.inner.argon2 {
            d.field("argon2id", &argon2.params());
        }
        d.field("cost", &self.inner.cost)
            .field("max_queue", &self.inner.max_queue)
            .finish()
    }
}

/// `base64(SHA-256("sentri-prehash-v1" || password))`: 44 ASCII bytes.
fn prehash(password: &[u8]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(PREHASH_LABEL);
    ctx.update(password);
    STANDARD.encode(ctx.finish().as_ref())
}

/// The cost field of a well-formed bcrypt hash (`$2b$NN$…`).
fn bcrypt_cost(hash: &str) -> Option<u32> {
    hash.get(4..6)?.parse().ok()
}

/// The number of cores the process may run on (at least 1).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// 503 for a request shed because the hashing queue is full.
fn busy() -> SentriError {
    SentriError::new(
        ErrorCode::ServiceUnavailable,
        "Too many password checks in progress; retry shortly",
    )
    .with_retry_after(BUSY_RETRY_AFTER_SECS)
}

impl Inner {
    fn count_run(&self) {
        self.runs.fetch_add(1, Ordering::Relaxed);
    }

    /// One hash with the configured algorithm (bcrypt: in the scheme the password's
    /// length calls for).
    fn hash_blocking(&self, password: &str) -> Result<String> {
        let bytes = password.as_bytes();
        #[cfg(feature = "argon2")]
        if let Some(argon2) = &self.argon2 {
            let hash = argon2.hash(bytes)?;
            self.count_run();
            return Ok(hash);
        }
        let hashed = if bytes.len() >= PREHASH_FROM {
            bcrypt::non_truncating_hash(prehash(bytes), self.cost)
                .map(|h| format!("{PREHASH_PREFIX}{h}"))
        } else {
            bcrypt::non_truncating_hash(bytes, self.cost)
        };
        let hash = hashed.map_err(SentriError::internal)?;
        self.count_run();
        Ok(hash)
    }

    /// `true` when new hashes use Argon2id (every bcrypt hash then needs an upgrade).
    fn argon2_configured(&self) -> bool {
        #[cfg(feature = "argon2")]
        return self.argon2.is_some();
        #[cfg(not(feature = "argon2"))]
        false
    }

    /// Exactly one hash computation: against `stored`, or a dummy one at the configured
    /// cost when `stored` is malformed.
    fn check_blocking(&self, password: &str, stored: &str) -> PasswordCheck {
        #[cfg(feature = "argon2")]
        if stored.starts_with(argon::ARGON2_PREFIX) {
            return match argon::check(self.argon2.as_ref(), password.as_bytes(), stored) {
                Some(check) => {
                    self.count_run();
                    check
                }
                None => {
                    tracing::warn!("stored password hash is malformed; treating as a mismatch");
                    self.dummy_blocking(password);
                    PasswordCheck::Mismatch
                }
            };
        }
        self.check_bcrypt(password, stored)
    }

    /// One computation at the configured algorithm and cost whose result is discarded.
    fn dummy_blocking(&self, password: &str) {
        #[cfg(feature = "argon2")]
        if let Some(argon2) = &self.argon2 {
            argon2.dummy(password.as_bytes());
            self.count_run();
            return;
        }
        let dummy = self.dummy_for(password);
        self.check_bcrypt(password, &dummy);
    }

    /// Exactly one bcrypt computation: against `stored`, or a dummy one when `stored`
    /// is malformed.
    fn check_bcrypt(&self, password: &str, stored: &str) -> PasswordCheck {
        let bytes = password.as_bytes();
        let (input, bcrypt_hash, prehashed) = match stored.strip_prefix(PREHASH_PREFIX) {
            Some(inner) => (Cow::Owned(prehash(bytes).into_bytes()), inner, true),
            // Plain hashes read the first 72 bytes, as the library that made them did.
            None => (Cow::Borrowed(bytes), stored, false),
        };
        match bcrypt::verify(&input, bcrypt_hash) {
            Ok(false) => {
                self.count_run();
                PasswordCheck::Mismatch
            }
            Ok(true) => {
                self.count_run();
                let legacy_truncated = !prehashed && bytes.len() >= PREHASH_FROM;
                let weak = bcrypt_cost(bcrypt_hash).is_some_and(|c| c < self.cost);
                if legacy_truncated || weak || self.argon2_configured() {
                    PasswordCheck::MatchNeedsUpgrade
                } else {
                    PasswordCheck::Match
                }
            }
            Err(_) => {
                // `!…` marks a user without a password (single sign-on): not malformed.
                if !stored.starts_with('!') {
                    tracing::warn!("stored password hash is malformed; treating as a mismatch");
                }
                #[cfg(feature = "argon2")]
                if self.argon2.is_some() {
                    self.dummy_blocking(password);
                    return PasswordCheck::Mismatch;
                }
                if bcrypt::verify(&input, &self.dummy).is_ok() {
                    self.count_run();
                }
                PasswordCheck::Mismatch
            }
        }
    }

    /// The dummy hash in the scheme a real hash of `password` would use.
    fn dummy_for(&self, password: &str) -> Cow<'_, str> {
        if password.len() >= PREHASH_FROM {
            Cow::Owned(format!("{PREHASH_PREFIX}{}", self.dummy))
        } else {
            Cow::Borrowed(&self.dummy)
        }
    }
}

impl PasswordHasher {
    /// A hasher with bcrypt `cost` (4..=31; 10–12 for production) and the default queue
    /// limit of [`DEFAULT_QUEUE_PER_CORE`] (64) waiting hashes per core.
    pub fn new(cost: u32) -> Result<Self> {
        Self::with_queue_limit(cost, DEFAULT_QUEUE_PER_CORE.saturating_mul(cores()))
    }

    /// A hasher with bcrypt `cost` that lets at most `max_queue` hashes wait for a core
    /// (0: none wait; only the running ones are admitted). Further requests fail at once
    /// with 503 `SERVICE_UNAVAILABLE` and `Retry-After: 1`.
    ///
    /// ```
    /// let hasher = sentri::password::PasswordHasher::with_queue_limit(12, 16)?;
    /// assert_eq!(hasher.queue_limit(), 16);
    /// # Ok::<(), sentri::SentriError>(())
    /// ```
    pub fn with_queue_limit(cost: u32, max_queue: usize) -> Result<Self> {
        Self::build(cost, max_queue, None)
    }

    /// A hasher whose new hashes use Argon2id with `params`, with the default queue
    /// limit. bcrypt hashes keep verifying and ask for an upgrade on a match.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use sentri::password::{Argon2Params, PasswordCheck, PasswordHasher};
    /// let old = PasswordHasher::new(4)?.hash("hunter2hunter2").await?;
    /// let hasher = PasswordHasher::argon2id(Argon2Params::new(64, 1, 1))?;
    /// assert_eq!(hasher.check("hunter2hunter2", &old).await?, PasswordCheck::MatchNeedsUpgrade);
    /// let new = hasher.hash("hunter2hunter2").await?;
    /// assert!(new.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
    /// assert_eq!(hasher.check("hunter2hunter2", &new).await?, PasswordCheck::Match);
    /// # Ok::<(), sentri::SentriError>(())
    /// # }).unwrap();
    /// ```
    #[cfg(feature = "argon2")]
    #[cfg_attr(docsrs, doc(cfg(feature = "argon2")))]
    pub fn argon2id(params: Argon2Params) -> Result<Self> {
        Self::argon2id_with_queue_limit(params, DEFAULT_QUEUE_PER_CORE.saturating_mul(cores()))
    }

    /// [`argon2id`](Self::argon2id) with at most `max_queue` hashes waiting for a core
    /// (see [`with_queue_limit`](Self::with_queue_limit)).
    #[cfg(feature = "argon2")]
    #[cfg_attr(docsrs, doc(cfg(feature = "argon2")))]
    pub fn argon2id_with_queue_limit(params: Argon2Params, max_queue: usize) -> Result<Self> {
        Self::build(DEFAULT_BCRYPT_COST, max_queue, Some(params))
    }

    /// The Argon2id parameters of new hashes, or `None` when they use bcrypt.
    #[cfg(feature = "argon2")]
    #[cfg_attr(docsrs, doc(cfg(feature = "argon2")))]
    pub fn argon2_params(&self) -> Option<Argon2Params> {
        self.inner.argon2.as_ref().map(argon::Argon2id::params)
    }

    #[cfg_attr(not(feature = "argon2"), allow(unused_variables))]
    fn build(cost: u32, max_queue: usize, argon2: Option<ArgonSetting>) -> Result<Self> {
        #[cfg(feature = "argon2")]
        let argon2 = argon2.map(argon::Argon2id::new).transpose()?;
        if !(4..=31).contains(&cost) {
            return Err(SentriError::configuration(
                "bcrypt cost must be between 4 and 31",
            ));
        }
        let running = cores();
        let admitted = running
            .checked_add(max_queue)
            .filter(|n| *n <= Semaphore::MAX_PERMITS)
            .ok_or_else(|| {
                SentriError::configuration("password hashing queue limit is too large")
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                cost,
                #[cfg(feature = "argon2")]
                argon2,
                running,
                max_queue,
                dummy: format!("$2b${cost:02}${DUMMY_SALT_AND_DIGEST}"),
                permits: Arc::new(Semaphore::new(running)),
                admission: Arc::new(Semaphore::new(admitted)),
                runs: AtomicU64::new(0),
            }),
        })
    }

    /// The bcrypt cost (of new hashes when bcrypt is the algorithm; an Argon2id hasher
    /// reports [`DEFAULT_BCRYPT_COST`] and upgrades every bcrypt hash).
    pub fn cost(&self) -> u32 {
        self.inner.cost
    }

    /// How many hashes may wait for a core before requests are shed.
    pub fn queue_limit(&self) -> usize {
        self.inner.max_queue
    }

    /// How many hashes run at once (one per core the process may run on).
    pub fn concurrency(&self) -> usize {
        self.inner.running
    }

    /// Hash computations (bcrypt or Argon2) this hasher has completed (for tests: a
    /// check must cost exactly one, whatever the user or the password).
    #[doc(hidden)]
    pub fn bcrypt_runs(&self) -> u64 {
        self.inner.runs.load(Ordering::Relaxed)
    }

    /// Hashes admitted and not yet finished, running or waiting (for tests).
    #[doc(hidden)]
    pub fn in_flight(&self) -> usize {
        (self.inner.running + self.inner.max_queue)
            .saturating_sub(self.inner.admission.available_permits())
    }

    /// Hashes `password` (see the module docs for the scheme).
    pub async fn hash(&self, password: &str) -> Result<String> {
        let password = password.to_owned();
        self.run_blocking(move |inner| inner.hash_blocking(&password))
            .await?
    }

    /// Checks `password` against the `stored` hash with exactly one bcrypt computation.
    /// A malformed stored hash is a [`PasswordCheck::Mismatch`] (logged at warn,
    /// without the hash). On [`PasswordCheck::MatchNeedsUpgrade`], store
    /// [`hash`](Self::hash) of the password in place of `stored`.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use sentri::password::{PasswordCheck, PasswordHasher};
    /// let old = PasswordHasher::new(4)?.hash("hunter2hunter2").await?;
    /// let hasher = PasswordHasher::new(5)?;
    /// assert_eq!(hasher.check("hunter2hunter2", &old).await?, PasswordCheck::MatchNeedsUpgrade);
    /// # Ok::<(), sentri::SentriError>(())
    /// # }).unwrap();
    /// ```
    pub async fn check(&self, password: &str, stored: &str) -> Result<PasswordCheck> {
        let password = password.to_owned();
        let stored = stored.to_owned();
        self.run_blocking(move |inner| inner.check_blocking(&password, &stored))
            .await
    }

    /// `true` when `password` matches the stored `hash` (see [`check`](Self::check)).
    pub async fn verify(&self, password: &str, hash: &str) -> Result<bool> {
        Ok(self.check(password, hash).await?.is_match())
    }

    /// Spends the time of a real check (one bcrypt against a dummy hash of the
    /// configured cost, in the scheme `password`'s length calls for; or one Argon2id
    /// computation at the configured parameters), so that an unknown
    /// user takes as long as a known one. Fails like [`check`](Self::check) when the
    /// queue is full.
    pub async fn verify_dummy(&self, password: &str) -> Result<()> {
        let password = password.to_owned();
        self.run_blocking(move |inner| inner.dummy_blocking(&password))
            .await
    }

    /// Runs bcrypt work on the blocking pool once a core is free, or fails at once with
    /// 503 when the queue is full. Both permits are held by the blocking task, so they
    /// are released when the work ends even if the caller went away.
    async fn run_blocking<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> T + Send + 'static,
    {
        use crate::core::observe;
        let Ok(admitted) = Arc::clone(&self.inner.admission).try_acquire_owned() else {
            tracing::debug!("password hashing queue is full; shedding the request");
            observe::count(observe::HASH_SHED, None);
            return Err(busy());
        };
        let queued = std::time::Instant::now();
        observe::gauge(observe::HASH_QUEUE_DEPTH, self.in_flight() as f64);
        let running = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .map_err(SentriError::internal)?;
        observe::histogram(observe::HASH_WAIT, queued.elapsed().as_secs_f64());
        let inner = Arc::clone(&self.inner);
        let res = tokio::task::spawn_blocking(move || {
            let _permits = (admitted, running);
            work(&inner)
        })
        .await
        .map_err(SentriError::internal);
        observe::gauge(observe::HASH_QUEUE_DEPTH, self.in_flight() as f64);
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    fn hasher() -> PasswordHasher {
        PasswordHasher::new(4).unwrap()
    }

    #[tokio::test]
    async fn round_trip_and_wrong_password() {
        let h = hasher();
        for pw in ["", "hunter2", "pässwörd ✓", &"a".repeat(71)] {
            let hash = h.hash(pw).await.unwrap();
            assert!(hash.starts_with("$2b$04$"), "{hash}");
            assert!(h.verify(pw, &hash).await.unwrap());
            assert!(!h.verify("wrong", &hash).await.unwrap());
        }
    }

    #[tokio::test]
    async fn long_passwords_sharing_72_bytes_are_distinct() {
        let h = hasher();
        let prefix = "p".repeat(72);
        let a = format!("{prefix}{}", "a".repeat(28));
        let b = format!("{prefix}{}", "b".repeat(28));
        assert_eq!(a.len(), 100);
        let hash_a = h.hash(&a).await.unwrap();
        assert!(hash_a.starts_with(PREHASH_PREFIX));
        assert!(h.verify(&a, &hash_a).await.unwrap());
        assert!(!h.verify(&b, &hash_a).await.unwrap());
        assert!(!h.verify(&prefix, &hash_a).await.unwrap());
    }

    #[tokio::test]
    async fn exactly_72_bytes_is_prehashed_and_verifies() {
        let h = hasher();
        let pw = "x".repeat(72);
        let hash = h.hash(&pw).await.unwrap();
        assert!(hash.starts_with(PREHASH_PREFIX));
        assert!(h.verify(&pw, &hash).await.unwrap());
        // A plain (e.g. TypeScript-made) hash of a 72-byte password still verifies, and
        // asks for an upgrade, as does a longer password sharing those 72 bytes (the
        // other library read only those).
        let plain = bcrypt::hash(&pw, 4).unwrap();
        assert_eq!(
            h.check(&pw, &plain).await.unwrap(),
            PasswordCheck::MatchNeedsUpgrade
        );
        assert_eq!(
            h.check(&format!("{pw}y"), &plain).await.unwrap(),
            PasswordCheck::MatchNeedsUpgrade
        );
        assert_eq!(
            h.check(&"x".repeat(71), &plain).await.unwrap(),
            PasswordCheck::Mismatch
        );
    }

    #[tokio::test]
    async fn kilobyte_password_works() {
        let h = hasher();
        let pw: String = (0..1024)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let hash = h.hash(&pw).await.unwrap();
        assert!(h.verify(&pw, &hash).await.unwrap());
        let mut other = pw.clone();
        other.replace_range(1023.., "!");
        assert!(!h.verify(&other, &hash).await.unwrap());
    }

    #[tokio::test]
    async fn prehash_string_does_not_verify_against_long_hash() {
        let h = hasher();
        let pw = "L".repeat(200);
        let hash = h.hash(&pw).await.unwrap();
        let pre = prehash(pw.as_bytes());
        assert_eq!(pre.len(), 44);
        assert!(!h.verify(&pre, &hash).await.unwrap());
        // Nor does the inner bcrypt hash, stripped of its prefix, accept the password.
        let inner = hash.strip_prefix(PREHASH_PREFIX).unwrap();
        assert!(!h.verify(&pw, inner).await.unwrap());
        // (The inner hash is a plain bcrypt of the pre-hash: only the prefix routes to it.)
        assert!(h.verify(&pre, inner).await.unwrap());
    }

    #[tokio::test]
    async fn malformed_hashes_are_false_not_errors_and_cost_one_bcrypt() {
        let h = hasher();
        for bad in [
            "",
            "not a hash",
            "$2b$04$short",
            "$sentri-sha256$",
            "$sentri-sha256$garbage",
            "$2b$99$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz01234",
            "$2b$04$ééééééééééééééééééééééééééééééééééééééééééééééééééééé",
            &"é".repeat(30),
            "$sentri-sha256$$2b$04$ééééééééééééééééééééééééééééééééééééééééééééééééééééé",
        ] {
            let before = h.bcrypt_runs();
            assert!(!h.verify("password", bad).await.unwrap(), "{bad}");
            assert!(!h.verify(&"p".repeat(100), bad).await.unwrap(), "{bad}");
            assert_eq!(h.bcrypt_runs(), before + 2, "{bad}");
        }
    }

    #[test]
    fn cost_out_of_range_is_configuration_error() {
        for cost in [0, 3, 32, 100] {
            assert_eq!(
                PasswordHasher::new(cost).unwrap_err().code(),
                &ErrorCode::ConfigurationError
            );
        }
        let h = PasswordHasher::new(31).unwrap();
        assert_eq!(
            format!("{:?}", PasswordHasher::with_queue_limit(31, 3).unwrap()),
            "PasswordHasher { cost: 31, max_queue: 3 }"
        );
        assert_eq!(h.queue_limit(), DEFAULT_QUEUE_PER_CORE * h.concurrency());
    }

    #[test]
    fn dummy_hash_is_well_formed_at_every_cost() {
        for cost in 4..=31 {
            let h = PasswordHasher::new(cost).unwrap();
            let dummy = &h.inner.dummy;
            assert_eq!(bcrypt_cost(dummy), Some(cost));
            assert_eq!(dummy.parse::<bcrypt::HashParts>().unwrap().get_cost(), cost);
        }
    }

    #[tokio::test]
    async fn verify_dummy_runs_one_bcrypt_at_the_configured_cost() {
        let h = hasher();
        for pw in ["whatever", &"w".repeat(100)] {
            let before = h.bcrypt_runs();
            h.verify_dummy(pw).await.unwrap();
            assert_eq!(h.bcrypt_runs(), before + 1);
        }
        assert!(h.inner.dummy.starts_with("$2b$04$"));
        assert!(
            h.inner
                .dummy_for(&"w".repeat(72))
                .starts_with(PREHASH_PREFIX)
        );
    }
}
