//! Identifier normalisation (issue #23) on every configured database: lookalike
//! spellings are one account, and stored identifiers migrate to the normal form
//! without ever merging two accounts.

use axum::http::StatusCode;
use sentri::IdentifierCase;
use sentri::db::Database;
use sentri::identity::IdentifierCollision;
use sentri::identity::NewUser;

use crate::support::db::databases;
use crate::support::http::{app, login, register};
use crate::support::services::config;

/// `(decomposed, precomposed)` spellings that NFKC + lower-casing used to keep apart.
const LOOKALIKES: [(&str, &str); 6] = [
    ("W\u{30A}", "\u{1E98}"),
    ("J\u{30C}", "\u{1F0}"),
    ("H\u{331}", "\u{1E96}"),
    ("T\u{308}", "\u{1E97}"),
    ("Y\u{30A}", "\u{1E99}"),
    ("\u{130}\u{301}", "i\u{307}\u{301}"),
];

#[tokio::test]
async fn lookalike_spellings_are_one_account_over_http() {
    for t in databases("identifiers::lookalikes").await {
        let auth = sentri::create_auth(config(t.db.clone())).unwrap();
        let app = app(&auth);
        let n = t.name;
        for (i, (decomposed, precomposed)) in LOOKALIKES.iter().enumerate() {
            let first = format!("{decomposed}-{i}@example.com");
            let r = register(&app, &first, "password1").await;
            assert_eq!(r.status, StatusCode::CREATED, "{n} {first:?}: {:?}", r.body);
            let returned = r.body["data"]["user"]["identifier"]
                .as_str()
                .unwrap()
                .to_owned();
            let r = login(&app, &returned, "password1").await;
            assert_eq!(r.status, StatusCode::OK, "{n} {first:?}: {:?}", r.body);
            let r = login(&app, &first, "password1").await;
            assert_eq!(r.status, StatusCode::OK, "{n} {first:?} as typed");
            let second = format!("{precomposed}-{i}@example.com");
            let r = register(&app, &second, "password2").await;
            assert_eq!(
                (r.status, r.body["code"].as_str()),
                (StatusCode::CONFLICT, Some("USER_ALREADY_EXISTS")),
                "{n} {second:?}"
            );
            let r = login(&app, &second, "password1").await;
            assert_eq!(
                r.status,
                StatusCode::OK,
                "{n} {second:?} logs into the one account"
            );
        }
        assert_eq!(
            t.db.count_users().await.unwrap(),
            LOOKALIKES.len() as u64,
            "{n}"
        );
        t.cleanup().await;
    }
}

async fn insert(db: &Database, identifier: &str) -> String {
    let roles = ["user".to_owned()];
    db.create_user(&NewUser {
        identifier,
        password_hash: "$2b$04$not-a-real-hash",
        roles: &roles,
    })
    .await
    .unwrap()
    .id
}

async fn stored(db: &Database, id: &str) -> String {
    db.find_user_by_id(id).await.unwrap().unwrap().identifier
}

#[tokio::test]
async fn migration_rewrites_stored_identifiers_to_the_normal_form() {
    for t in databases("identifiers::migrate").await {
        let (db, n) = (&t.db, t.name);
        // As the old normalisation (NFKC, then to_lowercase) stored them.
        let w = insert(db, "w\u{30A}@example.com").await;
        let strasse = insert(db, "straße").await;
        let dotted = insert(db, "i\u{307}\u{301}x").await;
        let plain = insert(db, "bob@example.com").await;
        let invisible = insert(db, "eve\u{200B}").await;

        let report = db
            .renormalize_identifiers(IdentifierCase::Insensitive)
            .await
            .unwrap();
        assert_eq!(report.scanned, 5, "{n}");
        let mut updated = report.updated.clone();
        updated.sort();
        let mut expected = vec![w.clone(), strasse.clone()];
        expected.sort();
        assert_eq!(updated, expected, "{n}");
        assert_eq!(report.unnormalizable, vec![invisible.clone()], "{n}");
        assert_eq!(stored(db, &w).await, "\u{1E98}@example.com", "{n}");
        assert_eq!(stored(db, &strasse).await, "strasse", "{n}");
        assert_eq!(stored(db, &dotted).await, "i\u{307}\u{301}x", "{n}");
        assert_eq!(stored(db, &plain).await, "bob@example.com", "{n}");
        assert_eq!(stored(db, &invisible).await, "eve\u{200B}", "{n}");

        let again = db
            .renormalize_identifiers(IdentifierCase::Insensitive)
            .await
            .unwrap();
        assert!(
            again.updated.is_empty(),
            "{n}: a second run changes nothing"
        );

        // The migrated account is reachable with either spelling.
        let auth = sentri::create_auth(config(db.clone())).unwrap();
        let found = auth.normalize_identifier("W\u{30A}@EXAMPLE.COM").unwrap();
        let user = db.find_user_by_identifier(&found).await.unwrap().unwrap();
        assert_eq!(user.id, w, "{n}");
        t.cleanup().await;
    }
}

#[tokio::test]
async fn migration_that_would_merge_accounts_refuses_and_changes_nothing() {
    for t in databases("identifiers::collision").await {
        let (db, n) = (&t.db, t.name);
        let decomposed = insert(db, "w\u{30A}x").await;
        let precomposed = insert(db, "\u{1E98}x").await;
        let upper = insert(db, "Carol").await;
        let lower = insert(db, "CAROL").await;
        let lone = insert(db, "Dave").await;

        let err = db
            .renormalize_identifiers(IdentifierCase::Insensitive)
            .await
            .unwrap_err();
        assert_eq!(err.code().as_str(), "CONFIGURATION_ERROR", "{n}");
        let collision = IdentifierCollision::of(&err).expect("the collision is attached");
        let pair = |a: &str, b: &str| {
            let mut v = vec![a.to_owned(), b.to_owned()];
            v.sort();
            v
        };
        let mut groups = collision.groups.clone();
        groups.sort();
        let mut expected = vec![pair(&decomposed, &precomposed), pair(&upper, &lower)];
        expected.sort();
        assert_eq!(groups, expected, "{n}");
        for id in [&decomposed, &precomposed, &upper, &lower] {
            assert!(err.message().contains(id.as_str()), "{n}: ids listed");
        }
        assert!(
            !err.message().to_lowercase().contains("carol"),
            "{n}: no identifiers"
        );
        assert!(
            !err.message().contains(&lone),
            "{n}: only the colliding ids"
        );

        assert_eq!(stored(db, &decomposed).await, "w\u{30A}x", "{n}");
        assert_eq!(stored(db, &precomposed).await, "\u{1E98}x", "{n}");
        assert_eq!(stored(db, &upper).await, "Carol", "{n}");
        assert_eq!(stored(db, &lower).await, "CAROL", "{n}");
        assert_eq!(stored(db, &lone).await, "Dave", "{n}: nothing changed");
        t.cleanup().await;
    }
}

#[tokio::test]
async fn case_sensitive_migration_keeps_case() {
    for t in databases("identifiers::sensitive").await {
        let (db, n) = (&t.db, t.name);
        let upper = insert(db, "Carol").await;
        let lower = insert(db, "carol").await;
        let wide = insert(db, "ＢＯＢ").await;
        let report = db
            .renormalize_identifiers(IdentifierCase::Sensitive)
            .await
            .unwrap();
        assert_eq!(report.updated, vec![wide.clone()], "{n}");
        assert_eq!(stored(db, &upper).await, "Carol", "{n}");
        assert_eq!(stored(db, &lower).await, "carol", "{n}");
        assert_eq!(stored(db, &wide).await, "BOB", "{n}");
        t.cleanup().await;
    }
}
