//! Migrations: concurrent and repeated runs on a fresh database apply each
//! (component, version) once.

use super::user;
use crate::support::db::TestDb;

conformance!(fresh_database: idempotent_and_concurrent);

async fn idempotent_and_concurrent(t: &TestDb) {
    eprintln!("store migrations: running on {}", t.name);
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let db = t.db.clone();
            tokio::spawn(async move { sentri::server::migrate_core(&db).await })
        })
        .collect();
    for task in tasks {
        task.await
            .expect("migrate task panicked")
            .unwrap_or_else(|e| panic!("{}: concurrent migrate: {e:?}", t.name));
    }
    sentri::server::migrate_core(&t.db)
        .await
        .expect("second migrate");
    sentri::server::migrate_core(&t.db)
        .await
        .expect("third migrate");
    assert_eq!(
        t.db.applied_migrations().await.expect("versions"),
        vec![
            ("identity".to_owned(), 1),
            ("identity-email".to_owned(), 1),
            ("identity-roles".to_owned(), 1),
            ("session".to_owned(), 1),
            ("session".to_owned(), 2),
            ("session-assurance".to_owned(), 1),
            ("session-workspace".to_owned(), 1)
        ],
        "{}",
        t.name
    );
    let u = user(&t.db, "after-migrate@example.com").await;
    assert_eq!(t.db.count_users().await.expect("count"), 1);
    assert!(t.db.find_user_by_id(&u.id).await.expect("find").is_some());
}
