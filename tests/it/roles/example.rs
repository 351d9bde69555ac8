//! The example server's permission-guarded route (`GET /api/reports`) and the roles
//! routes, on the real binary.

use serde_json::json;

use crate::example::{http, spawn_example};

/// A fresh SQLite file for the example server and its environment (tokens in bodies,
/// cheap bcrypt, an admin `boss@example.com`).
pub fn server_env(prefix: &str) -> (std::path::PathBuf, Vec<(&'static str, String)>) {
    let db = std::env::temp_dir().join(format!("{prefix}_{}.db", uuid::Uuid::new_v4().simple()));
    let envs = vec![
        ("SENTRI_ADDR", "127.0.0.1:0".to_owned()),
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
    ];
    (db, envs)
}

#[tokio::test]
async fn example_server_guards_reports_by_permission() {
    let (db, envs) = server_env("sentri_roles");
    let (mut child, addr) = spawn_example("server", &envs).await;
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

/// Two example servers (separate processes) over one SQLite file and one Redis: a role
/// revoked through A makes the user's token stale on B, which had the session cached
/// for 60 s, through the Redis message alone.
#[tokio::test]
async fn a_second_process_learns_a_role_change_through_redis() {
    let Some(redis) = crate::support::common::redis_url("roles::second_process") else {
        return;
    };
    let (db, mut envs) = server_env("sentri_roles2");
    envs.push(("SENTRI_SESSION_CACHE_TTL", "60".into()));
    envs.push(("REDIS_URL", redis));
    // One after the other: both migrate the same file at start-up.
    let (mut a, addr_a) = spawn_example("server", &envs).await;
    let (mut b, addr_b) = spawn_example("server", &envs).await;
    let token =
        |b: &serde_json::Value| format!("Bearer {}", b["data"]["accessToken"].as_str().unwrap());
    let boss = json!({"identifier": "boss@example.com", "password": "correct horse boss"});
    let (s, _, body) = http(&addr_a, "POST", "/auth/login", &[], Some(boss)).await;
    assert_eq!(s, 200, "{body}");
    let boss = token(&body);
    let boss_id = body["data"]["user"]["id"].as_str().unwrap().to_owned();
    // A second admin, so the first may lose the role.
    let creds = json!({"identifier": "ada@example.com", "password": "correct horse"});
    let (s, _, body) = http(&addr_a, "POST", "/auth/register", &[], Some(creds.clone())).await;
    assert_eq!(s, 201, "{body}");
    let ada_id = body["data"]["user"]["id"].as_str().unwrap().to_owned();
    let path = format!("/auth/users/{ada_id}/roles");
    let (s, _, body) = http(
        &addr_a,
        "POST",
        &path,
        &[("Authorization", &boss)],
        Some(json!({"roles": ["admin"]})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let (_, _, body) = http(&addr_a, "POST", "/auth/login", &[], Some(creds)).await;
    let ada = token(&body);
    // B trusts the boss's session (cached for 60 s).
    let (s, _, body) = http(
        &addr_b,
        "GET",
        "/api/reports",
        &[("Authorization", &boss)],
        None,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let path = format!("/auth/users/{boss_id}/roles/admin");
    let (s, _, body) = http(&addr_a, "DELETE", &path, &[("Authorization", &ada)], None).await;
    assert_eq!(s, 200, "{body}");
    // Well inside B's 60 s cache: only the Redis message can make B refuse.
    let started = std::time::Instant::now();
    loop {
        let (s, _, body) = http(
            &addr_b,
            "GET",
            "/api/reports",
            &[("Authorization", &boss)],
            None,
        )
        .await;
        if s == 401 {
            assert_eq!(body["code"], "TOKEN_EXPIRED", "{body}");
            break;
        }
        assert_eq!(s, 200, "{body}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(45),
            "B never learned the change"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for child in [&mut a, &mut b] {
        child.start_kill().ok();
        let _ = child.wait().await;
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}
