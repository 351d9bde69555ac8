//! Sessions (refresh-token rows): records and repository methods.

use std::fmt;

use sea_query::{Expr, ExprTrait, InsertStatement, Order, Query, SelectStatement};
use sea_query_sqlx::SqlxValues;

use super::schema::{
    CREATED_AT, EXPIRES_AT, FAMILY_ID, ID, IP, LAST_USED_AT, PREVIOUS_HASH, REFRESH_HASH,
    ROTATED_FROM, SESSIONS, USER_AGENT, USER_ID,
};
use super::{Database, Dialect, db_err, now_ms, on_pool};
use crate::error::SentriError;

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

/// A session to create with [`Database::create_session`] or
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
    fn to_record(&self, now: i64) -> SessionRecord {
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

fn insert_session(record: &SessionRecord) -> Result<InsertStatement, SentriError> {
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
fn map_insert_error(err: sqlx::Error) -> SentriError {
    match &err {
        sqlx::Error::Database(e) if e.is_foreign_key_violation() => SentriError::user_not_found(),
        _ => db_err(err),
    }
}

/// Deadlocks / serialisation failures (MySQL, PostgreSQL: SQLSTATE 40001/40P01) and
/// SQLITE_BUSY/SQLITE_LOCKED: the transaction was rolled back and may be retried.
fn is_transient(dialect: Dialect, err: &sqlx::Error) -> bool {
    let sqlx::Error::Database(e) = err else {
        return false;
    };
    let Some(code) = e.code() else {
        return false;
    };
    match dialect {
        Dialect::Postgres | Dialect::MySql => matches!(&*code, "40001" | "40P01"),
        Dialect::Sqlite => code.parse::<i64>().is_ok_and(|c| matches!(c & 0xff, 5 | 6)),
    }
}

/// Maps one `sentri_sessions` row (any dialect).
fn session_from_row<R>(row: &R) -> Result<SessionRecord, SentriError>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(SessionRecord {
        id: row.try_get(ID).map_err(db_err)?,
        user_id: row.try_get(USER_ID).map_err(db_err)?,
        family_id: row.try_get(FAMILY_ID).map_err(db_err)?,
        refresh_hash: row.try_get(REFRESH_HASH).map_err(db_err)?,
        previous_hash: row.try_get(PREVIOUS_HASH).map_err(db_err)?,
        rotated_from: row.try_get(ROTATED_FROM).map_err(db_err)?,
        expires_at: row.try_get(EXPIRES_AT).map_err(db_err)?,
        created_at: row.try_get(CREATED_AT).map_err(db_err)?,
        last_used_at: row.try_get(LAST_USED_AT).map_err(db_err)?,
        user_agent: row.try_get(USER_AGENT).map_err(db_err)?,
        ip: row.try_get(IP).map_err(db_err)?,
    })
}

/// Outcome of one rotation attempt.
enum Rotation {
    Done(Option<SessionRecord>),
    Retry(sqlx::Error),
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

    /// Stores a new session. A `user_id` with no user gives `USER_NOT_FOUND`.
    pub async fn create_session(&self, new: &NewSession) -> Result<SessionRecord, SentriError> {
        let record = new.to_record(now_ms());
        let stmt = insert_session(&record)?;
        self.exec_with(self.build(&stmt), map_insert_error).await?;
        Ok(record)
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

    /// Deletes one session; `false` when there was none.
    pub async fn delete_session(&self, id: &str) -> Result<bool, SentriError> {
        let stmt = Query::delete()
            .from_table(SESSIONS)
            .and_where(Expr::col(ID).eq(id))
            .to_owned();
        Ok(self.exec(self.build(&stmt)).await? > 0)
    }

    /// Deletes every session of a user; returns how many.
    pub async fn delete_user_sessions(&self, user_id: &str) -> Result<u64, SentriError> {
        let stmt = Query::delete()
            .from_table(SESSIONS)
            .and_where(Expr::col(USER_ID).eq(user_id))
            .to_owned();
        self.exec(self.build(&stmt)).await
    }

    /// Deletes every session of a rotation family; returns how many.
    pub async fn delete_family(&self, family_id: &str) -> Result<u64, SentriError> {
        let stmt = Query::delete()
            .from_table(SESSIONS)
            .and_where(Expr::col(FAMILY_ID).eq(family_id))
            .to_owned();
        self.exec(self.build(&stmt)).await
    }

    /// `true` when some session of the family expires after `now_ms`
    /// (one indexed lookup, `LIMIT 1`).
    pub async fn family_active(&self, family_id: &str, now_ms: i64) -> Result<bool, SentriError> {
        let (sql, values) = self.build(
            &Query::select()
                .column(ID)
                .from(SESSIONS)
                .and_where(Expr::col(FAMILY_ID).eq(family_id))
                .and_where(Expr::col(EXPIRES_AT).gt(now_ms))
                .limit(1)
                .to_owned(),
        );
        self.read(|| async {
            on_pool!(self, pool => sqlx::query_with(sqlx::AssertSqlSafe(sql.clone()), values.clone())
                .fetch_optional(pool)
                .await
                .map(|row| row.is_some())
                .map_err(db_err))
        })
        .await
    }

    /// Deletes every session that expired at or before `now_ms`; returns how many.
    pub async fn delete_expired(&self, now_ms: i64) -> Result<u64, SentriError> {
        let stmt = Query::delete()
            .from_table(SESSIONS)
            .and_where(Expr::col(EXPIRES_AT).lte(now_ms))
            .to_owned();
        self.exec(self.build(&stmt)).await
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

    /// Atomically replaces session `old_id` (whose refresh token hashes to
    /// `old_refresh_hash`) with `new`.
    ///
    /// In one transaction: `DELETE … WHERE id = old_id AND refresh_hash = old_refresh_hash`;
    /// if exactly one row went, `new` is inserted and committed (`Some(new)`), otherwise
    /// the transaction is rolled back (`None`). Of many concurrent rotations of the same
    /// row exactly one wins: the `DELETE` comes first, so it takes the row lock
    /// (PostgreSQL, MySQL) or the write lock (SQLite) before anything is read.
    pub async fn rotate_session(
        &self,
        old_id: &str,
        old_refresh_hash: &str,
        new: &NewSession,
    ) -> Result<Option<SessionRecord>, SentriError> {
        let mut attempt = 0u32;
        loop {
            match self.try_rotate(old_id, old_refresh_hash, new).await? {
                Rotation::Done(result) => return Ok(result),
                Rotation::Retry(err) => {
                    attempt += 1;
                    if attempt >= 5 {
                        return Err(db_err(err));
                    }
                    tracing::debug!(error = %err, attempt, "sentri: retrying session rotation");
                    tokio::time::sleep(std::time::Duration::from_millis(10 * u64::from(attempt)))
                        .await;
                }
            }
        }
    }

    async fn try_rotate(
        &self,
        old_id: &str,
        old_refresh_hash: &str,
        new: &NewSession,
    ) -> Result<Rotation, SentriError> {
        let record = new.to_record(now_ms());
        let (delete_sql, delete_values) = self.build(
            &Query::delete()
                .from_table(SESSIONS)
                .and_where(Expr::col(ID).eq(old_id))
                .and_where(Expr::col(REFRESH_HASH).eq(old_refresh_hash))
                .to_owned(),
        );
        let (insert_sql, insert_values) = self.build(&insert_session(&record)?);
        let dialect = self.dialect();
        self.bounded(async {
            on_pool!(self, pool => {
                let mut tx = pool.begin().await.map_err(db_err)?;
                let deleted = match sqlx::query_with(sqlx::AssertSqlSafe(delete_sql), delete_values)
                    .execute(&mut *tx)
                    .await
                {
                    Ok(done) => done.rows_affected(),
                    Err(e) if is_transient(dialect, &e) => return Ok(Rotation::Retry(e)),
                    Err(e) => return Err(db_err(e)),
                };
                if deleted != 1 {
                    tx.rollback().await.map_err(db_err)?;
                    return Ok(Rotation::Done(None));
                }
                match sqlx::query_with(sqlx::AssertSqlSafe(insert_sql), insert_values)
                    .execute(&mut *tx)
                    .await
                {
                    Ok(_) => {}
                    Err(e) if is_transient(dialect, &e) => return Ok(Rotation::Retry(e)),
                    Err(e) => return Err(map_insert_error(e)),
                }
                match tx.commit().await {
                    Ok(()) => Ok(Rotation::Done(Some(record))),
                    Err(e) if is_transient(dialect, &e) => Ok(Rotation::Retry(e)),
                    Err(e) => Err(db_err(e)),
                }
            })
        })
        .await
    }
}
