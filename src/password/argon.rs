//! Argon2id hashes (RustCrypto `argon2`): PHC strings `$argon2id$v=19$m=…,t=…,p=…$salt$hash`.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{Error as PhcError, PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};

use super::PasswordCheck;
use crate::core::error::{Result, SentriError};

/// Prefix of every Argon2 PHC string (`$argon2id$`, `$argon2i$`, `$argon2d$`).
pub(super) const ARGON2_PREFIX: &str = "$argon2";
/// Salt of the dummy computation (its result is never used).
const DUMMY_SALT: &[u8; 16] = b"sentri-dummy-slt";

/// Argon2id cost parameters. The default is OWASP's recommendation: 19 MiB of memory,
/// 2 iterations, 1 lane.
///
/// ```
/// let params = sentri::password::Argon2Params::default();
/// assert_eq!((params.memory_kib, params.iterations, params.parallelism), (19_456, 2, 1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Argon2Params {
    /// Memory per hash in KiB (default 19 456 = 19 MiB).
    pub memory_kib: u32,
    /// Passes over the memory (default 2).
    pub iterations: u32,
    /// Lanes (default 1; sentri runs each hash on one blocking thread).
    pub parallelism: u32,
}

impl Default for Argon2Params {
    fn default() -> Self {
        Self {
            memory_kib: Params::DEFAULT_M_COST,
            iterations: Params::DEFAULT_T_COST,
            parallelism: Params::DEFAULT_P_COST,
        }
    }
}

impl Argon2Params {
    /// Parameters with `memory_kib` KiB, `iterations` passes and `parallelism` lanes;
    /// checked when the hasher is built.
    pub fn new(memory_kib: u32, iterations: u32, parallelism: u32) -> Self {
        Self {
            memory_kib,
            iterations,
            parallelism,
        }
    }

    /// `true` when a hash made with `other` is at least as costly in every parameter.
    fn covered_by(self, other: &Params) -> bool {
        other.m_cost() >= self.memory_kib
            && other.t_cost() >= self.iterations
            && other.p_cost() >= self.parallelism
    }
}

/// The configured Argon2id function.
#[derive(Clone)]
pub(super) struct Argon2id {
    params: Argon2Params,
    engine: Argon2<'static>,
}

impl Argon2id {
    /// Checks the parameters (CONFIGURATION_ERROR when the `argon2` crate refuses them).
    pub(super) fn new(params: Argon2Params) -> Result<Self> {
        let checked = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(|e| SentriError::configuration(format!("invalid Argon2id parameters: {e}")))?;
        Ok(Self {
            params,
            engine: Argon2::new(Algorithm::Argon2id, Version::V0x13, checked),
        })
    }

    pub(super) fn params(&self) -> Argon2Params {
        self.params
    }

    /// A fresh PHC string with a random salt.
    pub(super) fn hash(&self, password: &[u8]) -> Result<String> {
        self.engine
            .hash_password(password)
            .map(|h| h.to_string())
            .map_err(SentriError::internal)
    }

    /// One Argon2 computation at the configured cost whose result is discarded (the
    /// time of a check, for unknown users and malformed stored hashes).
    pub(super) fn dummy(&self, password: &[u8]) {
        let mut out = [0u8; 32];
        if self
            .engine
            .hash_password_into(password, DUMMY_SALT, &mut out)
            .is_err()
        {
            tracing::warn!("argon2 dummy computation failed");
        }
    }
}

/// Outcome of checking against a stored Argon2 hash: `None` when the stored hash is
/// malformed (no computation ran; the caller spends a dummy one).
///
/// `current` is the configured Argon2id (None when bcrypt is configured: every Argon2
/// hash then asks for a re-hash with bcrypt).
pub(super) fn check(
    current: Option<&Argon2id>,
    password: &[u8],
    stored: &str,
) -> Option<PasswordCheck> {
    let parsed = PasswordHash::new(stored).ok()?;
    let stored_params = Params::try_from(&parsed).ok()?;
    match Argon2::default().verify_password(password, &parsed) {
        Ok(()) => {}
        Err(PhcError::PasswordInvalid) => return Some(PasswordCheck::Mismatch),
        Err(_) => return None,
    }
    let current_setting = current.is_some_and(|c| {
        parsed.algorithm.as_str() == "argon2id"
            && parsed.version == Some(Version::V0x13 as u32)
            && c.params.covered_by(&stored_params)
    });
    Some(if current_setting {
        PasswordCheck::Match
    } else {
        PasswordCheck::MatchNeedsUpgrade
    })
}
