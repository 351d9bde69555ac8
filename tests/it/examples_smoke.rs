//! Starts `examples/nest` as a process: sentri nested into an existing axum app.

use serde_json::json;

use crate::example::{http, spawn_example};

#[tokio::test]
async fn nest_example_register_login_protected_route() {
    let db = std::env::temp_dir().join(format!("sentri_nest_{}.db", uuid::Uuid::new_v4().simple()));
    let (mut child, addr) = spawn_example(
        "nest",
        &[
            ("PORT", "0".into()),
            ("DATABASE_URL", format!("sqlite://{}", db.display())),
            (
                "JWT_SECRET",
                "nest-secret-nest-secret-nest-secret-nest".into(),
            ),
        ],
    )
    .await;

    let creds = json!({"identifier": "ada@example.com", "password": "correct horse"});
    let (s, _, b) = http(&addr, "POST", "/auth/register", &[], Some(creds.clone())).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["data"]["user"]["roles"], json!(["user"]));
    let (s, _, b) = http(&addr, "POST", "/auth/login", &[], Some(creds)).await;
    assert_eq!(s, 200, "{b}");
    let bearer = format!("Bearer {}", b["data"]["accessToken"].as_str().unwrap());
    let auth = [("Authorization", bearer.as_str())];

    let note = json!({"text": "buy milk"});
    let (s, _, b) = http(&addr, "POST", "/notes", &auth, Some(note)).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b, json!({"count": 1}));
    let (s, _, b) = http(&addr, "GET", "/notes", &auth, None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b, json!({"user": "ada@example.com", "notes": ["buy milk"]}));

    let (s, _, b) = http(&addr, "GET", "/notes", &[], None).await;
    assert_eq!(s, 401, "{b}");
    assert_eq!(b["code"], "UNAUTHORIZED");

    child.start_kill().ok();
    let _ = child.wait().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}
