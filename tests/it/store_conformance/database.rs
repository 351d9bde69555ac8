//! The database handle: health check, `Debug` without credentials, connection URLs.

use sentri::ErrorCode;
use sentri::db::{Database, Dialect};

use super::user;
use crate::support::db::TestDb;

conformance!(database: health_check_and_debug);

async fn health_check_and_debug(t: &TestDb) {
    eprintln!("store health: running on {}", t.name);
    let health = t.db.health_check().await;
    assert!(health.healthy, "{}", t.name);
    assert_eq!(health.dialect, t.db.dialect());
    let expected = match t.name {
        "sqlite" => Dialect::Sqlite,
        "postgres" => Dialect::Postgres,
        _ => Dialect::MySql,
    };
    assert_eq!(t.db.dialect(), expected);
    let dbg = format!("{:?}", t.db);
    assert!(dbg.contains("dialect") && !dbg.contains("://"), "{dbg}");
}

#[tokio::test]
async fn connect_urls() {
    let err = Database::connect("redis://localhost")
        .await
        .expect_err("unsupported");
    assert_eq!(err.code(), &ErrorCode::ConfigurationError);
    let err = Database::connect("not a url").await.expect_err("no scheme");
    assert_eq!(err.code(), &ErrorCode::ConfigurationError);

    #[cfg(feature = "sqlite")]
    {
        let db = Database::connect("sqlite::memory:").await.expect("memory");
        sentri::server::migrate_core(&db)
            .await
            .expect("migrate memory");
        user(&db, "mem@example.com").await;
        assert_eq!(db.count_users().await.unwrap(), 1);
    }
    #[cfg(not(feature = "postgres"))]
    {
        let err = Database::connect("postgres://u:secret@localhost/db")
            .await
            .expect_err("feature");
        assert_eq!(err.code(), &ErrorCode::ConfigurationError);
        assert!(err.message().contains("postgres") && !err.message().contains("secret"));
    }
    #[cfg(feature = "postgres")]
    if let Some(url) = crate::support::common::service_url(
        "SENTRI_TEST_POSTGRES_URL",
        "store_conformance::connect_urls",
    ) {
        let db = Database::connect(&url).await.expect("postgres connect");
        assert!(db.health_check().await.healthy);
        let alt = url.replacen("postgres://", "postgresql://", 1);
        assert_eq!(
            Database::connect(&alt)
                .await
                .expect("postgresql://")
                .dialect(),
            Dialect::Postgres
        );
    }
    #[cfg(feature = "mysql")]
    if let Some(url) = crate::support::common::service_url(
        "SENTRI_TEST_MYSQL_URL",
        "store_conformance::connect_urls",
    ) {
        let db = Database::connect(&url).await.expect("mysql connect");
        assert!(db.health_check().await.healthy);
        let alt = url.replacen("mysql://", "mariadb://", 1);
        assert_eq!(
            Database::connect(&alt).await.expect("mariadb://").dialect(),
            Dialect::MySql
        );
    }
}
