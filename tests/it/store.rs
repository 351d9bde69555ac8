//! Storage layer tests, run against every available database (SQLite always).

use std::collections::HashSet;

use sentri::ErrorCode;
use sentri::db::{Database, Dialect, now_ms};
use sentri::identity::{NewUser, UserRecord};
use sentri::session::{NewFamily, NewSession, Rotation, SessionRecord};

use crate::support::db::{databases, fresh_databases};

/// 2100-01-01T00:00:00Z in milliseconds: well past 2038.
const YEAR_2100_MS: i64 = 4_102_444_800_000;

fn roles(r: &[&str]) -> Vec<String> {
    r.iter().map(|s| (*s).to_owned()).collect()
}

async fn user(db: &Database, identifier: &str) -> UserRecord {
    db.create_user(&NewUser {
        identifier,
        password_hash: "$2b$10$hash",
        roles: &roles(&["user"]),
    })
    .await
    .unwrap_or_else(|e| panic!("create_user({identifier:?}): {e:?}"))
}

fn hash(tag: &str) -> String {
    // 64 hex chars, unique per call.
    format!("{:0>32}{}", tag.len(), uuid::Uuid::new_v4().simple())
}

fn new_session(user_id: &str, family_id: &str, expires_at: i64) -> NewSession {
    NewSession {
        id: uuid::Uuid::now_v7().to_string(),
        user_id: user_id.to_owned(),
        family_id: family_id.to_owned(),
        refresh_hash: hash("r"),
        previous_hash: None,
        rotated_from: None,
        expires_at,
        user_agent: Some("Mozilla/5.0 (X11) 'quoted'".to_owned()),
        ip: Some("2001:db8::1".to_owned()),
    }
}

/// Opens family `family_id` for `user_id` with one session expiring at `expires_at`.
async fn open(db: &Database, user_id: &str, family_id: &str, expires_at: i64) -> SessionRecord {
    db.open_family(
        &family(user_id, family_id, expires_at),
        &new_session(user_id, family_id, expires_at),
        now_ms(),
    )
    .await
    .unwrap_or_else(|e| panic!("open_family({family_id}): {e:?}"))
}

fn family(user_id: &str, family_id: &str, expires_at: i64) -> NewFamily {
    NewFamily {
        id: family_id.to_owned(),
        user_id: user_id.to_owned(),
        expires_at,
        max_expires_at: YEAR_2100_MS + 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_migrations_idempotent_and_concurrent() {
    for t in fresh_databases("store_migrations_idempotent_and_concurrent").await {
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
                ("session".to_owned(), 1),
                ("session".to_owned(), 2)
            ],
            "{}",
            t.name
        );
        let u = user(&t.db, "after-migrate@example.com").await;
        assert_eq!(t.db.count_users().await.expect("count"), 1);
        assert!(t.db.find_user_by_id(&u.id).await.expect("find").is_some());
        t.cleanup().await;
    }
}

#[tokio::test]
async fn store_users_roundtrip_verbatim() {
    for t in databases("store_users_roundtrip_verbatim").await {
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
        t.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_concurrent_create_same_identifier() {
    for t in databases("store_concurrent_create_same_identifier").await {
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
        t.cleanup().await;
    }
}

#[tokio::test]
async fn store_user_updates() {
    for t in databases("store_user_updates").await {
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
        t.cleanup().await;
    }
}

#[tokio::test]
async fn store_sessions_crud() {
    for t in databases("store_sessions_crud").await {
        eprintln!("store sessions: running on {}", t.name);
        let db = &t.db;
        let u = user(db, "erin@example.com").await;
        let v = user(db, "frank@example.com").await;
        let now = now_ms();

        let s1 = open(db, &u.id, "fam-1", now + 60_000).await;
        let s3 = open(db, &u.id, "fam-2", YEAR_2100_MS).await;
        let s4 = open(db, &v.id, "fam-3", now - 1).await;
        assert!(s1.created_at >= now && s1.last_used_at == s1.created_at);

        let missing_user = db
            .open_family(
                &family("no-such-user", "fam-x", now),
                &new_session("no-such-user", "fam-x", now),
                now,
            )
            .await
            .expect_err("fk");
        assert_eq!(missing_user.code(), &ErrorCode::UserNotFound, "{}", t.name);
        assert!(
            db.find_family("fam-x").await.unwrap().is_none(),
            "rolled back"
        );

        let found: SessionRecord = db.find_session(&s1.id).await.unwrap().expect("find");
        assert_eq!(found, s1);
        assert_eq!(
            db.find_session_by_refresh_hash(&s1.refresh_hash)
                .await
                .unwrap(),
            Some(s1.clone())
        );
        assert!(
            db.find_session_by_refresh_hash(&hash("zz"))
                .await
                .unwrap()
                .is_none()
        );
        assert!(db.find_session("nope").await.unwrap().is_none());
        let dbg = format!("{s1:?}");
        assert!(!dbg.contains(&s1.refresh_hash), "{dbg}");

        // Past 2038: stored, read back and compared as integers.
        let far = db.find_session(&s3.id).await.unwrap().unwrap();
        assert_eq!(far.expires_at, YEAR_2100_MS);
        assert!(db.family_active("fam-2", YEAR_2100_MS - 1).await.unwrap());
        assert!(!db.family_active("fam-2", YEAR_2100_MS).await.unwrap());

        assert!(db.family_active("fam-1", now).await.unwrap());
        assert!(
            !db.family_active("fam-3", now).await.unwrap(),
            "expired only"
        );
        assert!(!db.family_active("fam-none", now).await.unwrap());

        let listed = db.list_user_sessions(&u.id).await.unwrap();
        let listed_ids: HashSet<_> = listed.iter().map(|s| s.id.clone()).collect();
        assert_eq!(listed_ids, HashSet::from([s1.id.clone(), s3.id.clone()]));

        // The purge removes the expired family and its session, nothing else.
        assert_eq!(
            db.purge_expired(now, 3_600_000).await.unwrap(),
            2,
            "{}",
            t.name
        );
        assert!(db.find_session(&s4.id).await.unwrap().is_none());
        assert!(db.find_family("fam-3").await.unwrap().is_none());
        assert!(db.find_family("fam-1").await.unwrap().is_some());

        // Revoking a family: its sessions go, the row stays as a revoked marker.
        assert!(db.revoke_family("fam-1", now).await.unwrap());
        assert!(!db.family_active("fam-1", now).await.unwrap());
        assert!(db.find_session(&s1.id).await.unwrap().is_none());
        assert_eq!(
            db.find_family("fam-1").await.unwrap().unwrap().revoked_at,
            Some(now)
        );
        assert!(
            !db.revoke_family("fam-1", now).await.unwrap(),
            "already revoked"
        );
        // Kept for the retention, purged after it.
        assert_eq!(db.purge_expired(now + 1, 3_600_000).await.unwrap(), 0);
        assert_eq!(
            db.purge_expired(now + 3_600_001, 3_600_000).await.unwrap(),
            1
        );

        open(db, &u.id, "fam-5", now + 1000).await;
        let mut revoked = db.revoke_user_families(&u.id, now).await.unwrap();
        revoked.sort();
        assert_eq!(
            revoked,
            vec!["fam-2".to_owned(), "fam-5".to_owned()],
            "{}",
            t.name
        );
        assert!(db.list_user_sessions(&u.id).await.unwrap().is_empty());
        assert!(
            db.revoke_user_families(&u.id, now + 1)
                .await
                .unwrap()
                .is_empty()
        );

        // Deleting a user removes its families and sessions.
        let s6 = open(db, &v.id, "fam-6", now + 1000).await;
        assert!(db.delete_user(&v.id).await.unwrap());
        assert!(
            db.find_session(&s6.id).await.unwrap().is_none(),
            "{}: cascade",
            t.name
        );
        assert!(
            db.find_family("fam-6").await.unwrap().is_none(),
            "{}",
            t.name
        );
        assert!(db.list_user_sessions(&v.id).await.unwrap().is_empty());
        t.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_concurrent_rotation_one_winner() {
    for t in databases("store_concurrent_rotation_one_winner").await {
        eprintln!("store rotation: running on {}", t.name);
        let u = user(&t.db, "gina@example.com").await;
        let now = now_ms();
        let exp = now + 60_000;
        let old = open(&t.db, &u.id, "fam-r", exp).await;

        // A wrong hash never rotates.
        let wrong =
            t.db.rotate_session(
                &old.id,
                &hash("wrong"),
                &new_session(&u.id, "fam-r", exp),
                now,
            )
            .await;
        assert_eq!(wrong.expect("wrong hash"), Rotation::Superseded);

        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let db = t.db.clone();
                let (old_id, old_hash) = (old.id.clone(), old.refresh_hash.clone());
                let mut next = new_session(&u.id, "fam-r", exp);
                next.previous_hash = Some(old_hash.clone());
                next.rotated_from = Some(old_id.clone());
                tokio::spawn(async move { db.rotate_session(&old_id, &old_hash, &next, now).await })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            match task.await.expect("task panicked") {
                Ok(Rotation::Rotated(s)) => winners.push(*s),
                Ok(Rotation::Superseded) => {}
                Ok(Rotation::FamilyEnded) => panic!("{}: family is live", t.name),
                Err(e) => panic!("{}: rotate error {e:?}", t.name),
            }
        }
        assert_eq!(winners.len(), 1, "{}: exactly one rotation wins", t.name);
        let family = t.db.list_user_sessions(&u.id).await.unwrap();
        assert_eq!(family.len(), 1, "{}: one row left in the family", t.name);
        assert_eq!(family[0], winners[0]);
        assert!(t.db.find_session(&old.id).await.unwrap().is_none());
        let by_prev =
            t.db.find_session_by_previous_hash(&old.refresh_hash)
                .await
                .unwrap();
        assert_eq!(
            by_prev.as_ref().map(|s| s.id.as_str()),
            Some(winners[0].id.as_str())
        );
        assert_eq!(winners[0].rotated_from.as_deref(), Some(old.id.as_str()));

        // A revoked family never rotates again, and its expiry never passes its end.
        let current = &winners[0];
        assert!(t.db.revoke_family("fam-r", now).await.unwrap());
        let mut next = new_session(&u.id, "fam-r", exp);
        next.previous_hash = Some(current.refresh_hash.clone());
        let after =
            t.db.rotate_session(&current.id, &current.refresh_hash, &next, now)
                .await;
        assert_eq!(after.unwrap(), Rotation::FamilyEnded, "{}", t.name);
        assert!(t.db.list_user_sessions(&u.id).await.unwrap().is_empty());
        t.cleanup().await;
    }
}

#[tokio::test]
async fn store_health_check_and_debug() {
    for t in databases("store_health_check_and_debug").await {
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
        t.cleanup().await;
    }
}

#[tokio::test]
async fn store_connect_urls() {
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
    if let Some(url) =
        crate::support::common::service_url("SENTRI_TEST_POSTGRES_URL", "store_connect_urls")
    {
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
    if let Some(url) =
        crate::support::common::service_url("SENTRI_TEST_MYSQL_URL", "store_connect_urls")
    {
        let db = Database::connect(&url).await.expect("mysql connect");
        assert!(db.health_check().await.healthy);
        let alt = url.replacen("mysql://", "mariadb://", 1);
        assert_eq!(
            Database::connect(&alt).await.expect("mariadb://").dialect(),
            Dialect::MySql
        );
    }
}
