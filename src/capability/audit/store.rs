//! The audit rows: built from events, written in batches, read with keyset pages,
//! purged by age (sea-query, three dialects).

use sea_query::{Cond, Expr, ExprTrait, Order, Query};
use serde::Serialize;

use super::schema::{
    AT_MS, DETAILS, EVENTS, ID, IP, IP_LEN, OUTCOME, SESSION_ID, TYPE, UA_LEN, USER_AGENT, USER_ID,
    WORKSPACE_ID,
};
use crate::core::error::{Result, SentriError};
use crate::core::events::{AuthEvent, AuthEventKind};
use crate::db::{Database, db_err, on_pool};

/// One stored audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct AuditRecord {
    /// The row id (a time-ordered UUID).
    pub id: String,
    /// The event kind, e.g. `"login_failed"` ([`AuthEventKind::as_str`]).
    #[serde(rename = "type")]
    pub kind: String,
    /// The user, when known.
    pub user_id: Option<String>,
    /// The workspace, when the event belongs to one.
    pub workspace_id: Option<String>,
    /// The session (family), when there is one.
    pub session_id: Option<String>,
    /// The client address.
    pub ip: Option<String>,
    /// The client's `User-Agent` (at most 512 characters).
    pub user_agent: Option<String>,
    /// `"ok"` or `"failed"`.
    pub outcome: String,
    /// A small JSON object, e.g. `{"error":"INVALID_CREDENTIALS"}`.
    pub details: Option<String>,
    /// When, unix epoch milliseconds.
    pub at_ms: i64,
}

/// Cuts `s` to at most `max` characters.
fn cut(s: &Option<String>, max: u32) -> Option<String> {
    s.as_ref().map(|v| v.chars().take(max as usize).collect())
}

fn outcome(kind: AuthEventKind) -> &'static str {
    match kind {
        AuthEventKind::LoginFailed | AuthEventKind::ReuseDetected => "failed",
        _ => "ok",
    }
}

impl AuditRecord {
    /// The row of `event`, built only from its structured fields (kind, user and
    /// session ids, client address and agent, the error *code*): never the identifier
    /// as typed nor any message, so no input (a password typed in the wrong field) and
    /// no secret can reach the table.
    pub fn from_event(event: &AuthEvent) -> Self {
        let details = event
            .error
            .as_ref()
            .map(|e| serde_json::json!({ "error": e.code().as_str() }).to_string());
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            kind: event.kind.as_str().to_owned(),
            user_id: event.user_id.clone(),
            workspace_id: event.workspace_id.clone(),
            session_id: event.session_id.clone(),
            ip: cut(&event.meta.ip, IP_LEN),
            user_agent: cut(&event.meta.user_agent, UA_LEN),
            outcome: outcome(event.kind).to_owned(),
            details,
            at_ms: event.at_ms,
        }
    }
}

const COLUMNS: [&str; 10] = [
    ID,
    TYPE,
    USER_ID,
    WORKSPACE_ID,
    SESSION_ID,
    IP,
    USER_AGENT,
    OUTCOME,
    DETAILS,
    AT_MS,
];

/// Inserts `records` in one statement.
pub(super) async fn insert(db: &Database, records: &[AuditRecord]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let mut stmt = Query::insert();
    stmt.into_table(EVENTS).columns(COLUMNS);
    for r in records {
        stmt.values([
            Expr::val(r.id.as_str()),
            Expr::val(r.kind.as_str()),
            Expr::val(r.user_id.clone()),
            Expr::val(r.workspace_id.clone()),
            Expr::val(r.session_id.clone()),
            Expr::val(r.ip.clone()),
            Expr::val(r.user_agent.clone()),
            Expr::val(r.outcome.as_str()),
            Expr::val(r.details.clone()),
            Expr::val(r.at_ms),
        ])
        .map_err(SentriError::internal)?;
    }
    db.exec(db.build(&stmt)).await?;
    Ok(())
}

/// Deletes the events older than `cutoff_ms`; returns how many.
pub(super) async fn purge_before(db: &Database, cutoff_ms: i64) -> Result<u64> {
    let stmt = Query::delete()
        .from_table(EVENTS)
        .and_where(Expr::col(AT_MS).lt(cutoff_ms))
        .to_owned();
    db.exec(db.build(&stmt)).await
}

/// Which events to read: every filter is optional; pages go newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditQuery {
    /// Only this user's events.
    pub user_id: Option<String>,
    /// Only this workspace's events.
    pub workspace_id: Option<String>,
    /// Only events of this kind (`"login_failed"`…).
    pub kind: Option<String>,
    /// Only events at or after this time (unix epoch ms).
    pub from_ms: Option<i64>,
    /// Only events before this time (unix epoch ms).
    pub to_ms: Option<i64>,
    /// Continue after this cursor (from [`AuditPage::next`]).
    pub after: Option<AuditCursor>,
    /// Page size (1..=[`MAX_PAGE`]; default [`DEFAULT_PAGE`]).
    pub limit: u64,
}

/// The default page size.
pub const DEFAULT_PAGE: u64 = 50;
/// The largest page size.
pub const MAX_PAGE: u64 = 500;

/// A keyset position: the `(at_ms, id)` of the last event of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCursor {
    /// The time of the last event seen.
    pub at_ms: i64,
    /// The id of the last event seen.
    pub id: String,
}

impl AuditCursor {
    /// The opaque text form, `<at_ms>.<id>`.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.at_ms, self.id)
    }

    /// Parses [`AuditCursor::encode`]'s form.
    pub fn decode(s: &str) -> Option<Self> {
        let (at, id) = s.split_once('.')?;
        let valid_id = !id.is_empty()
            && id.len() <= 36
            && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
        valid_id.then_some(Self {
            at_ms: at.parse().ok()?,
            id: id.to_owned(),
        })
    }
}

/// One page of events, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditPage {
    /// The events.
    pub events: Vec<AuditRecord>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<AuditCursor>,
}

fn conditions(q: &AuditQuery) -> Cond {
    let mut cond = Cond::all();
    if let Some(v) = &q.user_id {
        cond = cond.add(Expr::col(USER_ID).eq(v.as_str()));
    }
    if let Some(v) = &q.workspace_id {
        cond = cond.add(Expr::col(WORKSPACE_ID).eq(v.as_str()));
    }
    if let Some(v) = &q.kind {
        cond = cond.add(Expr::col(TYPE).eq(v.as_str()));
    }
    if let Some(v) = q.from_ms {
        cond = cond.add(Expr::col(AT_MS).gte(v));
    }
    if let Some(v) = q.to_ms {
        cond = cond.add(Expr::col(AT_MS).lt(v));
    }
    if let Some(c) = &q.after {
        cond = cond.add(
            Cond::any().add(Expr::col(AT_MS).lt(c.at_ms)).add(
                Cond::all()
                    .add(Expr::col(AT_MS).eq(c.at_ms))
                    .add(Expr::col(ID).lt(c.id.as_str())),
            ),
        );
    }
    cond
}

/// One page of the events matching `q`.
pub(super) async fn page(db: &Database, q: &AuditQuery) -> Result<AuditPage> {
    let limit = q.limit.clamp(1, MAX_PAGE);
    let stmt = Query::select()
        .columns(COLUMNS)
        .from(EVENTS)
        .cond_where(conditions(q))
        .order_by(AT_MS, Order::Desc)
        .order_by(ID, Order::Desc)
        .limit(limit + 1)
        .to_owned();
    let (sql, values) = db.build(&stmt);
    let mut events: Vec<AuditRecord> = db
        .read(|| async {
            on_pool!(db, pool => {
                let rows = sqlx::query_with(sqlx::AssertSqlSafe(sql.clone()), values.clone())
                    .fetch_all(pool)
                    .await
                    .map_err(db_err)?;
                rows.iter().map(|r| {
                    use sqlx::Row;
                    Ok(AuditRecord {
                        id: r.try_get(0).map_err(db_err)?,
                        kind: r.try_get(1).map_err(db_err)?,
                        user_id: r.try_get(2).map_err(db_err)?,
                        workspace_id: r.try_get(3).map_err(db_err)?,
                        session_id: r.try_get(4).map_err(db_err)?,
                        ip: r.try_get(5).map_err(db_err)?,
                        user_agent: r.try_get(6).map_err(db_err)?,
                        outcome: r.try_get(7).map_err(db_err)?,
                        details: r.try_get(8).map_err(db_err)?,
                        at_ms: r.try_get(9).map_err(db_err)?,
                    })
                }).collect::<Result<Vec<_>>>()
            })
        })
        .await?;
    let more = events.len() as u64 > limit;
    events.truncate(limit as usize);
    let next = more
        .then(|| events.last())
        .flatten()
        .map(|last| AuditCursor {
            at_ms: last.at_ms,
            id: last.id.clone(),
        });
    Ok(AuditPage { events, next })
}
