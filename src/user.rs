//! The user as sentri shows it to applications.

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
