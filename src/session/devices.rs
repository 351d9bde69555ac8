//! Sessions per device: the live families of a user with their last-used details, and
//! ending one of them or every other one. The revocations take the same family row
//! lock as logout, so the guarantees are the same (see `families.rs`).

use sea_query::{Expr, ExprTrait, Order, Query};

use super::Sessions;
use super::schema::{
    CREATED_AT, EXPIRES_AT, FAMILIES, FAMILY_ID, ID, IP, LAST_USED_AT, MAX_EXPIRES_AT, REVOKED_AT,
    SESSIONS, USER_AGENT, USER_ID,
};
use crate::core::error::{Result, SentriError};
use crate::core::events::AuthEventKind;
use crate::db::{Database, db_err, on_pool};

/// One live session (login) of a user, as a device list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeviceSession {
    /// The session id (the tokens' `sid` claim).
    pub id: String,
    /// Login time, unix epoch milliseconds.
    pub created_at: i64,
    /// Last refresh (or the login), unix epoch milliseconds.
    pub last_used_at: i64,
    /// When it ends unless refreshed, unix epoch milliseconds.
    pub expires_at: i64,
    /// The `User-Agent` of its last refresh.
    pub user_agent: Option<String>,
    /// The client address of its last refresh.
    pub ip: Option<String>,
}

/// How many sessions a device list shows at most (newest first).
pub const MAX_DEVICE_SESSIONS: u64 = 200;

impl Database {
    /// The live families of a user at `now`, newest first, with the details of their
    /// current session row.
    pub async fn user_device_sessions(
        &self,
        user_id: &str,
        now: i64,
    ) -> Result<Vec<DeviceSession>> {
        let stmt = Query::select()
            .column((FAMILIES, ID))
            .column((FAMILIES, CREATED_AT))
            .column((FAMILIES, EXPIRES_AT))
            .column((SESSIONS, LAST_USED_AT))
            .column((SESSIONS, USER_AGENT))
            .column((SESSIONS, IP))
            .from(FAMILIES)
            .left_join(
                SESSIONS,
                Expr::col((SESSIONS, FAMILY_ID)).equals((FAMILIES, ID)),
            )
            .and_where(Expr::col((FAMILIES, USER_ID)).eq(user_id))
            .and_where(Expr::col((FAMILIES, REVOKED_AT)).is_null())
            .and_where(Expr::col((FAMILIES, EXPIRES_AT)).gt(now))
            .and_where(Expr::col((FAMILIES, MAX_EXPIRES_AT)).gt(now))
            .order_by((FAMILIES, CREATED_AT), Order::Desc)
            .order_by((FAMILIES, ID), Order::Desc)
            .limit(MAX_DEVICE_SESSIONS * 2)
            .to_owned();
        let (sql, values) = self.build(&stmt);
        let rows: Vec<DeviceSession> = self
            .read(|| async {
                on_pool!(self, pool => {
                    let rows = sqlx::query_with(sqlx::AssertSqlSafe(sql.clone()), values.clone())
                        .fetch_all(pool)
                        .await
                        .map_err(db_err)?;
                    rows.iter().map(|r| {
                        use sqlx::Row;
                        let created_at: i64 = r.try_get(1).map_err(db_err)?;
                        Ok(DeviceSession {
                            id: r.try_get(0).map_err(db_err)?,
                            created_at,
                            expires_at: r.try_get(2).map_err(db_err)?,
                            last_used_at: r.try_get::<Option<i64>, _>(3).map_err(db_err)?.unwrap_or(created_at),
                            user_agent: r.try_get(4).map_err(db_err)?,
                            ip: r.try_get(5).map_err(db_err)?,
                        })
                    }).collect::<Result<Vec<_>>>()
                })
            })
            .await?;
        Ok(newest_row_per_family(rows))
    }

    /// Revokes family `id` only if it belongs to `user_id` and is not revoked yet, and
    /// deletes its sessions. `false`: no such live family of this user.
    pub async fn revoke_user_family(&self, user_id: &str, id: &str, now: i64) -> Result<bool> {
        let revoke = Query::update()
            .table(FAMILIES)
            .value(REVOKED_AT, now)
            .and_where(Expr::col(ID).eq(id))
            .and_where(Expr::col(USER_ID).eq(user_id))
            .and_where(Expr::col(REVOKED_AT).is_null())
            .to_owned();
        if !self.exec_retrying(self.build(&revoke)).await? {
            return Ok(false);
        }
        let delete = Query::delete()
            .from_table(SESSIONS)
            .and_where(Expr::col(FAMILY_ID).eq(id))
            .to_owned();
        self.exec_retrying(self.build(&delete)).await?;
        Ok(true)
    }
}

/// One entry per family (a family has one session row; keep the latest if ever more).
fn newest_row_per_family(rows: Vec<DeviceSession>) -> Vec<DeviceSession> {
    let mut out: Vec<DeviceSession> = Vec::with_capacity(rows.len());
    for row in rows {
        match out.iter_mut().find(|d| d.id == row.id) {
            Some(seen) if seen.last_used_at < row.last_used_at => *seen = row,
            Some(_) => {}
            None => out.push(row),
        }
    }
    out.truncate(usize::try_from(MAX_DEVICE_SESSIONS).unwrap_or(usize::MAX));
    out
}

impl Sessions {
    /// The live sessions of a user, newest first.
    pub async fn device_sessions(&self, user_id: &str) -> Result<Vec<DeviceSession>> {
        self.db.user_device_sessions(user_id, self.now()).await
    }

    /// Ends session `sid` of `user_id` (as logout does). `USER_NOT_FOUND`-free: a
    /// session of another user, an ended or an unknown one is `NOT_FOUND`, the same.
    pub async fn end_user_session(&self, user_id: &str, sid: &str) -> Result<()> {
        if !self.db.revoke_user_family(user_id, sid, self.now()).await? {
            return Err(SentriError::new(
                crate::core::error::ErrorCode::NotFound,
                "No such session",
            ));
        }
        self.forget_session(sid).await;
        self.emit(AuthEventKind::Logout, user_id, sid);
        Ok(())
    }

    /// Ends every session of `user_id` but `current`; returns how many were ended.
    pub async fn end_other_sessions(&self, user_id: &str, current: &str) -> Result<usize> {
        let ended = self
            .db
            .revoke_user_families_except(user_id, Some(current), self.now())
            .await?;
        for sid in &ended {
            self.forget_session(sid).await;
            self.emit(AuthEventKind::Logout, user_id, sid);
        }
        Ok(ended.len())
    }
}
