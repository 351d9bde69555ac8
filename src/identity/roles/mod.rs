//! The role catalogue and the roles users hold.
//!
//! Roles live in `sentri_roles` (seeded from `valid_roles` and the admin role at
//! migration), their stored permissions in `sentri_role_permissions`, and who holds
//! which role in `sentri_user_roles` — the one record of a user's roles (the landed
//! JSON column is migrated into it and dropped). Permissions may also be granted in
//! code (`ServerConfig::grant`); a role's permissions are both, resolved through a
//! bounded cache ([`RoleCatalogue::permissions_of`]).

pub(crate) mod schema;
mod store;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

pub(crate) use store::{ChangeOutcome, DeleteMode, RoleChange};
pub use store::{RoleHolder, RoleRecord};

use crate::core::error::{ErrorCode, Result, SentriError};
use crate::core::principal::Permissions;
use crate::db::Database;
use schema::{MAX_DESCRIPTION_BYTES, MAX_PERMISSION_BYTES, MAX_ROLE_BYTES};

/// The permission every admin route of the roles capability accepts (besides the admin
/// role itself).
pub const ROLES_MANAGE: &str = "roles:manage";

/// How many roles' permission sets the cache keeps.
const CACHE_CAPACITY: usize = 10_000;

/// One role's permissions and until when they may be used.
type CachedSet = (Arc<BTreeSet<String>>, Instant);

/// The role catalogue: permission names declared in code, grants in code, and the
/// bounded cache of each role's permissions.
pub(crate) struct RoleCatalogue {
    db: Database,
    /// Every permission name the app may use.
    known: BTreeSet<String>,
    /// Permissions granted per role in code.
    grants: BTreeMap<String, BTreeSet<String>>,
    /// role → its permissions (code ∪ stored) and until when they may be used. A plain
    /// map behind a lock: a hit (every guarded request once warm) is one uncontended
    /// read lock and one lookup, no allocation; bounded by [`CACHE_CAPACITY`] (emptied
    /// when full).
    cache: RwLock<HashMap<String, CachedSet>>,
    ttl: Duration,
}

impl std::fmt::Debug for RoleCatalogue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleCatalogue")
            .field("known", &self.known)
            .field("grants", &self.grants)
            .finish_non_exhaustive()
    }
}

impl RoleCatalogue {
    /// Checks the declared names and grants: `grants` roles must be `roles`.
    pub(crate) fn new(
        db: Database,
        declared: &[String],
        grants: &[(String, String)],
        roles: &[String],
        ttl: Duration,
    ) -> Result<Self> {
        let mut known: BTreeSet<String> = declared.iter().cloned().collect();
        known.insert(ROLES_MANAGE.to_owned());
        let mut by_role: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (role, permission) in grants {
            if !roles.contains(role) {
                return Err(SentriError::configuration(format!(
                    "grant: role {role:?} is not one of valid_roles or the admin role"
                )));
            }
            known.insert(permission.clone());
            by_role
                .entry(role.clone())
                .or_default()
                .insert(permission.clone());
        }
        for name in &known {
            check_permission_name(name).map_err(|_| {
                SentriError::configuration(format!("invalid permission name {name:?}"))
            })?;
        }
        Ok(Self {
            db,
            known,
            grants: by_role,
            cache: RwLock::new(HashMap::new()),
            ttl,
        })
    }

    /// Every declared permission name.
    pub(crate) fn known(&self) -> &BTreeSet<String> {
        &self.known
    }

    /// `INVALID_PERMISSION` unless every name is declared.
    pub(crate) fn check_known(&self, permissions: &[String]) -> Result<()> {
        if permissions.iter().any(|p| !self.known.contains(p)) {
            return Err(SentriError::new(
                ErrorCode::InvalidPermission,
                "Unknown permission",
            ));
        }
        Ok(())
    }

    /// The permissions granted in code to `role`.
    pub(crate) fn code_grants(&self, role: &str) -> impl Iterator<Item = &String> {
        self.grants.get(role).into_iter().flatten()
    }

    /// The permissions of a caller holding `roles`: code grants and stored ones, each
    /// role's set cached for the cache lifetime (a warm cache reads no database).
    pub(crate) async fn permissions_of(&self, roles: &[String]) -> Result<Permissions> {
        if let Some(held) = self.cached(roles) {
            return Ok(held);
        }
        let mut all = BTreeSet::new();
        let mut missing = Vec::new();
        for role in roles {
            match self.cached_role(role) {
                Some(set) => all.extend(set.iter().cloned()),
                None => missing.push(role.clone()),
            }
        }
        if !missing.is_empty() {
            let stored = self.db.stored_permissions(&missing).await?;
            for role in missing {
                let mut set: BTreeSet<String> = self.code_grants(&role).cloned().collect();
                set.extend(
                    stored
                        .iter()
                        .filter(|(r, _)| *r == role)
                        .map(|(_, p)| p.clone()),
                );
                all.extend(set.iter().cloned());
                self.remember(role, Arc::new(set));
            }
        }
        Ok(Permissions::new(all))
    }

    /// The permissions of `roles` when every role's set is cached (no database, no
    /// await): one role's set as it is, several roles' union.
    pub(crate) fn cached(&self, roles: &[String]) -> Option<Permissions> {
        if let [role] = roles {
            return self.cached_role(role).map(Permissions::from_shared);
        }
        let mut all = BTreeSet::new();
        for role in roles {
            all.extend(self.cached_role(role)?.iter().cloned());
        }
        Some(Permissions::new(all))
    }

    fn cached_role(&self, role: &str) -> Option<Arc<BTreeSet<String>>> {
        let map = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let (set, until) = map.get(role)?;
        (Instant::now() < *until).then(|| set.clone())
    }

    fn remember(&self, role: String, set: Arc<BTreeSet<String>>) {
        let until = Instant::now() + self.ttl;
        let mut map = self.cache.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= CACHE_CAPACITY {
            map.clear();
        }
        map.insert(role, (set, until));
    }

    /// Drops `role`'s cached permissions (this process; the others within the cache
    /// lifetime).
    pub(crate) async fn forget(&self, role: &str) {
        let mut map = self.cache.write().unwrap_or_else(|e| e.into_inner());
        map.remove(role);
    }
}

/// `VALIDATION_ERROR` unless `name` is a usable role name: 1 to 64 bytes of letters,
/// digits and `_ - . :`.
pub(crate) fn check_role_name(name: &str) -> Result<()> {
    if !is_name(name, MAX_ROLE_BYTES) {
        return Err(SentriError::validation(
            "role names are 1 to 64 letters, digits, '_', '-', '.' or ':'",
        ));
    }
    Ok(())
}

/// `VALIDATION_ERROR` unless `name` is a usable permission name: 1 to 128 bytes of
/// letters, digits and `_ - . : *`.
pub(crate) fn check_permission_name(name: &str) -> Result<()> {
    if !is_name(name, MAX_PERMISSION_BYTES) {
        return Err(SentriError::validation(
            "permission names are 1 to 128 letters, digits, '_', '-', '.', ':' or '*'",
        ));
    }
    Ok(())
}

/// `VALIDATION_ERROR` for a description longer than 512 bytes or with control
/// characters.
pub(crate) fn check_description(text: &str) -> Result<()> {
    if text.len() > MAX_DESCRIPTION_BYTES || text.chars().any(char::is_control) {
        return Err(SentriError::validation(
            "description must be at most 512 bytes without control characters",
        ));
    }
    Ok(())
}

fn is_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'*'))
}
