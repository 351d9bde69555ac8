//! Secrets at rest: AES-256-GCM (through `aws-lc-rs`) under a key-encryption key that has
//! an id, so the key can rotate while older values stay readable.
//!
//! A sealed value is text, `v1.<kid>.<base64url(nonce ‖ ciphertext ‖ tag)>`, fit for any
//! text column. The caller passes associated data (e.g. `"totp:" + user id`) that binds the
//! value to its row: a sealed value copied to another row does not open.
//!
//! ```
//! use sentri::core::seal::Sealer;
//! let sealer = Sealer::new("k1", [7u8; 32]).unwrap();
//! let sealed = sealer.seal(b"otp secret", b"totp:user-1").unwrap();
//! assert_eq!(sealer.open(&sealed, b"totp:user-1").unwrap(), b"otp secret");
//! assert!(sealer.open(&sealed, b"totp:user-2").is_err());
//! ```

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::error::{Result, SentriError};

const VERSION: &str = "v1";

/// One key-encryption key and its id.
struct Kek {
    id: String,
    key: LessSafeKey,
}

/// Seals and opens secrets at rest. Holds the current key (used to seal) and older keys
/// (only used to open). Never prints key material in `Debug`.
pub struct Sealer {
    current: Kek,
    older: Vec<Kek>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("current_kid", &self.current.id)
            .field(
                "older_kids",
                &self.older.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn kek(id: &str, key: [u8; 32]) -> Result<Kek> {
    if id.is_empty() || id.contains('.') {
        return Err(SentriError::configuration(
            "key-encryption key id: must be non-empty and contain no '.'",
        ));
    }
    let unbound = UnboundKey::new(&AES_256_GCM, &key)
        .map_err(|_| SentriError::configuration("key-encryption key: rejected by AES-256-GCM"))?;
    Ok(Kek {
        id: id.to_owned(),
        key: LessSafeKey::new(unbound),
    })
}

fn sealing_error(what: &str) -> SentriError {
    SentriError::configuration(format!("sealed secret: {what}"))
}

impl Sealer {
    /// A sealer whose current key-encryption key is `key`, named `kid` (short, no dots).
    pub fn new(kid: &str, key: [u8; 32]) -> Result<Self> {
        Ok(Self {
            current: kek(kid, key)?,
            older: Vec::new(),
        })
    }

    /// A sealer from a base64 (standard or URL-safe) 32-byte key, as kept in configuration.
    pub fn from_base64(kid: &str, key_b64: &str) -> Result<Self> {
        Self::new(kid, decode_key(key_b64)?)
    }

    /// Adds an older key that can still open values sealed under it (rotation).
    pub fn with_older(mut self, kid: &str, key: [u8; 32]) -> Result<Self> {
        self.older.push(kek(kid, key)?);
        Ok(self)
    }

    /// The id of the key new values are sealed with.
    pub fn current_kid(&self) -> &str {
        &self.current.id
    }

    /// Encrypts `plaintext` bound to `aad` under the current key, with a fresh random nonce.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| sealing_error("no randomness"))?;
        let mut buf = plaintext.to_vec();
        self.current
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| sealing_error("encryption failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!(
            "{VERSION}.{}.{}",
            self.current.id,
            URL_SAFE_NO_PAD.encode(out)
        ))
    }

    /// Decrypts a value made by [`seal`](Self::seal) with the same `aad`. Fails (without
    /// saying why in detail) for an unknown key id, a tampered value or another `aad`.
    pub fn open(&self, sealed: &str, aad: &[u8]) -> Result<Vec<u8>> {
        let mut parts = sealed.splitn(3, '.');
        let (Some(VERSION), Some(kid), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(sealing_error("malformed value"));
        };
        let key = self.key_for(kid).ok_or_else(|| {
            sealing_error("unknown key id (is the key-encryption key configured?)")
        })?;
        let raw = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| sealing_error("malformed value"))?;
        if raw.len() < NONCE_LEN {
            return Err(sealing_error("malformed value"));
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| sealing_error("malformed value"))?;
        let mut buf = ciphertext.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| sealing_error("does not open with the configured key"))?;
        Ok(plain.to_vec())
    }

    /// `true` when `sealed` was sealed under an older key (re-seal it to rotate).
    pub fn needs_reseal(&self, sealed: &str) -> bool {
        sealed.split('.').nth(1) != Some(self.current.id.as_str())
    }

    fn key_for(&self, kid: &str) -> Option<&LessSafeKey> {
        std::iter::once(&self.current)
            .chain(&self.older)
            .find(|k| k.id == kid)
            .map(|k| &k.key)
    }
}

/// A 32-byte key from base64 (standard or URL-safe, padded or not).
pub fn decode_key(key_b64: &str) -> Result<[u8; 32]> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE};
    let trimmed = key_b64.trim();
    let bytes = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(trimmed).ok())
        .ok_or_else(|| SentriError::configuration("key-encryption key: not base64"))?;
    bytes
        .try_into()
        .map_err(|_| SentriError::configuration("key-encryption key: must be 32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let s = Sealer::new("k1", [1; 32]).unwrap();
        let sealed = s.seal(b"secret", b"row-1").unwrap();
        assert!(!sealed.contains("secret"));
        assert_eq!(s.open(&sealed, b"row-1").unwrap(), b"secret");
        assert!(s.open(&sealed, b"row-2").is_err());
        assert_ne!(
            sealed,
            s.seal(b"secret", b"row-1").unwrap(),
            "fresh nonce each time"
        );
    }

    #[test]
    fn tampering_and_wrong_key_fail() {
        let s = Sealer::new("k1", [1; 32]).unwrap();
        let sealed = s.seal(b"secret", b"").unwrap();
        let mut bytes = sealed.clone().into_bytes();
        let last = bytes.len() - 1;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert!(s.open(std::str::from_utf8(&bytes).unwrap(), b"").is_err());
        assert!(
            Sealer::new("k1", [2; 32])
                .unwrap()
                .open(&sealed, b"")
                .is_err()
        );
        assert!(
            Sealer::new("k2", [1; 32])
                .unwrap()
                .open(&sealed, b"")
                .is_err()
        );
        assert!(s.open("v1.k1", b"").is_err());
        assert!(s.open("garbage", b"").is_err());
    }

    #[test]
    fn rotation_keeps_old_values_readable() {
        let old = Sealer::new("k1", [1; 32]).unwrap();
        let sealed = old.seal(b"secret", b"a").unwrap();
        let new = Sealer::new("k2", [2; 32])
            .unwrap()
            .with_older("k1", [1; 32])
            .unwrap();
        assert_eq!(new.open(&sealed, b"a").unwrap(), b"secret");
        assert!(new.needs_reseal(&sealed));
        assert!(!new.needs_reseal(&new.seal(b"x", b"a").unwrap()));
    }

    #[test]
    fn keys_from_config() {
        use base64::engine::general_purpose::STANDARD;
        let b64 = STANDARD.encode([9u8; 32]);
        assert!(Sealer::from_base64("k", &b64).is_ok());
        assert!(decode_key("short").is_err());
        assert!(Sealer::new("a.b", [0; 32]).is_err());
        assert!(decode_key(&STANDARD.encode([9u8; 16])).is_err());
    }
}
