//! Table and column names, and the versioned schema migrations.
//!
//! Every DDL statement is built with sea-query; the MySQL/MariaDB variant differs in
//! two ways: indexes are declared inline in `CREATE TABLE` (MySQL has no
//! `CREATE INDEX IF NOT EXISTS`), and the tables use `utf8mb4` with a byte-exact binary
//! collation (`utf8mb4_bin`, or its `NO PAD` variant where the server has one, see
//! [`Target::collation`]) so identifiers compare like on PostgreSQL and SQLite
//! (`'A' != 'a'`, `'é' != 'e'`, `'x ' != 'x'`).

use sea_query::{
    ColumnDef, Expr, ForeignKey, ForeignKeyAction, Func, Index, IndexCreateStatement, OnConflict,
    Query, SchemaStatementBuilder, Table, TableCreateStatement,
};

use super::{Database, Dialect, Pool, db_err, now_ms, on_pool};
use crate::error::SentriError;

pub(crate) const USERS: &str = "sentri_users";
pub(crate) const SESSIONS: &str = "sentri_sessions";
pub(crate) const MIGRATIONS: &str = "sentri_migrations";
pub(crate) const FAMILIES: &str = "sentri_session_families";

pub(crate) const ID: &str = "id";
pub(crate) const IDENTIFIER: &str = "identifier";
pub(crate) const PASSWORD_HASH: &str = "password_hash";
pub(crate) const ROLES: &str = "roles";
pub(crate) const CREATED_AT: &str = "created_at";
pub(crate) const UPDATED_AT: &str = "updated_at";

pub(crate) const USER_ID: &str = "user_id";
pub(crate) const FAMILY_ID: &str = "family_id";
pub(crate) const REFRESH_HASH: &str = "refresh_hash";
pub(crate) const PREVIOUS_HASH: &str = "previous_hash";
pub(crate) const ROTATED_FROM: &str = "rotated_from";
pub(crate) const EXPIRES_AT: &str = "expires_at";
pub(crate) const LAST_USED_AT: &str = "last_used_at";
pub(crate) const USER_AGENT: &str = "user_agent";
pub(crate) const IP: &str = "ip";
pub(crate) const MAX_EXPIRES_AT: &str = "max_expires_at";
pub(crate) const REVOKED_AT: &str = "revoked_at";

const VERSION: &str = "version";
const APPLIED_AT: &str = "applied_at";

#[cfg(feature = "postgres")]
/// The key of the PostgreSQL advisory lock held while migrating ("sentri" in ASCII).
const PG_MIGRATE_LOCK: i64 = 0x0000_7365_6e74_7269;
#[cfg(feature = "mysql")]
/// The name of the MySQL/MariaDB named lock held while migrating.
const MYSQL_MIGRATE_LOCK: &str = "sentri_migrate";
#[cfg(feature = "mysql")]
/// Seconds to wait for the MySQL/MariaDB named lock.
const MYSQL_LOCK_WAIT_SECS: i64 = 60;

/// Serialises SQLite migrations within this process.
#[cfg(feature = "sqlite")]
static SQLITE_MIGRATE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What the DDL is rendered for.
#[derive(Debug, Clone, Copy)]
struct Target {
    dialect: Dialect,
    /// MySQL/MariaDB table collation: a byte-exact binary collation, `NO PAD` where the
    /// server has one (MariaDB ≥ 10.2 `utf8mb4_nopad_bin`, MySQL ≥ 8.0.17
    /// `utf8mb4_0900_bin`) so that even trailing spaces are significant; older servers
    /// get `utf8mb4_bin` (byte-exact except for trailing spaces).
    collation: &'static str,
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

/// A schema version and the statements that create it.
type Migration = (i64, fn(Target) -> Vec<String>);

/// The version recorded once stored identifiers are in the NFKC_Casefold form (a data
/// migration run by `ServerAuth::migrate`, outside [`ALL`]).
pub(crate) const IDENTIFIER_FORM_VERSION: i64 = 100;

/// Every migration, in order. Versions are never reused or edited once released.
const ALL: &[Migration] = &[(1, v1), (2, v2)];

fn ddl<S: SchemaStatementBuilder>(dialect: Dialect, stmt: &S) -> String {
    match dialect {
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

/// MySQL: InnoDB, utf8mb4, byte-exact collation.
fn table_options(target: Target, table: &mut TableCreateStatement) {
    if target.dialect == Dialect::MySql {
        table
            .engine("InnoDB")
            .character_set("utf8mb4")
            .collate(target.collation);
    }
}

fn migrations_table(target: Target) -> String {
    let dialect = target.dialect;
    let mut table = Table::create();
    table
        .table(MIGRATIONS)
        .if_not_exists()
        .col(
            ColumnDef::new(VERSION)
                .big_integer()
                .not_null()
                .primary_key(),
        )
        .col(ColumnDef::new(APPLIED_AT).big_integer().not_null());
    table_options(target, &mut table);
    ddl(dialect, &table)
}

/// Version 1: users and sessions.
fn v1(target: Target) -> Vec<String> {
    let dialect = target.dialect;
    let mut users = Table::create();
    users
        .table(USERS)
        .if_not_exists()
        .col(ColumnDef::new(ID).string_len(36).not_null().primary_key())
        .col(
            ColumnDef::new(IDENTIFIER)
                .string_len(320)
                .not_null()
                .unique_key(),
        )
        .col(ColumnDef::new(PASSWORD_HASH).string_len(255).not_null())
        .col(ColumnDef::new(ROLES).text().not_null())
        .col(ColumnDef::new(CREATED_AT).big_integer().not_null())
        .col(ColumnDef::new(UPDATED_AT).big_integer().not_null());
    table_options(target, &mut users);

    let mut sessions = Table::create();
    sessions
        .table(SESSIONS)
        .if_not_exists()
        .col(ColumnDef::new(ID).string_len(36).not_null().primary_key())
        .col(ColumnDef::new(USER_ID).string_len(36).not_null())
        .col(ColumnDef::new(FAMILY_ID).string_len(36).not_null())
        .col(
            ColumnDef::new(REFRESH_HASH)
                .string_len(64)
                .not_null()
                .unique_key(),
        )
        .col(ColumnDef::new(PREVIOUS_HASH).string_len(64).null())
        .col(ColumnDef::new(ROTATED_FROM).string_len(36).null())
        .col(ColumnDef::new(EXPIRES_AT).big_integer().not_null())
        .col(ColumnDef::new(CREATED_AT).big_integer().not_null())
        .col(ColumnDef::new(LAST_USED_AT).big_integer().not_null())
        .col(ColumnDef::new(USER_AGENT).string_len(512).null())
        .col(ColumnDef::new(IP).string_len(64).null())
        .foreign_key(
            ForeignKey::create()
                .name("fk_sentri_sessions_user")
                .from(SESSIONS, USER_ID)
                .to(USERS, ID)
                .on_delete(ForeignKeyAction::Cascade),
        );
    table_options(target, &mut sessions);

    let indexes: Vec<IndexCreateStatement> = [USER_ID, FAMILY_ID, EXPIRES_AT, PREVIOUS_HASH]
        .into_iter()
        .map(|col| {
            Index::create()
                .name(format!("idx_sentri_sessions_{col}"))
                .table(SESSIONS)
                .col(col)
                .if_not_exists()
                .to_owned()
        })
        .collect();

    if dialect == Dialect::MySql {
        // No `CREATE INDEX IF NOT EXISTS` on MySQL: declare them in the (idempotent)
        // `CREATE TABLE IF NOT EXISTS` instead.
        for mut index in indexes {
            sessions.index(&mut index);
        }
        vec![ddl(dialect, &users), ddl(dialect, &sessions)]
    } else {
        let mut out = vec![ddl(dialect, &users), ddl(dialect, &sessions)];
        out.extend(indexes.iter().map(|i| ddl(dialect, i)));
        out
    }
}

/// Version 2: session families, the row every rotation and revocation of a login locks
/// (see `store::families`). Existing sessions get a family each, ending when their
/// newest refresh token does (their absolute end is not known).
fn v2(target: Target) -> Vec<String> {
    let dialect = target.dialect;
    let mut families = Table::create();
    families
        .table(FAMILIES)
        .if_not_exists()
        .col(ColumnDef::new(ID).string_len(36).not_null().primary_key())
        .col(ColumnDef::new(USER_ID).string_len(36).not_null())
        .col(ColumnDef::new(CREATED_AT).big_integer().not_null())
        .col(ColumnDef::new(EXPIRES_AT).big_integer().not_null())
        .col(ColumnDef::new(MAX_EXPIRES_AT).big_integer().not_null())
        .col(ColumnDef::new(REVOKED_AT).big_integer().null())
        .foreign_key(
            ForeignKey::create()
                .name("fk_sentri_session_families_user")
                .from(FAMILIES, USER_ID)
                .to(USERS, ID)
                .on_delete(ForeignKeyAction::Cascade),
        );
    table_options(target, &mut families);
    let indexes: Vec<IndexCreateStatement> = [USER_ID, EXPIRES_AT]
        .into_iter()
        .map(|col| {
            Index::create()
                .name(format!("idx_sentri_session_families_{col}"))
                .table(FAMILIES)
                .col(col)
                .if_not_exists()
                .to_owned()
        })
        .collect();
    let mut out = Vec::new();
    if dialect == Dialect::MySql {
        for mut index in indexes {
            families.index(&mut index);
        }
        out.push(ddl(dialect, &families));
    } else {
        out.push(ddl(dialect, &families));
        out.extend(indexes.iter().map(|i| ddl(dialect, i)));
    }
    out.push(backfill_families(dialect));
    out
}

/// One family row per family id found in `sentri_sessions`.
fn backfill_families(dialect: Dialect) -> String {
    let select = Query::select()
        .column(FAMILY_ID)
        .expr(Func::max(Expr::col(USER_ID)))
        .expr(Func::min(Expr::col(CREATED_AT)))
        .expr(Func::max(Expr::col(EXPIRES_AT)))
        .expr(Func::max(Expr::col(EXPIRES_AT)))
        .from(SESSIONS)
        .group_by_col(FAMILY_ID)
        .to_owned();
    let mut insert = Query::insert();
    insert
        .into_table(FAMILIES)
        .columns([ID, USER_ID, CREATED_AT, EXPIRES_AT, MAX_EXPIRES_AT]);
    if insert.select_from(select).is_err() {
        return String::new();
    }
    match dialect {
        #[cfg(feature = "postgres")]
        Dialect::Postgres => insert.to_string(sea_query::PostgresQueryBuilder),
        #[cfg(feature = "mysql")]
        Dialect::MySql => insert.to_string(sea_query::MysqlQueryBuilder),
        #[cfg(feature = "sqlite")]
        Dialect::Sqlite => insert.to_string(sea_query::SqliteQueryBuilder),
        #[allow(unreachable_patterns)]
        _ => String::new(),
    }
}

/// `INSERT` of a version row, ignoring a row that is already there.
fn record_version(version: i64) -> Result<sea_query::InsertStatement, sqlx::Error> {
    Ok(Query::insert()
        .into_table(MIGRATIONS)
        .columns([VERSION, APPLIED_AT])
        .values([Expr::val(version), Expr::val(now_ms())])
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?
        .on_conflict(
            OnConflict::column(VERSION)
                .do_nothing_on([VERSION])
                .to_owned(),
        )
        .to_owned())
}

/// Applies every pending migration over one connection (`$conn`: `&mut Connection`).
/// Evaluates to `Result<(), sqlx::Error>`.
macro_rules! run_pending {
    ($db:expr, $conn:expr, $target:expr) => {
        async {
            let target: Target = $target;
            let dialect = target.dialect;
            sqlx::raw_sql(sqlx::AssertSqlSafe(migrations_table(target)))
                .execute(&mut *$conn)
                .await?;
            let (sql, values) = $db.build(&Query::select().column(VERSION).from(MIGRATIONS).to_owned());
            let mut applied = Vec::new();
            for row in sqlx::query_with(sqlx::AssertSqlSafe(sql), values)
                .fetch_all(&mut *$conn)
                .await?
            {
                applied.push(sqlx::Row::try_get::<i64, _>(&row, 0)?);
            }
            for (version, statements) in ALL {
                if applied.contains(version) {
                    continue;
                }
                for statement in statements(target) {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                        .execute(&mut *$conn)
                        .await?;
                }
                let (sql, values) = $db.build(&record_version(*version)?);
                sqlx::query_with(sqlx::AssertSqlSafe(sql), values)
                    .execute(&mut *$conn)
                    .await?;
                tracing::info!(version, dialect = %dialect, "sentri: applied schema migration");
            }
            Ok::<(), sqlx::Error>(())
        }
    };
}

impl Database {
    /// Records `version` as applied (idempotent).
    pub(crate) async fn record_applied(&self, version: i64) -> Result<(), SentriError> {
        let stmt = record_version(version).map_err(db_err)?;
        self.exec(self.build(&stmt)).await.map(|_| ())
    }

    /// The schema versions recorded in `sentri_migrations`, ascending (an error before the
    /// first [`Database::migrate`] created the table).
    pub async fn applied_migrations(&self) -> Result<Vec<i64>, SentriError> {
        let (sql, values) = self.build(
            &Query::select()
                .column(VERSION)
                .from(MIGRATIONS)
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
                    .map(|row| sqlx::Row::try_get::<i64, _>(row, 0).map_err(db_err))
                    .collect()
            })
        })
        .await
    }

    /// Creates or upgrades sentri's tables, applying only the pending versions.
    ///
    /// Versions are recorded in `sentri_migrations (version BIGINT PRIMARY KEY,
    /// applied_at BIGINT)`. Idempotent, and safe to call from several tasks or
    /// processes at once: PostgreSQL holds `pg_advisory_lock` on one dedicated
    /// connection, MySQL/MariaDB holds `GET_LOCK('sentri_migrate', 60)`, SQLite uses a
    /// process-wide mutex plus idempotent statements (`IF NOT EXISTS`, the version
    /// insert ignoring conflicts) retried on `SQLITE_BUSY`.
    pub async fn migrate(&self) -> Result<(), SentriError> {
        match &self.inner.pool {
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => {
                let mut conn = pool.acquire().await.map_err(db_err)?;
                // If this future is dropped mid-way the connection is closed, which
                // releases the session-level advisory lock.
                conn.close_on_drop();
                let lock = |func: &'static str| {
                    self.build(
                        &Query::select()
                            .expr(sea_query::Func::cust(func).arg(PG_MIGRATE_LOCK))
                            .to_owned(),
                    )
                };
                let (sql, values) = lock("pg_advisory_lock");
                sqlx::query_with(sqlx::AssertSqlSafe(sql), values)
                    .execute(&mut *conn)
                    .await
                    .map_err(db_err)?;
                let target = Target {
                    dialect: Dialect::Postgres,
                    collation: "",
                };
                let result = run_pending!(self, conn, target).await;
                let (sql, values) = lock("pg_advisory_unlock");
                let unlocked = sqlx::query_with(sqlx::AssertSqlSafe(sql), values)
                    .execute(&mut *conn)
                    .await;
                result.map_err(db_err)?;
                unlocked.map_err(db_err)?;
                Ok(())
            }
            #[cfg(feature = "mysql")]
            Pool::MySql(pool) => {
                let mut conn = pool.acquire().await.map_err(db_err)?;
                conn.close_on_drop();
                let (sql, values) = self.build(
                    &Query::select()
                        .expr(
                            sea_query::Func::cust("GET_LOCK")
                                .arg(MYSQL_MIGRATE_LOCK)
                                .arg(MYSQL_LOCK_WAIT_SECS),
                        )
                        .to_owned(),
                );
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
                    let (sql, values) = self.build(
                        &Query::select()
                            .expr(sea_query::Func::cust("VERSION"))
                            .to_owned(),
                    );
                    let row = sqlx::query_with(sqlx::AssertSqlSafe(sql), values)
                        .fetch_one(&mut *conn)
                        .await?;
                    let version: String = sqlx::Row::try_get(&row, 0)?;
                    let target = Target {
                        dialect: Dialect::MySql,
                        collation: mysql_collation(&version),
                    };
                    run_pending!(self, conn, target).await
                }
                .await;
                let (sql, values) = self.build(
                    &Query::select()
                        .expr(sea_query::Func::cust("RELEASE_LOCK").arg(MYSQL_MIGRATE_LOCK))
                        .to_owned(),
                );
                let released = sqlx::query_with(sqlx::AssertSqlSafe(sql), values)
                    .execute(&mut *conn)
                    .await;
                result.map_err(db_err)?;
                released.map_err(db_err)?;
                Ok(())
            }
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pool) => {
                let _guard = SQLITE_MIGRATE.lock().await;
                let mut attempt = 0u32;
                loop {
                    let mut conn = pool.acquire().await.map_err(db_err)?;
                    let target = Target {
                        dialect: Dialect::Sqlite,
                        collation: "",
                    };
                    match run_pending!(self, conn, target).await {
                        Ok(()) => return Ok(()),
                        Err(e) if super::is_transient(Dialect::Sqlite, &e) && attempt < 10 => {
                            attempt += 1;
                            drop(conn);
                            tokio::time::sleep(std::time::Duration::from_millis(
                                50 * u64::from(attempt),
                            ))
                            .await;
                        }
                        Err(e) => return Err(db_err(e)),
                    }
                }
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
