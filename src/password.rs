//! Password hashing (bcrypt on the blocking pool).
//!
//! bcrypt reads at most 72 bytes of its input; sentri never truncates silently. The
//! stored hash says which of two schemes was used:
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
//! For compatibility, an unprefixed hash checked against a presented password of exactly
//! 72 bytes uses bcrypt's regular verify (72 bytes fit entirely, nothing is dropped but
//! the terminating NUL); a presented password over 72 bytes never matches an unprefixed
//! hash.
//!
//! All bcrypt work runs in `tokio::task::spawn_blocking`.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tokio::sync::{OnceCell, Semaphore};

use crate::error::{Result, SentriError};

/// Prefix of pre-hashed (long password) hashes.
const PREHASH_PREFIX: &str = "$sentri-sha256$";
/// Domain separation label of the pre-hash.
const PREHASH_LABEL: &[u8] = b"sentri-prehash-v1";
/// Passwords of this many bytes or more are pre-hashed (bcrypt's non-truncating API
/// accepts at most 71 bytes, as it counts the terminating NUL).
const PREHASH_FROM: usize = 72;
/// The password behind the dummy hash (its value does not matter).
const DUMMY_PASSWORD: &str = "sentri-dummy-password-for-timing";

/// Hashes and verifies passwords with bcrypt. Cheap to clone; `Debug` shows the cost.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let hasher = sentri::password::PasswordHasher::new(4)?;
/// let hash = hasher.hash("correct horse").await?;
/// assert!(hasher.verify("correct horse", &hash).await?);
/// assert!(!hasher.verify("wrong", &hash).await?);
/// # Ok::<(), sentri::SentriError>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

struct Inner {
    cost: u32,
    dummy: OnceCell<String>,
    /// One permit per core the process may run on: at most that many hashes run at
    /// once. bcrypt is pure CPU work, so more concurrent hashes do not raise login
    /// throughput; they only crowd out the async workers (with 8 hashes on the one core
    /// of a pinned server, a worker got ~1/9 of the CPU and p99 of every other route
    /// grew ~6x). Extra requests wait in FIFO order instead.
    permits: Arc<Semaphore>,
}

impl fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("cost", &self.inner.cost)
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

fn hash_blocking(password: &str, cost: u32) -> Result<String> {
    let bytes = password.as_bytes();
    if bytes.len() >= PREHASH_FROM {
        let h = bcrypt::non_truncating_hash(prehash(bytes), cost).map_err(SentriError::internal)?;
        Ok(format!("{PREHASH_PREFIX}{h}"))
    } else {
        bcrypt::non_truncating_hash(bytes, cost).map_err(SentriError::internal)
    }
}

fn verify_blocking(password: &str, stored: &str) -> bool {
    let bytes = password.as_bytes();
    let result = if let Some(inner) = stored.strip_prefix(PREHASH_PREFIX) {
        bcrypt::non_truncating_verify(prehash(bytes), inner)
    } else if bytes.len() > PREHASH_FROM {
        // Never truncate: a long password cannot match a plain bcrypt hash.
        return false;
    } else if bytes.len() == PREHASH_FROM {
        // 72 bytes fit in bcrypt's input entirely (only the NUL terminator is dropped).
        bcrypt::verify(bytes, stored)
    } else {
        bcrypt::non_truncating_verify(bytes, stored)
    };
    match result {
        Ok(ok) => ok,
        Err(bcrypt::BcryptError::Truncation(_)) => false,
        Err(_) => {
            tracing::warn!("stored password hash is malformed; treating as a mismatch");
            false
        }
    }
}

impl PasswordHasher {
    /// A hasher with bcrypt `cost` (4..=31; 10–12 for production).
    pub fn new(cost: u32) -> Result<Self> {
        if !(4..=31).contains(&cost) {
            return Err(SentriError::configuration(
                "bcrypt cost must be between 4 and 31",
            ));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                cost,
                dummy: OnceCell::new(),
                permits: Arc::new(Semaphore::new(
                    std::thread::available_parallelism().map_or(1, |n| n.get()),
                )),
            }),
        })
    }

    /// The bcrypt cost.
    pub fn cost(&self) -> u32 {
        self.inner.cost
    }

    /// Hashes `password` (see the module docs for the scheme).
    pub async fn hash(&self, password: &str) -> Result<String> {
        let password = password.to_owned();
        let cost = self.inner.cost;
        self.run_blocking(move || hash_blocking(&password, cost))
            .await?
    }

    /// Runs bcrypt work on the blocking pool once a permit is free; the permit is held
    /// by the blocking task, so it is released when the work ends even if the caller
    /// went away.
    async fn run_blocking<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(SentriError::internal)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(SentriError::internal)
    }

    /// `true` when `password` matches the stored `hash`. A malformed stored hash is
    /// `Ok(false)` (logged at warn, without the hash).
    pub async fn verify(&self, password: &str, hash: &str) -> Result<bool> {
        let password = password.to_owned();
        let hash = hash.to_owned();
        self.run_blocking(move || verify_blocking(&password, &hash))
            .await
    }

    /// Spends the time of a real verification (against a dummy hash of the same cost),
    /// so that an unknown user takes as long as a wrong password.
    pub async fn verify_dummy(&self, password: &str) {
        let cost = self.inner.cost;
        let dummy = self
            .inner
            .dummy
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || hash_blocking(DUMMY_PASSWORD, cost))
                    .await
                    .map_err(SentriError::internal)?
            })
            .await;
        match dummy {
            Ok(dummy) => {
                let _ = self.verify(password, dummy).await;
            }
            Err(err) => tracing::warn!(error = %err, "could not compute the dummy password hash"),
        }
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
        // A plain (e.g. TypeScript-made) hash of a 72-byte password still verifies,
        // but a longer password sharing those 72 bytes does not.
        let plain = bcrypt::hash(&pw, 4).unwrap();
        assert!(h.verify(&pw, &plain).await.unwrap());
        assert!(!h.verify(&format!("{pw}y"), &plain).await.unwrap());
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
    async fn malformed_hashes_are_false_not_errors() {
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
            assert!(!h.verify("password", bad).await.unwrap(), "{bad}");
            assert!(!h.verify(&"p".repeat(100), bad).await.unwrap(), "{bad}");
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
        assert_eq!(format!("{h:?}"), "PasswordHasher { cost: 31 }");
    }

    #[tokio::test]
    async fn verify_dummy_uses_same_cost() {
        let h = hasher();
        h.verify_dummy("whatever").await;
        h.verify_dummy(&"w".repeat(100)).await;
        let dummy = h.inner.dummy.get().unwrap();
        assert!(dummy.starts_with("$2b$04$"));
    }
}
