//! RFC 6238 time-based one-time passwords (RFC 4226 HOTP over a time step), with the
//! HMAC of `aws-lc-rs`, and the RFC 4648 base32 of authenticator apps.

use aws_lc_rs::hmac;

use crate::core::error::{Result, SentriError};

/// The HMAC of a TOTP (authenticator apps: SHA-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hash {
    Sha1,
    #[cfg(test)]
    Sha256,
    #[cfg(test)]
    Sha512,
}

impl Hash {
    fn algorithm(self) -> hmac::Algorithm {
        match self {
            Self::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            #[cfg(test)]
            Self::Sha256 => hmac::HMAC_SHA256,
            #[cfg(test)]
            Self::Sha512 => hmac::HMAC_SHA512,
        }
    }
}

/// The time step of sentri's codes, in seconds.
pub(crate) const STEP_SECS: i64 = 30;
/// Digits of sentri's codes.
pub(crate) const DIGITS: u32 = 6;

/// The HOTP value of `key` at `counter` (RFC 4226 §5.3, dynamic truncation).
pub(crate) fn hotp(hash: Hash, key: &[u8], counter: u64, digits: u32) -> String {
    let key = hmac::Key::new(hash.algorithm(), key);
    let tag = hmac::sign(&key, &counter.to_be_bytes());
    let mac = tag.as_ref();
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let bin = (u32::from(mac[offset] & 0x7f) << 24)
        | (u32::from(mac[offset + 1]) << 16)
        | (u32::from(mac[offset + 2]) << 8)
        | u32::from(mac[offset + 3]);
    let value = u64::from(bin) % 10u64.pow(digits);
    format!("{value:0width$}", width = digits as usize)
}

/// The time step that contains `unix_ms`.
pub(crate) fn step_at(unix_ms: i64) -> i64 {
    unix_ms.div_euclid(1000).div_euclid(STEP_SECS)
}

/// The code of `key` for time step `step` (sentri's parameters: SHA-1, 6 digits).
pub(crate) fn code_at_step(key: &[u8], step: i64) -> String {
    hotp(Hash::Sha1, key, u64::try_from(step).unwrap_or(0), DIGITS)
}

/// The step in `[now - skew, now + skew]`, newest first, whose code is `code` and which
/// is later than `last_used` (a step is accepted once). Compares in constant time.
pub(crate) fn matching_step(
    key: &[u8],
    code: &str,
    now_step: i64,
    skew: i64,
    last_used: i64,
) -> Option<i64> {
    let mut found = None;
    for step in (now_step - skew..=now_step + skew).rev() {
        let candidate = code_at_step(key, step);
        let equal = crate::core::crypto::secrets_equal(candidate.as_bytes(), code.as_bytes());
        if equal && step > last_used && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// The code of a base32 secret (as shown at enrolment) at `unix_secs`: SHA-1, 6 digits,
/// 30 s steps — what an authenticator app shows. For tests and tooling.
pub fn totp_code(secret_base32: &str, unix_secs: u64) -> Result<String> {
    let key = base32_decode(secret_base32)
        .ok_or_else(|| SentriError::validation("secret: not base32"))?;
    let step = i64::try_from(unix_secs).unwrap_or(i64::MAX) / STEP_SECS;
    Ok(code_at_step(&key, step))
}

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding.
pub(crate) fn base32_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in data {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// RFC 4648 base32, case-insensitive, padding and spaces ignored.
pub(crate) fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| !matches!(c, b'=' | b' ')) {
        let value = ALPHABET.iter().position(|a| *a == c.to_ascii_uppercase())?;
        buffer = (buffer << 5) | value as u32;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((buffer >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B: every time and algorithm, 8 digits.
    #[test]
    fn rfc6238_appendix_b_vectors() {
        let sha1 = b"12345678901234567890".as_slice();
        let sha256 = b"12345678901234567890123456789012".as_slice();
        let sha512 = b"1234567890123456789012345678901234567890123456789012345678901234".as_slice();
        let cases: [(u64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1_111_111_109, "07081804", "68084774", "25091201"),
            (1_111_111_111, "14050471", "67062674", "99943326"),
            (1_234_567_890, "89005924", "91819424", "93441116"),
            (2_000_000_000, "69279037", "90698825", "38618901"),
            (20_000_000_000, "65353130", "77737706", "47863826"),
        ];
        for (t, c1, c256, c512) in cases {
            let counter = t / 30;
            assert_eq!(hotp(Hash::Sha1, sha1, counter, 8), c1, "SHA1 at {t}");
            assert_eq!(
                hotp(Hash::Sha256, sha256, counter, 8),
                c256,
                "SHA256 at {t}"
            );
            assert_eq!(
                hotp(Hash::Sha512, sha512, counter, 8),
                c512,
                "SHA512 at {t}"
            );
        }
    }

    #[test]
    fn six_digit_codes_are_the_last_six_of_the_rfc_values() {
        let key = base32_encode(b"12345678901234567890");
        assert_eq!(totp_code(&key, 59).unwrap(), "287082");
        assert_eq!(totp_code(&key, 1_111_111_109).unwrap(), "081804");
    }

    #[test]
    fn base32_round_trips_and_matches_rfc4648() {
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32_decode("mzxw6ytboi======").unwrap(), b"foobar");
        for n in 0..25 {
            let data: Vec<u8> = (0..n).map(|i| (i * 37) as u8).collect();
            assert_eq!(base32_decode(&base32_encode(&data)).unwrap(), data);
        }
        assert!(base32_decode("not base32!").is_none());
    }

    #[test]
    fn the_window_and_the_last_used_step() {
        let key = b"12345678901234567890";
        let now = 1000;
        for (step, expect) in [(999, Some(999)), (1000, Some(1000)), (1001, Some(1001))] {
            assert_eq!(
                matching_step(key, &code_at_step(key, step), now, 1, 0),
                expect
            );
        }
        assert_eq!(matching_step(key, &code_at_step(key, 998), now, 1, 0), None);
        assert_eq!(
            matching_step(key, &code_at_step(key, 1002), now, 1, 0),
            None
        );
        assert_eq!(
            matching_step(key, &code_at_step(key, 1000), now, 1, 1000),
            None,
            "replay"
        );
        assert_eq!(
            matching_step(key, &code_at_step(key, 998), now, 2, 0),
            Some(998)
        );
    }
}
