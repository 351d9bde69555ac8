//! How tokens travel to clients: the cookie settings, `Set-Cookie` building, and the
//! `Transport` (cookies or bodies, with the CSRF rule for cookie-authenticated
//! requests). Server mode only.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use cookie::Cookie;

use super::cookies::read_cookie;
use super::csrf::{self, TrustedOrigins};
use super::{no_store, success, with_cookies};
use crate::core::error::{Result, SentriError};
use crate::core::principal::AuthResult;

/// How tokens travel between sentri and clients: cookies (as configured) or bodies,
/// with the CSRF rule for cookie-authenticated requests.
#[derive(Debug, Clone)]
pub(crate) struct Transport {
    pub(crate) cookie: Option<CookieConfig>,
    pub(crate) access_cookie: Option<AccessCookieConfig>,
    pub(crate) refresh_ttl: Duration,
    pub(crate) access_ttl: Duration,
    pub(crate) trusted_origins: TrustedOrigins,
}

impl Transport {
    /// Checks the cookie settings (`CONFIGURATION_ERROR`).
    pub(crate) fn check(&self) -> Result<()> {
        if let Some(c) = &self.cookie {
            check_cookie(
                &c.name,
                c.secure,
                c.same_site,
                &c.path,
                c.domain.as_deref(),
                "cookie",
            )?;
        }
        if let Some(c) = &self.access_cookie {
            let domain = c.domain.as_deref();
            check_cookie(
                &c.name,
                c.secure,
                c.same_site,
                &c.path,
                domain,
                "access_cookie",
            )?;
        }
        Ok(())
    }

    /// The `Set-Cookie` values of a new token pair.
    pub(crate) fn session_cookies(&self, res: &AuthResult) -> Vec<HeaderValue> {
        let refresh = self
            .cookie
            .as_ref()
            .and_then(|c| refresh_cookie(c, &res.refresh_token, self.refresh_ttl));
        let access = self
            .access_cookie
            .as_ref()
            .and_then(|c| access_cookie(c, &res.access_token, self.access_ttl));
        refresh.into_iter().chain(access).collect()
    }

    /// The `Set-Cookie` values that clear both cookies.
    pub(crate) fn clear_cookies(&self) -> Vec<HeaderValue> {
        let refresh = self.cookie.as_ref().and_then(clear_refresh);
        let access = self.access_cookie.as_ref().and_then(clear_access);
        refresh.into_iter().chain(access).collect()
    }

    /// `res` with both cookies cleared.
    pub(crate) fn with_cleared_cookies(&self, res: Response) -> Response {
        with_cookies(res, self.clear_cookies())
    }

    /// The refresh cookie of a request.
    pub(crate) fn refresh_cookie_value<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        self.cookie
            .as_ref()
            .and_then(|c| read_cookie(headers, &c.name))
    }

    /// The access cookie of a request.
    pub(crate) fn access_cookie_value<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        self.access_cookie
            .as_ref()
            .and_then(|c| read_cookie(headers, &c.name))
    }

    /// CSRF protection for a request authenticated by a cookie (see [`csrf`]).
    pub(crate) fn check_cookie_request(&self, headers: &HeaderMap, method: &Method) -> Result<()> {
        csrf::check(headers, method, &self.trusted_origins)
    }

    /// The token-pair response of login and refresh: the access token (and, without the
    /// refresh cookie, the refresh token) in the body, cookies as configured, no-store.
    pub(crate) fn token_response(
        &self,
        status: StatusCode,
        message: &str,
        res: &AuthResult,
    ) -> Response {
        let mut data = serde_json::json!({
            "accessToken": res.access_token,
            "user": res.user,
        });
        if self.cookie.is_none() {
            data["refreshToken"] = serde_json::Value::String(res.refresh_token.clone());
        }
        if let Some(workspace) = &res.workspace_id {
            data["workspaceId"] = serde_json::Value::String(workspace.clone());
        }
        let mut out = with_cookies(success(status, message, data), self.session_cookies(res));
        no_store(out.headers_mut());
        out
    }

    /// The answer of a new access token alone (a workspace switch): `data` with the
    /// token added as `accessToken`, the access cookie when configured, no-store. The
    /// refresh token is unchanged.
    pub(crate) fn access_response(
        &self,
        message: &str,
        access_token: &str,
        mut data: serde_json::Value,
    ) -> Response {
        data["accessToken"] = serde_json::Value::String(access_token.to_owned());
        let cookie = self
            .access_cookie
            .as_ref()
            .and_then(|c| access_cookie(c, access_token, self.access_ttl));
        let mut out = with_cookies(
            success(StatusCode::OK, message, data),
            cookie.into_iter().collect(),
        );
        no_store(out.headers_mut());
        out
    }
}

fn check_cookie(
    name: &str,
    secure: bool,
    same_site: SameSite,
    path: &str,
    domain: Option<&str>,
    which: &str,
) -> Result<()> {
    let bad = |msg: &str| Err(SentriError::configuration(format!("{which}: {msg}")));
    if name.is_empty() {
        return bad("name must not be empty");
    }
    if same_site == SameSite::None && !secure {
        return bad("SameSite=None requires secure = true");
    }
    if name.starts_with(HOST_PREFIX) && (!secure || path != "/" || domain.is_some()) {
        return bad("a __Host- cookie must be secure, with path \"/\" and no domain");
    }
    if name.starts_with("__Secure-") && !secure {
        return bad("a __Secure- cookie must be secure");
    }
    Ok(())
}

/// The cookie `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// `SameSite=Strict` (the default).
    Strict,
    /// `SameSite=Lax`.
    Lax,
    /// `SameSite=None`: requires `secure`.
    None,
}

/// The refresh-token cookie (`httpOnly` by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieConfig {
    /// Cookie name (default `refresh_token`).
    pub name: String,
    /// `HttpOnly` (default `true`).
    pub http_only: bool,
    /// `Secure` (default `true`). Browsers accept `Secure` cookies from
    /// `http://localhost` and `http://127.0.0.1` (loopback is a secure context), so the
    /// default works in local development too.
    pub secure: bool,
    /// `SameSite` (default `Strict`).
    pub same_site: SameSite,
    /// `Path` (default `/`).
    pub path: String,
    /// `Domain` (default none: host-only).
    pub domain: Option<String>,
}

impl Default for CookieConfig {
    fn default() -> Self {
        Self {
            name: "refresh_token".into(),
            http_only: true,
            secure: true,
            same_site: SameSite::Strict,
            path: "/".into(),
            domain: None,
        }
    }
}

/// The `__Host-` name prefix: browsers accept such a cookie only when it is `Secure`,
/// has `Path=/` and no `Domain`, so no sibling subdomain can set or shadow it.
pub const HOST_PREFIX: &str = "__Host-";

impl CookieConfig {
    /// The recommended production form: `__Host-` + the name, `Secure`, `Path=/`, no
    /// `Domain` (see [`HOST_PREFIX`]).
    ///
    /// ```
    /// let c = sentri::CookieConfig::default().host_prefixed();
    /// assert_eq!(c.name, "__Host-refresh_token");
    /// assert!(c.secure && c.path == "/" && c.domain.is_none());
    /// ```
    pub fn host_prefixed(mut self) -> Self {
        if !self.name.starts_with(HOST_PREFIX) {
            self.name = format!("{HOST_PREFIX}{}", self.name);
        }
        self.secure = true;
        self.path = "/".into();
        self.domain = None;
        self
    }
}

impl AccessCookieConfig {
    /// `__Host-` + the name, `Secure`, `Path=/`, no `Domain` (see
    /// [`CookieConfig::host_prefixed`]).
    pub fn host_prefixed(mut self) -> Self {
        if !self.name.starts_with(HOST_PREFIX) {
            self.name = format!("{HOST_PREFIX}{}", self.name);
        }
        self.secure = true;
        self.path = "/".into();
        self.domain = None;
        self
    }
}

/// The access-token cookie (readable by scripts, `Max-Age` = access TTL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessCookieConfig {
    /// Cookie name (default `access_token`).
    pub name: String,
    /// `Secure` (default `true`, see [`CookieConfig::secure`]).
    pub secure: bool,
    /// `SameSite` (default `Strict`).
    pub same_site: SameSite,
    /// `Path` (default `/`).
    pub path: String,
    /// `Domain` (default none).
    pub domain: Option<String>,
}

impl Default for AccessCookieConfig {
    fn default() -> Self {
        Self {
            name: "access_token".into(),
            secure: true,
            same_site: SameSite::Strict,
            path: "/".into(),
            domain: None,
        }
    }
}

fn same_site(s: SameSite) -> cookie::SameSite {
    match s {
        SameSite::Strict => cookie::SameSite::Strict,
        SameSite::Lax => cookie::SameSite::Lax,
        SameSite::None => cookie::SameSite::None,
    }
}

fn max_age(ttl: Duration) -> cookie::time::Duration {
    cookie::time::Duration::seconds(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX))
}

/// The attributes one `Set-Cookie` needs.
struct Attrs<'a> {
    name: &'a str,
    http_only: bool,
    secure: bool,
    same_site: SameSite,
    path: &'a str,
    domain: Option<&'a str>,
}

impl<'a> From<&'a CookieConfig> for Attrs<'a> {
    fn from(c: &'a CookieConfig) -> Self {
        Attrs {
            name: &c.name,
            http_only: c.http_only,
            secure: c.secure,
            same_site: c.same_site,
            path: &c.path,
            domain: c.domain.as_deref(),
        }
    }
}

impl<'a> From<&'a AccessCookieConfig> for Attrs<'a> {
    fn from(c: &'a AccessCookieConfig) -> Self {
        Attrs {
            name: &c.name,
            http_only: false,
            secure: c.secure,
            same_site: c.same_site,
            path: &c.path,
            domain: c.domain.as_deref(),
        }
    }
}

/// `value` with `Max-Age = ttl`; an empty value with `Max-Age=0` clears the cookie.
fn set_cookie(attrs: Attrs<'_>, value: &str, ttl: Duration) -> Option<HeaderValue> {
    let mut c = Cookie::build((attrs.name.to_owned(), value.to_owned()))
        .http_only(attrs.http_only)
        .secure(attrs.secure)
        .same_site(same_site(attrs.same_site))
        .path(attrs.path.to_owned())
        .max_age(max_age(ttl));
    if let Some(d) = attrs.domain {
        c = c.domain(d.to_owned());
    }
    HeaderValue::from_str(&c.build().to_string()).ok()
}

/// `Set-Cookie` for the refresh token.
pub(crate) fn refresh_cookie(
    cfg: &CookieConfig,
    value: &str,
    ttl: Duration,
) -> Option<HeaderValue> {
    set_cookie(cfg.into(), value, ttl)
}

/// `Set-Cookie` for the access token (not `HttpOnly`: the front-end may read it).
pub(crate) fn access_cookie(
    cfg: &AccessCookieConfig,
    value: &str,
    ttl: Duration,
) -> Option<HeaderValue> {
    set_cookie(cfg.into(), value, ttl)
}

/// `Set-Cookie` that clears the refresh cookie (`Max-Age=0`).
pub(crate) fn clear_refresh(cfg: &CookieConfig) -> Option<HeaderValue> {
    set_cookie(cfg.into(), "", Duration::ZERO)
}

/// `Set-Cookie` that clears the access cookie (`Max-Age=0`).
pub(crate) fn clear_access(cfg: &AccessCookieConfig) -> Option<HeaderValue> {
    set_cookie(cfg.into(), "", Duration::ZERO)
}
