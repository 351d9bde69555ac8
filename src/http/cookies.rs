//! Reading the token cookies and the bearer header.

use axum::http::{HeaderMap, header};

/// Longest cookie value read (a token is refused anyway above 8 KiB).
const MAX_COOKIE_VALUE: usize = 8 * 1024;

/// The value of the first cookie named `name` in the request's `Cookie` headers.
///
/// Values are taken verbatim (tokens are base64url: no percent-decoding). When a name
/// appears twice the first one wins. Oversized values are ignored.
pub fn read_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else {
            continue;
        };
        for pair in value.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=')
                && k.trim() == name
            {
                let v = v.trim().trim_matches('"');
                if v.is_empty() || v.len() > MAX_COOKIE_VALUE {
                    return None;
                }
                return Some(v);
            }
        }
    }
    None
}
/// Largest `Authorization` header read.
const MAX_AUTHORIZATION: usize = 16 * 1024;

/// The bearer token of an `Authorization: Bearer <token>` header (scheme matched
/// case-insensitively, RFC 7235). `Err(())` for a bearer header that is malformed
/// (several headers, several tokens, oversized); `Ok(None)` when there is none.
#[allow(clippy::result_unit_err)]
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, ()> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(());
    }
    let bytes = value.as_bytes();
    if bytes.len() < 7 || !bytes[..7].eq_ignore_ascii_case(b"bearer ") {
        // Another scheme (Basic, …): not ours.
        return Ok(None);
    }
    if bytes.len() > MAX_AUTHORIZATION {
        return Err(());
    }
    let token = bytes[7..].trim_ascii();
    // One branch-free pass (it vectorises): every byte visible ASCII but `,` (so no
    // space, tab, control or non-ASCII byte, and no second credential).
    let clean = token
        .iter()
        .fold(true, |ok, &b| ok & (0x21..0x7f).contains(&b) & (b != b','));
    if token.is_empty() || !clean {
        return Err(());
    }
    std::str::from_utf8(token).map(Some).map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn reads_first_cookie_of_a_name() {
        let h = headers(&[("cookie", "a=1; refresh_token=xyz; refresh_token=other")]);
        assert_eq!(read_cookie(&h, "refresh_token"), Some("xyz"));
        assert_eq!(read_cookie(&h, "missing"), None);
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Bearer abc")])),
            Ok(Some("abc"))
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "bearer abc")])),
            Ok(Some("abc"))
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Basic abc")])),
            Ok(None)
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Bearer a b")])),
            Err(())
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Bearer ")])),
            Err(())
        );
        assert_eq!(
            bearer_token(&headers(&[
                ("authorization", "Bearer a"),
                ("authorization", "Bearer b")
            ])),
            Err(())
        );
        assert_eq!(bearer_token(&HeaderMap::new()), Ok(None));
    }
}
