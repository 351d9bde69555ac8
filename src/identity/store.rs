//! Users: records and repository methods.

use std::fmt;

use sea_query::{Expr, ExprTrait, Func, Query, SelectStatement};
use sea_query_sqlx::SqlxValues;

use super::roles::schema::{AUTHZ_VERSION, roles_json_sql};
use super::roles::{ChangeOutcome, RoleChange};
use super::schema::{
    CREATED_AT, EMAIL, EMAIL_VERIFIED_AT, ID, IDENTIFIER, PASSWORD_HASH, ROLES, UPDATED_AT, USERS,
};
use crate::core::error::SentriError;
use crate::core::principal::AuthUser;
use crate::db::{
    Columns, Database, Step, StepsOutcome, db_err, is_unique_violation, now_ms, on_pool,
};

/// The columns of `sentri_users` a record reads (the roles come from
/// `sentri_user_roles`, see [`roles_json_sql`]).
const USER_COLUMNS: [&str; 6] = [
    ID,
    IDENTIFIER,
    PASSWORD_HASH,
    CREATED_AT,
    UPDATED_AT,
    AUTHZ_VERSION,
];

/// A stored user. Its `Debug` output never shows the password hash.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The user id: a UUID (v7) string.
    pub id: String,
    /// The login identifier, stored and compared byte-exactly.
    pub identifier: String,
    /// The password hash (bcrypt or similar), never the password.
    pub password_hash: String,
    /// The user's roles (rows of `sentri_user_roles`, in the order they were given).
    pub roles: Vec<String>,
    /// The authorization version: bumped by every change of the user's roles; access
    /// tokens carry it and `protect()` refuses an older one.
    pub authz_version: i64,
    /// Creation time, unix epoch milliseconds.
    pub created_at: i64,
    /// Last modification time, unix epoch milliseconds.
    pub updated_at: i64,
}

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("identifier", &self.identifier)
            .field("password_hash", &"<redacted>")
            .field("roles", &self.roles)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field("authz_version", &self.authz_version)
            .finish()
    }
}

impl UserRecord {
    /// The user as applications see it (no password hash).
    pub fn to_auth_user(&self) -> AuthUser {
        AuthUser {
            id: self.id.clone(),
            identifier: self.identifier.clone(),
            roles: self.roles.clone(),
        }
    }
}

/// The fields of a user to create with [`Database::create_user`].
#[derive(Clone, Copy)]
pub struct NewUser<'a> {
    /// The login identifier (already normalised by the caller).
    pub identifier: &'a str,
    /// The password hash.
    pub password_hash: &'a str,
    /// The user's roles.
    pub roles: &'a [String],
}

impl fmt::Debug for NewUser<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUser")
            .field("identifier", &self.identifier)
            .field("password_hash", &"<redacted>")
            .field("roles", &self.roles)
            .finish()
    }
}

/// Maps one `sentri_users` row (any dialect).
pub(crate) fn user_from_row(row: &impl Columns) -> Result<UserRecord, SentriError> {
    let roles: String = row.col(ROLES)?;
    Ok(UserRecord {
        id: row.col(ID)?,
        identifier: row.col(IDENTIFIER)?,
        password_hash: row.col(PASSWORD_HASH)?,
        roles: serde_json::from_str(&roles).map_err(SentriError::internal)?,
        created_at: row.col(CREATED_AT)?,
        updated_at: row.col(UPDATED_AT)?,
        authz_version: row.col(AUTHZ_VERSION)?,
    })
}

fn map_user_conflict(err: sqlx::Error) -> SentriError {
    if is_unique_violation(&err) {
        SentriError::user_already_exists()
    } else {
        db_err(err)
    }
}

impl Database {
    async fn fetch_user(
        &self,
        (sql, values): (String, SqlxValues),
    ) -> Result<Option<UserRecord>, SentriError> {
        self.read(|| async {
            on_pool!(self, pool => {
                let row = sqlx::query_with(sqlx::AssertSqlSafe(sql.clone()), values.clone())
                    .fetch_optional(pool)
                    .await
                    .map_err(db_err)?;
                row.as_ref().map(user_from_row).transpose()
            })
        })
        .await
    }

    /// A `SELECT` of user records: the user columns and the roles (as `roles`).
    pub(crate) fn select_user(&self) -> SelectStatement {
        Query::select()
            .columns(USER_COLUMNS.map(|c| (USERS, c)))
            .expr_as(Expr::cust(roles_json_sql(self.dialect())), ROLES)
            .from(USERS)
            .to_owned()
    }

    /// Creates a user with a new UUID v7 id, and its role rows, in one transaction.
    ///
    /// An identifier that is already taken (byte-exact) gives `USER_ALREADY_EXISTS`.
    pub async fn create_user(&self, new: &NewUser<'_>) -> Result<UserRecord, SentriError> {
        let (record, steps) = self.insert_user(new)?;
        match self.steps(&steps, map_user_conflict).await? {
            StepsOutcome::Committed => Ok(record),
            StepsOutcome::StoppedAt(_) => Err(SentriError::user_already_exists()),
        }
    }

    /// The record and the statements that create a new user (the user row first, then
    /// its roles), for callers that create the user inside a transaction of their own
    /// ([`Database::steps`]).
    pub(crate) fn insert_user(
        &self,
        new: &NewUser<'_>,
    ) -> Result<(UserRecord, Vec<Step>), SentriError> {
        let now = now_ms();
        let record = UserRecord {
            id: uuid::Uuid::now_v7().to_string(),
            identifier: new.identifier.to_owned(),
            password_hash: new.password_hash.to_owned(),
            roles: new.roles.to_vec(),
            created_at: now,
            updated_at: now,
            authz_version: 0,
        };
        let stmt = Query::insert()
            .into_table(USERS)
            .columns([ID, IDENTIFIER, PASSWORD_HASH, CREATED_AT, UPDATED_AT])
            .values([
                Expr::val(record.id.as_str()),
                Expr::val(record.identifier.as_str()),
                Expr::val(record.password_hash.as_str()),
                Expr::val(now),
                Expr::val(now),
            ])
            .map_err(SentriError::internal)?
            .to_owned();
        let mut steps = vec![Step {
            built: self.build(&stmt),
            must_affect: true,
        }];
        steps.extend(self.user_role_steps(&record.id, &record.roles, now)?);
        Ok((record, steps))
    }

    /// The user with this id, if any.
    pub async fn find_user_by_id(&self, id: &str) -> Result<Option<UserRecord>, SentriError> {
        let stmt = self
            .select_user()
            .and_where(Expr::col((USERS, ID)).eq(id))
            .to_owned();
        self.fetch_user(self.build(&stmt)).await
    }

    /// The user with exactly this identifier (byte-exact on every dialect), if any.
    pub async fn find_user_by_identifier(
        &self,
        identifier: &str,
    ) -> Result<Option<UserRecord>, SentriError> {
        let stmt = self
            .select_user()
            .and_where(Expr::col((USERS, IDENTIFIER)).eq(identifier))
            .to_owned();
        self.fetch_user(self.build(&stmt)).await
    }

    /// Replaces the user's roles and bumps their authorization version (one
    /// transaction, no last-admin rule: see the roles capability for that); `None` when
    /// there is no such user.
    pub async fn update_user_roles(
        &self,
        id: &str,
        roles: &[String],
    ) -> Result<Option<UserRecord>, SentriError> {
        let change = RoleChange::Set(roles.to_vec());
        match self
            .change_user_roles(id, &change, "", false, now_ms())
            .await?
        {
            ChangeOutcome::NoUser => Ok(None),
            _ => self.find_user_by_id(id).await,
        }
    }

    /// Changes the user's identifier; `None` when there is no such user,
    /// `USER_ALREADY_EXISTS` when another user has it.
    pub async fn update_user_identifier(
        &self,
        id: &str,
        identifier: &str,
    ) -> Result<Option<UserRecord>, SentriError> {
        let stmt = Query::update()
            .table(USERS)
            .value(IDENTIFIER, identifier)
            .value(UPDATED_AT, now_ms())
            .and_where(Expr::col(ID).eq(id))
            .to_owned();
        if self.exec_with(self.build(&stmt), map_user_conflict).await? == 0 {
            return Ok(None);
        }
        self.find_user_by_id(id).await
    }

    /// Replaces the user's password hash; `false` when there is no such user.
    pub async fn update_user_password(&self, id: &str, hash: &str) -> Result<bool, SentriError> {
        let stmt = Query::update()
            .table(USERS)
            .value(PASSWORD_HASH, hash)
            .value(UPDATED_AT, now_ms())
            .and_where(Expr::col(ID).eq(id))
            .to_owned();
        Ok(self.exec(self.build(&stmt)).await? > 0)
    }

    /// Replaces the password hash only if it is still `old` (an upgrade on login must not
    /// overwrite a password change that committed meanwhile). `true` when replaced.
    pub async fn replace_password_hash(
        &self,
        id: &str,
        old: &str,
        new: &str,
    ) -> Result<bool, SentriError> {
        let stmt = Query::update()
            .table(USERS)
            .value(PASSWORD_HASH, new)
            .value(UPDATED_AT, now_ms())
            .and_where(Expr::col(ID).eq(id))
            .and_where(Expr::col(PASSWORD_HASH).eq(old))
            .to_owned();
        Ok(self.exec(self.build(&stmt)).await? > 0)
    }

    /// The number of users.
    pub async fn count_users(&self) -> Result<u64, SentriError> {
        let (sql, values) = self.build(
            &Query::select()
                .expr(Func::count(Expr::col(ID)))
                .from(USERS)
                .to_owned(),
        );
        self.read(|| async {
            on_pool!(self, pool => {
                let row = sqlx::query_with(sqlx::AssertSqlSafe(sql.clone()), values.clone())
                    .fetch_one(pool)
                    .await
                    .map_err(db_err)?;
                let count: i64 = sqlx::Row::try_get(&row, 0).map_err(db_err)?;
                Ok(u64::try_from(count).unwrap_or(0))
            })
        })
        .await
    }
}

/// The email state of a user: the stored address and when it was verified.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EmailState {
    /// The stored address (set when it was provisioned or verified), if any.
    pub email: Option<String>,
    /// When the stored address was verified (unix ms), if it was.
    pub verified_at: Option<i64>,
}

impl Database {
    /// The stored email state of a user; `None` when there is no such user.
    pub async fn user_email(&self, id: &str) -> Result<Option<EmailState>, SentriError> {
        let (sql, values) = self.build(
            &Query::select()
                .columns([EMAIL, EMAIL_VERIFIED_AT])
                .from(USERS)
                .and_where(Expr::col(ID).eq(id))
                .to_owned(),
        );
        self.read(|| async {
            on_pool!(self, pool => {
                let row = sqlx::query_with(sqlx::AssertSqlSafe(sql.clone()), values.clone())
                    .fetch_optional(pool)
                    .await
                    .map_err(db_err)?;
                row.map(|row| {
                    Ok(EmailState {
                        email: sqlx::Row::try_get(&row, 0).map_err(db_err)?,
                        verified_at: sqlx::Row::try_get(&row, 1).map_err(db_err)?,
                    })
                })
                .transpose()
            })
        })
        .await
    }

    /// Stores `email` for the user, verified at `verified_at` (or unverified with
    /// `None`); `false` when there is no such user.
    pub async fn set_user_email(
        &self,
        id: &str,
        email: &str,
        verified_at: Option<i64>,
    ) -> Result<bool, SentriError> {
        let stmt = Query::update()
            .table(USERS)
            .value(EMAIL, email)
            .value(EMAIL_VERIFIED_AT, verified_at)
            .value(UPDATED_AT, now_ms())
            .and_where(Expr::col(ID).eq(id))
            .to_owned();
        Ok(self.exec(self.build(&stmt)).await? > 0)
    }
}
