//! Example servers as separate processes over one PostgreSQL schema (and Redis when
//! configured): started together on an empty key store they share one key, one JWKS and
//! each other's tokens; keys rotate through several generations while every process and
//! a client-mode app keep verifying; an emergency revocation reaches every process at its
//! next reload.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection};
use tokio::process::Child;

use crate::example::{http, spawn_example};
use crate::support::common::{service_url, unique};

const KEK: [u8; 32] = [5u8; 32];
/// Fails a test only when nothing ever happens (never a timing assertion).
const GENEROUS: Duration = Duration::from_secs(120);

/// `n` example servers over one fresh PostgreSQL schema, started together.
struct Servers {
    admin: sqlx::PgConnection,
    schema: String,
    db_url: String,
    procs: Vec<(Child, String)>,
}

impl Servers {
    /// Starts `n` servers (ES256, key store sealed under [`KEK`], `extra` env on top);
    /// `None` when PostgreSQL is not configured (announced, or a failure under
    /// `SENTRI_TEST_REQUIRE_SERVICES=1`).
    async fn spawn(test: &str, n: usize, extra: &[(&'static str, String)]) -> Option<Self> {
        let url = service_url("SENTRI_TEST_POSTGRES_URL", test)?;
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
            ("DATABASE_URL", db_url.clone()),
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
        envs.extend(extra.iter().cloned());
        // Started together: they race to create the first key on the empty store.
        let starts: Vec<_> = (0..n)
            .map(|_| {
                let envs = envs.clone();
                tokio::spawn(async move { spawn_example("server", &envs).await })
            })
            .collect();
        let mut procs = Vec::with_capacity(n);
        for start in starts {
            procs.push(start.await.unwrap());
        }
        Some(Self {
            admin,
            schema,
            db_url,
            procs,
        })
    }

    fn addrs(&self) -> Vec<String> {
        self.procs.iter().map(|(_, addr)| addr.clone()).collect()
    }

    async fn key_rows(&mut self) -> i64 {
        sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM \"{}\".sentri_signing_keys",
            self.schema
        )))
        .fetch_one(&mut self.admin)
        .await
        .unwrap()
    }

    async fn stop(mut self) {
        for (child, _) in &mut self.procs {
            child.start_kill().ok();
            let _ = child.wait().await;
        }
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP SCHEMA \"{}\" CASCADE",
            self.schema
        )))
        .execute(&mut self.admin)
        .await
        .unwrap();
    }
}

/// The kids a server's `/auth/keys` publishes.
async fn published(addr: &str) -> BTreeSet<String> {
    let (s, _, body) = http(addr, "GET", "/auth/keys", &[], None).await;
    assert_eq!(s, 200, "{addr}: {body}");
    body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// Registers `identifier` on `addr` (status 201).
async fn register(addr: &str, identifier: &str) {
    let creds = json!({"identifier": identifier, "password": "correct horse"});
    let (s, _, body) = http(addr, "POST", "/auth/register", &[], Some(creds)).await;
    assert_eq!(s, 201, "{body}");
}

/// An access token for `identifier` from `addr`.
async fn login(addr: &str, identifier: &str) -> String {
    let creds = json!({"identifier": identifier, "password": "correct horse"});
    let (s, _, body) = http(addr, "POST", "/auth/login", &[], Some(creds)).await;
    assert_eq!(s, 200, "{body}");
    body["data"]["accessToken"].as_str().unwrap().to_owned()
}

/// `GET /api/profile` with `token` on `addr`: (status, body).
async fn profile(addr: &str, token: &str) -> (u16, Value) {
    let bearer = format!("Bearer {token}");
    let (s, _, body) = http(
        addr,
        "GET",
        "/api/profile",
        &[("Authorization", &bearer)],
        None,
    )
    .await;
    (s, body)
}

fn kid_of(token: &str) -> String {
    sentri::token::peek_kid(token).expect("a kid in the token header")
}

/// The token's `exp` in unix epoch milliseconds.
fn exp_ms(token: &str) -> i64 {
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["exp"].as_i64().unwrap() * 1000
}

fn now_ms() -> i64 {
    sentri::core::clock::system_now_ms()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_server_processes_share_one_key_set_over_one_database() {
    let Some(mut servers) = Servers::spawn("scaleout::three_server_processes", 3, &[]).await else {
        return;
    };
    assert_eq!(servers.key_rows().await, 1, "exactly one key created");
    let addrs = servers.addrs();

    let mut jwks = Vec::new();
    for addr in &addrs {
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

    register(&addrs[0], "ada@example.com").await;
    let token = login(&addrs[0], "ada@example.com").await;
    for addr in &addrs[1..] {
        let (s, body) = profile(addr, &token).await;
        assert_eq!(s, 200, "{body}");
    }
    // A client-mode app pointed at B accepts A's token.
    #[cfg(feature = "client")]
    {
        let client = sentri::create_auth(sentri::ClientConfig::new(format!(
            "http://{}/auth/keys",
            addrs[1]
        )))
        .unwrap();
        let claims = client.verify_access_token(&token).await.unwrap();
        assert_eq!(claims.identifier, "ada@example.com");
    }
    servers.stop().await;
}

/// A valid token one verifier refused.
#[derive(Debug)]
#[allow(dead_code)] // read through Debug in the failure message
struct Rejection {
    verifier: String,
    kid: String,
    status: u16,
    body: String,
}

/// Rotation across processes. Three servers rotate every 6 s (published 4 s ahead,
/// reloading every second; access tokens live 3 s, refresh tokens 5 s) while the test
/// keeps logging in on each in turn and verifies every unexpired token on every server
/// and in a client-mode app reading server B's `/auth/keys`. Until three keys have
/// signed and the first one has retired from every JWKS:
/// * each new key is in every server's JWKS at least one round before any token signed
///   with it is seen;
/// * no valid token is refused anywhere (a refusal counts only when the response came
///   back before the token's `exp`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_across_processes_without_refusing_a_valid_token() {
    let schedule = [
        ("SENTRI_KEY_ROTATION", "6s".to_owned()),
        ("SENTRI_KEY_PUBLISH_AHEAD", "4s".to_owned()),
        ("SENTRI_KEY_REFRESH", "1s".to_owned()),
        ("SENTRI_ACCESS_TTL", "3s".to_owned()),
        ("SENTRI_REFRESH_TTL", "5s".to_owned()),
    ];
    let Some(servers) = Servers::spawn("scaleout::rotation_across_processes", 3, &schedule).await
    else {
        return;
    };
    let addrs = servers.addrs();
    // Clients may cache the keys half of publish-ahead − refresh interval: 1 s here.
    let (_, head, _) = http(&addrs[1], "GET", "/auth/keys", &[], None).await;
    assert!(
        head.lines()
            .any(|l| l.eq_ignore_ascii_case("cache-control: public, max-age=1")),
        "{head}"
    );
    register(&addrs[0], "ada@example.com").await;
    #[cfg(feature = "client")]
    let client = sentri::create_auth(
        sentri::ClientConfig::new(format!("http://{}/auth/keys", addrs[1]))
            .refetch_cooldown(Duration::from_secs(1)),
    )
    .unwrap();

    let first_kid = kid_of(&login(&addrs[0], "ada@example.com").await);
    // kid → the round it was first seen in each server's JWKS.
    let mut published_in: Vec<HashMap<String, u64>> = vec![HashMap::new(); addrs.len()];
    // kid → the first round a token signed with it was seen.
    let mut signed_in: HashMap<String, u64> = HashMap::new();
    let mut live: Vec<String> = Vec::new();
    let mut rejections: Vec<Rejection> = Vec::new();
    let mut verified = 0u64;
    let mut round = 0u64;

    let outcome = tokio::time::timeout(GENEROUS, async {
        loop {
            round += 1;
            let mut first_still_published = false;
            for (i, addr) in addrs.iter().enumerate() {
                let kids = published(addr).await;
                first_still_published |= kids.contains(&first_kid);
                for kid in kids {
                    published_in[i].entry(kid).or_insert(round);
                }
            }
            let token = login(&addrs[round as usize % addrs.len()], "ada@example.com").await;
            signed_in.entry(kid_of(&token)).or_insert(round);
            live.push(token);

            live.retain(|t| exp_ms(t) > now_ms());
            for token in &live {
                let mut outcomes = Vec::new();
                for addr in &addrs {
                    let (s, body) = profile(addr, token).await;
                    outcomes.push((format!("server {addr}"), s, body.to_string()));
                }
                #[cfg(feature = "client")]
                match client.verify_access_token(token).await {
                    Ok(_) => outcomes.push(("client app".to_owned(), 200, String::new())),
                    Err(e) => outcomes.push((
                        "client app".to_owned(),
                        e.status().as_u16(),
                        format!("{}: {e}", e.code().as_str()),
                    )),
                }
                // Refused before its `exp`: a valid token was rejected.
                let answered = now_ms();
                for (verifier, status, body) in outcomes {
                    verified += 1;
                    if status != 200 && answered < exp_ms(token) {
                        rejections.push(Rejection {
                            verifier,
                            kid: kid_of(token),
                            status,
                            body,
                        });
                    }
                }
            }
            if signed_in.len() >= 3 && !first_still_published {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        outcome.is_ok(),
        "keys never rotated through three generations: signed {signed_in:?}"
    );

    eprintln!(
        "rotation across processes: {round} rounds, {verified} verifications, kids first signed in rounds {signed_in:?}"
    );
    assert_eq!(rejections.len(), 0, "valid tokens refused: {rejections:#?}");
    assert!(verified > 0);
    assert!(
        signed_in.len() >= 3,
        "at least two rotations: {signed_in:?}"
    );
    for (kid, signed) in &signed_in {
        if kid == &first_kid {
            continue;
        }
        for (i, seen) in published_in.iter().enumerate() {
            let published = seen.get(kid).copied();
            assert!(
                published.is_some_and(|p| p < *signed),
                "key {kid} first signed in round {signed} but published by server {i} in {published:?}"
            );
        }
    }
    servers.stop().await;
}

/// Emergency revocation across processes: the test process revokes the key through the
/// library API on the same database; each server keeps accepting it only until its next
/// reload (`SENTRI_KEY_REFRESH`, 1 s here), then refuses every token of that kid (401
/// TOKEN_INVALID), publishes and signs with the fresh key, and accepts the others'
/// tokens of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_revocation_reaches_every_process_at_its_next_reload() {
    let Some(servers) = Servers::spawn(
        "scaleout::revocation_across_processes",
        3,
        &[("SENTRI_KEY_REFRESH", "1s".to_owned())],
    )
    .await
    else {
        return;
    };
    let addrs = servers.addrs();
    register(&addrs[0], "ada@example.com").await;
    let mut tokens = Vec::new();
    for addr in &addrs {
        tokens.push(login(addr, "ada@example.com").await);
    }
    let revoked = kid_of(&tokens[0]);
    assert!(tokens.iter().all(|t| kid_of(t) == revoked));
    for addr in &addrs {
        for token in &tokens {
            assert_eq!(profile(addr, token).await.0, 200);
        }
    }

    // The revoking instance: this test process, on the same schema and KEK.
    let db = sentri::db::Database::connect(&servers.db_url)
        .await
        .unwrap();
    let placeholder = sentri::token::SigningKey::generate(sentri::token::Algorithm::ES256)
        .await
        .unwrap();
    let store = sentri::keystore::KeyStoreConfig::new(
        sentri::core::seal::Sealer::new("kek-1", KEK).unwrap(),
    );
    let admin = sentri::create_auth(
        sentri::ServerConfig::new(db, placeholder, ["user", "admin"]).signing_key_store(store),
    )
    .unwrap();
    admin.load_signing_keys().await.unwrap();
    assert!(admin.revoke_signing_key(&revoked).await.unwrap());
    let revoked_at = std::time::Instant::now();
    // At once here.
    let err = admin.tokens().verify_access(&tokens[0]).unwrap_err();
    assert_eq!(err.code().as_str(), "TOKEN_INVALID");
    let stored = admin.signing_keys().await.unwrap();
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(stored[0].kid == revoked && stored[0].revoked_at.is_some());
    let fresh = stored[1].kid.clone();
    assert!(stored[1].revoked_at.is_none());

    // Every server: refuses the revoked key after its next reload. Only tokens of the
    // revoked kid are presented meanwhile, so the periodic reload, not an unknown-kid
    // one, is what brings the revocation.
    for addr in &addrs {
        let refused = tokio::time::timeout(GENEROUS, async {
            loop {
                let (s, body) = profile(addr, &tokens[0]).await;
                if s != 200 {
                    return (s, body);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{addr} never refused the revoked key"));
        assert_eq!(refused.0, 401, "{}", refused.1);
        assert_eq!(refused.1["code"], "TOKEN_INVALID", "{}", refused.1);
        eprintln!(
            "{addr} refused the revoked key {:?} after the revocation",
            revoked_at.elapsed()
        );
    }
    for addr in &addrs {
        for token in &tokens {
            let (s, body) = profile(addr, token).await;
            assert_eq!(
                (s, body["code"].as_str()),
                (401, Some("TOKEN_INVALID")),
                "{addr}"
            );
        }
        let kids = published(addr).await;
        assert_eq!(kids, BTreeSet::from([fresh.clone()]), "{addr}");
    }
    // Every server signs with the fresh key, and the others accept those tokens.
    for addr in &addrs {
        let token = login(addr, "ada@example.com").await;
        assert_eq!(kid_of(&token), fresh, "{addr} signs with the fresh key");
        for other in &addrs {
            let (s, body) = profile(other, &token).await;
            assert_eq!(s, 200, "{other}: {body}");
        }
    }
    servers.stop().await;
}
