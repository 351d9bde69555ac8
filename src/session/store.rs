//! Sessions (refresh-token rows): records and repository methods.

use std::fmt;

use sea_query::{Expr, ExprTrait, InsertStatement, Order, Query, SelectStatement};
use sea_query_sqlx::SqlxValues;

use super::schema::{
    ASSURANCE, CREATED_AT, EXPIRES_AT, FAMILIES, FAMILY_ID, ID, IP, LAST_USED_AT, PREVIOUS_HASH,
    REFRESH_HASH, ROTATED_FROM, SESSIONS, USER_AGENT, USER_ID, WORKSPACE_ID,
};
use crate::core::error::SentriError;
use crate::core::principal::AuthUser;
use crate::db::{Columns, Database, db_err, on_pool};
use crate::identity::schema::USERS;

const SESSION_COLUMNS: [&str; 11] = [
    ID,
    USER_ID,
    FAMILY_ID,
    REFRESH_HASH,
    PREVIOUS_HASH,
    ROTATED_FROM,
    EXPIRES_AT,
    CREATED_AT,
    LAST_USED_AT,
    USER_AGENT,
    IP,
];

/// A stored session: one live refresh token of a rotation family.
///
/// Its `Debug` output never shows the token hashes.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The session id (a UUID string).
    pub id: String,
    /// The owning user's id.
    pub user_id: String,
    /// The rotation family: every session rotated from the same login shares it.
    pub family_id: String,
    /// Hex SHA-256 of the current refresh token.
    pub refresh_hash: String,
    /// Hex SHA-256 of the refresh token this row replaced, if it came from a rotation.
    pub previous_hash: Option<String>,
    /// The id of the row this one replaced, if it came from a rotation.
    pub rotated_from: Option<String>,
    /// Expiry, unix epoch milliseconds.
    pub expires_at: i64,
    /// Creation time, unix epoch milliseconds.
    pub created_at: i64,
    /// Last use, unix epoch milliseconds.
    pub last_used_at: i64,
    /// The client's `User-Agent`, if recorded.
    pub user_agent: Option<String>,
    /// The client's IP address, if recorded.
    pub ip: Option<String>,
}

impl fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionRecord")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("family_id", &self.family_id)
            .field("refresh_hash", &"<redacted>")
            .field(
                "previous_hash",
                &self.previous_hash.as_ref().map(|_| "<redacted>"),
            )
            .field("rotated_from", &self.rotated_from)
            .field("expires_at", &self.expires_at)
            .field("created_at", &self.created_at)
            .field("last_used_at", &self.last_used_at)
            .field("user_agent", &self.user_agent)
            .field("ip", &self.ip)
            .finish()
    }
}

/// A session to create with [`Database::open_family`] or
/// [`Database::rotate_session`]; `created_at` and `last_used_at` are set to now.
#[derive(Clone, PartialEq, Eq)]
pub struct NewSession {
    /// The session id (a UUID string).
    pub id: String,
    /// The owning user's id (must exist).
    pub user_id: String,
    /// The rotation family.
    pub family_id: String,
    /// Hex SHA-256 of the refresh token.
    pub refresh_hash: String,
    /// Hex SHA-256 of the refresh token this session replaces, if rotating.
    pub previous_hash: Option<String>,
    /// The id of the session this one replaces, if rotating.
    pub rotated_from: Option<String>,
    /// Expiry, unix epoch milliseconds.
    pub expires_at: i64,
    /// The client's `User-Agent`, if recorded.
    pub user_agent: Option<String>,
    /// The client's IP address, if recorded.
    pub ip: Option<String>,
}

impl fmt::Debug for NewSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewSession")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("family_id", &self.family_id)
            .field("refresh_hash", &"<redacted>")
            .field(
                "previous_hash",
                &self.previous_hash.as_ref().map(|_| "<redacted>"),
            )
            .field("rotated_from", &self.rotated_from)
            .field("expires_at", &self.expires_at)
            .field("user_agent", &self.user_agent)
            .field("ip", &self.ip)
            .finish()
    }
}

impl NewSession {
    pub(crate) fn to_record(&self, now: i64) -> SessionRecord {
        SessionRecord {
            id: self.id.clone(),
            user_id: self.user_id.clone(),
            family_id: self.family_id.clone(),
            refresh_hash: self.refresh_hash.clone(),
            previous_hash: self.previous_hash.clone(),
            rotated_from: self.rotated_from.clone(),
            expires_at: self.expires_at,
            created_at: now,
            last_used_at: now,
            user_agent: self.user_agent.clone(),
            ip: self.ip.clone(),
        }
    }
}

pub(super) fn insert_session(record: &SessionRecord) -> Result<InsertStatement, SentriError> {
    Ok(Query::insert()
        .into_table(SESSIONS)
        .columns(SESSION_COLUMNS)
        .values([
            Expr::val(record.id.as_str()),
            Expr::val(record.user_id.as_str()),
            Expr::val(record.family_id.as_str()),
            Expr::val(record.refresh_hash.as_str()),
            Expr::val(record.previous_hash.clone()),
            Expr::val(record.rotated_from.clone()),
            Expr::val(record.expires_at),
            Expr::val(record.created_at),
            Expr::val(record.last_used_at),
            Expr::val(record.user_agent.clone()),
            Expr::val(record.ip.clone()),
        ])
        .map_err(SentriError::internal)?
        .to_owned())
}

/// A session insert failing on its foreign key means the user does not exist.
pub(super) fn map_insert_error(err: sqlx::Error) -> SentriError {
    match &err {
        sqlx::Error::Database(e) if e.is_foreign_key_violation() => SentriError::user_not_found(),
        _ => db_err(err),
    }
}

/// A session row with its user and its family's stored assurance: everything a refresh
/// needs before it rotates, read in one query.
pub type SessionContext = (SessionRecord, AuthUser, Option<String>);

/// What a family hands on to every token it issues, as stored: its assurance
/// (`Assurance::to_column`) and the workspace it is bound to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FamilyBinding {
    pub(crate) assurance: Option<String>,
    pub(crate) workspace: Option<String>,
}

/// A session row with its user, the user's authorization version (read in the same
/// statement as the roles) and its family's binding.
type StampedContext = (SessionRecord, AuthUser, FamilyBinding, i64);

/// Maps a session row joined with its user's identifier, roles and authorization
/// version and its family's assurance (any dialect).
fn session_and_user(row: &impl Columns) -> Result<StampedContext, SentriError> {
    let session = session_from_row(row)?;
    let roles: String = row.col("u_roles")?;
    let user = AuthUser {
        id: session.user_id.clone(),
        identifier: row.col("u_identifier")?,
        roles: serde_json::from_str(&roles).map_err(SentriError::internal)?,
    };
    let binding = FamilyBinding {
        assurance: row.col("f_assurance")?,
        workspace: row.col("f_workspace")?,
    };
    Ok((session, user, binding, row.col("u_av")?))
}

/// Maps one `sentri_sessions` row (any dialect).
fn session_from_row(row: &impl Columns) -> Result<SessionRecord, SentriError> {
    Ok(SessionRecord {
        id: row.col(ID)?,
        user_id: row.col(USER_ID)?,
        family_id: row.col(FAMILY_ID)?,
        refresh_hash: row.col(REFRESH_HASH)?,
        previous_hash: row.col(PREVIOUS_HASH)?,
        rotated_from: row.col(ROTATED_FROM)?,
        expires_at: row.col(EXPIRES_AT)?,
        created_at: row.col(CREATED_AT)?,
        last_used_at: row.col(LAST_USED_AT)?,
        user_agent: row.col(USER_AGENT)?,
        ip: row.col(IP)?,
    })
}

impl Database {
    async fn fetch_sessions(
        &self,
        (sql, values): (String, SqlxValues),
    ) -> Result<Vec<SessionRecord>, SentriError> {
        self.read(|| async {
            on_pool!(self, pool => {
                let rows = sqlx::query_with(sqlx::AssertSqlSafe(sql.clone()), values.clone())
                    .fetch_all(pool)
                    .await
                    .map_err(db_err)?;
                rows.iter().map(session_from_row).collect()
            })
        })
        .await
    }

    async fn fetch_session(
        &self,
        mut stmt: SelectStatement,
    ) -> Result<Option<SessionRecord>, SentriError> {
        stmt.limit(1);
        Ok(self
            .fetch_sessions(self.build(&stmt))
            .await?
            .into_iter()
            .next())
    }

    fn select_session() -> SelectStatement {
        Query::select()
            .columns(SESSION_COLUMNS)
            .from(SESSIONS)
            .to_owned()
    }

    /// The session with this id, if any.
    pub async fn find_session(&self, id: &str) -> Result<Option<SessionRecord>, SentriError> {
        self.fetch_session(
            Self::select_session()
                .and_where(Expr::col(ID).eq(id))
                .to_owned(),
        )
        .await
    }

    /// The session whose current refresh token hashes to `hash`, if any.
    pub async fn find_session_by_refresh_hash(
        &self,
        hash: &str,
    ) -> Result<Option<SessionRecord>, SentriError> {
        self.fetch_session(
            Self::select_session()
                .and_where(Expr::col(REFRESH_HASH).eq(hash))
                .to_owned(),
        )
        .await
    }

    /// The session whose current refresh token hashes to `hash`, with its user and its
    /// family's stored assurance, in one query (the only read of a refresh before it
    /// rotates).
    pub async fn find_session_with_user(
        &self,
        hash: &str,
    ) -> Result<Option<SessionContext>, SentriError> {
        Ok(self
            .find_session_with_stamped_user(hash)
            .await?
            .map(|(session, user, binding, _)| (session, user, binding.assurance)))
    }

    /// [`find_session_with_user`](Self::find_session_with_user) with the user's
    /// authorization version, read in the same statement as the roles.
    pub(crate) async fn find_session_with_stamped_user(
        &self,
        hash: &str,
    ) -> Result<Option<StampedContext>, SentriError> {
        let roles = crate::identity::roles::schema::roles_json_sql(self.dialect());
        let stmt = Query::select()
            .columns(SESSION_COLUMNS.map(|c| (SESSIONS, c)))
            .expr_as(Expr::col((USERS, "identifier")), "u_identifier")
            .expr_as(Expr::cust(roles), "u_roles")
            .expr_as(
                Expr::col((USERS, crate::identity::roles::schema::AUTHZ_VERSION)),
                "u_av",
            )
            .expr_as(Expr::col((FAMILIES, ASSURANCE)), "f_assurance")
            .expr_as(Expr::col((FAMILIES, WORKSPACE_ID)), "f_workspace")
            .from(SESSIONS)
            .inner_join(USERS, Expr::col((USERS, "id")).equals((SESSIONS, USER_ID)))
            .left_join(
                FAMILIES,
                Expr::col((FAMILIES, ID)).equals((SESSIONS, FAMILY_ID)),
            )
            .and_where(Expr::col((SESSIONS, REFRESH_HASH)).eq(hash))
            .limit(1)
            .to_owned();
        let (sql, values) = self.build(&stmt);
        self.read(|| async {
            on_pool!(self, pool => {
                let row = sqlx::query_with(sqlx::AssertSqlSafe(sql.clone()), values.clone())
                    .fetch_optional(pool)
                    .await
                    .map_err(db_err)?;
                row.as_ref().map(session_and_user).transpose()
            })
        })
        .await
    }

    /// The session that replaced the refresh token hashing to `hash` (reuse detection).
    pub async fn find_session_by_previous_hash(
        &self,
        hash: &str,
    ) -> Result<Option<SessionRecord>, SentriError> {
        self.fetch_session(
            Self::select_session()
                .and_where(Expr::col(PREVIOUS_HASH).eq(hash))
                .to_owned(),
        )
        .await
    }

    /// Every session of a user, oldest first.
    pub async fn list_user_sessions(
        &self,
        user_id: &str,
    ) -> Result<Vec<SessionRecord>, SentriError> {
        let stmt = Self::select_session()
            .and_where(Expr::col(USER_ID).eq(user_id))
            .order_by(CREATED_AT, Order::Asc)
            .order_by(ID, Order::Asc)
            .to_owned();
        self.fetch_sessions(self.build(&stmt)).await
    }

    /// Deletes the user and all its sessions (in one transaction; the foreign key
    /// cascades too). `false` when there was no such user.
    pub async fn delete_user(&self, id: &str) -> Result<bool, SentriError> {
        let (sessions_sql, sessions_values) = self.build(
            &Query::delete()
                .from_table(SESSIONS)
                .and_where(Expr::col(USER_ID).eq(id))
                .to_owned(),
        );
        let (families_sql, families_values) = self.build(
            &Query::delete()
                .from_table(FAMILIES)
                .and_where(Expr::col(USER_ID).eq(id))
                .to_owned(),
        );
        let (user_sql, user_values) = self.build(
            &Query::delete()
                .from_table(USERS)
                .and_where(Expr::col(ID).eq(id))
                .to_owned(),
        );
        self.bounded(async {
            on_pool!(self, pool => {
                let mut tx = pool.begin().await.map_err(db_err)?;
                sqlx::query_with(sqlx::AssertSqlSafe(sessions_sql), sessions_values)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                sqlx::query_with(sqlx::AssertSqlSafe(families_sql), families_values)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                let deleted = sqlx::query_with(sqlx::AssertSqlSafe(user_sql), user_values)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?
                    .rows_affected();
                tx.commit().await.map_err(db_err)?;
                Ok(deleted > 0)
            })
        })
        .await
    }
}
