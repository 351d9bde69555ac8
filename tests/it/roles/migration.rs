//! The landed JSON `roles` column moves into `sentri_user_roles` intact.

use crate::support::db::fresh_databases;

/// The landed `sentri_users` (identity 1 + identity-email 1) of each dialect.
fn landed_users(dialect: &str) -> String {
    let tail = if dialect == "mysql" {
        " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin"
    } else {
        ""
    };
    format!(
        "CREATE TABLE sentri_users (id VARCHAR(36) NOT NULL PRIMARY KEY, \
         identifier VARCHAR(320) NOT NULL UNIQUE, password_hash VARCHAR(255) NOT NULL, \
         roles TEXT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, \
         email VARCHAR(320) NULL, email_verified_at BIGINT NULL){tail}"
    )
}

fn landed_versions(dialect: &str) -> String {
    let tail = if dialect == "mysql" {
        " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin"
    } else {
        ""
    };
    format!(
        "CREATE TABLE sentri_schema_versions (component VARCHAR(64) NOT NULL, \
         version BIGINT NOT NULL, applied_at BIGINT NOT NULL, PRIMARY KEY (component, version)){tail}"
    )
}

/// (id, identifier, stored JSON, roles expected after the migration)
const USERS: &[(&str, &str, &str, &[&str])] = &[
    (
        "0190c5a0-0000-7000-8000-000000000001",
        "ada",
        r#"["user"]"#,
        &["user"],
    ),
    (
        "0190c5a0-0000-7000-8000-000000000002",
        "bob",
        r#"["admin","user"]"#,
        &["admin", "user"],
    ),
    (
        "0190c5a0-0000-7000-8000-000000000003",
        "cy",
        r#"["user","editor","user"]"#,
        &["user", "editor"],
    ),
    ("0190c5a0-0000-7000-8000-000000000004", "dee", "[]", &[]),
    (
        "0190c5a0-0000-7000-8000-000000000005",
        "eve",
        r#"["Admin","admin","retired-role","ünï"]"#,
        &["Admin", "admin", "retired-role", "ünï"],
    ),
    (
        "0190c5a0-0000-7000-8000-000000000006",
        "fox",
        r#"["a\"b","c,d"]"#,
        &["a\"b", "c,d"],
    ),
];

#[tokio::test]
async fn landed_json_roles_migrate_intact() {
    for t in fresh_databases("roles::json_migration").await {
        let n = t.name;
        t.raw(&landed_users(n)).await;
        t.raw(&landed_versions(n)).await;
        t.raw(
            "INSERT INTO sentri_schema_versions (component, version, applied_at) VALUES \
             ('identity', 1, 1), ('identity-email', 1, 1), ('identity-form', 1, 1)",
        )
        .await;
        for (id, identifier, json, _) in USERS {
            let json = json.replace('\'', "''");
            let json = if n == "mysql" {
                json.replace('\\', "\\\\")
            } else {
                json
            };
            t.raw(&format!(
                "INSERT INTO sentri_users (id, identifier, password_hash, roles, created_at, updated_at) \
                 VALUES ('{id}', '{identifier}', '$2b$04$landed', '{json}', 1, 1)"
            ))
            .await;
        }
        sentri::server::migrate_core(&t.db)
            .await
            .unwrap_or_else(|e| panic!("{n}: {e:?}"));
        sentri::server::migrate_core(&t.db)
            .await
            .expect("idempotent");
        for (id, identifier, _, want) in USERS {
            let user = t.db.find_user_by_id(id).await.unwrap().expect("kept");
            assert_eq!(user.identifier, *identifier, "{n}");
            assert_eq!(user.roles, *want, "{n}: {identifier}");
            assert_eq!(user.authz_version, 0, "{n}: tokens of before stay valid");
        }
        let rows = t.scalar("SELECT COUNT(*) FROM sentri_user_roles").await;
        let want: usize = USERS.iter().map(|u| u.3.len()).sum();
        assert_eq!(rows as usize, want, "{n}: one row per distinct role");
        assert_eq!(
            t.db.count_role_holders("retired-role").await.unwrap(),
            1,
            "{n}"
        );
        t.cleanup().await;
    }
}
