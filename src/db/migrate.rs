//! Schema migrations keyed by `(component, version)`.
//!
//! Each component (users, sessions, every capability) declares its own
//! [`Migration`]s; [`Database::run_migrations`] applies the pending ones and records them
//! in `sentri_schema_versions (component, version, applied_at)`, so a capability switched
//! on later migrates by itself. Databases of the landed schema (one `sentri_migrations`
//! table of plain versions) are upgraded in place: their versions are carried over.
//!
//! Every DDL statement is built with sea-query; the MySQL/MariaDB variant differs in
//! two ways: indexes are declared inline in `CREATE TABLE` (MySQL has no
//! `CREATE INDEX IF NOT EXISTS`), and the tables use `utf8mb4` with a byte-exact binary
//! collation (`utf8mb4_bin`, or its `NO PAD` variant where the server has one) so
//! identifiers compare like on PostgreSQL and SQLite (`'A' != 'a'`, `'x ' != 'x'`).

use sea_query::{
    ColumnDef, Expr, Index, IndexCreateStatement, OnConflict, Query, QueryStatementWriter,
    SchemaStatementBuilder, Table, TableCreateStatement,
};

use super::{Database, Dialect, Pool, db_err, now_ms, on_pool};
use crate::core::error::SentriError;

/// The table of applied `(component, version)` pairs.
const VERSIONS: &str = "sentri_schema_versions";
/// The landed schema's table of plain versions (read once, to carry them over).
const LEGACY_VERSIONS: &str = "sentri_migrations";
const COMPONENT: &str = "component";
const VERSION: &str = "version";
const APPLIED_AT: &str = "applied_at";

/// What each landed version created, as `(component, version)` pairs.
const LEGACY_MAP: &[(i64, &[(&str, i64)])] = &[
    (1, &[("identity", 1), ("session", 1)]),
    (2, &[("session", 2)]),
    (100, &[("identity-form", 1)]),
];

#[cfg(feature = "postgres")]
/// The key of the PostgreSQL advisory lock held while migrating ("sentri" in ASCII).
const PG_MIGRATE_LOCK: i64 = 0x0000_7365_6e74_7269;
#[cfg(feature = "mysql")]
/// The prefix of the MySQL/MariaDB named lock held while migrating.
const MYSQL_MIGRATE_LOCK: &str = "sentri_migrate.";
#[cfg(feature = "mysql")]
/// Seconds to wait for the MySQL/MariaDB named lock.
const MYSQL_LOCK_WAIT_SECS: i64 = 60;

/// The advisory lock key of the current schema: `hashtextextended(current_schema(),
/// "sentri")`. Migrations of one schema exclude each other; other schemas of the same
/// database (other apps, parallel tests) do not wait.
#[cfg(feature = "postgres")]
fn pg_lock_key() -> sea_query::Expr {
    sea_query::Func::cust("hashtextextended")
        .arg(sea_query::Func::cust("current_schema"))
        .arg(PG_MIGRATE_LOCK)
        .into()
}

/// The named lock of the current database: `SHA1(CONCAT('sentri_migrate.', DATABASE()))`
/// (named locks are server-wide and at most 64 characters long). Migrations of one
/// database exclude each other; other databases on the server do not wait.
#[cfg(feature = "mysql")]
fn mysql_lock_name() -> sea_query::Expr {
    let name = sea_query::Func::cust("CONCAT")
        .arg(MYSQL_MIGRATE_LOCK)
        .arg(sea_query::Func::cust("DATABASE"));
    sea_query::Func::cust("SHA1").arg(name).into()
}

/// Serialises SQLite migrations within this process.
#[cfg(feature = "sqlite")]
static SQLITE_MIGRATE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What the DDL is rendered for: the dialect and, on MySQL/MariaDB, the byte-exact
/// collation of the server (`NO PAD` where the server has one).
#[derive(Debug, Clone, Copy)]
pub struct Target {
    dialect: Dialect,
    collation: &'static str,
}

/// One schema step of one component: `up` renders its statements for a [`Target`].
/// Versions of a component are never reused or edited once released.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The component (`"identity"`, `"session"`, a capability's name).
    pub component: &'static str,
    /// The version within the component, from 1.
    pub version: i64,
    /// The statements of this step.
    pub up: fn(Target) -> Vec<String>,
}

impl Target {
    /// The dialect.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Renders a schema statement.
    pub fn ddl<S: SchemaStatementBuilder>(&self, stmt: &S) -> String {
        match self.dialect {
            #[cfg(feature = "postgres")]
            Dialect::Postgres => stmt.build(sea_query::PostgresQueryBuilder),
            #[cfg(feature = "mysql")]
            Dialect::MySql => stmt.build(sea_query::MysqlQueryBuilder),
            #[cfg(feature = "sqlite")]
            Dialect::Sqlite => stmt.build(sea_query::SqliteQueryBuilder),
            #[allow(unreachable_patterns)]
            _ => String::new(),
        }
    }

    /// Renders a query statement with its values inlined (data migrations).
    pub fn query<S: QueryStatementWriter>(&self, stmt: &S) -> String {
        match self.dialect {
            #[cfg(feature = "postgres")]
            Dialect::Postgres => stmt.to_string(sea_query::PostgresQueryBuilder),
            #[cfg(feature = "mysql")]
            Dialect::MySql => stmt.to_string(sea_query::MysqlQueryBuilder),
            #[cfg(feature = "sqlite")]
            Dialect::Sqlite => stmt.to_string(sea_query::SqliteQueryBuilder),
            #[allow(unreachable_patterns)]
            _ => String::new(),
        }
    }

    /// `CREATE TABLE IF NOT EXISTS` with its indexes: inline on MySQL (which has no
    /// `CREATE INDEX IF NOT EXISTS`), separate statements elsewhere; MySQL tables get
    /// InnoDB, utf8mb4 and the byte-exact collation.
    pub fn create_table(
        &self,
        mut table: TableCreateStatement,
        indexes: Vec<IndexCreateStatement>,
    ) -> Vec<String> {
        table.if_not_exists();
        if self.dialect != Dialect::MySql {
            let mut out = vec![self.ddl(&table)];
            out.extend(indexes.iter().map(|i| self.ddl(i)));
            return out;
        }
        table
            .engine("InnoDB")
            .character_set("utf8mb4")
            .collate(self.collation);
        for mut index in indexes {
            table.index(&mut index);
        }
        vec![self.ddl(&table)]
    }

    /// `CREATE INDEX IF NOT EXISTS idx_<table>_<col>` on one column.
    pub fn index(table: &'static str, col: &'static str) -> IndexCreateStatement {
        Index::create()
            .name(format!("idx_{table}_{col}"))
            .table(table)
            .col(col)
            .if_not_exists()
            .to_owned()
    }
}

/// The byte-exact collation to use on a MySQL/MariaDB server reporting `version`.
#[cfg(feature = "mysql")]
fn mysql_collation(version: &str) -> &'static str {
    // Old MariaDB replication-compatible version strings start with "5.5.5-".
    let numbers = version.strip_prefix("5.5.5-").unwrap_or(version);
    let mut parts = numbers
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor, patch) = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    if version.to_ascii_lowercase().contains("mariadb") {
        if (major, minor, patch) >= (10, 2, 2) {
            "utf8mb4_nopad_bin"
        } else {
            "utf8mb4_bin"
        }
    } else if (major, minor, patch) >= (8, 0, 17) {
        "utf8mb4_0900_bin"
    } else {
        "utf8mb4_bin"
    }
}

fn versions_table(target: Target) -> String {
    let mut table = Table::create();
    table
        .table(VERSIONS)
        .col(ColumnDef::new(COMPONENT).string_len(64).not_null())
        .col(ColumnDef::new(VERSION).big_integer().not_null())
        .col(ColumnDef::new(APPLIED_AT).big_integer().not_null())
        .primary_key(Index::create().col(COMPONENT).col(VERSION));
    target.create_table(table.to_owned(), Vec::new()).remove(0)
}

/// `INSERT` of a `(component, version)` row, ignoring one that is already there.
fn record_version(
    component: &str,
    version: i64,
) -> Result<sea_query::InsertStatement, sqlx::Error> {
    Ok(Query::insert()
        .into_table(VERSIONS)
        .columns([COMPONENT, VERSION, APPLIED_AT])
        .values([
            Expr::val(component),
            Expr::val(version),
            Expr::val(now_ms()),
        ])
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?
        .on_conflict(
            OnConflict::columns([COMPONENT, VERSION])
                .do_nothing_on([COMPONENT, VERSION])
                .to_owned(),
        )
        .to_owned())
}

/// Applies every pending migration over one connection (`$conn`: `&mut Connection`).
/// Evaluates to `Result<(), sqlx::Error>`.
macro_rules! run_pending {
    ($db:expr, $conn:expr, $target:expr, $migrations:expr) => {
        async {
            let target: Target = $target;
            sqlx::raw_sql(sqlx::AssertSqlSafe(versions_table(target)))
                .execute(&mut *$conn)
                .await?;
            // The landed schema: carry its plain versions over (once; idempotent).
            let (sql, values) = $db.build(&Query::select().column(VERSION).from(LEGACY_VERSIONS).to_owned());
            if let Ok(rows) = sqlx::query_with(sqlx::AssertSqlSafe(sql), values).fetch_all(&mut *$conn).await {
                for row in rows {
                    let legacy = sqlx::Row::try_get::<i64, _>(&row, 0)?;
                    let pairs = LEGACY_MAP.iter().filter(|(v, _)| *v == legacy).flat_map(|(_, p)| p.iter());
                    for (component, version) in pairs {
                        let (sql, values) = $db.build(&record_version(component, *version)?);
                        sqlx::query_with(sqlx::AssertSqlSafe(sql), values).execute(&mut *$conn).await?;
                    }
                }
            }
            let (sql, values) = $db.build(&Query::select().columns([COMPONENT, VERSION]).from(VERSIONS).to_owned());
            let mut applied: Vec<(String, i64)> = Vec::new();
            for row in sqlx::query_with(sqlx::AssertSqlSafe(sql), values).fetch_all(&mut *$conn).await? {
                applied.push((sqlx::Row::try_get(&row, 0)?, sqlx::Row::try_get(&row, 1)?));
            }
            for m in $migrations {
                if applied.iter().any(|(c, v)| c == m.component && *v == m.version) {
                    continue;
                }
                for statement in (m.up)(target) {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&mut *$conn).await?;
                }
                let (sql, values) = $db.build(&record_version(m.component, m.version)?);
                sqlx::query_with(sqlx::AssertSqlSafe(sql), values).execute(&mut *$conn).await?;
                tracing::info!(component = m.component, version = m.version, dialect = %target.dialect, "sentri: applied schema migration");
            }
            Ok::<(), sqlx::Error>(())
        }
    };
}

impl Database {
    /// Records `(component, version)` as applied (idempotent): for data migrations run
    /// outside [`Database::run_migrations`].
    pub(crate) async fn record_applied(
        &self,
        component: &str,
        version: i64,
    ) -> Result<(), SentriError> {
        let stmt = record_version(component, version).map_err(db_err)?;
        self.exec(self.build(&stmt)).await.map(|_| ())
    }

    /// The applied `(component, version)` pairs, sorted (an error before the first
    /// migration created the table).
    pub async fn applied_migrations(&self) -> Result<Vec<(String, i64)>, SentriError> {
        let (sql, values) = self.build(
            &Query::select()
                .columns([COMPONENT, VERSION])
                .from(VERSIONS)
                .order_by(COMPONENT, sea_query::Order::Asc)
                .order_by(VERSION, sea_query::Order::Asc)
                .to_owned(),
        );
        self.bounded(async {
            on_pool!(self, pool => {
                let rows = sqlx::query_with(sqlx::AssertSqlSafe(sql), values)
                    .fetch_all(pool)
                    .await
                    .map_err(db_err)?;
                rows.iter()
                    .map(|row| Ok((
                        sqlx::Row::try_get::<String, _>(row, 0).map_err(db_err)?,
                        sqlx::Row::try_get::<i64, _>(row, 1).map_err(db_err)?,
                    )))
                    .collect()
            })
        })
        .await
    }

    /// Applies the pending `migrations` (in the order given), recording each.
    ///
    /// Versions are recorded in `sentri_schema_versions`. Idempotent, and safe to call from several tasks or
    /// processes at once: PostgreSQL holds an advisory lock of the current schema on one
    /// dedicated connection, MySQL/MariaDB a named lock of the current database (waiting
    /// at most 60 s), SQLite uses a
    /// process-wide mutex plus idempotent statements (`IF NOT EXISTS`, the version
    /// insert ignoring conflicts) retried on `SQLITE_BUSY`.
    pub async fn run_migrations(&self, migrations: &[Migration]) -> Result<(), SentriError> {
        match &self.inner.pool {
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => self.migrate_postgres(pool, migrations).await,
            #[cfg(feature = "mysql")]
            Pool::MySql(pool) => self.migrate_mysql(pool, migrations).await,
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pool) => self.migrate_sqlite(pool, migrations).await,
        }
    }

    /// A `SELECT <func>(<args>)` for the lock functions.
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    fn lock_call(
        &self,
        func: &'static str,
        args: Vec<sea_query::Expr>,
    ) -> (String, sea_query_sqlx::SqlxValues) {
        let mut call = sea_query::Func::cust(func);
        for arg in args {
            call = call.arg(arg);
        }
        self.build(&Query::select().expr(call).to_owned())
    }

    /// PostgreSQL: under `pg_advisory_lock` on one dedicated connection.
    #[cfg(feature = "postgres")]
    async fn migrate_postgres(
        &self,
        pool: &sqlx::PgPool,
        migrations: &[Migration],
    ) -> Result<(), SentriError> {
        let mut conn = pool.acquire().await.map_err(db_err)?;
        // If this future is dropped mid-way the connection is closed, which releases the
        // session-level advisory lock.
        conn.close_on_drop();
        let (sql, values) = self.lock_call("pg_advisory_lock", vec![pg_lock_key()]);
        sqlx::query_with(sqlx::AssertSqlSafe(sql), values)
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
        let target = Target {
            dialect: Dialect::Postgres,
            collation: "",
        };
        let result = run_pending!(self, conn, target, migrations).await;
        let (sql, values) = self.lock_call("pg_advisory_unlock", vec![pg_lock_key()]);
        let unlocked = sqlx::query_with(sqlx::AssertSqlSafe(sql), values)
            .execute(&mut *conn)
            .await;
        result.map_err(db_err)?;
        unlocked.map_err(db_err).map(|_| ())
    }

    /// MySQL/MariaDB: under `GET_LOCK`, with the collation the server supports.
    #[cfg(feature = "mysql")]
    async fn migrate_mysql(
        &self,
        pool: &sqlx::MySqlPool,
        migrations: &[Migration],
    ) -> Result<(), SentriError> {
        let mut conn = pool.acquire().await.map_err(db_err)?;
        conn.close_on_drop();
        let lock = vec![mysql_lock_name(), MYSQL_LOCK_WAIT_SECS.into()];
        let (sql, values) = self.lock_call("GET_LOCK", lock);
        let row = sqlx::query_with(sqlx::AssertSqlSafe(sql), values)
            .fetch_one(&mut *conn)
            .await
            .map_err(db_err)?;
        let got: Option<i64> = sqlx::Row::try_get(&row, 0).map_err(db_err)?;
        if got != Some(1) {
            return Err(SentriError::unavailable(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "timed out waiting for the sentri migration lock",
            )));
        }
        let result = async {
            let (sql, values) = self.lock_call("VERSION", Vec::new());
            let row = sqlx::query_with(sqlx::AssertSqlSafe(sql), values)
                .fetch_one(&mut *conn)
                .await?;
            let version: String = sqlx::Row::try_get(&row, 0)?;
            let target = Target {
                dialect: Dialect::MySql,
                collation: mysql_collation(&version),
            };
            run_pending!(self, conn, target, migrations).await
        }
        .await;
        let (sql, values) = self.lock_call("RELEASE_LOCK", vec![mysql_lock_name()]);
        let released = sqlx::query_with(sqlx::AssertSqlSafe(sql), values)
            .execute(&mut *conn)
            .await;
        result.map_err(db_err)?;
        released.map_err(db_err).map(|_| ())
    }

    /// SQLite: a process-wide mutex plus idempotent statements, retried when busy.
    #[cfg(feature = "sqlite")]
    async fn migrate_sqlite(
        &self,
        pool: &sqlx::SqlitePool,
        migrations: &[Migration],
    ) -> Result<(), SentriError> {
        let _guard = SQLITE_MIGRATE.lock().await;
        let mut attempt = 0u32;
        loop {
            let mut conn = pool.acquire().await.map_err(db_err)?;
            let target = Target {
                dialect: Dialect::Sqlite,
                collation: "",
            };
            match run_pending!(self, conn, target, migrations).await {
                Ok(()) => return Ok(()),
                Err(e) if super::is_transient(Dialect::Sqlite, &e) && attempt < 10 => {
                    attempt += 1;
                    drop(conn);
                    tokio::time::sleep(std::time::Duration::from_millis(50 * u64::from(attempt)))
                        .await;
                }
                Err(e) => return Err(db_err(e)),
            }
        }
    }
}

#[cfg(all(test, feature = "mysql"))]
mod tests {
    use super::mysql_collation;

    #[test]
    fn picks_a_no_pad_binary_collation_when_the_server_has_one() {
        assert_eq!(
            mysql_collation("10.11.19-MariaDB-0+deb12u1"),
            "utf8mb4_nopad_bin"
        );
        assert_eq!(mysql_collation("5.5.5-10.1.48-MariaDB"), "utf8mb4_bin");
        assert_eq!(mysql_collation("5.5.5-10.6.2-MariaDB"), "utf8mb4_nopad_bin");
        assert_eq!(mysql_collation("8.0.36"), "utf8mb4_0900_bin");
        assert_eq!(mysql_collation("8.4.0-commercial"), "utf8mb4_0900_bin");
        assert_eq!(mysql_collation("5.7.44-log"), "utf8mb4_bin");
    }
}
