//! The conformance suite of the storage layer, written once and run on every dialect
//! (SQLite always; PostgreSQL and MySQL/MariaDB when configured): users, sessions and
//! families, migrations, and the database handle itself.
//!
//! A suite function takes one `TestDb`; `conformance!` turns a list of them into one
//! test per dialect, `store_conformance::<area>::<dialect>::<name>`, so a dialect that
//! breaks is named by the failing test and `cargo test store_conformance::users::mysql`
//! runs one area on one dialect.

use sentri::db::{Database, now_ms};
use sentri::identity::{NewUser, UserRecord};
use sentri::session::{NewFamily, NewSession, SessionRecord};

/// `conformance!(database: a, b)` runs the suite functions `a` and `b` (in the invoking
/// module, each `async fn(&TestDb)`) on a fresh migrated database of every dialect;
/// `conformance!(fresh_database: …)` on one not yet migrated. The database is removed
/// afterwards (unless `SENTRI_TEST_KEEP_DB=1`).
macro_rules! conformance {
    ($prepare:ident: $($name:ident),+ $(,)?) => {
        conformance!(@dialect sqlite, $prepare: $($name),+);
        conformance!(@dialect postgres, $prepare: $($name),+);
        conformance!(@dialect mysql, $prepare: $($name),+);
    };
    (@dialect $dialect:ident, $prepare:ident: $($name:ident),+) => {
        mod $dialect {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let test = concat!(module_path!(), "::", stringify!($name));
                    let Some(t) = crate::support::db::$prepare(stringify!($dialect), test).await
                    else {
                        return;
                    };
                    super::$name(&t).await;
                    t.cleanup().await;
                }
            )+
        }
    };
}

mod database;
mod migrations;
mod sessions;
mod users;

/// 2100-01-01T00:00:00Z in milliseconds: well past 2038.
const YEAR_2100_MS: i64 = 4_102_444_800_000;

/// Owned role names.
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
