//! Three example servers as separate processes over one PostgreSQL database (and Redis
//! when configured), started together on an empty key store: one key, one JWKS, each
//! other's tokens, and a client-mode app pointed at one of them.

use base64::Engine as _;
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection};

use crate::example::{http, spawn_example};
use crate::support::common::{service_url, unique};

const KEK: [u8; 32] = [5u8; 32];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_server_processes_share_one_key_set_over_one_database() {
    let Some(url) = service_url(
        "SENTRI_TEST_POSTGRES_URL",
        "scaleout::three_server_processes",
    ) else {
        return;
    };
    let schema = unique("sentri_p");
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&mut admin)
        .await
        .unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let db_url = format!("{url}{sep}options=-c%20search_path%3D{schema}");
    let mut envs = vec![
        ("SENTRI_ADDR", "127.0.0.1:0".to_owned()),
        ("DATABASE_URL", db_url),
        ("SENTRI_ALGORITHM", "ES256".to_owned()),
        (
            "SENTRI_KEK",
            base64::engine::general_purpose::STANDARD.encode(KEK),
        ),
        ("SENTRI_BCRYPT_COST", "4".to_owned()),
        ("SENTRI_COOKIES", "0".to_owned()),
    ];
    if let Ok(redis) = std::env::var("SENTRI_TEST_REDIS_URL") {
        envs.push(("REDIS_URL", redis));
    }
    // Started together: they race to create the first key on the empty store.
    let (a, b, c) = tokio::join!(
        spawn_example("server", &envs),
        spawn_example("server", &envs),
        spawn_example("server", &envs),
    );
    let servers = [a, b, c];
    let count: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM \"{schema}\".sentri_signing_keys"
    )))
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(count, 1, "exactly one key created");

    let mut jwks = Vec::new();
    for (_, addr) in &servers {
        let (s, _, body) = http(addr, "GET", "/auth/keys", &[], None).await;
        assert_eq!(s, 200, "{body}");
        jwks.push(body);
    }
    assert_eq!(
        jwks[0]["keys"].as_array().map(Vec::len),
        Some(1),
        "{}",
        jwks[0]
    );
    assert!(
        jwks.iter().all(|j| j == &jwks[0]),
        "identical JWKS: {jwks:?}"
    );

    let creds = json!({"identifier": "ada@example.com", "password": "correct horse"});
    let (s, _, body) = http(
        &servers[0].1,
        "POST",
        "/auth/register",
        &[],
        Some(creds.clone()),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let (s, _, body) = http(&servers[0].1, "POST", "/auth/login", &[], Some(creds)).await;
    assert_eq!(s, 200, "{body}");
    let token = body["data"]["accessToken"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {token}");
    for (_, addr) in &servers[1..] {
        let (s, _, body): (u16, String, Value) = http(
            addr,
            "GET",
            "/api/profile",
            &[("Authorization", &bearer)],
            None,
        )
        .await;
        assert_eq!(s, 200, "{body}");
    }
    // A client-mode app pointed at B accepts A's token.
    #[cfg(feature = "client")]
    {
        let client = sentri::create_auth(sentri::ClientConfig::new(format!(
            "http://{}/auth/keys",
            servers[1].1
        )))
        .unwrap();
        let claims = client.verify_access_token(&token).await.unwrap();
        assert_eq!(claims.identifier, "ada@example.com");
    }

    for (mut child, _) in servers {
        child.start_kill().ok();
        let _ = child.wait().await;
    }
    sqlx::raw_sql(AssertSqlSafe(format!("DROP SCHEMA \"{schema}\" CASCADE")))
        .execute(&mut admin)
        .await
        .unwrap();
}
