//! Cross-origin request protection for cookie-authenticated requests, after Go's
//! `net/http.CrossOriginProtection`.
//!
//! A browser attaches cookies to requests that other sites make it send; `SameSite`
//! stops that only across *sites*, and a sibling subdomain is the same site. So when a
//! request is authenticated by a cookie and its method is unsafe (anything but `GET`,
//! `HEAD`, `OPTIONS`), sentri checks where it came from:
//!
//! 1. an `Origin` in `trusted_origins` passes;
//! 2. else `Sec-Fetch-Site: same-origin` or `none` passes, any other value
//!    (`same-site`, `cross-site`) is refused;
//! 3. else (an older browser, or not a browser) no `Origin` passes, and an `Origin`
//!    whose host is the request's `Host` passes; any other `Origin` is refused.
//!
//! Refusals are 403 FORBIDDEN. Requests authenticated by `Authorization: Bearer` are
//! never affected: browsers do not attach that header on their own.

use axum::http::{HeaderMap, Method, header};

use crate::core::error::{Result, SentriError};

/// The configured trusted origins, normalised (lower-case, no trailing slash).
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedOrigins(Vec<String>);

impl TrustedOrigins {
    /// Checks and normalises `origins` (`scheme://host[:port]`, nothing more).
    pub(crate) fn new(origins: &[String]) -> Result<Self> {
        let mut out = Vec::with_capacity(origins.len());
        for origin in origins {
            let o = origin.trim().trim_end_matches('/').to_ascii_lowercase();
            let ok = o.split_once("://").is_some_and(|(scheme, host)| {
                matches!(scheme, "http" | "https") && !host.is_empty() && !host.contains('/')
            });
            if !ok {
                return Err(SentriError::configuration(
                    "trusted_origins: each entry must be scheme://host[:port]",
                ));
            }
            out.push(o);
        }
        Ok(Self(out))
    }

    fn contains(&self, origin: &str) -> bool {
        self.0.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }
}

/// `true` for methods that change nothing (RFC 9110 §9.2.1).
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Refuses an unsafe cookie-authenticated request that another origin made a browser
/// send (see the module docs).
pub(crate) fn check(headers: &HeaderMap, method: &Method, trusted: &TrustedOrigins) -> Result<()> {
    if is_safe(method) {
        return Ok(());
    }
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("null"));
    if origin.is_some_and(|o| trusted.contains(o)) {
        return Ok(());
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        return match site.as_bytes() {
            b"same-origin" | b"none" => Ok(()),
            _ => Err(refused()),
        };
    }
    match origin {
        None => Ok(()),
        Some(origin) if same_host(origin, headers) => Ok(()),
        Some(_) => Err(refused()),
    }
}

/// `true` when the host (and port) of `origin` is the request's `Host`.
fn same_host(origin: &str, headers: &HeaderMap) -> bool {
    let Some((_, host)) = origin.split_once("://") else {
        return false;
    };
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| !host.is_empty() && h.eq_ignore_ascii_case(host))
}

fn refused() -> SentriError {
    SentriError::forbidden("Cross-origin request refused")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_matrix() {
        let none = TrustedOrigins::default();
        let trusted = TrustedOrigins::new(&["https://app.example.com/".into()]).unwrap();
        let post = Method::POST;
        let host = ("host", "api.example.com");
        let ok = |h: &[(&'static str, &'static str)], t: &TrustedOrigins| {
            check(&headers(h), &post, t).is_ok()
        };
        assert!(ok(&[host], &none), "no headers: not a browser");
        assert!(ok(&[host, ("sec-fetch-site", "same-origin")], &none));
        assert!(ok(&[host, ("sec-fetch-site", "none")], &none));
        assert!(!ok(&[host, ("sec-fetch-site", "same-site")], &none));
        assert!(!ok(&[host, ("sec-fetch-site", "cross-site")], &none));
        assert!(ok(&[host, ("origin", "https://api.example.com")], &none));
        assert!(!ok(&[host, ("origin", "https://evil.example.com")], &none));
        assert!(!ok(&[host, ("origin", "null")], &none));
        assert!(ok(
            &[
                host,
                ("origin", "https://app.example.com"),
                ("sec-fetch-site", "same-site")
            ],
            &trusted
        ));
        assert!(
            check(
                &headers(&[host, ("sec-fetch-site", "cross-site")]),
                &Method::GET,
                &none
            )
            .is_ok()
        );
        assert!(TrustedOrigins::new(&["app.example.com".into()]).is_err());
        assert!(TrustedOrigins::new(&["https://a.com/path".into()]).is_err());
    }
}
