//! Users: verbatim round trips (SQL metacharacters, case, Unicode), the unique
//! identifier under concurrency, updates and deletes.

use std::collections::HashSet;

use sentri::ErrorCode;
use sentri::identity::NewUser;

use super::{roles, user};
use crate::support::db::TestDb;

conformance!(
    database: roundtrip_verbatim,
    concurrent_create_same_identifier,
    updates
);

async fn roundtrip_verbatim(t: &TestDb) {
    eprintln!("store users: running on {}", t.name);
    let db = &t.db;
    let identifiers = [
        "alice@example.com",
        "o'brien@example.com",
        "a\"b;c@example.com",
        "'; DROP TABLE sentri_users; --",
        "Zoë",
        "Zoe",
        "ДОМ",
        "дом",
        "🦀 crab",
        "Bob",
        "bob",
        "A",
        "a",
        "é",
        "e",
        "trailing ",
        "trailing",
    ];
    let mut ids = HashSet::new();
    for ident in identifiers {
        let u = user(db, ident).await;
        assert_eq!(u.identifier, ident);
        assert!(ids.insert(u.id.clone()));
        assert_eq!(
            uuid::Uuid::parse_str(&u.id)
                .expect("uuid")
                .get_version_num(),
            7
        );
    }
    assert_eq!(
        db.count_users().await.expect("count"),
        identifiers.len() as u64
    );
    for ident in identifiers {
        let found = db
            .find_user_by_identifier(ident)
            .await
            .expect("find")
            .unwrap_or_else(|| panic!("{}: {ident:?} not found", t.name));
        assert_eq!(found.identifier, ident, "{}", t.name);
        assert_eq!(found.roles, roles(&["user"]));
        assert_eq!(found.password_hash, "$2b$10$hash");
        let by_id = db
            .find_user_by_id(&found.id)
            .await
            .expect("find id")
            .expect("by id");
        assert_eq!(by_id, found);
    }
    let bob = db.find_user_by_identifier("Bob").await.unwrap().unwrap();
    let lower = db.find_user_by_identifier("bob").await.unwrap().unwrap();
    assert_ne!(
        bob.id, lower.id,
        "{}: 'Bob' and 'bob' must be distinct",
        t.name
    );
    assert!(db.find_user_by_identifier("BOB").await.unwrap().is_none());
    assert!(
        db.find_user_by_identifier("nobody")
            .await
            .unwrap()
            .is_none()
    );
    assert!(db.find_user_by_id("no-such-id").await.unwrap().is_none());

    let dup = db
        .create_user(&NewUser {
            identifier: "Bob",
            password_hash: "x",
            roles: &[],
        })
        .await
        .expect_err("duplicate");
    assert_eq!(dup.code(), &ErrorCode::UserAlreadyExists, "{}", t.name);

    // Debug never shows the hash; to_auth_user drops it.
    let dbg = format!("{bob:?}");
    assert!(dbg.contains("<redacted>") && !dbg.contains("$2b$"), "{dbg}");
    let au = bob.to_auth_user();
    assert_eq!(
        (au.id, au.identifier, au.roles),
        (bob.id.clone(), bob.identifier.clone(), bob.roles.clone())
    );
}

async fn concurrent_create_same_identifier(t: &TestDb) {
    eprintln!("store concurrent create: running on {}", t.name);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let db = t.db.clone();
            tokio::spawn(async move {
                db.create_user(&NewUser {
                    identifier: "race@example.com",
                    password_hash: "h",
                    roles: &[],
                })
                .await
            })
        })
        .collect();
    let (mut ok, mut exists) = (0, 0);
    for task in tasks {
        match task.await.expect("task panicked") {
            Ok(_) => ok += 1,
            Err(e) if e.code() == &ErrorCode::UserAlreadyExists => exists += 1,
            Err(e) => panic!("{}: unexpected error {e:?}", t.name),
        }
    }
    assert_eq!((ok, exists), (1, 49), "{}", t.name);
    assert_eq!(t.db.count_users().await.expect("count"), 1, "{}", t.name);
}

async fn updates(t: &TestDb) {
    eprintln!("store user updates: running on {}", t.name);
    let db = &t.db;
    let u = user(db, "carol@example.com").await;
    let other = user(db, "dave@example.com").await;
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;

    let updated = db
        .update_user_roles(&u.id, &roles(&["admin", "user"]))
        .await
        .expect("roles")
        .expect("exists");
    assert_eq!(updated.roles, roles(&["admin", "user"]));
    assert!(updated.updated_at > u.updated_at);
    assert_eq!(updated.created_at, u.created_at);
    assert!(
        db.update_user_roles("missing", &[])
            .await
            .unwrap()
            .is_none()
    );

    let renamed = db
        .update_user_identifier(&u.id, "Carol@example.com")
        .await
        .expect("rename")
        .expect("exists");
    assert_eq!(renamed.identifier, "Carol@example.com");
    assert!(
        db.find_user_by_identifier("carol@example.com")
            .await
            .unwrap()
            .is_none()
    );
    let taken = db
        .update_user_identifier(&u.id, &other.identifier)
        .await
        .expect_err("taken");
    assert_eq!(taken.code(), &ErrorCode::UserAlreadyExists, "{}", t.name);
    assert!(
        db.update_user_identifier("missing", "zzz")
            .await
            .unwrap()
            .is_none()
    );

    assert!(
        db.update_user_password(&u.id, "new-hash")
            .await
            .expect("pw")
    );
    // Same value again still reports the row (MySQL counts matched rows).
    assert!(
        db.update_user_password(&u.id, "new-hash")
            .await
            .expect("pw again")
    );
    assert!(
        !db.update_user_password("missing", "x")
            .await
            .expect("pw missing")
    );
    let after = db.find_user_by_id(&u.id).await.unwrap().unwrap();
    assert_eq!(after.password_hash, "new-hash");
    assert_eq!(after.roles, roles(&["admin", "user"]));

    assert!(db.delete_user(&other.id).await.expect("delete"));
    assert!(!db.delete_user(&other.id).await.expect("delete again"));
    assert_eq!(db.count_users().await.unwrap(), 1);
}
