//! The role catalogue and the user-role join table: records and statements.

use sea_query::{Expr, ExprTrait, OnConflict, Order, Query};
use sea_query_sqlx::SqlxValues;
use serde::Serialize;

use super::schema::{
    AUTHZ_VERSION, BUILTIN, CREATED_AT, DESCRIPTION, NAME, PERMISSION, ROLE, ROLE_PERMISSIONS,
    ROLES, SEQ, UPDATED_AT, USER_ID, USER_ROLES,
};
use crate::core::error::{ErrorCode, Result, SentriError};
use crate::db::{Columns, Database, Step, StepsOutcome, db_err, is_unique_violation, on_pool};
use crate::identity::schema::{self as users, USERS};

/// A role of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RoleRecord {
    /// The role name.
    pub name: String,
    /// A free-text description (may be empty).
    pub description: String,
    /// The permissions stored for the role (declared in code ones are added when
    /// permissions are resolved, see `ServerConfig::grant`), sorted.
    pub permissions: Vec<String>,
    /// `true` for roles seeded from the configuration (`valid_roles`, the admin role).
    pub builtin: bool,
    /// Creation time, unix ms.
    pub created_at: i64,
    /// Last change, unix ms.
    pub updated_at: i64,
}

/// A holder of a role (`GET /roles/{role}/users`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleHolder {
    /// The user id.
    pub id: String,
    /// The user's identifier.
    pub identifier: String,
}

/// A change of one user's roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RoleChange {
    /// Add these (keeping the others).
    Assign(Vec<String>),
    /// Remove this one.
    Revoke(String),
    /// Replace them all.
    Set(Vec<String>),
}

/// What [`Database::change_user_roles`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeOutcome {
    /// Committed: the roles changed and the version was bumped.
    Changed,
    /// No such user.
    NoUser,
    /// Nothing to remove (the role was not held), or the last admin holder would have
    /// lost the admin role: nothing changed.
    Refused,
}

/// How a role in use is deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeleteMode {
    /// Only when no user holds it.
    Refuse,
    /// Its holders get this role instead.
    Reassign(String),
    /// Its holders just lose it.
    Strip,
}

fn role_from_row(row: &impl Columns) -> Result<RoleRecord> {
    let builtin: i16 = row.col(BUILTIN)?;
    Ok(RoleRecord {
        name: row.col(NAME)?,
        description: row.col(DESCRIPTION)?,
        permissions: Vec::new(),
        builtin: builtin != 0,
        created_at: row.col(CREATED_AT)?,
        updated_at: row.col(UPDATED_AT)?,
    })
}

fn role_conflict(err: sqlx::Error) -> SentriError {
    if is_unique_violation(&err) {
        SentriError::new(ErrorCode::RoleAlreadyExists, "Role already exists")
    } else {
        db_err(err)
    }
}

fn step(built: (String, SqlxValues), must_affect: bool) -> Step {
    Step { built, must_affect }
}

/// Runs a built `SELECT` (an idempotent read) and maps every row with `$map` (a
/// function generic over [`Columns`]).
macro_rules! fetch_all {
    ($db:expr, $built:expr, $map:expr) => {{
        let (sql, values) = $built;
        $db.read(|| async {
            on_pool!($db, pool => {
                let rows = sqlx::query_with(sqlx::AssertSqlSafe(sql.clone()), values.clone())
                    .fetch_all(pool)
                    .await
                    .map_err(db_err)?;
                rows.iter().map(|row| $map(row)).collect::<Result<Vec<_>>>()
            })
        })
        .await
    }};
}

fn permission_pair(row: &impl Columns) -> Result<(String, String)> {
    Ok((row.col(ROLE)?, row.col(PERMISSION)?))
}

fn holder_from_row(row: &impl Columns) -> Result<RoleHolder> {
    Ok(RoleHolder {
        id: row.col(users::ID)?,
        identifier: row.col(users::IDENTIFIER)?,
    })
}

fn count_from_row(row: &impl Columns) -> Result<i64> {
    row.col("n")
}

fn string_from_row(row: &impl Columns) -> Result<String> {
    row.col("v")
}

/// `INSERT … ON CONFLICT DO NOTHING` of one `(role, permission)` row.
fn permission_insert(role: &str, permission: &str) -> Result<sea_query::InsertStatement> {
    Ok(Query::insert()
        .into_table(ROLE_PERMISSIONS)
        .columns([ROLE, PERMISSION])
        .values([Expr::val(role), Expr::val(permission)])
        .map_err(SentriError::internal)?
        .on_conflict(
            OnConflict::columns([ROLE, PERMISSION])
                .do_nothing_on([ROLE, PERMISSION])
                .to_owned(),
        )
        .to_owned())
}

impl Database {
    /// Adds the configured roles to the catalogue as built-in ones (existing rows are
    /// left as they are). Run by `ServerAuth::migrate`.
    pub(crate) async fn seed_roles(&self, names: &[String], now: i64) -> Result<()> {
        for name in names {
            let stmt = Query::insert()
                .into_table(ROLES)
                .columns([NAME, DESCRIPTION, BUILTIN, CREATED_AT, UPDATED_AT])
                .values([
                    Expr::val(name.as_str()),
                    Expr::val(""),
                    Expr::val(1i16),
                    Expr::val(now),
                    Expr::val(now),
                ])
                .map_err(SentriError::internal)?
                .on_conflict(OnConflict::column(NAME).do_nothing_on([NAME]).to_owned())
                .to_owned();
            self.exec_retrying(self.build(&stmt)).await?;
        }
        Ok(())
    }

    /// Every role of the catalogue with its stored permissions, by name.
    pub async fn list_roles(&self) -> Result<Vec<RoleRecord>> {
        let select = Query::select()
            .columns([NAME, DESCRIPTION, BUILTIN, CREATED_AT, UPDATED_AT])
            .from(ROLES)
            .order_by(NAME, Order::Asc)
            .to_owned();
        let mut roles: Vec<RoleRecord> = fetch_all!(self, self.build(&select), role_from_row)?;
        let perms = Query::select()
            .columns([ROLE, PERMISSION])
            .from(ROLE_PERMISSIONS)
            .order_by(PERMISSION, Order::Asc)
            .to_owned();
        let pairs: Vec<(String, String)> = fetch_all!(self, self.build(&perms), permission_pair)?;
        for (role, permission) in pairs {
            if let Some(r) = roles.iter_mut().find(|r| r.name == role) {
                r.permissions.push(permission);
            }
        }
        Ok(roles)
    }

    /// One role of the catalogue, if any.
    pub async fn find_role(&self, name: &str) -> Result<Option<RoleRecord>> {
        let select = Query::select()
            .columns([NAME, DESCRIPTION, BUILTIN, CREATED_AT, UPDATED_AT])
            .from(ROLES)
            .and_where(Expr::col(NAME).eq(name))
            .to_owned();
        let found: Vec<RoleRecord> = fetch_all!(self, self.build(&select), role_from_row)?;
        let Some(mut role) = found.into_iter().next() else {
            return Ok(None);
        };
        role.permissions = self
            .stored_permissions(std::slice::from_ref(&role.name))
            .await?
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        Ok(Some(role))
    }

    /// The stored `(role, permission)` pairs of `roles`.
    pub(crate) async fn stored_permissions(
        &self,
        roles: &[String],
    ) -> Result<Vec<(String, String)>> {
        if roles.is_empty() {
            return Ok(Vec::new());
        }
        let select = Query::select()
            .columns([ROLE, PERMISSION])
            .from(ROLE_PERMISSIONS)
            .and_where(Expr::col(ROLE).is_in(roles.iter().map(String::as_str)))
            .order_by(PERMISSION, Order::Asc)
            .to_owned();
        fetch_all!(self, self.build(&select), permission_pair)
    }

    /// Adds a role and its permissions in one transaction; `ROLE_ALREADY_EXISTS` when
    /// the name is taken.
    pub(crate) async fn insert_role(&self, role: &RoleRecord) -> Result<()> {
        let insert = Query::insert()
            .into_table(ROLES)
            .columns([NAME, DESCRIPTION, BUILTIN, CREATED_AT, UPDATED_AT])
            .values([
                Expr::val(role.name.as_str()),
                Expr::val(role.description.as_str()),
                Expr::val(i16::from(role.builtin)),
                Expr::val(role.created_at),
                Expr::val(role.updated_at),
            ])
            .map_err(SentriError::internal)?
            .to_owned();
        let mut steps = vec![step(self.build(&insert), true)];
        for p in &role.permissions {
            steps.push(step(self.build(&permission_insert(&role.name, p)?), false));
        }
        self.steps(&steps, role_conflict).await.map(|_| ())
    }

    /// Changes a role's description and/or replaces its permissions (one transaction);
    /// `false` when there is no such role.
    pub(crate) async fn update_role(
        &self,
        name: &str,
        description: Option<&str>,
        permissions: Option<&[String]>,
        now: i64,
    ) -> Result<bool> {
        let mut update = Query::update();
        update
            .table(ROLES)
            .value(UPDATED_AT, now)
            .and_where(Expr::col(NAME).eq(name));
        if let Some(d) = description {
            update.value(DESCRIPTION, d);
        }
        let mut steps = vec![step(self.build(&update), true)];
        if let Some(perms) = permissions {
            let delete = Query::delete()
                .from_table(ROLE_PERMISSIONS)
                .and_where(Expr::col(ROLE).eq(name))
                .to_owned();
            steps.push(step(self.build(&delete), false));
            for p in perms {
                steps.push(step(self.build(&permission_insert(name, p)?), false));
            }
        }
        Ok(self.steps(&steps, db_err).await? == StepsOutcome::Committed)
    }

    /// The ids of the users holding `role`.
    pub(crate) async fn role_holder_ids(&self, role: &str) -> Result<Vec<String>> {
        let select = Query::select()
            .expr_as(Expr::col(USER_ID), "v")
            .from(USER_ROLES)
            .and_where(Expr::col(ROLE).eq(role))
            .to_owned();
        fetch_all!(self, self.build(&select), string_from_row)
    }

    /// The holders of `role` after the user id `after`, by id, at most `limit`.
    pub async fn role_holders(
        &self,
        role: &str,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<RoleHolder>> {
        let mut select = Query::select();
        select
            .column((USERS, users::ID))
            .column((USERS, users::IDENTIFIER))
            .from(USER_ROLES)
            .inner_join(
                USERS,
                Expr::col((USERS, users::ID)).equals((USER_ROLES, USER_ID)),
            )
            .and_where(Expr::col((USER_ROLES, ROLE)).eq(role))
            .order_by((USER_ROLES, USER_ID), Order::Asc)
            .limit(limit);
        if let Some(after) = after {
            select.and_where(Expr::col((USER_ROLES, USER_ID)).gt(after));
        }
        fetch_all!(self, self.build(&select), holder_from_row)
    }

    /// How many users hold `role`.
    pub async fn count_role_holders(&self, role: &str) -> Result<u64> {
        let select = Query::select()
            .expr_as(Expr::col(USER_ID).count(), "n")
            .from(USER_ROLES)
            .and_where(Expr::col(ROLE).eq(role))
            .to_owned();
        let n: Vec<i64> = fetch_all!(self, self.build(&select), count_from_row)?;
        Ok(n.first()
            .copied()
            .map_or(0, |n| u64::try_from(n).unwrap_or(0)))
    }

    /// Deletes a role from the catalogue (its permissions go with it) and, per `mode`,
    /// moves its holders to another role or strips it from them, bumping each holder's
    /// authorization version — one transaction. `Ok(false)`: no such role.
    /// `ROLE_IN_USE` when `mode` is `Refuse` and someone holds it.
    pub(crate) async fn delete_role(
        &self,
        name: &str,
        mode: &DeleteMode,
        now: i64,
    ) -> Result<bool> {
        let holders = Query::select()
            .column(USER_ID)
            .from(USER_ROLES)
            .and_where(Expr::col(ROLE).eq(name))
            .to_owned();
        let bump = Query::update()
            .table(USERS)
            .value(AUTHZ_VERSION, Expr::col(AUTHZ_VERSION).add(1))
            .value(users::UPDATED_AT, now)
            .and_where(Expr::col(users::ID).in_subquery(holders))
            .to_owned();
        let mut steps = Vec::new();
        if *mode != DeleteMode::Refuse {
            steps.push(step(self.build(&bump), false));
        }
        if let DeleteMode::Reassign(to) = mode {
            // Holders of `name` only move over; holders of both keep their row of `to`
            // (their row of `name` goes with the strip below).
            let move_over = Query::update()
                .table(USER_ROLES)
                .value(ROLE, to.as_str())
                .and_where(Expr::col(ROLE).eq(name))
                .and_where(self.holders_of(to).not())
                .to_owned();
            steps.push(step(self.build(&move_over), false));
        }
        if *mode != DeleteMode::Refuse {
            let strip = Query::delete()
                .from_table(USER_ROLES)
                .and_where(Expr::col(ROLE).eq(name))
                .to_owned();
            steps.push(step(self.build(&strip), false));
        }
        // Refuse: the delete only happens when nobody holds the role (checked in SQL,
        // so an assignment racing the delete is never orphaned).
        let unused = Query::select()
            .expr(Expr::val(1))
            .from(USER_ROLES)
            .and_where(Expr::col(ROLE).eq(name))
            .to_owned();
        let delete = Query::delete()
            .from_table(ROLES)
            .and_where(Expr::col(NAME).eq(name))
            .and_where(Expr::exists(unused).not())
            .to_owned();
        steps.push(step(self.build(&delete), true));
        match self.steps(&steps, db_err).await? {
            StepsOutcome::Committed => Ok(true),
            StepsOutcome::StoppedAt(_) => match self.find_role(name).await? {
                None => Ok(false),
                Some(_) => Err(SentriError::new(
                    ErrorCode::RoleInUse,
                    "The role is held by users: delete it with reassign or strip",
                )),
            },
        }
    }
}

/// `INSERT … ON CONFLICT DO NOTHING` of one role of one user.
fn user_role_insert(user_id: &str, role: &str, seq: i64) -> Result<sea_query::InsertStatement> {
    Ok(Query::insert()
        .into_table(USER_ROLES)
        .columns([USER_ID, ROLE, SEQ])
        .values([Expr::val(user_id), Expr::val(role), Expr::val(seq)])
        .map_err(SentriError::internal)?
        .on_conflict(
            OnConflict::columns([USER_ID, ROLE])
                .do_nothing_on([USER_ID, ROLE])
                .to_owned(),
        )
        .to_owned())
}

/// The `seq` of the `i`-th role given at `now` (later writes sort after earlier ones,
/// the landed roles, numbered from 1, before all).
fn seq_of(now: i64, i: usize) -> i64 {
    now.saturating_mul(1000)
        .saturating_add(i64::try_from(i).unwrap_or(999))
}

impl Database {
    /// The role rows of a new user (steps of the transaction that inserts the user).
    pub(crate) fn user_role_steps(
        &self,
        user_id: &str,
        roles: &[String],
        now: i64,
    ) -> Result<Vec<Step>> {
        roles
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Ok(step(
                    self.build(&user_role_insert(user_id, r, seq_of(now, i))?),
                    false,
                ))
            })
            .collect()
    }

    /// Changes one user's roles in one transaction that first bumps the user's
    /// authorization version (locking the user row, so changes of one user are
    /// serialised). Removing `admin` from a user is conditional, in SQL, on another
    /// holder remaining; the catalogue row of `admin` is locked first so two such
    /// removals cannot both pass.
    pub(crate) async fn change_user_roles(
        &self,
        user_id: &str,
        change: &RoleChange,
        admin: &str,
        holds_admin: bool,
        now: i64,
    ) -> Result<ChangeOutcome> {
        let mut steps = Vec::new();
        let removes_admin = match change {
            RoleChange::Assign(_) => false,
            RoleChange::Revoke(role) => role == admin,
            RoleChange::Set(roles) => !roles.iter().any(|r| r == admin),
        };
        if removes_admin {
            let lock = Query::update()
                .table(ROLES)
                .value(UPDATED_AT, Expr::col(UPDATED_AT))
                .and_where(Expr::col(NAME).eq(admin))
                .to_owned();
            steps.push(step(self.build(&lock), false));
        }
        let bump = Query::update()
            .table(USERS)
            .value(AUTHZ_VERSION, Expr::col(AUTHZ_VERSION).add(1))
            .value(users::UPDATED_AT, now)
            .and_where(Expr::col(users::ID).eq(user_id))
            .to_owned();
        steps.push(step(self.build(&bump), true));
        match change {
            RoleChange::Assign(roles) => {
                steps.extend(self.user_role_steps(user_id, roles, now)?);
            }
            RoleChange::Revoke(role) if role == admin => {
                steps.push(step(self.build(&self.remove_admin(user_id, admin)), true));
            }
            RoleChange::Revoke(role) => {
                let delete = Query::delete()
                    .from_table(USER_ROLES)
                    .and_where(Expr::col(USER_ID).eq(user_id))
                    .and_where(Expr::col(ROLE).eq(role.as_str()))
                    .to_owned();
                steps.push(step(self.build(&delete), true));
            }
            RoleChange::Set(roles) => {
                let keep = roles.iter().map(String::as_str).chain([admin]);
                let delete = Query::delete()
                    .from_table(USER_ROLES)
                    .and_where(Expr::col(USER_ID).eq(user_id))
                    .and_where(Expr::col(ROLE).is_not_in(keep))
                    .to_owned();
                steps.push(step(self.build(&delete), false));
                if removes_admin {
                    let remove = self.build(&self.remove_admin(user_id, admin));
                    steps.push(step(remove, holds_admin));
                }
                // In the order given: kept roles take their new position too.
                for (i, role) in roles.iter().enumerate() {
                    let mut insert = user_role_insert(user_id, role, seq_of(now, i))?;
                    insert.on_conflict(
                        OnConflict::columns([USER_ID, ROLE])
                            .update_column(SEQ)
                            .to_owned(),
                    );
                    steps.push(step(self.build(&insert), false));
                }
            }
        }
        let first_change = usize::from(removes_admin) + 1;
        Ok(match self.steps(&steps, db_err).await? {
            StepsOutcome::Committed => ChangeOutcome::Changed,
            StepsOutcome::StoppedAt(n) if n < first_change => ChangeOutcome::NoUser,
            StepsOutcome::StoppedAt(_) => ChangeOutcome::Refused,
        })
    }

    /// `user_id IN (the holders of role)`, read through a derived table: MySQL refuses
    /// a subquery on the table an `UPDATE`/`DELETE` writes unless it is materialised.
    fn holders_of(&self, role: &str) -> Expr {
        Expr::cust_with_values(
            format!(
                "user_id IN (SELECT h.user_id FROM (SELECT user_id FROM sentri_user_roles WHERE role = {}) AS h)",
                self.placeholder()
            ),
            [role],
        )
    }

    /// The first bind placeholder of a custom expression in this dialect.
    fn placeholder(&self) -> &'static str {
        match self.dialect() {
            crate::db::Dialect::Postgres => "$1",
            _ => "?",
        }
    }

    /// `DELETE` of the user's `admin` row, only while another user holds `admin`.
    fn remove_admin(&self, user_id: &str, admin: &str) -> sea_query::DeleteStatement {
        let others = Expr::cust_with_values(
            format!(
                "(SELECT COUNT(*) FROM (SELECT user_id FROM sentri_user_roles WHERE role = {}) AS h) > 1",
                self.placeholder()
            ),
            [admin],
        );
        Query::delete()
            .from_table(USER_ROLES)
            .and_where(Expr::col(USER_ID).eq(user_id))
            .and_where(Expr::col(ROLE).eq(admin))
            .and_where(others)
            .to_owned()
    }

    /// The authorization version of a user, if the user exists.
    pub(crate) async fn authz_version(&self, user_id: &str) -> Result<Option<i64>> {
        let select = Query::select()
            .expr_as(Expr::col(AUTHZ_VERSION), "n")
            .from(USERS)
            .and_where(Expr::col(users::ID).eq(user_id))
            .to_owned();
        let found: Vec<i64> = fetch_all!(self, self.build(&select), count_from_row)?;
        Ok(found.first().copied())
    }
}
