//! Sessions and families: CRUD, expiry past 2038, purge and retention, revocation,
//! cascades, and exactly one winner among concurrent rotations.

use std::collections::HashSet;

use sentri::ErrorCode;
use sentri::db::now_ms;
use sentri::session::{Rotation, SessionRecord};

use super::{YEAR_2100_MS, family, hash, new_session, open, user};
use crate::support::db::TestDb;

conformance!(
    database: families_and_sessions_crud,
    concurrent_rotation_one_winner
);

async fn families_and_sessions_crud(t: &TestDb) {
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
}

async fn concurrent_rotation_one_winner(t: &TestDb) {
    eprintln!("store rotation: running on {}", t.name);
    let u = user(&t.db, "gina@example.com").await;
    let now = now_ms();
    let exp = now + 60_000;
    let old = open(&t.db, &u.id, "fam-r", exp).await;

    // A wrong hash never rotates.
    let mut forged = old.clone();
    forged.refresh_hash = hash("wrong");
    let wrong =
        t.db.rotate_session(&forged, &new_session(&u.id, "fam-r", exp), now)
            .await;
    assert_eq!(wrong.expect("wrong hash"), Rotation::Superseded);

    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (db, old) = (t.db.clone(), old.clone());
            let next = new_session(&u.id, "fam-r", exp);
            tokio::spawn(async move { db.rotate_session(&old, &next, now).await })
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
    // Rotated in place: same row, the old token's hash no longer finds it.
    assert_eq!(winners[0].id, old.id);
    assert!(
        t.db.find_session_by_refresh_hash(&old.refresh_hash)
            .await
            .unwrap()
            .is_none()
    );
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
    let next = new_session(&u.id, "fam-r", exp);
    let after = t.db.rotate_session(current, &next, now).await;
    assert_eq!(after.unwrap(), Rotation::FamilyEnded, "{}", t.name);
    assert!(t.db.list_user_sessions(&u.id).await.unwrap().is_empty());
}
