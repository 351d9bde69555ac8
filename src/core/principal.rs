//! The user as sentri shows it to applications.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A user as returned by every endpoint and service: never carries the password hash.
///
/// Serialises as `{"id": "...", "identifier": "...", "roles": ["..."]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthUser {
    /// The user id (a UUID string).
    pub id: String,
    /// The normalised login identifier (e-mail, username, …).
    pub identifier: String,
    /// The user's roles, each one of the configured `valid_roles`.
    pub roles: Vec<String>,
}

impl AuthUser {
    /// `true` when the user has `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// `true` when the user has at least one of `roles`.
    pub fn has_any_role<S: AsRef<str>>(&self, roles: &[S]) -> bool {
        roles.iter().any(|r| self.has_role(r.as_ref()))
    }
}

/// Where a request came from (stored with a session, carried by events; truncated to
/// fit).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionMeta {
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
    /// The client address.
    pub ip: Option<String>,
}

/// Result of a login: a token pair and the user.
#[derive(Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthResult {
    /// The signed access token.
    pub access_token: String,
    /// The signed refresh token.
    pub refresh_token: String,
    /// The user.
    pub user: AuthUser,
    /// The session id (`sid` claim), stable across refreshes.
    pub session_id: String,
    /// The workspace the session is bound to (`wid` claim of the access token), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
}

impl fmt::Debug for AuthResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthResult")
            .field("access_token", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("user", &self.user)
            .field("session_id", &self.session_id)
            .field("workspace_id", &self.workspace_id)
            .finish()
    }
}

/// Result of a refresh: a new pair of the same session and the user.
pub type RefreshResult = AuthResult;

/// How the user of a session proved who they are: the authentication methods
/// (RFC 8176 `amr` values such as `pwd`, `otp`, `mfa`) and an assurance level (1: one
/// factor, 2: two factors). Kept on the session family and copied into every access
/// token of the family (claims `amr` and `aal`); `/refresh` and silent refresh carry it
/// over and never raise it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assurance {
    /// The authentication methods, e.g. `["pwd", "otp", "mfa"]`.
    pub amr: Vec<String>,
    /// The assurance level: 1 for one factor, 2 for two.
    pub level: u8,
    /// When these factors were last proven (`auth_time`, unix seconds): the login, or
    /// the latest re-authentication (`POST /reauthenticate`). `None` on sessions opened
    /// before it was recorded: sensitive operations then need a re-authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
}

impl Assurance {
    /// One factor, of method `amr` (e.g. `"pwd"`).
    pub fn single(amr: &str) -> Self {
        Self {
            amr: vec![amr.to_owned()],
            level: 1,
            auth_time: None,
        }
    }

    /// The same factors, proven at `auth_time` (unix seconds).
    pub fn at(mut self, auth_time: i64) -> Self {
        self.auth_time = Some(auth_time);
        self
    }

    /// `first` then a second factor of method `second` (level 2, `mfa` appended).
    pub fn two_factor(first: &Assurance, second: &str) -> Self {
        let mut amr = first.amr.clone();
        for m in [second, "mfa"] {
            if !amr.iter().any(|a| a == m) {
                amr.push(m.to_owned());
            }
        }
        Self {
            amr,
            level: 2,
            auth_time: first.auth_time,
        }
    }

    /// `true` at level 2 or above.
    pub fn has_second_factor(&self) -> bool {
        self.level >= 2
    }

    /// The stored form, `"<level>:<amr> <amr>…[@<auth_time>]"` (at most 64 bytes; the
    /// methods are cut, never the time).
    pub fn to_column(&self) -> String {
        let time = self.auth_time.map(|t| format!("@{t}")).unwrap_or_default();
        let mut s = format!("{}:{}", self.level, self.amr.join(" "));
        let room = 64usize.saturating_sub(time.len());
        if s.len() > room {
            // Cut at a character boundary (methods are ASCII in practice).
            let mut end = room;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
        }
        s.push_str(&time);
        s
    }

    /// Parses the stored form; `None` for anything malformed.
    pub fn from_column(value: &str) -> Option<Self> {
        let (value, auth_time) = match value.rsplit_once('@') {
            Some((rest, time)) => (rest, Some(time.parse().ok()?)),
            None => (value, None),
        };
        let (level, amr) = value.split_once(':')?;
        Some(Self {
            level: level.parse().ok()?,
            amr: amr.split_whitespace().map(str::to_owned).collect(),
            auth_time,
        })
    }
}

/// The permissions a caller holds through their roles, resolved by a
/// `require_permission` layer; also an extractor for handlers behind one.
///
/// ```
/// use sentri::core::principal::Permissions;
/// let p = Permissions::from_iter(["orders:read", "orders:write"]);
/// assert!(p.has("orders:write"));
/// assert!(p.has_any(&["orders:delete", "orders:read"]));
/// assert!(!p.has_all(&["orders:delete", "orders:read"]));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions(std::sync::Arc<std::collections::BTreeSet<String>>);

impl Permissions {
    /// A set of these permissions.
    pub fn new(set: std::collections::BTreeSet<String>) -> Self {
        Self(std::sync::Arc::new(set))
    }

    /// A shared set (no copy).
    pub fn from_shared(set: std::sync::Arc<std::collections::BTreeSet<String>>) -> Self {
        Self(set)
    }

    /// `true` when `permission` is held.
    pub fn has(&self, permission: &str) -> bool {
        self.0.contains(permission)
    }

    /// `true` when at least one of `permissions` is held.
    pub fn has_any<S: AsRef<str>>(&self, permissions: &[S]) -> bool {
        permissions.iter().any(|p| self.has(p.as_ref()))
    }

    /// `true` when every one of `permissions` is held.
    pub fn has_all<S: AsRef<str>>(&self, permissions: &[S]) -> bool {
        permissions.iter().all(|p| self.has(p.as_ref()))
    }

    /// The permissions, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

impl<S: Into<String>> FromIterator<S> for Permissions {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        Self::new(iter.into_iter().map(Into::into).collect())
    }
}
