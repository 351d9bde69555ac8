//! Starts `examples/server` as a process and drives it over real HTTP.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// The example binary that `cargo test` builds next to the test binary.
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|p| p.parent()).expect("target dir");
    dir.join("examples").join(name)
}

/// Minimal HTTP/1.1 over a fresh connection: (status, headers, JSON body).
pub async fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, String, Value) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let payload = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    let json = serde_json::from_str(&payload).unwrap_or(Value::Null);
    (status, head.to_owned(), json)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Spawns an example with `envs` and waits for its `listening on http://ADDR` line.
pub async fn spawn_example(name: &str, envs: &[(&str, String)]) -> (Child, String) {
    let bin = example_binary(name);
    assert!(
        bin.exists(),
        "{} is missing: run the suite with `cargo test --all-features`",
        bin.display()
    );
    let mut cmd = Command::new(bin);
    cmd.envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn example");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(addr) = line.strip_prefix("listening on http://") {
                return addr.trim().to_owned();
            }
        }
        panic!("example {name} exited before listening");
    })
    .await
    .expect("example did not start listening within 60 s");
    (child, addr)
}

#[tokio::test]
async fn example_server_end_to_end() {
    let db = std::env::temp_dir().join(format!(
        "sentri_example_{}.db",
        uuid::Uuid::new_v4().simple()
    ));
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
        ],
    )
    .await;

    let (s, _, b) = http(&addr, "GET", "/health", &[], None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "ok");

    let creds = json!({"identifier": "olga@example.com", "password": "password1"});
    let (s, _, b) = http(&addr, "POST", "/auth/register", &[], Some(creds.clone())).await;
    assert_eq!(s, 201, "{b}");
    let (s, _, b) = http(&addr, "POST", "/auth/login", &[], Some(creds)).await;
    assert_eq!(s, 200, "{b}");
    let access = b["data"]["accessToken"].as_str().unwrap().to_owned();
    let refresh = b["data"]["refreshToken"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {access}");

    let (s, _, b) = http(
        &addr,
        "GET",
        "/api/profile",
        &[("Authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["user"]["identifier"], "olga@example.com");

    // Idempotent order: a replay does not run the handler again.
    let key = [
        ("Authorization", bearer.as_str()),
        ("X-Idempotency-Key", "order-1"),
    ];
    let (s1, h1, o1) = http(&addr, "POST", "/api/orders", &key, Some(json!({"item": 1}))).await;
    let (s2, h2, o2) = http(&addr, "POST", "/api/orders", &key, Some(json!({"item": 1}))).await;
    assert_eq!((s1, s2), (201, 201), "{o1} {o2}");
    assert_eq!(o1["data"]["seq"], 1);
    assert_eq!(o1, o2);
    assert!(!h1.to_ascii_lowercase().contains("x-idempotent-replayed"));
    assert!(
        h2.to_ascii_lowercase()
            .contains("x-idempotent-replayed: true"),
        "{h2}"
    );

    let (s, _, b) = http(
        &addr,
        "POST",
        "/auth/refresh",
        &[],
        Some(json!({"refreshToken": refresh})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let refresh2 = b["data"]["refreshToken"].as_str().unwrap().to_owned();
    let (s, _, _) = http(
        &addr,
        "POST",
        "/auth/logout",
        &[],
        Some(json!({"refreshToken": refresh2})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _, b) = http(
        &addr,
        "GET",
        "/api/profile",
        &[("Authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(s, 401, "{b}");
    assert_eq!(b["code"], "TOKEN_INVALID");

    child.start_kill().ok();
    let _ = child.wait().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}

/// `SENTRI_METRICS=1`: the example serves sentri's metrics in the Prometheus text format.
#[cfg(feature = "metrics")]
#[tokio::test]
async fn example_server_serves_metrics_when_asked() {
    let db = std::env::temp_dir().join(format!(
        "sentri_example_metrics_{}.db",
        uuid::Uuid::new_v4().simple()
    ));
    let (mut child, addr) = spawn_example(
        "server",
        &[
            ("SENTRI_ADDR", "127.0.0.1:0".into()),
            (
                "DATABASE_URL",
                format!("sqlite://{}?mode=rwc", db.display()),
            ),
            ("SENTRI_BCRYPT_COST", "4".into()),
            ("SENTRI_METRICS", "1".into()),
        ],
    )
    .await;
    let creds = json!({"identifier": "metrics@example.com", "password": "password1"});
    let (s, _, b) = http(&addr, "POST", "/auth/register", &[], Some(creds.clone())).await;
    assert_eq!(s, 201, "{b}");
    let wrong = json!({"identifier": "metrics@example.com", "password": "password2"});
    let (s, _, _) = http(&addr, "POST", "/auth/login", &[], Some(wrong)).await;
    assert_eq!(s, 401);

    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for line in [
        "sentri_registrations_total 1",
        "sentri_logins_total{outcome=\"failed\"} 1",
        "sentri_password_hash_wait_seconds_count 2",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }

    child.start_kill().ok();
    let _ = child.wait().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}
