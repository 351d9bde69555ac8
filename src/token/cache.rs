//! The verified-token cache: the exact bytes of an access token that passed
//! verification → its claims, so a repeated token skips the signature check.
//!
//! What makes it safe:
//! - the key is the whole token, compared byte for byte: a token that differs in one byte
//!   (another signature, another claim) is a miss and goes through full verification;
//! - only tokens that verified are stored, and each entry dies at the token's `exp`
//!   (plus the leeway verification allows): a hit re-checks `exp` against the clock, and
//!   the cache evicts the entry then on its own;
//! - the cache belongs to one key set (a [`Verifier`](super::Verifier)): replacing the
//!   keys drops it unless every key it verified with is still there, so a token of a
//!   retired or revoked key never hits;
//! - it is bounded in bytes (token + claims + a per-entry overhead estimate).
//!
//! The session check and the revocation hook run after it on every request, cached or not.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Equivalent;
use moka::Expiry;

use super::AccessClaims;

/// Default bound of the cache, in bytes (see [`TokenOptions::verified_cache_bytes`](super::TokenOptions::verified_cache_bytes)).
pub const DEFAULT_VERIFIED_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// What moka, the `Arc` and the map spend per entry beyond the token and claim bytes
/// (an estimate on the high side, so the byte bound holds for RSS too).
const ENTRY_OVERHEAD: usize = 256;

/// How many trailing bytes of a token are hashed: its signature's last bytes, which are
/// as good as random for every algorithm (hashing the whole token costs more than the
/// rest of a cache hit). Equality still compares every byte, and only tokens that
/// verified are ever inserted, so chosen collisions can only slow a lookup down.
const HASHED_TAIL: usize = 16;

fn hash_tail<H: Hasher>(token: &str, state: &mut H) {
    let bytes = token.as_bytes();
    state.write(&bytes[bytes.len().saturating_sub(HASHED_TAIL)..]);
}

/// A cached token: compared in full, hashed by its tail.
#[derive(Clone, PartialEq, Eq)]
struct TokenKey(Arc<str>);

impl Hash for TokenKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_tail(&self.0, state);
    }
}

/// A token looked up (no allocation): hashes and compares like [`TokenKey`].
struct Lookup<'a>(&'a str);

impl Hash for Lookup<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_tail(self.0, state);
    }
}

impl Equivalent<TokenKey> for Lookup<'_> {
    fn equivalent(&self, key: &TokenKey) -> bool {
        *self.0 == *key.0
    }
}

/// One cached verification: the claims and when they stop being acceptable.
struct Entry {
    claims: AccessClaims,
    /// `exp` + leeway, seconds since the epoch: the last second the token verifies.
    valid_until: i64,
}

/// Evicts an entry when its token expires.
struct UntilExp;

impl Expiry<TokenKey, Arc<Entry>> for UntilExp {
    fn expire_after_create(
        &self,
        _key: &TokenKey,
        value: &Arc<Entry>,
        _created_at: Instant,
    ) -> Option<Duration> {
        let left = value.valid_until.saturating_sub(super::now_secs()).max(0);
        Some(Duration::from_secs(u64::try_from(left).unwrap_or(0) + 1))
    }
}

/// A bounded map from verified access tokens to their claims.
pub(crate) struct VerifiedCache {
    map: moka::sync::Cache<TokenKey, Arc<Entry>>,
    leeway: i64,
}

fn weight(token: &str, claims: &AccessClaims) -> u32 {
    let strings = [&claims.sub, &claims.identifier, &claims.sid, &claims.jti];
    let mut bytes = token.len() + ENTRY_OVERHEAD + strings.iter().map(|s| s.len()).sum::<usize>();
    bytes += claims.roles.iter().map(|r| r.len() + 24).sum::<usize>();
    bytes +=
        claims.iss.as_ref().map_or(0, String::len) + claims.aud.as_ref().map_or(0, String::len);
    bytes += claims.wid.as_ref().map_or(0, String::len);
    bytes += claims
        .amr
        .as_ref()
        .map_or(0, |a| a.iter().map(|r| r.len() + 24).sum());
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

impl VerifiedCache {
    /// A cache of at most `max_bytes`; `None` when `max_bytes` is 0 (caching off).
    pub(crate) fn new(max_bytes: u64, leeway: Duration) -> Option<Self> {
        if max_bytes == 0 {
            return None;
        }
        let map = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|token: &TokenKey, e: &Arc<Entry>| weight(&token.0, &e.claims))
            .expire_after(UntilExp)
            .build();
        Some(Self {
            map,
            leeway: i64::try_from(leeway.as_secs()).unwrap_or(i64::MAX),
        })
    }

    /// The claims of `token` if it verified before and is still within `exp` at `now`
    /// (seconds). `Err(())`: cached but expired (the caller answers TOKEN_EXPIRED, as a
    /// full verification would).
    pub(crate) fn get(&self, token: &str, now: i64) -> Option<Result<AccessClaims, ()>> {
        let entry = self.map.get(&Lookup(token))?;
        if now > entry.valid_until {
            self.map.invalidate(&Lookup(token));
            return Some(Err(()));
        }
        Some(Ok(entry.claims.clone()))
    }

    /// Remembers a token that just verified.
    pub(crate) fn insert(&self, token: &str, claims: &AccessClaims) {
        let entry = Entry {
            claims: claims.clone(),
            valid_until: claims.exp.saturating_add(self.leeway),
        };
        self.map.insert(TokenKey(token.into()), Arc::new(entry));
    }

    /// The sum of the weights of the entries (bytes, estimated); for tests and benches.
    pub(crate) fn weighted_bytes(&self) -> u64 {
        self.map.run_pending_tasks();
        self.map.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(jti: &str, exp: i64) -> AccessClaims {
        AccessClaims {
            sub: "u1".into(),
            identifier: "ada@example.com".into(),
            roles: vec!["user".into()],
            sid: "s1".into(),
            iat: exp - 900,
            exp,
            jti: jti.into(),
            iss: None,
            aud: None,
            amr: None,
            aal: None,
            auth_time: None,
            av: None,
            wid: None,
        }
    }

    #[test]
    fn a_hit_is_the_exact_token_only() {
        let cache = VerifiedCache::new(1 << 20, Duration::from_secs(5)).expect("on");
        cache.insert("a.b.c", &claims("j1", 1_000));
        assert_eq!(cache.get("a.b.c", 900), Some(Ok(claims("j1", 1_000))));
        assert!(cache.get("a.b.d", 900).is_none());
        assert!(cache.get("a.b.c ", 900).is_none());
        assert!(cache.get("A.b.c", 900).is_none());
        // Same tail (same hash), another token: compared in full, a miss.
        let long = format!("{}.b.c", "x".repeat(40));
        let other = format!("{}.b.c", "y".repeat(40));
        cache.insert(&long, &claims("j2", 1_000));
        assert_eq!(cache.get(&long, 900), Some(Ok(claims("j2", 1_000))));
        assert!(cache.get(&other, 900).is_none());
    }

    #[test]
    fn an_entry_dies_at_exp_plus_leeway() {
        let cache = VerifiedCache::new(1 << 20, Duration::from_secs(5)).expect("on");
        cache.insert("t", &claims("j1", 1_000));
        assert!(matches!(cache.get("t", 1_005), Some(Ok(_))));
        assert_eq!(cache.get("t", 1_006), Some(Err(())));
        // Expired entries are dropped, not served again.
        assert!(cache.get("t", 900).is_none());
    }

    #[test]
    fn zero_bytes_turns_it_off() {
        assert!(VerifiedCache::new(0, Duration::ZERO).is_none());
    }

    #[test]
    fn the_byte_bound_holds() {
        let bound = 64 * 1024;
        let cache = VerifiedCache::new(bound, Duration::ZERO).expect("on");
        let far = super::super::now_secs() + 3_600;
        for i in 0..2_000 {
            let token = format!("{i:0>400}");
            cache.insert(&token, &claims(&format!("jti-{i}"), far));
        }
        let used = cache.weighted_bytes();
        assert!(used <= bound, "{used} bytes > bound {bound}");
        assert!(used > bound / 2, "{used} bytes: the cache should fill up");
    }
}
