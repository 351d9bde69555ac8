//! The audit capability: every [`AuthEvent`] written to the `sentri_auth_events` table,
//! off the request path, read back by administrators and purged after a retention
//! period.
//!
//! | route | who | answer |
//! |---|---|---|
//! | `GET /audit/events` | the admin role (or [`Audit::roles`]) | a page of events, newest first: `{"events": [...], "nextCursor": "..."}` |
//!
//! Query parameters (all optional): `userId`, `workspaceId`, `type` (e.g.
//! `login_failed`), `from` and `to` (unix epoch ms, `from <= at < to`), `limit`
//! (1–500, default 50) and `cursor` (the previous page's `nextCursor`). Bad values →
//! 400 `VALIDATION_ERROR`.
//!
//! Writing: the database sink puts each event in its own bounded queue
//! ([`Audit::queue`], default 4096) and one task writes them in multi-row inserts of at
//! most [`Audit::batch`] rows. A full queue never slows a request: the event is
//! dropped, counted ([`Audit::dropped`]) and a warning is logged (at the 1st, 2nd, 4th,
//! 8th… drop). Rows are built only from an event's structured fields (kind, user and
//! session ids, client address and user agent, the error *code*) — never the identifier
//! as typed or any message — so no password, token, code or key reaches the table.
//!
//! Retention: events older than [`Audit::retention`] (default 90 days, by the
//! configured clock) are deleted every [`Audit::purge_interval`] (default one hour) and
//! by [`Audit::purge_now`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), sentri::SentriError> {
//! use sentri::{ServerConfig, capability::audit::Audit, db::Database, token::SigningKey};
//! let db = Database::connect("sqlite::memory:").await?;
//! let key = SigningKey::hs256(b"a secret of at least thirty-two bytes!!")?;
//! let audit = Audit::new(db.clone());
//! let config = ServerConfig::new(db, key, ["user", "admin"]).with(audit.clone());
//! // later: audit.dropped(), audit.query(..), audit.purge_now()
//! # Ok(()) }
//! ```

mod routes;
mod schema;
mod store;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use tokio::sync::mpsc;

pub use store::{AuditCursor, AuditPage, AuditQuery, AuditRecord, DEFAULT_PAGE, MAX_PAGE};

use super::{Capability, Core};
use crate::core::BoxFuture;
use crate::core::clock::{Clock, duration_ms, system_now_ms};
use crate::core::error::Result;
use crate::core::events::{AuthEvent, EventSink};
use crate::db::{Database, Migration};

/// The default retention: 90 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// The default queue capacity of the database sink.
pub const DEFAULT_QUEUE: usize = 4096;
/// The default largest insert.
pub const DEFAULT_BATCH: usize = 200;

/// The audit capability and its handle (cheap to clone; clones share the queue and
/// counters). Build it with [`Audit::new`] on the database to write to.
#[derive(Clone)]
#[non_exhaustive]
pub struct Audit {
    db: Database,
    retention: Duration,
    purge_interval: Option<Duration>,
    queue: usize,
    batch: usize,
    roles: Option<Vec<String>>,
    shared: Arc<Shared>,
}

/// What the sink, the writer, the routes and the handle share.
#[derive(Default)]
struct Shared {
    dropped: AtomicU64,
    failed: AtomicU64,
    written: AtomicU64,
    tx: Mutex<Option<mpsc::Sender<AuditRecord>>>,
    clock: OnceLock<Arc<dyn Clock>>,
}

impl fmt::Debug for Audit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Audit")
            .field("retention", &self.retention)
            .field("purge_interval", &self.purge_interval)
            .field("queue", &self.queue)
            .field("batch", &self.batch)
            .field("roles", &self.roles)
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl Audit {
    /// The audit log on `db` (usually the server's database) with the defaults:
    /// retention 90 days, purge every hour, queue 4096, batches of 200, readable by
    /// the admin role.
    pub fn new(db: Database) -> Self {
        Self {
            db,
            retention: DEFAULT_RETENTION,
            purge_interval: Some(Duration::from_secs(3600)),
            queue: DEFAULT_QUEUE,
            batch: DEFAULT_BATCH,
            roles: None,
            shared: Arc::default(),
        }
    }

    /// How long events are kept (default 90 days).
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// How often old events are purged; `None`: never on a schedule (default 1 h).
    pub fn purge_interval(mut self, every: Option<Duration>) -> Self {
        self.purge_interval = every;
        self
    }

    /// The capacity of the sink's queue (default 4096, at least 1).
    pub fn queue(mut self, capacity: usize) -> Self {
        self.queue = capacity.max(1);
        self
    }

    /// The most rows one insert writes (default 200, at least 1).
    pub fn batch(mut self, rows: usize) -> Self {
        self.batch = rows.max(1);
        self
    }

    /// The roles that may read `GET /audit/events` (default: the admin role).
    pub fn roles<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.roles = Some(roles.into_iter().map(Into::into).collect());
        self
    }

    /// How many events were dropped because the sink's queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// How many events were lost because their insert failed (logged).
    pub fn failed(&self) -> u64 {
        self.shared.failed.load(Ordering::Relaxed)
    }

    /// How many events were written.
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }

    /// Writes `events` now, in inserts of at most [`Audit::batch`] rows, bypassing the
    /// queue (imports, tests).
    pub async fn write(&self, events: &[AuthEvent]) -> Result<()> {
        let records: Vec<AuditRecord> = events.iter().map(AuditRecord::from_event).collect();
        for chunk in records.chunks(self.batch) {
            store::insert(&self.db, chunk).await?;
        }
        Ok(())
    }

    /// One page of the events matching `query`, newest first.
    pub async fn query(&self, query: &AuditQuery) -> Result<AuditPage> {
        store::page(&self.db, query).await
    }

    /// Deletes the events older than the retention now; returns how many.
    pub async fn purge_now(&self) -> Result<u64> {
        let now = self
            .shared
            .clock
            .get()
            .map_or_else(system_now_ms, |c| c.now_ms());
        store::purge_before(&self.db, now - duration_ms(self.retention)).await
    }

    /// The sink's sender, starting the writer task on first use (`None` outside a
    /// Tokio runtime).
    fn sender(&self) -> Option<mpsc::Sender<AuditRecord>> {
        let mut tx = self.shared.tx.lock().unwrap_or_else(|e| e.into_inner());
        if tx.is_none() {
            let handle = tokio::runtime::Handle::try_current().ok()?;
            let (sender, rx) = mpsc::channel(self.queue);
            handle.spawn(writer(self.clone_for_task(), rx));
            *tx = Some(sender);
        }
        tx.clone()
    }

    /// A copy for a background task that does not keep the sender alive.
    fn clone_for_task(&self) -> Writer {
        Writer {
            db: self.db.clone(),
            batch: self.batch,
            shared: Arc::downgrade(&self.shared),
        }
    }

    fn start_purge(&self) {
        let Some(every) = self.purge_interval else {
            return;
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("sentri: audit built outside a Tokio runtime: purge is off");
            return;
        };
        let weak = Arc::downgrade(&self.shared);
        let this = Audit {
            shared: Arc::default(),
            ..self.clone()
        };
        handle.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else {
                    return;
                };
                let audit = Audit {
                    shared,
                    ..this.clone()
                };
                match audit.purge_now().await {
                    Ok(n) => tracing::debug!(deleted = n, "sentri: purged old audit events"),
                    Err(err) => tracing::warn!(error = %err, "sentri: audit purge failed"),
                }
            }
        });
    }
}

/// The writer task's view: it ends when the handle and every sink are gone.
struct Writer {
    db: Database,
    batch: usize,
    shared: std::sync::Weak<Shared>,
}

async fn writer(w: Writer, mut rx: mpsc::Receiver<AuditRecord>) {
    let mut buf = Vec::with_capacity(w.batch);
    while rx.recv_many(&mut buf, w.batch).await > 0 {
        let res = store::insert(&w.db, &buf).await;
        let Some(shared) = w.shared.upgrade() else {
            return;
        };
        let n = buf.len() as u64;
        match res {
            Ok(()) => shared.written.fetch_add(n, Ordering::Relaxed),
            Err(err) => {
                tracing::warn!(error = %err, lost = n, "sentri: audit insert failed");
                shared.failed.fetch_add(n, Ordering::Relaxed)
            }
        };
        buf.clear();
    }
}

/// The database sink: queues the event's row, never waits.
struct DbSink(Audit);

impl EventSink for DbSink {
    fn handle(&self, event: Arc<AuthEvent>) -> BoxFuture<'static, ()> {
        let record = AuditRecord::from_event(&event);
        if let Some(tx) = self.0.sender()
            && tx.try_send(record).is_err()
        {
            let n = self.0.shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "sentri: audit queue full; events dropped");
            }
        }
        Box::pin(async {})
    }
}

impl Capability for Audit {
    fn name(&self) -> &'static str {
        "audit"
    }

    fn migrations(&self) -> &'static [Migration] {
        schema::MIGRATIONS
    }

    fn routes(&self, core: &Core) -> Router {
        if self.shared.clock.set(core.sessions.clock.clone()).is_ok() {
            self.start_purge();
        }
        let roles = self
            .roles
            .clone()
            .unwrap_or_else(|| vec![core.identity.roles.admin.clone()]);
        routes::router(core, self.clone(), roles)
    }

    #[cfg(feature = "openapi")]
    fn openapi(&self, doc: &crate::http::openapi::ApiDoc) -> utoipa::openapi::OpenApi {
        routes::openapi(doc)
    }

    fn event_sinks(&self) -> Vec<Arc<dyn EventSink>> {
        vec![Arc::new(DbSink(self.clone()))]
    }
}
