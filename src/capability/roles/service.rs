//! The role catalogue and users' roles as plain async services.

use std::fmt;

use serde_json::{Value, json};

use super::super::Core;
use crate::core::error::{ErrorCode, Result, SentriError};
use crate::core::events::{AuthEvent, AuthEventKind};
use crate::core::principal::AuthUser;
use crate::identity::roles::{
    DeleteMode, RoleChange, check_description, check_permission_name, check_role_name,
};
use crate::identity::{RoleHolder, RoleRecord, dedupe};

/// The most holders one page lists.
pub const MAX_PAGE: u64 = 200;

/// The roles operations (what the routes call). Cheap to clone.
#[derive(Clone)]
pub struct RolesService {
    core: Core,
}

impl fmt::Debug for RolesService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RolesService").finish_non_exhaustive()
    }
}

fn role_not_found() -> SentriError {
    SentriError::new(ErrorCode::RoleNotFound, "Role not found")
}

impl RolesService {
    pub(crate) fn new(core: Core) -> Self {
        Self { core }
    }

    /// A role as the routes show it: its stored permissions, those granted in code,
    /// and both together.
    pub fn view(&self, role: &RoleRecord) -> Value {
        let code: Vec<&String> = self
            .core
            .identity
            .catalogue
            .code_grants(&role.name)
            .collect();
        let mut effective: Vec<String> = role.permissions.clone();
        effective.extend(code.iter().map(|p| (*p).clone()));
        effective.sort();
        effective.dedup();
        json!({
            "name": role.name,
            "description": role.description,
            "builtin": role.builtin,
            "permissions": role.permissions,
            "grantedInCode": code,
            "effectivePermissions": effective,
            "createdAt": role.created_at,
            "updatedAt": role.updated_at,
        })
    }

    /// Every role of the catalogue.
    pub async fn list(&self) -> Result<Vec<RoleRecord>> {
        self.core.identity.db.list_roles().await
    }

    /// One role, or `ROLE_NOT_FOUND`.
    pub async fn get(&self, name: &str) -> Result<RoleRecord> {
        self.core
            .identity
            .db
            .find_role(name)
            .await?
            .ok_or_else(role_not_found)
    }

    /// Creates a role (`ROLE_ALREADY_EXISTS` when the name is taken,
    /// `INVALID_PERMISSION` for an undeclared permission).
    pub async fn create(
        &self,
        name: &str,
        description: &str,
        permissions: Vec<String>,
    ) -> Result<RoleRecord> {
        check_role_name(name)?;
        check_description(description)?;
        let permissions = self.checked_permissions(permissions)?;
        let now = self.core.now_ms();
        let record = RoleRecord {
            name: name.to_owned(),
            description: description.to_owned(),
            permissions,
            builtin: false,
            created_at: now,
            updated_at: now,
        };
        self.core.identity.db.insert_role(&record).await?;
        self.core.identity.catalogue.forget(name).await;
        self.emit(AuthEventKind::RoleCreated, name);
        Ok(record)
    }

    /// Changes a role's description and/or replaces its stored permissions.
    pub async fn update(
        &self,
        name: &str,
        description: Option<&str>,
        permissions: Option<Vec<String>>,
    ) -> Result<RoleRecord> {
        if let Some(d) = description {
            check_description(d)?;
        }
        let permissions = permissions
            .map(|p| self.checked_permissions(p))
            .transpose()?;
        let now = self.core.now_ms();
        let db = &self.core.identity.db;
        if !db
            .update_role(name, description, permissions.as_deref(), now)
            .await?
        {
            return Err(role_not_found());
        }
        self.core.identity.catalogue.forget(name).await;
        self.emit(AuthEventKind::RoleUpdated, name);
        self.get(name).await
    }

    /// Deletes a role: refused (`ROLE_IN_USE`) while someone holds it unless its
    /// holders are moved to `reassign` or stripped of it; built-in roles are not
    /// deleted (`FORBIDDEN`).
    pub async fn delete(&self, name: &str, reassign: Option<String>, strip: bool) -> Result<()> {
        let role = self.get(name).await?;
        if role.builtin {
            return Err(SentriError::forbidden(
                "Built-in roles (configured ones) cannot be deleted",
            ));
        }
        let mode = match (reassign, strip) {
            (Some(_), true) => {
                return Err(SentriError::validation("choose one of reassign and strip"));
            }
            (Some(to), false) if to == name => {
                return Err(SentriError::validation("cannot reassign a role to itself"));
            }
            (Some(to), false) => {
                self.core
                    .identity
                    .check_assignable(std::slice::from_ref(&to))
                    .await?;
                DeleteMode::Reassign(to)
            }
            (None, true) => DeleteMode::Strip,
            (None, false) => DeleteMode::Refuse,
        };
        let db = &self.core.identity.db;
        let holders = match mode {
            DeleteMode::Refuse => Vec::new(),
            _ => db.role_holder_ids(name).await?,
        };
        if !db.delete_role(name, &mode, self.core.now_ms()).await? {
            return Err(role_not_found());
        }
        self.core.identity.catalogue.forget(name).await;
        for user in holders {
            if let Some(version) = db.authz_version(&user).await? {
                self.core.sessions.roles_changed(&user, version).await;
                self.core.emit(
                    AuthEvent::new(AuthEventKind::RolesChanged, self.core.now_ms())
                        .user(&user)
                        .role(name),
                );
            }
        }
        self.emit(AuthEventKind::RoleDeleted, name);
        Ok(())
    }

    /// A page of `role`'s holders after the user id `after` (at most 200).
    pub async fn holders(
        &self,
        role: &str,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<RoleHolder>> {
        self.get(role).await?;
        let limit = limit.clamp(1, MAX_PAGE);
        self.core.identity.db.role_holders(role, after, limit).await
    }

    /// The user, fresh from the store.
    pub async fn user(&self, user_id: &str) -> Result<AuthUser> {
        self.core.identity.get_user(user_id).await
    }

    /// Takes `role` away from a user (`LAST_ADMIN` for the last admin).
    pub async fn revoke(&self, user_id: &str, role: &str) -> Result<AuthUser> {
        self.core
            .change_user_roles(user_id, RoleChange::Revoke(role.to_owned()))
            .await
    }

    /// Replaces a user's roles (`LAST_ADMIN` when it would take the admin role from
    /// its last holder).
    pub async fn set(&self, user_id: &str, roles: Vec<String>) -> Result<AuthUser> {
        self.core
            .change_user_roles(user_id, RoleChange::Set(roles))
            .await
    }

    fn checked_permissions(&self, permissions: Vec<String>) -> Result<Vec<String>> {
        for p in &permissions {
            check_permission_name(p)?;
        }
        let permissions = dedupe(permissions);
        self.core.identity.catalogue.check_known(&permissions)?;
        Ok(permissions)
    }

    fn emit(&self, kind: AuthEventKind, role: &str) {
        self.core
            .emit(AuthEvent::new(kind, self.core.now_ms()).role(role));
    }
}
