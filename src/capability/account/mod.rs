//! The account capability: a signed-in user changes their password or identifier, an
//! administrator assigns roles. On by default (`ServerConfig::new` includes it); its
//! routes are `POST /change-password`, `POST /change-identifier` and
//! `POST /users/{userId}/roles`.

mod routes;

use std::fmt;
use std::future::Future;

use axum::Router;

use super::{Capability, Core};
use crate::core::Override;
use crate::core::error::{Result, SentriError};
use crate::core::events::{AuthEvent, AuthEventKind};
use crate::core::principal::AuthUser;
use crate::identity::roles::RoleChange;
use crate::throttle::ThrottleKey;

/// The account operations, as a service handle (what overrides receive). Cheap to clone.
#[derive(Clone)]
pub struct AccountService {
    core: Core,
}

impl fmt::Debug for AccountService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountService").finish_non_exhaustive()
    }
}

impl AccountService {
    pub(crate) fn new(core: Core) -> Self {
        Self { core }
    }

    /// Changes a password after checking the current one, then revokes every session of
    /// the user (whatever rotations are in flight).
    pub async fn change_password(&self, user_id: &str, current: &str, new: &str) -> Result<()> {
        let span = crate::core::observe::op_span!("change_password");
        crate::core::observe::traced(
            span,
            self.change_password_once(user_id, current, new),
            |_| "ok",
        )
        .await
    }

    async fn change_password_once(&self, user_id: &str, current: &str, new: &str) -> Result<()> {
        let identity = &self.core.identity;
        identity.policy.validate(new)?;
        self.check_current_password(user_id, current).await?;
        let hash = identity.hasher.hash(new).await?;
        identity.db.update_user_password(user_id, &hash).await?;
        self.core
            .end_every_credential(user_id, super::CredentialReset::PasswordChanged)
            .await?;
        self.emit(AuthEventKind::PasswordChanged, user_id);
        Ok(())
    }

    /// Changes a user's identifier after checking the current password
    /// (`INVALID_CREDENTIALS` when wrong, `USER_ALREADY_EXISTS` when taken). Every
    /// token mailed to the account before (reset, sign-in, verification) stops working
    /// before this returns ([`Core::address_changed`]).
    pub async fn change_identifier(
        &self,
        user_id: &str,
        new_identifier: &str,
        current_password: &str,
    ) -> Result<AuthUser> {
        let span = crate::core::observe::op_span!("change_identifier");
        crate::core::observe::traced(
            span,
            self.change_identifier_once(user_id, new_identifier, current_password),
            |_| "ok",
        )
        .await
    }

    async fn change_identifier_once(
        &self,
        user_id: &str,
        new_identifier: &str,
        current_password: &str,
    ) -> Result<AuthUser> {
        let identity = &self.core.identity;
        let identifier = identity.normalize(new_identifier)?;
        self.check_current_password(user_id, current_password)
            .await?;
        let user = identity
            .db
            .update_user_identifier(user_id, &identifier)
            .await?
            .ok_or_else(SentriError::user_not_found)?;
        // Before the answer (and before the event that mails the new address): nothing
        // mailed to the old address works any more.
        self.core.address_changed(user_id).await?;
        self.emit(AuthEventKind::IdentifierChanged, user_id);
        Ok(user.to_auth_user())
    }

    /// Adds roles to a user (merged with the existing ones; each configured in
    /// `valid_roles` or in the role catalogue). The user's access tokens of before are
    /// stale at once (refreshed silently with a refresh cookie).
    pub async fn assign_roles(&self, user_id: &str, roles: &[String]) -> Result<AuthUser> {
        self.core
            .change_user_roles(user_id, RoleChange::Assign(roles.to_vec()))
            .await
    }

    /// The current-password check, throttled per user (`429 TOO_MANY_ATTEMPTS` before
    /// any hashing when over the limit).
    async fn check_current_password(&self, user_id: &str, password: &str) -> Result<()> {
        let key = ThrottleKey::subject("current-password", user_id);
        let attempt = self.core.throttle().attempt(&[key]).await?;
        let checked = self
            .core
            .identity
            .check_current_password(user_id, password)
            .await;
        attempt.settle(&checked).await;
        checked
    }

    fn emit(&self, kind: AuthEventKind, user_id: &str) {
        self.core
            .emit(AuthEvent::new(kind, self.core.now_ms()).user(user_id));
    }
}

/// `(user_id, current, new)` → `()`.
type PasswordOverride = Override<AccountService, (String, String, String), ()>;
/// `(user_id, identifier, current_password)` → the user.
type IdentifierOverride = Override<AccountService, (String, String, String), AuthUser>;
/// `(user_id, roles)` → the user.
type RolesOverride = Override<AccountService, (String, Vec<String>), AuthUser>;

/// The account capability and its optional service overrides.
///
/// ```
/// use sentri::capability::account::Account;
/// let account = Account::default().on_change_password(|svc, user_id, current, new| async move {
///     // e.g. check a breached-password list first, then the default service:
///     svc.change_password(&user_id, &current, &new).await
/// });
/// # let _ = account;
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct Account {
    change_password: PasswordOverride,
    change_identifier: IdentifierOverride,
    assign_roles: RolesOverride,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("change_password", &self.change_password)
            .field("change_identifier", &self.change_identifier)
            .field("assign_roles", &self.assign_roles)
            .finish()
    }
}

impl Account {
    /// Overrides `POST /change-password`: `(service, user_id, current, new)`.
    pub fn on_change_password<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(AccountService, String, String, String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.change_password = Override::new(move |s, (u, c, n)| f(s, u, c, n));
        self
    }

    /// Overrides `POST /change-identifier`: `(service, user_id, identifier, current)`.
    pub fn on_change_identifier<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(AccountService, String, String, String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<AuthUser>> + Send + 'static,
    {
        self.change_identifier = Override::new(move |s, (u, i, c)| f(s, u, i, c));
        self
    }

    /// Overrides `POST /users/{userId}/roles`: `(service, user_id, roles)`.
    pub fn on_assign_roles<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(AccountService, String, Vec<String>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<AuthUser>> + Send + 'static,
    {
        self.assign_roles = Override::new(move |s, (u, r)| f(s, u, r));
        self
    }
}

impl Capability for Account {
    fn name(&self) -> &'static str {
        "account"
    }

    fn routes(&self, core: &Core) -> Router {
        routes::router(self.clone(), core)
    }

    #[cfg(feature = "openapi")]
    fn openapi(&self, doc: &crate::http::openapi::ApiDoc) -> utoipa::openapi::OpenApi {
        routes::openapi(doc)
    }
}
