//! The example server's permission-guarded route (`GET /api/reports`) and the roles
//! routes, on the real binary.

use serde_json::json;

use crate::example::{http, spawn_example};

#[tokio::test]
async fn example_server_guards_reports_by_permission() {
    let db =
        std::env::temp_dir().join(format!("sentri_roles_{}.db", uuid::Uuid::new_v4().simple()));
    let (mut child, addr) = spawn_example(
        "server",
        &[
            ("SENTRI_ADDR", "127.0.0.1:0".into()),
            (
                "DATABASE_URL",
                format!("sqlite://{}?mode=rwc", db.display()),
            ),
            (
                "SENTRI_SECRET",
                "example-secret-example-secret-example-secret".into(),
            ),
            ("SENTRI_COOKIES", "0".into()),
            ("SENTRI_BCRYPT_COST", "4".into()),
            ("SENTRI_ADMIN_IDENTIFIER", "boss@example.com".into()),
            ("SENTRI_ADMIN_PASSWORD", "correct horse boss".into()),
        ],
    )
    .await;
    let token =
        |b: &serde_json::Value| format!("Bearer {}", b["data"]["accessToken"].as_str().unwrap());
    let creds = json!({"identifier": "ada@example.com", "password": "correct horse"});
    let (s, _, b) = http(&addr, "POST", "/auth/register", &[], Some(creds.clone())).await;
    assert_eq!(s, 201, "{b}");
    let (_, _, b) = http(&addr, "POST", "/auth/login", &[], Some(creds.clone())).await;
    let ada = token(&b);
    let (s, _, b) = http(
        &addr,
        "GET",
        "/api/reports",
        &[("Authorization", &ada)],
        None,
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (403, Some("FORBIDDEN")), "{b}");

    let boss = json!({"identifier": "boss@example.com", "password": "correct horse boss"});
    let (s, _, b) = http(&addr, "POST", "/auth/login", &[], Some(boss)).await;
    assert_eq!(s, 200, "{b}");
    let boss = token(&b);
    let (s, _, b) = http(
        &addr,
        "GET",
        "/api/reports",
        &[("Authorization", &boss)],
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["permissions"], json!(["reports:read"]));

    // Granted to `user` through the admin routes: ada's next request passes.
    let grant = json!({"permissions": ["reports:read"]});
    let (s, _, b) = http(
        &addr,
        "PATCH",
        "/auth/roles/user",
        &[("Authorization", &boss)],
        Some(grant),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, _, b) = http(
        &addr,
        "GET",
        "/api/reports",
        &[("Authorization", &ada)],
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");

    child.start_kill().ok();
    let _ = child.wait().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}
