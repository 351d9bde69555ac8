//! Session families: one row per login, the lock every rotation and every revocation
//! of that login takes.
//!
//! # Why revocation is final
//!
//! Every change to a family's sessions runs in a transaction whose **first** statement
//! is a conditional `UPDATE` of the family row (`… WHERE id = ? AND revoked_at IS NULL
//! AND expires_at > now`): a rotation continues only if that statement touched the row.
//! Revocation is an `UPDATE … SET revoked_at` of the same row. The family row is
//! therefore a lock shared by rotations and revocations (a row lock on PostgreSQL and
//! MySQL/MariaDB, the database write lock on SQLite):
//!
//! * a rotation in flight when a revocation starts holds the lock: the revocation waits
//!   for it to commit, and the session row it rotated (in place: a rotation updates the
//!   row, it never inserts one that a concurrent statement could miss) is deleted by the
//!   revocation's next statement;
//! * a rotation that starts after the revocation committed finds `revoked_at` set (its
//!   `UPDATE` re-reads the row after waiting for the lock, on every dialect) and changes
//!   nothing.
//!
//! So once `revoke_family` / `revoke_user_families` return, no session row of the family
//! exists and none can be created; tokens of the family fail whatever was in flight.

use sea_query::{CaseStatement, Expr, ExprTrait, Query};

use super::schema::{
    ASSURANCE, CREATED_AT, EXPIRES_AT, FAMILIES, FAMILY_ID, ID, IP, LAST_USED_AT, MAX_EXPIRES_AT,
    PREVIOUS_HASH, REFRESH_HASH, REVOCATION, REVOKED_AT, ROTATED_FROM, SESSIONS, USER_AGENT,
    USER_ID, WORKSPACE_ID,
};
use super::store::{FamilyBinding, NewSession, SessionRecord, insert_session, map_insert_error};
use crate::core::error::SentriError;
use crate::db::{Columns, Database, Step, StepsOutcome, db_err, on_pool};

/// A session family: every refresh token rotated from one login shares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyRecord {
    /// The family id (the tokens' `sid` claim).
    pub id: String,
    /// The owning user.
    pub user_id: String,
    /// When the login happened, unix epoch milliseconds.
    pub created_at: i64,
    /// When the newest refresh token of the family expires (slides with each rotation,
    /// never past `max_expires_at`).
    pub expires_at: i64,
    /// The absolute end of the family, however often it slides.
    pub max_expires_at: i64,
    /// When the family was revoked, if it was.
    pub revoked_at: Option<i64>,
}

impl FamilyRecord {
    /// `true` while the family may be used at `now`.
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at > now && self.max_expires_at > now
    }
}

/// A family to open with [`Database::open_family`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFamily {
    /// The family id.
    pub id: String,
    /// The owning user (must exist).
    pub user_id: String,
    /// The first refresh token's expiry.
    pub expires_at: i64,
    /// The absolute end of the family.
    pub max_expires_at: i64,
}

/// The outcome of [`Database::rotate_session`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The old row was replaced by this one.
    Rotated(Box<SessionRecord>),
    /// The old row was already gone (rotated by someone else, or deleted).
    Superseded,
    /// The family is revoked, expired or gone: nothing was changed.
    FamilyEnded,
}

const FAMILY_COLUMNS: [&str; 6] = [
    ID,
    USER_ID,
    CREATED_AT,
    EXPIRES_AT,
    MAX_EXPIRES_AT,
    REVOKED_AT,
];

fn family_from_row(row: &impl Columns) -> Result<FamilyRecord, SentriError> {
    Ok(FamilyRecord {
        id: row.col(ID)?,
        user_id: row.col(USER_ID)?,
        created_at: row.col(CREATED_AT)?,
        expires_at: row.col(EXPIRES_AT)?,
        max_expires_at: row.col(MAX_EXPIRES_AT)?,
        revoked_at: row.col(REVOKED_AT)?,
    })
}

/// The outcome of a rotation from whether it updated the family row and the session row.
fn rotation(
    family: bool,
    session: bool,
    old: &SessionRecord,
    next: &NewSession,
    now: i64,
) -> Rotation {
    match (family, session) {
        (true, true) => Rotation::Rotated(Box::new(SessionRecord {
            refresh_hash: next.refresh_hash.clone(),
            previous_hash: Some(old.refresh_hash.clone()),
            rotated_from: Some(old.id.clone()),
            expires_at: next.expires_at,
            last_used_at: now,
            user_agent: next.user_agent.clone(),
            ip: next.ip.clone(),
            ..old.clone()
        })),
        (false, _) => Rotation::FamilyEnded,
        (true, false) => Rotation::Superseded,
    }
}

/// `WHERE` of a family that may still be used at `now`.
fn live_family(id: &str, now: i64) -> sea_query::Condition {
    sea_query::Condition::all()
        .add(Expr::col(ID).eq(id))
        .add(Expr::col(REVOKED_AT).is_null())
        .add(Expr::col(EXPIRES_AT).gt(now))
        .add(Expr::col(MAX_EXPIRES_AT).gt(now))
}

impl Database {
    /// Opens a family with its first session, in one transaction. A `user_id` with no
    /// user gives `USER_NOT_FOUND`.
    pub async fn open_family(
        &self,
        family: &NewFamily,
        first: &NewSession,
        now: i64,
    ) -> Result<SessionRecord, SentriError> {
        self.open_family_with(family, first, now, None).await
    }

    /// [`open_family`](Self::open_family) recording how the login was authenticated
    /// (`Assurance::to_column`).
    pub async fn open_family_with(
        &self,
        family: &NewFamily,
        first: &NewSession,
        now: i64,
        assurance: Option<&str>,
    ) -> Result<SessionRecord, SentriError> {
        let record = first.to_record(now);
        let insert_family = Query::insert()
            .into_table(FAMILIES)
            .columns(FAMILY_COLUMNS.into_iter().chain([ASSURANCE]))
            .values([
                Expr::val(family.id.as_str()),
                Expr::val(family.user_id.as_str()),
                Expr::val(now),
                Expr::val(std::cmp::min(family.expires_at, family.max_expires_at)),
                Expr::val(family.max_expires_at),
                Expr::val(None::<i64>),
                Expr::val(assurance.map(str::to_owned)),
            ])
            .map_err(SentriError::internal)?
            .to_owned();
        let steps = [
            Step {
                built: self.build(&insert_family),
                must_affect: false,
            },
            Step {
                built: self.build(&insert_session(&record)?),
                must_affect: false,
            },
        ];
        self.steps(&steps, map_insert_error).await?;
        Ok(record)
    }

    /// The family with this id, if any.
    pub async fn find_family(&self, id: &str) -> Result<Option<FamilyRecord>, SentriError> {
        let (sql, values) = self.build(
            &Query::select()
                .columns(FAMILY_COLUMNS)
                .from(FAMILIES)
                .and_where(Expr::col(ID).eq(id))
                .limit(1)
                .to_owned(),
        );
        self.read(|| async {
            on_pool!(self, pool => {
                let row = sqlx::query_with(sqlx::AssertSqlSafe(sql.clone()), values.clone())
                    .fetch_optional(pool)
                    .await
                    .map_err(db_err)?;
                row.as_ref().map(family_from_row).transpose()
            })
        })
        .await
    }

    /// The stored binding of a family (assurance and workspace; empty when not
    /// recorded, or no such family).
    pub(crate) async fn family_binding(&self, id: &str) -> Result<FamilyBinding, SentriError> {
        let (sql, values) = self.build(
            &Query::select()
                .columns([ASSURANCE, WORKSPACE_ID])
                .from(FAMILIES)
                .and_where(Expr::col(ID).eq(id))
                .limit(1)
                .to_owned(),
        );
        self.read(|| async {
            on_pool!(self, pool => {
                let row = sqlx::query_with(sqlx::AssertSqlSafe(sql.clone()), values.clone())
                    .fetch_optional(pool)
                    .await
                    .map_err(db_err)?;
                match row {
                    Some(r) => Ok(FamilyBinding {
                        assurance: r.col(ASSURANCE)?,
                        workspace: r.col(WORKSPACE_ID)?,
                    }),
                    None => Ok(FamilyBinding::default()),
                }
            })
        })
        .await
    }

    /// Binds the live family `id` of `user` to `workspace` (`None`: personal again).
    /// `false` when the family is not live or not the user's.
    pub(crate) async fn bind_family_workspace(
        &self,
        id: &str,
        user: &str,
        workspace: Option<&str>,
        now: i64,
    ) -> Result<bool, SentriError> {
        let stmt = Query::update()
            .table(FAMILIES)
            .value(WORKSPACE_ID, workspace.map(str::to_owned))
            .cond_where(live_family(id, now))
            .and_where(Expr::col(USER_ID).eq(user))
            .to_owned();
        Ok(self.exec(self.build(&stmt)).await? > 0)
    }

    /// Stores `assurance` (the stored form) on the live family `id` of `user` (a
    /// re-authentication). `false` when the family is not live or not the user's.
    pub(crate) async fn set_family_assurance(
        &self,
        id: &str,
        user: &str,
        assurance: &str,
        now: i64,
    ) -> Result<bool, SentriError> {
        let stmt = Query::update()
            .table(FAMILIES)
            .value(ASSURANCE, assurance)
            .cond_where(live_family(id, now))
            .and_where(Expr::col(USER_ID).eq(user))
            .to_owned();
        Ok(self.exec(self.build(&stmt)).await? > 0)
    }

    /// Makes every family bound to `workspace` (of `user` only, when given) personal
    /// again; returns how many.
    pub(crate) async fn unbind_workspace(
        &self,
        workspace: &str,
        user: Option<&str>,
    ) -> Result<u64, SentriError> {
        let mut stmt = Query::update();
        stmt.table(FAMILIES)
            .value(WORKSPACE_ID, Option::<String>::None)
            .and_where(Expr::col(WORKSPACE_ID).eq(workspace));
        if let Some(user) = user {
            stmt.and_where(Expr::col(USER_ID).eq(user));
        }
        self.exec(self.build(&stmt)).await
    }

    /// `true` when the family is neither revoked nor expired at `now` (one primary-key
    /// lookup).
    pub async fn family_active(&self, id: &str, now: i64) -> Result<bool, SentriError> {
        let (sql, values) = self.build(
            &Query::select()
                .column(ID)
                .from(FAMILIES)
                .cond_where(live_family(id, now))
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

    /// Rotates session `old` in place to the refresh token of `next` (its
    /// `refresh_hash`, `expires_at`, `user_agent`, `ip`; the row keeps its id and
    /// remembers `old`'s hash as `previous_hash`), if and only if the family is still
    /// live at `now` — see the module docs.
    ///
    /// In one transaction: lock the live family row and slide its expiry to
    /// `next.expires_at` (capped at its absolute end); update the session row by id
    /// *and* old hash. Of many concurrent rotations of one row exactly one wins.
    pub async fn rotate_session(
        &self,
        old: &SessionRecord,
        next: &NewSession,
        now: i64,
    ) -> Result<Rotation, SentriError> {
        #[cfg(feature = "postgres")]
        if let Some(pool) = self.pg_pool() {
            let (family, session) = self.rotate_in_one_statement(pool, old, next, now).await?;
            return Ok(rotation(family, session, old, next, now));
        }
        let capped = CaseStatement::new()
            .case(
                Expr::col(MAX_EXPIRES_AT).lt(next.expires_at),
                Expr::col(MAX_EXPIRES_AT),
            )
            .finally(Expr::val(next.expires_at));
        let lock_family = Query::update()
            .table(FAMILIES)
            .value(EXPIRES_AT, capped)
            .cond_where(live_family(&old.family_id, now))
            .to_owned();
        let rotate_row = Query::update()
            .table(SESSIONS)
            .value(REFRESH_HASH, next.refresh_hash.as_str())
            .value(PREVIOUS_HASH, old.refresh_hash.as_str())
            .value(ROTATED_FROM, old.id.as_str())
            .value(EXPIRES_AT, next.expires_at)
            .value(LAST_USED_AT, now)
            .value(USER_AGENT, next.user_agent.clone())
            .value(IP, next.ip.clone())
            .and_where(Expr::col(ID).eq(old.id.as_str()))
            .and_where(Expr::col(REFRESH_HASH).eq(old.refresh_hash.as_str()))
            .to_owned();
        let steps = [
            Step {
                built: self.build(&lock_family),
                must_affect: true,
            },
            Step {
                built: self.build(&rotate_row),
                must_affect: true,
            },
        ];
        let (family, session) = match self.steps(&steps, db_err).await? {
            StepsOutcome::Committed => (true, true),
            StepsOutcome::StoppedAt(0) => (false, false),
            StepsOutcome::StoppedAt(_) => (true, false),
        };
        Ok(rotation(family, session, old, next, now))
    }

    /// [`rotate_session`](Self::rotate_session) on PostgreSQL: the same two conditional
    /// `UPDATE`s, family row first, as one statement (data-modifying CTEs) in one round
    /// trip instead of four. The session `UPDATE` runs only if the family `UPDATE`
    /// returned its row, so it locks the family row before the session row, as the
    /// transaction does and as revocation does; a concurrent rotation or revocation that
    /// commits first is seen by PostgreSQL's re-check of the updated rows (READ
    /// COMMITTED), so exactly one of many concurrent rotations wins and none survives a
    /// revocation. One difference, harmless: a rotation that finds no session row to
    /// rotate (it lost the race, or the hash was wrong) still slides the family's
    /// expiry, to where a rotation at `now` slides it, never past its absolute end; the
    /// transaction rolls that back. Returns whether the family row and the session row
    /// were updated.
    #[cfg(feature = "postgres")]
    async fn rotate_in_one_statement(
        &self,
        pool: &sqlx::PgPool,
        old: &SessionRecord,
        next: &NewSession,
        now: i64,
    ) -> Result<(bool, bool), SentriError> {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "WITH fam AS (UPDATE {FAMILIES} SET {EXPIRES_AT} = LEAST({MAX_EXPIRES_AT}, $1) \
                 WHERE {ID} = $2 AND {REVOKED_AT} IS NULL AND {EXPIRES_AT} > $3 \
                 AND {MAX_EXPIRES_AT} > $3 RETURNING 1), \
                 ses AS (UPDATE {SESSIONS} SET {REFRESH_HASH} = $6, {PREVIOUS_HASH} = $5, \
                 {ROTATED_FROM} = $4, {EXPIRES_AT} = $7, {LAST_USED_AT} = $3, \
                 {USER_AGENT} = $8, {IP} = $9 \
                 WHERE {ID} = $4 AND {REFRESH_HASH} = $5 AND EXISTS (SELECT 1 FROM fam) \
                 RETURNING 1) \
                 SELECT (SELECT count(*) FROM fam), (SELECT count(*) FROM ses)"
            )
        });
        let attempt = || async {
            self.bounded(async {
                Ok(
                    sqlx::query_as::<_, (i64, i64)>(sqlx::AssertSqlSafe(SQL.as_str()))
                        .bind(next.expires_at)
                        .bind(&old.family_id)
                        .bind(now)
                        .bind(&old.id)
                        .bind(&old.refresh_hash)
                        .bind(&next.refresh_hash)
                        .bind(next.expires_at)
                        .bind(&next.user_agent)
                        .bind(&next.ip)
                        .fetch_one(pool)
                        .await,
                )
            })
            .await
        };
        let (family, session) = self.retrying_transient(attempt, db_err).await?;
        Ok((family > 0, family > 0 && session > 0))
    }

    /// Revokes one family and deletes its sessions. Returns `true` when this call revoked
    /// it (`false`: it was already revoked or does not exist).
    pub async fn revoke_family(&self, id: &str, now: i64) -> Result<bool, SentriError> {
        let revoke = Query::update()
            .table(FAMILIES)
            .value(REVOKED_AT, now)
            .and_where(Expr::col(ID).eq(id))
            .and_where(Expr::col(REVOKED_AT).is_null())
            .to_owned();
        let revoked = self.exec_retrying(self.build(&revoke)).await?;
        self.delete_family_sessions(Expr::col(FAMILY_ID).eq(id))
            .await?;
        Ok(revoked)
    }

    /// Revokes every live family of a user and deletes their sessions. Returns the ids of
    /// the families this call revoked (including those opened by logins that committed
    /// while it ran), so callers can drop them from caches.
    pub async fn revoke_user_families(
        &self,
        user_id: &str,
        now: i64,
    ) -> Result<Vec<String>, SentriError> {
        self.revoke_user_families_except(user_id, None, now).await
    }

    /// [`revoke_user_families`](Self::revoke_user_families), sparing the family
    /// `except` (the caller's own session, for "sign out everywhere else").
    pub async fn revoke_user_families_except(
        &self,
        user_id: &str,
        except: Option<&str>,
        now: i64,
    ) -> Result<Vec<String>, SentriError> {
        // A marker of this revocation: the families it revoked are read back by it, so
        // those opened by logins that committed meanwhile are included and those revoked
        // earlier (even in the same millisecond) are not.
        let marker = uuid::Uuid::new_v4().to_string();
        let revoke = Query::update()
            .table(FAMILIES)
            .value(REVOKED_AT, now)
            .value(REVOCATION, marker.as_str())
            .and_where(Expr::col(USER_ID).eq(user_id))
            .and_where(Expr::col(REVOKED_AT).is_null())
            .and_where_option(except.map(|id| Expr::col(ID).ne(id)))
            .to_owned();
        self.exec_retrying(self.build(&revoke)).await?;
        let (sql, values) = self.build(
            &Query::select()
                .column(ID)
                .from(FAMILIES)
                .and_where(Expr::col(USER_ID).eq(user_id))
                .and_where(Expr::col(REVOCATION).eq(marker.as_str()))
                .to_owned(),
        );
        let ids = self
            .read(|| async {
                on_pool!(self, pool => {
                    let rows = sqlx::query_with(sqlx::AssertSqlSafe(sql.clone()), values.clone())
                        .fetch_all(pool)
                        .await
                        .map_err(db_err)?;
                    rows.iter()
                        .map(|r| sqlx::Row::try_get::<String, _>(r, 0).map_err(db_err))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .await?;
        match except {
            None => {
                self.delete_family_sessions(Expr::col(USER_ID).eq(user_id))
                    .await?;
            }
            // Only the families this call revoked: a login that commits meanwhile keeps
            // its session (its family is live).
            Some(_) if ids.is_empty() => {}
            Some(_) => {
                let revoked = Expr::col(FAMILY_ID).is_in(ids.iter().map(String::as_str));
                self.delete_family_sessions(revoked).await?;
            }
        }
        Ok(ids)
    }

    /// Deletes expired sessions, and families that ended (expired, or revoked more than
    /// `revoked_retention_ms` ago), with their sessions. Returns the rows deleted.
    pub async fn purge_expired(
        &self,
        now: i64,
        revoked_retention_ms: i64,
    ) -> Result<u64, SentriError> {
        let ended = sea_query::Condition::any()
            .add(Expr::col(EXPIRES_AT).lte(now))
            .add(Expr::col(MAX_EXPIRES_AT).lte(now))
            .add(Expr::col(REVOKED_AT).lte(now.saturating_sub(revoked_retention_ms)));
        let families = self
            .exec(
                self.build(
                    &Query::delete()
                        .from_table(FAMILIES)
                        .cond_where(ended)
                        .to_owned(),
                ),
            )
            .await?;
        let orphaned = Expr::col(FAMILY_ID)
            .not_in_subquery(Query::select().column(ID).from(FAMILIES).to_owned());
        let sessions = self
            .delete_sessions_where(
                sea_query::Condition::any()
                    .add(Expr::col(EXPIRES_AT).lte(now))
                    .add(orphaned),
            )
            .await?;
        Ok(families + sessions)
    }

    /// The `DELETE` of a revocation: retried on a deadlock, never skipped.
    async fn delete_family_sessions(
        &self,
        cond: impl sea_query::IntoCondition,
    ) -> Result<(), SentriError> {
        let stmt = Query::delete()
            .from_table(SESSIONS)
            .cond_where(cond)
            .to_owned();
        self.exec_retrying(self.build(&stmt)).await.map(|_| ())
    }

    async fn delete_sessions_where(
        &self,
        cond: impl sea_query::IntoCondition,
    ) -> Result<u64, SentriError> {
        let stmt = Query::delete()
            .from_table(SESSIONS)
            .cond_where(cond)
            .to_owned();
        self.exec(self.build(&stmt)).await
    }
}
