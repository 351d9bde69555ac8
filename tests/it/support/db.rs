//! Database test harness: one isolated, migrated database per dialect and test.
//!
//! SQLite always runs (a fresh temp file). PostgreSQL runs when
//! `SENTRI_TEST_POSTGRES_URL` is set (a unique schema, pool connections with
//! `search_path` set to it); MySQL/MariaDB when `SENTRI_TEST_MYSQL_URL` is set (a unique
//! database). Unreachable services fail the test under `SENTRI_TEST_REQUIRE_SERVICES=1`
//! and are skipped loudly otherwise.
#![allow(dead_code)]

use std::path::PathBuf;
#[cfg(any(feature = "postgres", feature = "mysql"))]
use std::str::FromStr;

use sentri::db::{Database, DatabaseOptions};
#[cfg(any(feature = "postgres", feature = "mysql"))]
use sqlx::{AssertSqlSafe, Connection};

#[cfg(any(feature = "postgres", feature = "mysql"))]
use crate::support::common::service_url;
use crate::support::common::{require_services, unique};

/// What to remove after the test.
enum Cleanup {
    SqliteFile(PathBuf),
    #[cfg(feature = "postgres")]
    PgSchema {
        url: String,
        schema: String,
    },
    #[cfg(feature = "mysql")]
    MySqlDatabase {
        url: String,
        name: String,
    },
}

/// One isolated database for a test.
pub struct TestDb {
    /// `"sqlite"`, `"postgres"` or `"mysql"`.
    pub name: &'static str,
    /// The store under test.
    pub db: Database,
    cleanup: Cleanup,
}

impl TestDb {
    /// The server URL and schema of a PostgreSQL test database (for a pool of the
    /// test's own, e.g. an app's tables next to sentri's).
    #[cfg(feature = "postgres")]
    pub fn pg_target(&self) -> Option<(&str, &str)> {
        match &self.cleanup {
            Cleanup::PgSchema { url, schema } => Some((url, schema)),
            _ => None,
        }
    }

    /// Runs raw SQL on this test's database, outside sentri (to shape legacy schemas).
    pub async fn raw(&self, sql: &str) {
        match &self.cleanup {
            Cleanup::SqliteFile(path) => {
                let url = format!("sqlite://{}", path.display());
                let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
                    .await
                    .unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
            #[cfg(feature = "postgres")]
            Cleanup::PgSchema { url, schema } => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                let sql = format!("SET search_path TO \"{schema}\"; {sql}");
                sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
            #[cfg(feature = "mysql")]
            Cleanup::MySqlDatabase { url, name } => {
                let mut conn = sqlx::MySqlConnection::connect(url).await.unwrap();
                let sql = format!("USE `{name}`; {sql}");
                sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
        }
    }

    /// The first column of the first row of `sql` (e.g. a `COUNT(*)`), read outside
    /// sentri.
    pub async fn scalar(&self, sql: &str) -> i64 {
        match &self.cleanup {
            Cleanup::SqliteFile(path) => {
                let url = format!("sqlite://{}", path.display());
                let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
                    .await
                    .unwrap();
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
                    .fetch_one(&mut conn)
                    .await
                    .unwrap()
            }
            #[cfg(feature = "postgres")]
            Cleanup::PgSchema { url, schema } => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::raw_sql(AssertSqlSafe(format!("SET search_path TO \"{schema}\"")))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                sqlx::query_scalar(AssertSqlSafe(sql.to_owned()))
                    .fetch_one(&mut conn)
                    .await
                    .unwrap()
            }
            #[cfg(feature = "mysql")]
            Cleanup::MySqlDatabase { url, name } => {
                let mut conn = sqlx::MySqlConnection::connect(url).await.unwrap();
                sqlx::raw_sql(AssertSqlSafe(format!("USE `{name}`")))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                sqlx::query_scalar(AssertSqlSafe(sql.to_owned()))
                    .fetch_one(&mut conn)
                    .await
                    .unwrap()
            }
        }
    }

    /// Best-effort removal of the test's file / schema / database.
    /// Set `SENTRI_TEST_KEEP_DB=1` to keep them for inspection.
    pub async fn cleanup(self) {
        if std::env::var("SENTRI_TEST_KEEP_DB").is_ok_and(|v| v == "1") {
            return;
        }
        let TestDb { db, cleanup, .. } = self;
        drop(db);
        match cleanup {
            Cleanup::SqliteFile(path) => remove_sqlite_files(&path),
            #[cfg(feature = "postgres")]
            Cleanup::PgSchema { url, schema } => {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
                    let _ = sqlx::raw_sql(AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            }
            #[cfg(feature = "mysql")]
            Cleanup::MySqlDatabase { url, name } => {
                if let Ok(mut conn) = sqlx::MySqlConnection::connect(&url).await {
                    let _ =
                        sqlx::raw_sql(AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{name}`")))
                            .execute(&mut conn)
                            .await;
                }
            }
        }
    }
}

fn remove_sqlite_files(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
fn unreachable(kind: &str, test: &str, err: impl std::fmt::Display) -> Option<TestDb> {
    if require_services() {
        panic!("{kind} is configured but unreachable ({test}): {err}");
    }
    crate::support::common::loud_skip(&format!("{kind} (unreachable: {err})"), test);
    None
}

/// A fresh SQLite file database (not migrated).
async fn sqlite(test: &str) -> Option<TestDb> {
    let path = std::env::temp_dir().join(format!("{}.db", unique("sentri_test")));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let options = DatabaseOptions {
        max_connections: 5,
        ..DatabaseOptions::default()
    };
    match Database::connect_with(&url, options).await {
        Ok(db) => Some(TestDb {
            name: "sqlite",
            db,
            cleanup: Cleanup::SqliteFile(path),
        }),
        Err(e) => panic!("cannot open a SQLite test database ({test}): {e:?}"),
    }
}

/// A fresh PostgreSQL schema (not migrated), when configured.
#[cfg(feature = "postgres")]
async fn postgres(test: &str) -> Option<TestDb> {
    let url = service_url("SENTRI_TEST_POSTGRES_URL", test)?;
    let schema = unique("sentri_t");
    let mut admin = match sqlx::PgConnection::connect(&url).await {
        Ok(conn) => conn,
        Err(e) => return unreachable("postgres", test, e),
    };
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("CREATE SCHEMA failed ({test}): {e}"));
    let _ = admin.close().await;
    let options = sqlx::postgres::PgConnectOptions::from_str(&url)
        .unwrap_or_else(|e| panic!("bad SENTRI_TEST_POSTGRES_URL: {e}"))
        .options([("search_path", schema.as_str())]);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(5)
        .connect_with(options)
        .await
        .unwrap_or_else(|e| panic!("cannot connect the postgres test pool ({test}): {e}"));
    Some(TestDb {
        name: "postgres",
        db: Database::from(pool),
        cleanup: Cleanup::PgSchema { url, schema },
    })
}

/// A fresh MySQL/MariaDB database (not migrated), when configured.
#[cfg(feature = "mysql")]
async fn mysql(test: &str) -> Option<TestDb> {
    let url = service_url("SENTRI_TEST_MYSQL_URL", test)?;
    let name = unique("sentri_t");
    let mut admin = match sqlx::MySqlConnection::connect(&url).await {
        Ok(conn) => conn,
        Err(e) => return unreachable("mysql", test, e),
    };
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE `{name}`")))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE failed ({test}): {e}"));
    let _ = admin.close().await;
    let options = sqlx::mysql::MySqlConnectOptions::from_str(&url)
        .unwrap_or_else(|e| panic!("bad SENTRI_TEST_MYSQL_URL: {e}"))
        .database(&name);
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(5)
        .connect_with(options)
        .await
        .unwrap_or_else(|e| panic!("cannot connect the mysql test pool ({test}): {e}"));
    Some(TestDb {
        name: "mysql",
        db: Database::from(pool),
        cleanup: Cleanup::MySqlDatabase { url, name },
    })
}

#[cfg(not(feature = "postgres"))]
async fn postgres(test: &str) -> Option<TestDb> {
    feature_off("postgres", test)
}

#[cfg(not(feature = "mysql"))]
async fn mysql(test: &str) -> Option<TestDb> {
    feature_off("mysql", test)
}

fn feature_off(kind: &str, test: &str) -> Option<TestDb> {
    if require_services() {
        panic!("SENTRI_TEST_REQUIRE_SERVICES=1 but the `{kind}` feature is off ({test})");
    }
    crate::support::common::loud_skip(&format!("{kind} (cargo feature off)"), test);
    None
}

/// One database of `kind` (`"sqlite"`, `"postgres"`, `"mysql"`), fresh and NOT migrated.
pub async fn fresh_database(kind: &str, test: &str) -> Option<TestDb> {
    match kind {
        "sqlite" => sqlite(test).await,
        "postgres" => postgres(test).await,
        "mysql" => mysql(test).await,
        other => panic!("unknown database kind {other:?}"),
    }
}

/// One migrated database of `kind`, or `None` when that service is not configured.
pub async fn database(kind: &str, test: &str) -> Option<TestDb> {
    let t = fresh_database(kind, test).await?;
    sentri::server::migrate_core(&t.db)
        .await
        .unwrap_or_else(|e| panic!("migrate failed on {kind} ({test}): {e:?}"));
    Some(t)
}

/// Every available database, fresh and NOT migrated: SQLite always, plus PostgreSQL and
/// MySQL/MariaDB when configured.
pub async fn fresh_databases(test: &str) -> Vec<TestDb> {
    let mut out = Vec::new();
    for kind in ["sqlite", "postgres", "mysql"] {
        if let Some(t) = fresh_database(kind, test).await {
            out.push(t);
        }
    }
    out
}

/// Every available database, fresh and migrated: SQLite always, plus PostgreSQL and
/// MySQL/MariaDB when configured.
pub async fn databases(test: &str) -> Vec<TestDb> {
    let mut out = Vec::new();
    for kind in ["sqlite", "postgres", "mysql"] {
        if let Some(t) = database(kind, test).await {
            out.push(t);
        }
    }
    out
}
