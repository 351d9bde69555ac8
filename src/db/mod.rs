//! The database: one connection pool on PostgreSQL, MySQL/MariaDB or SQLite, bounded
//! calls, retries, transactions and the migrator. The tables belong to the components
//! that own them (`identity`, `session`, each capability).
//!
//! [`Database`] wraps one connection pool whose dialect is picked at runtime from the
//! URL ([`Database::connect`]) or from an application's own pool (`From<sqlx::PgPool>`
//! and friends). Every SQL statement — schema included — is built with `sea-query`, so
//! all dialect differences live in this module.
//!
//! # Timestamps
//!
//! Every timestamp column (`created_at`, `updated_at`, `expires_at`, `last_used_at`,
//! `applied_at`) is a `BIGINT` holding **unix epoch milliseconds** (`i64`, see
//! [`now_ms`]). Integers compare correctly on every dialect, carry no time zone and have
//! no 2038 limit (MySQL's `TIMESTAMP` ends in January 2038).
//!
//! # Backends
//!
//! Each backend is compiled only under its cargo feature: `postgres`, `mysql`
//! (MySQL and MariaDB) and `sqlite` (the default).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_query::{Expr, Query};
use sea_query_sqlx::{SqlxBinder, SqlxValues};

use crate::core::error::SentriError;

mod columns;
mod migrate;

pub(crate) use columns::{Columns, FromRow};
pub use migrate::{Migration, Target};

/// The current system time as unix epoch milliseconds, the unit of every stored
/// timestamp.
pub fn now_ms() -> i64 {
    crate::core::clock::system_now_ms()
}

/// One statement of [`Database::steps`]: what it is and whether it must touch a row.
pub(crate) struct Step {
    pub(crate) built: (String, SqlxValues),
    /// `true`: when the statement affects no row, the transaction is rolled back and the
    /// remaining steps are not run.
    pub(crate) must_affect: bool,
}

/// How [`Database::steps`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StepsOutcome {
    /// Every step ran and the transaction committed.
    Committed,
    /// Step `n` (0-based) affected no row: everything was rolled back.
    StoppedAt(usize),
}

/// How often a transaction that hit a deadlock / serialisation failure / busy database
/// is tried in all.
const TX_ATTEMPTS: u32 = 5;

/// Deadlocks / serialisation failures (MySQL, PostgreSQL: SQLSTATE 40001/40P01) and
/// SQLITE_BUSY/SQLITE_LOCKED: the transaction was rolled back and may be retried.
pub(crate) fn is_transient(dialect: Dialect, err: &sqlx::Error) -> bool {
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

/// The SQL dialect of a [`Database`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// PostgreSQL (feature `postgres`).
    Postgres,
    /// MySQL or MariaDB (feature `mysql`).
    MySql,
    /// SQLite (feature `sqlite`).
    Sqlite,
}

impl Dialect {
    /// A short lowercase name: `"postgres"`, `"mysql"` or `"sqlite"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::MySql => "mysql",
            Self::Sqlite => "sqlite",
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Pool settings for [`Database::connect_with`].
///
/// The defaults ([`Default`]) are 10 connections, a 5 s acquire timeout and a 5 s
/// statement timeout.
#[derive(Debug, Clone)]
pub struct DatabaseOptions {
    /// The maximum number of pooled connections (default 10).
    pub max_connections: u32,
    /// How long to wait for a free connection before failing with
    /// `SERVICE_UNAVAILABLE` (default 5 s).
    pub acquire_timeout: Duration,
    /// The longest a single statement may run (default 5 s).
    ///
    /// PostgreSQL enforces it on the server (`statement_timeout` set as a connection
    /// option). MySQL/MariaDB and SQLite have no server-side setting that sea-query can
    /// build, so there every repository call is bounded on the client with a tokio
    /// timeout of this length (plus the acquire timeout to get a connection); SQLite
    /// lock waits are further bounded by its 5 s `busy_timeout`.
    pub statement_timeout: Duration,
}

impl Default for DatabaseOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
        }
    }
}

/// The result of [`Database::health_check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthStatus {
    /// `true` when a trivial query succeeded.
    pub healthy: bool,
    /// How long the round trip took (including acquiring a connection).
    pub latency: Duration,
    /// The database's dialect.
    pub dialect: Dialect,
}

#[derive(Clone)]
pub(crate) enum Pool {
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
    #[cfg(feature = "mysql")]
    MySql(sqlx::MySqlPool),
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
}

pub(crate) struct Inner {
    pub(crate) pool: Pool,
    /// Client-side bound for one repository call.
    op_timeout: Duration,
}

/// A handle to the user and session store. Cheap to clone (an `Arc` inside).
///
/// Its `Debug` output shows only the dialect — never the URL or credentials.
#[derive(Clone)]
pub struct Database {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("dialect", &self.dialect())
            .finish_non_exhaustive()
    }
}

/// Runs `$body` with `$pool` bound to the concrete pool of `$db`.
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match &$db.inner.pool {
            #[cfg(feature = "postgres")]
            $crate::db::Pool::Postgres($pool) => $body,
            #[cfg(feature = "mysql")]
            $crate::db::Pool::MySql($pool) => $body,
            #[cfg(feature = "sqlite")]
            $crate::db::Pool::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Maps any database error to `SERVICE_UNAVAILABLE`, keeping it as the source.
pub(crate) fn db_err(err: sqlx::Error) -> SentriError {
    SentriError::unavailable(err)
}

/// How long to wait before each retry of an idempotent read that failed on its
/// connection (see [`Database::read`]): at most two retries.
const READ_RETRY_BACKOFF: [Duration; 2] = [Duration::from_millis(50), Duration::from_millis(150)];

/// `true` when `err` says the *connection* failed (reset, closed, server shutting down or
/// starting up), not the statement: an idempotent read may then be retried on another
/// connection. A pool timeout is not one (the caller already waited `acquire_timeout`).
pub(crate) fn is_connection_error(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::WorkerCrashed => true,
        // SQLSTATE class 08 (connection exception); PostgreSQL 57P01-57P03
        // (admin_shutdown, crash_shutdown, cannot_connect_now).
        sqlx::Error::Database(e) => e
            .code()
            .is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03")),
        _ => false,
    }
}

/// `true` when `err` is a unique/primary-key violation (every dialect).
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(e) if e.is_unique_violation())
}

#[cfg(not(all(feature = "postgres", feature = "mysql", feature = "sqlite")))]
fn feature_missing(feature: &str) -> SentriError {
    SentriError::configuration(format!(
        "this database URL needs sentri's `{feature}` cargo feature, which is not enabled"
    ))
}

fn invalid_url() -> SentriError {
    // The URL may carry a password: never echo it.
    SentriError::configuration("invalid database URL")
}

impl Database {
    /// Connects with [`DatabaseOptions::default`]. See [`Database::connect_with`].
    pub async fn connect(url: &str) -> Result<Database, SentriError> {
        Self::connect_with(url, DatabaseOptions::default()).await
    }

    /// Connects to `url` and checks that the database answers.
    ///
    /// Accepted schemes: `postgres://`, `postgresql://` (feature `postgres`);
    /// `mysql://`, `mariadb://` (feature `mysql`); `sqlite://path`, `sqlite:path`,
    /// `sqlite::memory:` (feature `sqlite`; the file is created if missing, WAL journal,
    /// `busy_timeout` 5 s, foreign keys on).
    ///
    /// A scheme whose feature is not compiled in, or an unknown/malformed URL, is a
    /// `CONFIGURATION_ERROR`; an unreachable server is `SERVICE_UNAVAILABLE`.
    pub async fn connect_with(
        url: &str,
        options: DatabaseOptions,
    ) -> Result<Database, SentriError> {
        let scheme = url
            .split_once(':')
            .map(|(s, _)| s.to_ascii_lowercase())
            .ok_or_else(invalid_url)?;
        match scheme.as_str() {
            "postgres" | "postgresql" => Self::connect_postgres(url, &options).await,
            "mysql" | "mariadb" => Self::connect_mysql(url, &options).await,
            "sqlite" => Self::connect_sqlite(url, &options).await,
            _ => Err(SentriError::configuration(
                "unsupported database URL scheme (expected postgres://, mysql://, mariadb:// or sqlite:)",
            )),
        }
    }

    #[cfg(feature = "postgres")]
    async fn connect_postgres(
        url: &str,
        options: &DatabaseOptions,
    ) -> Result<Database, SentriError> {
        use std::str::FromStr;
        let connect = sqlx::postgres::PgConnectOptions::from_str(url)
            .map_err(|_| invalid_url())?
            .options([(
                "statement_timeout",
                options.statement_timeout.as_millis().to_string(),
            )]);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(db_err)?;
        Ok(Self::from_pool(Pool::Postgres(pool), options))
    }

    #[cfg(not(feature = "postgres"))]
    async fn connect_postgres(_: &str, _: &DatabaseOptions) -> Result<Database, SentriError> {
        Err(feature_missing("postgres"))
    }

    #[cfg(feature = "mysql")]
    async fn connect_mysql(url: &str, options: &DatabaseOptions) -> Result<Database, SentriError> {
        use std::str::FromStr;
        let url = match url.get(..8) {
            Some(prefix) if prefix.eq_ignore_ascii_case("mariadb:") => {
                format!("mysql:{}", &url[8..])
            }
            _ => url.to_owned(),
        };
        let connect =
            sqlx::mysql::MySqlConnectOptions::from_str(&url).map_err(|_| invalid_url())?;
        let pool = sqlx::mysql::MySqlPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(db_err)?;
        Ok(Self::from_pool(Pool::MySql(pool), options))
    }

    #[cfg(not(feature = "mysql"))]
    async fn connect_mysql(_: &str, _: &DatabaseOptions) -> Result<Database, SentriError> {
        Err(feature_missing("mysql"))
    }

    #[cfg(feature = "sqlite")]
    async fn connect_sqlite(url: &str, options: &DatabaseOptions) -> Result<Database, SentriError> {
        use std::str::FromStr;
        let connect = sqlx::sqlite::SqliteConnectOptions::from_str(url)
            .map_err(|_| invalid_url())?
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(db_err)?;
        Ok(Self::from_pool(Pool::Sqlite(pool), options))
    }

    #[cfg(not(feature = "sqlite"))]
    async fn connect_sqlite(_: &str, _: &DatabaseOptions) -> Result<Database, SentriError> {
        Err(feature_missing("sqlite"))
    }

    fn from_pool(pool: Pool, options: &DatabaseOptions) -> Database {
        // Acquire + statement, with a little slack so the server-side timeout (Postgres)
        // or the pool's acquire timeout report first when they apply.
        let op_timeout = options
            .acquire_timeout
            .saturating_add(options.statement_timeout)
            .saturating_add(Duration::from_millis(500));
        Database {
            inner: Arc::new(Inner { pool, op_timeout }),
        }
    }

    /// The dialect of the underlying pool.
    pub fn dialect(&self) -> Dialect {
        match &self.inner.pool {
            #[cfg(feature = "postgres")]
            Pool::Postgres(_) => Dialect::Postgres,
            #[cfg(feature = "mysql")]
            Pool::MySql(_) => Dialect::MySql,
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// Runs a trivial `SELECT` and reports whether it worked and how long it took.
    pub async fn health_check(&self) -> HealthStatus {
        let started = Instant::now();
        let (sql, values) = self.build(&Query::select().expr(Expr::val(1i32)).to_owned());
        let healthy = self
            .bounded(async {
                on_pool!(self, pool => sqlx::query_with(sqlx::AssertSqlSafe(sql), values)
                    .fetch_one(pool)
                    .await
                    .map(|_| ())
                    .map_err(db_err))
            })
            .await
            .is_ok();
        HealthStatus {
            healthy,
            latency: started.elapsed(),
            dialect: self.dialect(),
        }
    }

    /// Renders a query statement for this database's dialect.
    pub(crate) fn build<S: SqlxBinder>(&self, stmt: &S) -> (String, SqlxValues) {
        match &self.inner.pool {
            #[cfg(feature = "postgres")]
            Pool::Postgres(_) => stmt.build_sqlx(sea_query::PostgresQueryBuilder),
            #[cfg(feature = "mysql")]
            Pool::MySql(_) => stmt.build_sqlx(sea_query::MysqlQueryBuilder),
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(_) => stmt.build_sqlx(sea_query::SqliteQueryBuilder),
        }
    }

    /// Executes one built statement and returns the number of affected rows; database
    /// errors go through `on_err` (so callers can recognise constraint violations).
    pub(crate) async fn exec_with(
        &self,
        built: (String, SqlxValues),
        on_err: impl FnOnce(sqlx::Error) -> SentriError,
    ) -> Result<u64, SentriError> {
        self.try_exec(built).await?.map_err(on_err)
    }

    /// Executes one built statement within the operation timeout; the inner error is the
    /// statement's own (for callers that tell errors apart or retry them).
    pub(crate) async fn try_exec(
        &self,
        (sql, values): (String, SqlxValues),
    ) -> Result<Result<u64, sqlx::Error>, SentriError> {
        self.bounded(async {
            Ok(
                on_pool!(self, pool => sqlx::query_with(sqlx::AssertSqlSafe(sql), values)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())),
            )
        })
        .await
    }

    /// Executes one built statement; any database error is `SERVICE_UNAVAILABLE`.
    pub(crate) async fn exec(&self, built: (String, SqlxValues)) -> Result<u64, SentriError> {
        self.exec_with(built, db_err).await
    }

    /// Runs `steps` in one transaction, in order, stopping (and rolling back) at the first
    /// step marked `must_affect` that touched no row. A deadlock, serialisation failure or
    /// busy database rolls the whole transaction back and it is run again (at most
    /// [`TX_ATTEMPTS`] times in all); other errors go through `on_err`.
    pub(crate) async fn steps(
        &self,
        steps: &[Step],
        on_err: fn(sqlx::Error) -> SentriError,
    ) -> Result<StepsOutcome, SentriError> {
        // Boxed: the attempt's future would otherwise nest inside every caller's future.
        self.retrying_transient(|| Box::pin(self.try_steps(steps)), on_err)
            .await
    }

    /// Runs `attempt` (one transaction or one statement) again while it fails with a
    /// deadlock, serialisation failure or busy database, at most [`TX_ATTEMPTS`] times
    /// in all, with a short growing pause; other errors go through `on_err`. Only for
    /// work a failed attempt rolled back whole.
    pub(crate) async fn retrying_transient<T, F, Fut>(
        &self,
        attempt: F,
        on_err: fn(sqlx::Error) -> SentriError,
    ) -> Result<T, SentriError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Result<T, sqlx::Error>, SentriError>>,
    {
        let mut n = 1u32;
        loop {
            match attempt().await? {
                Ok(value) => return Ok(value),
                Err(err) if is_transient(self.dialect(), &err) && n < TX_ATTEMPTS => {
                    tracing::debug!(error = %err, attempt = n, "sentri: retrying a transaction");
                    tokio::time::sleep(Duration::from_millis(5 * u64::from(n))).await;
                    n += 1;
                }
                Err(err) => return Err(on_err(err)),
            }
        }
    }

    /// The PostgreSQL pool, when this database is PostgreSQL (for statements only that
    /// dialect can run, such as data-modifying CTEs).
    #[cfg(feature = "postgres")]
    pub(crate) fn pg_pool(&self) -> Option<&sqlx::PgPool> {
        match &self.inner.pool {
            Pool::Postgres(pool) => Some(pool),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// Executes one write that may deadlock with concurrent transactions (MySQL's gap
    /// locks, SQLite busy), retrying it like [`Database::steps`]; `true` when it touched a
    /// row. For idempotent writes only (a rolled-back attempt changed nothing).
    pub(crate) async fn exec_retrying(
        &self,
        built: (String, SqlxValues),
    ) -> Result<bool, SentriError> {
        let step = [Step {
            built,
            must_affect: true,
        }];
        Ok(self.steps(&step, db_err).await? == StepsOutcome::Committed)
    }

    /// One attempt of [`Database::steps`]; the inner error is the statement's.
    async fn try_steps(
        &self,
        steps: &[Step],
    ) -> Result<Result<StepsOutcome, sqlx::Error>, SentriError> {
        self.bounded(async {
            Ok(on_pool!(self, pool => async {
                let mut tx = pool.begin().await?;
                for (n, step) in steps.iter().enumerate() {
                    let (sql, values) = step.built.clone();
                    let done = sqlx::query_with(sqlx::AssertSqlSafe(sql), values)
                        .execute(&mut *tx)
                        .await?;
                    if step.must_affect && done.rows_affected() == 0 {
                        tx.rollback().await?;
                        return Ok(StepsOutcome::StoppedAt(n));
                    }
                }
                tx.commit().await?;
                Ok(StepsOutcome::Committed)
            }.await))
        })
        .await
    }

    /// Runs an idempotent read, retrying it at most twice (after 50 ms, then 150 ms)
    /// when it failed on its connection ([`is_connection_error`]), e.g. while the
    /// server restarts. The whole call, retries included, stays within the operation
    /// timeout. Writes never go through here: one that failed on its connection may
    /// have committed.
    pub(crate) async fn read<T, F, Fut>(&self, op: F) -> Result<T, SentriError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, SentriError>>,
    {
        self.bounded(async {
            let mut backoff = READ_RETRY_BACKOFF.iter();
            loop {
                let err = match op().await {
                    Ok(value) => return Ok(value),
                    Err(err) => err,
                };
                let retriable = err
                    .source_error()
                    .and_then(|s| s.downcast_ref::<sqlx::Error>())
                    .is_some_and(is_connection_error);
                match backoff.next() {
                    Some(wait) if retriable => {
                        tracing::debug!(error = %err, "sentri: retrying a read after a connection error");
                        tokio::time::sleep(*wait).await;
                    }
                    _ => return Err(err),
                }
            }
        })
        .await
    }

    /// Bounds one repository call by the client-side operation timeout.
    pub(crate) async fn bounded<T>(
        &self,
        fut: impl Future<Output = Result<T, SentriError>>,
    ) -> Result<T, SentriError> {
        match tokio::time::timeout(self.inner.op_timeout, fut).await {
            Ok(res) => res,
            Err(_) => Err(SentriError::unavailable(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "database operation timed out",
            ))),
        }
    }
}

#[cfg(feature = "postgres")]
impl From<sqlx::PgPool> for Database {
    /// Shares an application's PostgreSQL pool (default statement bound of 5 s on the
    /// client; set `statement_timeout` on the pool's connect options for a server one).
    fn from(pool: sqlx::PgPool) -> Self {
        Self::from_pool(Pool::Postgres(pool), &DatabaseOptions::default())
    }
}

#[cfg(feature = "mysql")]
impl From<sqlx::MySqlPool> for Database {
    /// Shares an application's MySQL/MariaDB pool.
    fn from(pool: sqlx::MySqlPool) -> Self {
        Self::from_pool(Pool::MySql(pool), &DatabaseOptions::default())
    }
}

#[cfg(feature = "sqlite")]
impl From<sqlx::SqlitePool> for Database {
    /// Shares an application's SQLite pool. Deleting a user removes its sessions
    /// explicitly, so this works even if the pool has foreign keys turned off.
    fn from(pool: sqlx::SqlitePool) -> Self {
        Self::from_pool(Pool::Sqlite(pool), &DatabaseOptions::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connection_failures_are_retried() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(is_connection_error(&io));
        assert!(is_connection_error(&sqlx::Error::WorkerCrashed));
        assert!(!is_connection_error(&sqlx::Error::PoolTimedOut));
        assert!(!is_connection_error(&sqlx::Error::PoolClosed));
        assert!(!is_connection_error(&sqlx::Error::RowNotFound));
    }

    #[tokio::test]
    async fn reads_retry_connection_errors_twice_and_nothing_else() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let started = Instant::now();
        let res: Result<(), _> = db
            .read(|| async {
                calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(db_err(sqlx::Error::Io(std::io::Error::from(
                    std::io::ErrorKind::ConnectionReset,
                ))))
            })
            .await;
        assert_eq!(res.unwrap_err().status().as_u16(), 503);
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 3);
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "with backoff"
        );
        calls.store(0, std::sync::atomic::Ordering::Relaxed);
        let res: Result<(), _> = db
            .read(|| async {
                calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(db_err(sqlx::Error::PoolTimedOut))
            })
            .await;
        assert!(res.is_err());
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
