//! The one copy of each small crypto and redaction helper: SHA-256, random tokens,
//! constant-time comparison, URL and string redaction.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

/// Hex SHA-256 of `input` (how refresh-token ids and other full-entropy secrets are
/// stored).
pub fn sha256_hex(input: &str) -> String {
    use std::fmt::Write;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, input.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest.as_ref() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// SHA-256 over a domain label and parts, base64url without padding.
pub fn sha256_b64(label: &[u8], parts: &[&[u8]]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(label);
    for part in parts {
        ctx.update(part);
    }
    URL_SAFE_NO_PAD.encode(ctx.finish().as_ref())
}

/// `n` random bytes from the system RNG, base64url without padding.
pub fn random_token(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        // The system RNG does not fail in practice; fall back to v4 UUIDs (also drawn
        // from the OS RNG) rather than panicking.
        for chunk in bytes.chunks_mut(16) {
            let id = uuid::Uuid::new_v4();
            chunk.copy_from_slice(&id.as_bytes()[..chunk.len()]);
        }
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Compares secrets in constant time (over their SHA-256 digests, so the length of the
/// expected value does not leak either).
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    let da = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, a);
    let db = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b);
    bool::from(da.as_ref().ct_eq(db.as_ref()))
}

/// `scheme://user:pass@host/db?q` → `scheme://***@host/db?***`: a URL fit for `Debug`
/// and logs (no credentials, no query string, which may carry them).
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let Some(scheme_end) = url.find("://") else {
        return Cow::Borrowed("***");
    };
    let (scheme, rest) = (&url[..scheme_end], &url[scheme_end + 3..]);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (path, query) = match tail.find('?') {
        Some(q) => (&tail[..q], true),
        None => (tail, false),
    };
    let host = authority.rfind('@').map(|at| &authority[at + 1..]);
    if host.is_none() && !query {
        return Cow::Borrowed(url);
    }
    let mut out = format!("{scheme}://");
    if let Some(host) = host {
        out.push_str("***@");
        out.push_str(host);
    } else {
        out.push_str(authority);
    }
    out.push_str(path);
    if query {
        out.push_str("?***");
    }
    Cow::Owned(out)
}

/// Cuts a string to at most `max` bytes on a character boundary.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_userinfo_and_query() {
        assert_eq!(
            redact_url("redis://user:pw@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redact_url("redis://:pw@host?x=1"), "redis://***@host?***");
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
        assert_eq!(redact_url("not a url"), "***");
    }

    #[test]
    fn clip_respects_char_boundaries() {
        assert_eq!(clip("héllo", 2), "h");
        assert_eq!(clip("abc", 10), "abc");
    }

    #[test]
    fn secrets_compare() {
        assert!(secrets_equal(b"abc", b"abc"));
        assert!(!secrets_equal(b"abc", b"abd"));
        assert_eq!(random_token(32).len(), 43);
        assert_ne!(random_token(32), random_token(32));
        assert_eq!(sha256_hex("").len(), 64);
    }
}
