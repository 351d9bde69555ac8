//! The key format: `<prefix>_[<env>_]<43 base62 random><6 base62 CRC32>`.
//!
//! 43 base62 characters carry 256 bits of randomness (62^43 > 2^256). The checksum is
//! the CRC32 (IEEE) of everything before it, in 6 base62 digits, so a typo, a
//! truncation or a string from another issuer is refused without a lookup (the model
//! is GitHub's token format). It is not a security measure: anyone can compute it.

use crc::{CRC_32_ISO_HDLC, Crc};

const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Random characters in a key (256 bits).
pub(super) const BODY_LEN: usize = 43;
/// Checksum characters (62^6 > 2^32).
const CHECKSUM_LEN: usize = 6;
/// The longest prefix or environment tag.
pub(super) const MAX_TAG_LEN: usize = 16;

/// `true` for a prefix or environment tag: 1 to 16 lowercase ASCII letters and digits.
pub(super) fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= MAX_TAG_LEN
        && tag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The part of every key before the random body: `prefix_` or `prefix_env_`.
pub(super) fn lead(prefix: &str, env: Option<&str>) -> String {
    match env {
        Some(env) => format!("{prefix}_{env}_"),
        None => format!("{prefix}_"),
    }
}

/// A new key starting with `lead` (from [`lead`]). `None` only if the system RNG fails.
pub(super) fn generate(lead: &str) -> Option<String> {
    let mut key = String::with_capacity(lead.len() + BODY_LEN + CHECKSUM_LEN);
    key.push_str(lead);
    let mut buf = [0u8; 64];
    let mut have = 0;
    while have < BODY_LEN {
        aws_lc_rs::rand::fill(&mut buf).ok()?;
        // Rejection sampling: 248 = 4 × 62, so `b % 62` stays uniform.
        for b in buf.iter().filter(|b| **b < 248).take(BODY_LEN - have) {
            key.push(char::from(ALPHABET[usize::from(*b % 62)]));
            have += 1;
        }
    }
    let sum = checksum(&key);
    key.push_str(&sum);
    Some(key)
}

/// The CRC32 of `s` in [`CHECKSUM_LEN`] base62 digits.
fn checksum(s: &str) -> String {
    let mut n = u64::from(CRC32.checksum(s.as_bytes()));
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    out.iter().map(|b| char::from(*b)).collect()
}

/// `true` when `key` has the shape of a key starting with `lead` and its checksum
/// matches: the only checks made before any lookup.
pub(super) fn well_formed(key: &str, lead: &str) -> bool {
    let Some(rest) = key.strip_prefix(lead) else {
        return false;
    };
    if rest.len() != BODY_LEN + CHECKSUM_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let (signed, sum) = key.split_at(key.len() - CHECKSUM_LEN);
    // The checksum is no secret (anyone can compute it): a plain comparison.
    checksum(signed) == sum
}

/// The last four characters of a well-formed key (shown in listings).
pub(super) fn last_four(key: &str) -> &str {
    &key[key.len().saturating_sub(4)..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let lead = lead("sk", Some("live"));
        let a = generate(&lead).unwrap();
        let b = generate(&lead).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), "sk_live_".len() + BODY_LEN + CHECKSUM_LEN);
        assert!(well_formed(&a, &lead));
        assert!(!well_formed(&a, "sk_"), "another environment");
        assert!(!well_formed(&a[..a.len() - 1], &lead), "truncated");
        let mut typo = a.clone().into_bytes();
        typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
        assert!(!well_formed(&String::from_utf8(typo).unwrap(), &lead));
    }

    #[test]
    fn tags_are_lowercase_alphanumeric() {
        assert!(valid_tag("sk"));
        assert!(valid_tag("live2"));
        assert!(!valid_tag(""));
        assert!(!valid_tag("Sk"));
        assert!(!valid_tag("s_k"));
        assert!(!valid_tag(&"a".repeat(17)));
    }
}
