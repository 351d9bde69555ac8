//! Users: records and repository methods.

use std::fmt;

use sea_query::{Expr, ExprTrait, Func, Query, SelectStatement};
use sea_query_sqlx::SqlxValues;

use super::schema::{
    CREATED_AT, EMAIL, EMAIL_VERIFIED_AT, ID, IDENTIFIER, PASSWORD_HASH, ROLES, UPDATED_AT, USERS,
};
use crate::core::error::SentriError;
use crate::core::principal::AuthUser;
use crate::db::{Columns, Database, db_err, is_unique_violation, now_ms, on_pool};

const USER_COLUMNS: [&str; 6] = [ID, IDENTIFIER, PASSWORD_HASH, ROLES, CREATED_AT, UPDATED_AT];

/// A stored user. Its `Debug` output never shows the password hash.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The user id: a UUID (v7) string.
    pub id: String,
    /// The login identifier, stored and compared byte-exactly.
    pub identifier: String,
    /// The password hash (bcrypt or similar), never the password.
    pub password_hash: String,
    /// The user's roles (stored as a JSON array of strings).
    pub roles: Vec<String>,
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

fn roles_json(roles: &[String]) -> Result<String, SentriError> {
    serde_json::to_string(roles).map_err(SentriError::internal)
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

    fn select_user() -> SelectStatement {
        Query::select().columns(USER_COLUMNS).from(USERS).to_owned()
    }

    /// Creates a user with a new UUID v7 id.
    ///
    /// An identifier that is already taken (byte-exact) gives `USER_ALREADY_EXISTS`.
    pub async fn create_user(&self, new: &NewUser<'_>) -> Result<UserRecord, SentriError> {
        let (record, built) = self.insert_user(new)?;
        self.exec_with(built, map_user_conflict).await?;
        Ok(record)
    }

    /// The record and the built `INSERT` of a new user, for callers that create the
    /// user inside a transaction of their own ([`Database::steps`]).
    pub(crate) fn insert_user(
        &self,
        new: &NewUser<'_>,
    ) -> Result<(UserRecord, (String, SqlxValues)), SentriError> {
        let now = now_ms();
        let record = UserRecord {
            id: uuid::Uuid::now_v7().to_string(),
            identifier: new.identifier.to_owned(),
            password_hash: new.password_hash.to_owned(),
            roles: new.roles.to_vec(),
            created_at: now,
            updated_at: now,
        };
        let stmt = Query::insert()
            .into_table(USERS)
            .columns(USER_COLUMNS)
            .values([
                Expr::val(record.id.as_str()),
                Expr::val(record.identifier.as_str()),
                Expr::val(record.password_hash.as_str()),
                Expr::val(roles_json(&record.roles)?),
                Expr::val(now),
                Expr::val(now),
            ])
            .map_err(SentriError::internal)?
            .to_owned();
        Ok((record, self.build(&stmt)))
    }

    /// The user with this id, if any.
    pub async fn find_user_by_id(&self, id: &str) -> Result<Option<UserRecord>, SentriError> {
        let stmt = Self::select_user()
            .and_where(Expr::col(ID).eq(id))
            .to_owned();
        self.fetch_user(self.build(&stmt)).await
    }

    /// The user with exactly this identifier (byte-exact on every dialect), if any.
    pub async fn find_user_by_identifier(
        &self,
        identifier: &str,
    ) -> Result<Option<UserRecord>, SentriError> {
        let stmt = Self::select_user()
            .and_where(Expr::col(IDENTIFIER).eq(identifier))
            .to_owned();
        self.fetch_user(self.build(&stmt)).await
    }

    /// Replaces the user's roles; `None` when there is no such user.
    pub async fn update_user_roles(
        &self,
        id: &str,
        roles: &[String],
    ) -> Result<Option<UserRecord>, SentriError> {
        let stmt = Query::update()
            .table(USERS)
            .value(ROLES, roles_json(roles)?)
            .value(UPDATED_AT, now_ms())
            .and_where(Expr::col(ID).eq(id))
            .to_owned();
        if self.exec(self.build(&stmt)).await? == 0 {
            return Ok(None);
        }
        self.find_user_by_id(id).await
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
