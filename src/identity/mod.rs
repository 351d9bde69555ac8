//! Users: the store, identifier normalisation, roles, and the register / check-credentials
//! core that login, account changes and capabilities build on.

pub(crate) mod normalize;
mod renormalize;
pub(crate) mod roles;
pub(crate) mod schema;
mod store;

use std::collections::HashSet;
use std::fmt;

use serde::Deserialize;

pub use normalize::{
    IdentifierCase, IdentifierCollision, IdentifierMigrationReport, MAX_IDENTIFIER_BYTES,
    normalize_address_domain, normalize_identifier,
};
pub use roles::{ROLES_MANAGE, RoleHolder, RoleRecord};
pub use store::{EmailState, NewUser, UserRecord};

use crate::core::error::{Result, SentriError};
use crate::core::principal::AuthUser;
use crate::db::Database;
use crate::password::{MAX_PASSWORD_BYTES, PasswordCheck, PasswordHasher, PasswordPolicy};

/// Input of [`ServerAuth::register`](crate::ServerAuth::register).
#[derive(Clone, Deserialize)]
pub struct RegisterInput {
    /// The login identifier (normalised with NFKC_Casefold by default, see
    /// [`normalize_identifier`]).
    pub identifier: String,
    /// The password (8 characters to 1024 bytes).
    pub password: String,
    /// Requested roles; default: the first public role.
    #[serde(default)]
    pub roles: Option<Vec<String>>,
}

impl fmt::Debug for RegisterInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisterInput")
            .field("identifier", &self.identifier)
            .field("password", &"<redacted>")
            .field("roles", &self.roles)
            .finish()
    }
}

/// Input of [`ServerAuth::provision_user`](crate::ServerAuth::provision_user): a user
/// created by trusted server-side code (an admin bootstrap), not by a request.
///
/// ```
/// use sentri::identity::ProvisionUser;
/// let admin = ProvisionUser::new("admin@example.com", "a long admin password")
///     .roles(["admin"])
///     .mark_email_verified(true);
/// # let _ = admin;
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct ProvisionUser {
    /// The login identifier (normalised like a registration's).
    pub identifier: String,
    /// The password (the configured password policy applies).
    pub password: String,
    /// Roles, any of `valid_roles`; default (empty): the first public role.
    pub roles: Vec<String>,
    /// The account's address when the identifier is not one (a username).
    pub email: Option<String>,
    /// Store the address as verified (default `false`).
    pub mark_email_verified: bool,
    /// A workspace to create or join (needs the workspaces capability).
    pub workspace: Option<ProvisionWorkspace>,
}

/// The workspace part of [`ProvisionUser`]: the user joins the workspace of `slug`
/// with `roles`, which is created (named `name`, the user its owner) when there is none.
///
/// ```
/// use sentri::identity::{ProvisionUser, ProvisionWorkspace};
/// let input = ProvisionUser::new("ops@example.com", "a long admin password")
///     .workspace(ProvisionWorkspace::new("Acme", "acme"));
/// # let _ = input;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProvisionWorkspace {
    /// The workspace name (used when it is created).
    pub name: String,
    /// Its unique slug: what makes provisioning idempotent.
    pub slug: String,
    /// The user's roles in it (default: the owner role).
    pub roles: Vec<String>,
}

impl ProvisionWorkspace {
    /// The workspace `slug` (named `name` if created), as its owner.
    pub fn new(name: impl Into<String>, slug: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            slug: slug.into(),
            roles: Vec::new(),
        }
    }

    /// The user's roles in the workspace.
    pub fn roles<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.roles = roles.into_iter().map(Into::into).collect();
        self
    }
}

impl ProvisionUser {
    /// A user with this identifier and password, the default role, no separate address,
    /// not verified.
    pub fn new(identifier: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            identifier: identifier.into(),
            password: password.into(),
            roles: Vec::new(),
            email: None,
            mark_email_verified: false,
            workspace: None,
        }
    }

    /// Also creates or joins a workspace (needs the workspaces capability).
    pub fn workspace(mut self, workspace: ProvisionWorkspace) -> Self {
        self.workspace = Some(workspace);
        self
    }

    /// Sets the roles.
    pub fn roles<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.roles = roles.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the address of a username account.
    pub fn email(mut self, email: impl Into<String>) -> Self {
        self.email = Some(email.into());
        self
    }

    /// Stores the address as verified.
    pub fn mark_email_verified(mut self, on: bool) -> Self {
        self.mark_email_verified = on;
        self
    }
}

impl fmt::Debug for ProvisionUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProvisionUser")
            .field("identifier", &self.identifier)
            .field("password", &"<redacted>")
            .field("roles", &self.roles)
            .field("email", &self.email)
            .field("mark_email_verified", &self.mark_email_verified)
            .field("workspace", &self.workspace)
            .finish()
    }
}

/// Input of [`ServerAuth::login`](crate::ServerAuth::login).
#[derive(Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(description = "The credentials of a login")
)]
pub struct LoginInput {
    /// The login identifier as typed.
    pub identifier: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for LoginInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginInput")
            .field("identifier", &self.identifier)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The role rules: every valid role, the public ones, and the admin role.
#[derive(Debug, Clone)]
pub(crate) struct Roles {
    pub(crate) valid: Vec<String>,
    pub(crate) public: Vec<String>,
    pub(crate) admin: String,
}

impl Roles {
    /// Checks the configured roles. Public roles default to the first valid role that is
    /// not the admin role; an explicitly public admin role is allowed with a warning.
    pub(crate) fn new(valid: &[String], public: Option<&[String]>, admin: &str) -> Result<Self> {
        let valid = dedupe(valid.iter().cloned());
        if valid.is_empty() {
            return Err(SentriError::configuration("valid_roles must not be empty"));
        }
        if valid.iter().any(|r| r.trim().is_empty()) {
            return Err(SentriError::configuration(
                "valid_roles must not contain empty names",
            ));
        }
        let public = match public {
            Some(roles) => dedupe(roles.iter().cloned()),
            None => valid
                .iter()
                .find(|r| *r != admin)
                .cloned()
                .into_iter()
                .collect(),
        };
        if public.iter().any(|r| !valid.contains(r)) {
            return Err(SentriError::configuration(
                "public_roles must be a subset of valid_roles",
            ));
        }
        if public.iter().any(|r| r == admin) {
            tracing::warn!(
                role = %admin,
                "sentri: public_roles includes the admin role: anyone can register as an administrator"
            );
        }
        Ok(Self {
            valid,
            public,
            admin: admin.to_owned(),
        })
    }

    /// The roles the catalogue is seeded with: the valid roles and the admin role.
    pub(crate) fn catalogue_seed(&self) -> Vec<String> {
        dedupe(self.valid.iter().cloned().chain([self.admin.clone()]))
    }

    /// `INVALID_ROLE` (never echoing the name) unless every role is valid.
    pub(crate) fn check(&self, roles: &[String]) -> Result<()> {
        if roles.iter().any(|r| !self.valid.contains(r)) {
            return Err(SentriError::invalid_role("Invalid role"));
        }
        Ok(())
    }
}

/// The users service: registration, credential checks, lookups and the changes account
/// operations make. Cheap to share (`Arc` inside its owner).
#[derive(Debug)]
pub(crate) struct Identity {
    pub(crate) db: Database,
    pub(crate) hasher: PasswordHasher,
    pub(crate) roles: Roles,
    pub(crate) case: IdentifierCase,
    /// The password policy every new password follows.
    pub(crate) policy: PasswordPolicy,
    /// The role catalogue: declared permissions, grants in code, the permission cache.
    pub(crate) catalogue: roles::RoleCatalogue,
}

impl Identity {
    /// Normalises an identifier with the configured case rule.
    pub(crate) fn normalize(&self, identifier: &str) -> Result<String> {
        normalize_identifier(identifier, self.case)
    }

    /// The roles of a user created without asking for any (registration, provisioning,
    /// sign-up by link or single sign-on): the first public role, if any.
    pub(crate) fn default_roles(&self) -> Vec<String> {
        self.roles.public.first().cloned().into_iter().collect()
    }

    /// `INVALID_ROLE` (never echoing the name) unless every role is configured or in
    /// the role catalogue.
    pub(crate) async fn check_assignable(&self, roles: &[String]) -> Result<()> {
        for role in roles {
            let configured = self.roles.valid.contains(role) || *role == self.roles.admin;
            if !configured && self.db.find_role(role).await?.is_none() {
                return Err(SentriError::invalid_role("Invalid role"));
            }
        }
        Ok(())
    }

    /// Registers a user (roles already allowed by the caller). Spends no bcrypt time on
    /// an identifier that is taken; the insert still enforces uniqueness under races.
    pub(crate) async fn register(&self, input: RegisterInput) -> Result<AuthUser> {
        let identifier = self.normalize(&input.identifier)?;
        self.policy.validate(&input.password)?;
        let roles = match input.roles {
            Some(roles) if !roles.is_empty() => dedupe(roles),
            _ => self.default_roles(),
        };
        self.roles.check(&roles)?;
        if self
            .db
            .find_user_by_identifier(&identifier)
            .await?
            .is_some()
        {
            return Err(SentriError::user_already_exists());
        }
        let hash = self.hasher.hash(&input.password).await?;
        let user = self
            .db
            .create_user(&NewUser {
                identifier: &identifier,
                password_hash: &hash,
                roles: &roles,
            })
            .await?;
        Ok(user.to_auth_user())
    }

    /// Checks a login's credentials: the same `INVALID_CREDENTIALS` in the same time for
    /// an unknown identifier and a wrong password. Upgrades a legacy or cheaper hash.
    /// Returns the user and the password hash now stored (to detect a racing change).
    pub(crate) async fn check_credentials(&self, input: &LoginInput) -> Result<(AuthUser, String)> {
        if input.password.is_empty() || input.password.len() > MAX_PASSWORD_BYTES {
            return Err(SentriError::validation(
                "password must be between 1 and 1024 bytes",
            ));
        }
        let identifier = self.normalize(&input.identifier)?;
        let Some(user) = self.db.find_user_by_identifier(&identifier).await? else {
            self.hasher.verify_dummy(&input.password).await?;
            return Err(SentriError::invalid_credentials());
        };
        let hash = match self
            .hasher
            .check(&input.password, &user.password_hash)
            .await?
        {
            PasswordCheck::Mismatch => return Err(SentriError::invalid_credentials()),
            PasswordCheck::Match => user.password_hash.clone(),
            PasswordCheck::MatchNeedsUpgrade => self.upgrade_hash(&user, &input.password).await?,
        };
        Ok((user.to_auth_user(), hash))
    }

    /// Re-hashes a password whose stored hash is a legacy or cheaper one (or of another
    /// algorithm); returns the hash now stored. The update is conditional on the old
    /// hash: when another write won, the hash it stored is returned if it still accepts
    /// this password (a concurrent login's upgrade), else the old one (a password
    /// change: the caller's session check then refuses the login).
    async fn upgrade_hash(&self, user: &UserRecord, password: &str) -> Result<String> {
        let new = self.hasher.hash(password).await?;
        if self
            .db
            .replace_password_hash(&user.id, &user.password_hash, &new)
            .await?
        {
            tracing::info!(user = %user.id, "sentri: password hash upgraded");
            return Ok(new);
        }
        if let Some(now) = self.db.find_user_by_id(&user.id).await?
            && self.hasher.verify(password, &now.password_hash).await?
        {
            return Ok(now.password_hash);
        }
        Ok(user.password_hash.clone())
    }

    /// `true` while the stored password hash of `user_id` is still `hash`.
    pub(crate) async fn hash_unchanged(&self, user_id: &str, hash: &str) -> Result<bool> {
        Ok(self
            .db
            .find_user_by_id(user_id)
            .await?
            .is_some_and(|u| u.password_hash == hash))
    }

    /// The user, fresh from the store, or `USER_NOT_FOUND`.
    pub(crate) async fn get_user(&self, user_id: &str) -> Result<AuthUser> {
        if uuid::Uuid::try_parse(user_id).is_err() {
            return Err(SentriError::user_not_found());
        }
        match self.db.find_user_by_id(user_id).await? {
            Some(user) => Ok(user.to_auth_user()),
            None => Err(SentriError::user_not_found()),
        }
    }

    /// Re-authentication for account changes: the user exists and `password` is theirs.
    pub(crate) async fn check_current_password(&self, user_id: &str, password: &str) -> Result<()> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(SentriError::invalid_credentials());
        }
        if uuid::Uuid::try_parse(user_id).is_err() {
            return Err(SentriError::user_not_found());
        }
        let Some(user) = self.db.find_user_by_id(user_id).await? else {
            return Err(SentriError::user_not_found());
        };
        if !self.hasher.verify(password, &user.password_hash).await? {
            return Err(SentriError::invalid_credentials());
        }
        Ok(())
    }
}

/// The first character of a stored password hash that no password can match: users
/// created without a password (by single sign-on, by a sign-up link). bcrypt hashes
/// start with `$`.
pub(crate) const NO_PASSWORD_MARK: char = '!';

/// A password hash no password matches (a login with any password is a plain
/// `INVALID_CREDENTIALS`, in the time of a real check).
pub(crate) fn unusable_password_hash() -> String {
    format!(
        "{NO_PASSWORD_MARK}no-password-{}",
        crate::core::crypto::random_token(16)
    )
}

/// `false` for a hash made by [`unusable_password_hash`]: the user has no password.
#[cfg_attr(not(feature = "sso"), allow(dead_code))]
pub(crate) fn has_password(stored_hash: &str) -> bool {
    !stored_hash.starts_with(NO_PASSWORD_MARK)
}

/// Removes duplicates, keeping the first occurrence of each.
pub(crate) fn dedupe<I: IntoIterator<Item = String>>(items: I) -> Vec<String> {
    let mut seen = HashSet::new();
    items
        .into_iter()
        .filter(|r| seen.insert(r.clone()))
        .collect()
}
