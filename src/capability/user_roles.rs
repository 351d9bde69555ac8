//! Changing a user's roles, shared by the account capability (`assign_roles`) and the
//! roles capability: one transaction per change (the user's authorization version is
//! bumped in it), then the change reaches `protect()` here at once and in other
//! processes through the revocation bus.

use super::Core;
use crate::core::error::{ErrorCode, Result, SentriError};
use crate::core::events::{AuthEvent, AuthEventKind};
use crate::core::principal::AuthUser;
use crate::identity::dedupe;
use crate::identity::roles::{ChangeOutcome, RoleChange};

impl Core {
    /// Applies `change` to `user_id`'s roles (`INVALID_ROLE` for a role that is neither
    /// configured nor in the catalogue, `USER_NOT_FOUND`, `LAST_ADMIN` when the last
    /// holder of the admin role would lose it). A change that changes nothing bumps
    /// nothing. Returns the user as stored afterwards.
    pub(crate) async fn change_user_roles(
        &self,
        user_id: &str,
        change: RoleChange,
    ) -> Result<AuthUser> {
        let change = self.checked_change(change).await?;
        let identity = &self.identity;
        let before = identity.get_user(user_id).await?;
        if !changes(&before.roles, &change) {
            return Ok(before);
        }
        let admin = identity.roles.admin.as_str();
        let holds_admin = before.has_role(admin);
        let now = self.now_ms();
        let outcome = identity
            .db
            .change_user_roles(user_id, &change, admin, holds_admin, now)
            .await?;
        match outcome {
            ChangeOutcome::NoUser => return Err(SentriError::user_not_found()),
            ChangeOutcome::Refused if removes(&change, admin) && holds_admin => {
                return Err(SentriError::new(
                    ErrorCode::LastAdmin,
                    "The last holder of the admin role cannot lose it",
                ));
            }
            ChangeOutcome::Refused => return identity.get_user(user_id).await,
            ChangeOutcome::Changed => {}
        }
        let (user, version) = identity
            .db
            .stamped_user(user_id)
            .await?
            .ok_or_else(SentriError::user_not_found)?;
        self.sessions.roles_changed(user_id, version).await;
        let event = AuthEvent::new(AuthEventKind::RolesChanged, now)
            .user(user_id)
            .role(user.roles.join(","));
        self.emit(event);
        Ok(user)
    }

    /// The change with its roles deduplicated and checked.
    async fn checked_change(&self, change: RoleChange) -> Result<RoleChange> {
        let change = match change {
            RoleChange::Assign(roles) if roles.is_empty() => {
                return Err(SentriError::validation("roles must not be empty"));
            }
            RoleChange::Assign(roles) => RoleChange::Assign(dedupe(roles)),
            RoleChange::Set(roles) => RoleChange::Set(dedupe(roles)),
            revoke @ RoleChange::Revoke(_) => return Ok(revoke),
        };
        if let RoleChange::Assign(roles) | RoleChange::Set(roles) = &change {
            self.identity.check_assignable(roles).await?;
        }
        Ok(change)
    }
}

/// `true` when `change` would change `roles`.
fn changes(roles: &[String], change: &RoleChange) -> bool {
    match change {
        RoleChange::Assign(add) => add.iter().any(|r| !roles.contains(r)),
        RoleChange::Revoke(role) => roles.contains(role),
        RoleChange::Set(new) => new.len() != roles.len() || new.iter().any(|r| !roles.contains(r)),
    }
}

/// `true` when `change` takes `admin` away from whoever holds it.
fn removes(change: &RoleChange, admin: &str) -> bool {
    match change {
        RoleChange::Assign(_) => false,
        RoleChange::Revoke(role) => role == admin,
        RoleChange::Set(roles) => !roles.iter().any(|r| r == admin),
    }
}
