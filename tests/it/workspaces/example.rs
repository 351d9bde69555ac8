//! The example server's workspace-protected route (`GET /api/workspace`), on the real
//! binary: create, switch, and the header checked against the token.

use serde_json::json;

use crate::example::{http, spawn_example};
use crate::roles::example::server_env;

#[tokio::test]
async fn example_server_guards_its_workspace_route() {
    let (db, envs) = server_env("sentri_ws");
    let (mut child, addr) = spawn_example("server", &envs).await;
    let creds = json!({"identifier": "wes@example.com", "password": "correct horse"});
    let (s, _, b) = http(&addr, "POST", "/auth/register", &[], Some(creds.clone())).await;
    assert_eq!(s, 201, "{b}");
    let (_, _, b) = http(&addr, "POST", "/auth/login", &[], Some(creds)).await;
    let personal = format!("Bearer {}", b["data"]["accessToken"].as_str().unwrap());
    let body = json!({"name": "Example Co"});
    let (s, _, b) = http(
        &addr,
        "POST",
        "/auth/workspaces",
        &[("Authorization", &personal)],
        Some(body),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let ws = b["data"]["workspace"]["id"].as_str().unwrap().to_owned();
    let headers = [
        ("Authorization", personal.as_str()),
        ("X-Workspace-Id", ws.as_str()),
    ];
    let (s, _, b) = http(&addr, "GET", "/api/workspace", &headers, None).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (403, Some("WORKSPACE_MISMATCH")),
        "{b}"
    );
    let path = format!("/auth/workspaces/{ws}/switch");
    let (s, _, b) = http(&addr, "POST", &path, &[("Authorization", &personal)], None).await;
    assert_eq!(s, 200, "{b}");
    let switched = format!("Bearer {}", b["data"]["accessToken"].as_str().unwrap());
    let headers = [
        ("Authorization", switched.as_str()),
        ("X-Workspace-Id", ws.as_str()),
    ];
    let (s, _, b) = http(&addr, "GET", "/api/workspace", &headers, None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["workspace"], json!(ws));
    assert_eq!(b["data"]["roles"], json!(["owner"]));
    let (s, _, b) = http(
        &addr,
        "GET",
        "/api/workspace",
        &[("Authorization", &switched)],
        None,
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (403, Some("WORKSPACE_HEADER_REQUIRED")),
        "{b}"
    );
    child.start_kill().ok();
    let _ = child.wait().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}
