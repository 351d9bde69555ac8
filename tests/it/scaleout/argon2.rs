//! Argon2id beside bcrypt: verification, re-hash on login from bcrypt and from weaker
//! parameters, and concurrent logins during the re-hash, on the three databases.

use axum::http::StatusCode;
use sentri::ServerConfig;
use sentri::password::Argon2Params;

use crate::support::db::databases;
use crate::support::http::{app, login, register};
use crate::support::services::config;

/// Small parameters so the tests run fast (the default is OWASP's m=19 MiB, t=2).
fn cheap(m: u32, t: u32) -> Argon2Params {
    Argon2Params::new(m, t, 1)
}

fn argon(db: sentri::db::Database, params: Argon2Params) -> ServerConfig {
    config(db).argon2id(params)
}

async fn stored_hash(db: &sentri::db::Database, id: &str) -> String {
    db.find_user_by_identifier(id)
        .await
        .unwrap()
        .expect("user")
        .password_hash
}

#[tokio::test]
async fn bcrypt_hashes_verify_and_are_rehashed_with_argon2id_on_login() {
    for t in databases("scaleout::argon2_upgrade").await {
        let bcrypt_auth = sentri::create_auth(config(t.db.clone())).unwrap();
        let a = app(&bcrypt_auth);
        assert_eq!(
            register(&a, "ada", "password1").await.status,
            StatusCode::CREATED
        );
        assert!(
            stored_hash(&t.db, "ada").await.starts_with("$2b$04$"),
            "{}",
            t.name
        );

        let auth = sentri::create_auth(argon(t.db.clone(), cheap(64, 1))).unwrap();
        let b = app(&auth);
        assert_eq!(
            login(&b, "ada", "wrongpass1").await.status,
            StatusCode::UNAUTHORIZED
        );
        assert!(
            stored_hash(&t.db, "ada").await.starts_with("$2b$"),
            "{}: no upgrade on a failed login",
            t.name
        );
        assert_eq!(
            login(&b, "ada", "password1").await.status,
            StatusCode::OK,
            "{}",
            t.name
        );
        let upgraded = stored_hash(&t.db, "ada").await;
        assert!(
            upgraded.starts_with("$argon2id$v=19$m=64,t=1,p=1$"),
            "{}: {upgraded}",
            t.name
        );
        // Verified with Argon2id from now on, and left alone (it is current).
        assert_eq!(login(&b, "ada", "password1").await.status, StatusCode::OK);
        assert_eq!(stored_hash(&t.db, "ada").await, upgraded, "{}", t.name);
        assert_eq!(
            login(&b, "ada", "password2").await.status,
            StatusCode::UNAUTHORIZED
        );
        // New registrations get Argon2id at once.
        assert_eq!(
            register(&b, "bob", "password1").await.status,
            StatusCode::CREATED
        );
        assert!(stored_hash(&t.db, "bob").await.starts_with("$argon2id$"));
        // Going back to bcrypt re-hashes with bcrypt (the configured setting wins).
        assert_eq!(login(&a, "bob", "password1").await.status, StatusCode::OK);
        assert!(
            stored_hash(&t.db, "bob").await.starts_with("$2b$04$"),
            "{}",
            t.name
        );
        t.cleanup().await;
    }
}

#[tokio::test]
async fn weaker_argon2_parameters_are_upgraded_and_stronger_ones_kept() {
    for t in databases("scaleout::argon2_params").await {
        let weak = sentri::create_auth(argon(t.db.clone(), cheap(64, 1))).unwrap();
        assert_eq!(
            register(&app(&weak), "ada", "password1").await.status,
            StatusCode::CREATED
        );
        let strong = sentri::create_auth(argon(t.db.clone(), cheap(128, 2))).unwrap();
        assert_eq!(
            login(&app(&strong), "ada", "password1").await.status,
            StatusCode::OK
        );
        let upgraded = stored_hash(&t.db, "ada").await;
        assert!(
            upgraded.starts_with("$argon2id$v=19$m=128,t=2,p=1$"),
            "{}: {upgraded}",
            t.name
        );
        // A stronger stored hash is not downgraded by an instance with weaker settings.
        assert_eq!(
            login(&app(&weak), "ada", "password1").await.status,
            StatusCode::OK
        );
        assert_eq!(stored_hash(&t.db, "ada").await, upgraded, "{}", t.name);
        t.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_logins_during_the_rehash_all_succeed_and_one_hash_is_stored() {
    let trials: usize = std::env::var("SENTRI_RACE_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    for t in databases("scaleout::argon2_race").await {
        let bcrypt_auth = sentri::create_auth(config(t.db.clone())).unwrap();
        let auth = sentri::create_auth(argon(t.db.clone(), cheap(64, 1))).unwrap();
        for trial in 0..trials {
            let id = format!("racer{trial}");
            assert_eq!(
                register(&app(&bcrypt_auth), &id, "password1").await.status,
                StatusCode::CREATED
            );
            let mut tasks = Vec::new();
            for _ in 0..8 {
                let a = app(&auth);
                let id = id.clone();
                tasks.push(tokio::spawn(
                    async move { login(&a, &id, "password1").await },
                ));
            }
            for task in tasks {
                let r = task.await.unwrap();
                assert_eq!(
                    r.status,
                    StatusCode::OK,
                    "{} trial {trial}: {:?}",
                    t.name,
                    r.body
                );
            }
            let stored = stored_hash(&t.db, &id).await;
            assert!(stored.starts_with("$argon2id$"), "{}: {stored}", t.name);
            assert!(auth.verify_password("password1", &stored).await.unwrap());
            // Settled: a further login changes nothing.
            assert_eq!(
                login(&app(&auth), &id, "password1").await.status,
                StatusCode::OK
            );
            assert_eq!(stored_hash(&t.db, &id).await, stored);
        }
        t.cleanup().await;
    }
}

#[tokio::test]
async fn invalid_argon2_parameters_are_a_configuration_error() {
    let t = databases("scaleout::argon2_config").await.remove(0);
    let err = sentri::create_auth(argon(t.db.clone(), cheap(1, 0))).unwrap_err();
    assert_eq!(err.code().as_str(), "CONFIGURATION_ERROR");
    t.cleanup().await;
}

/// Login throughput at the default costs, bcrypt (12) against Argon2id (m=19 MiB, t=2,
/// p=1): `cargo test --all-features --test it -- --ignored --nocapture login_throughput`
/// (the hash crates build at opt-level 3 in the test profile). Prints logins per second
/// with as many concurrent logins as cores; asserts nothing about speed.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a timed measurement for docs/BENCHMARKS.md, not a test"]
async fn login_throughput_argon2id_vs_bcrypt_at_default_costs() {
    let t = databases("scaleout::login_throughput").await.remove(0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rounds = 8usize;
    for (name, cfg) in [
        ("bcrypt cost 12", config(t.db.clone()).bcrypt_cost(12)),
        (
            "argon2id m=19456,t=2,p=1",
            config(t.db.clone()).argon2id(Argon2Params::default()),
        ),
    ] {
        let auth = sentri::create_auth(cfg).unwrap();
        let id = crate::support::common::unique("bench");
        assert_eq!(
            register(&app(&auth), &id, "password1").await.status,
            StatusCode::CREATED
        );
        assert_eq!(
            login(&app(&auth), &id, "password1").await.status,
            StatusCode::OK
        );
        let started = std::time::Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..cores {
            let (a, id) = (app(&auth), id.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..rounds {
                    assert_eq!(login(&a, &id, "password1").await.status, StatusCode::OK);
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        let n = (cores * rounds) as f64;
        println!(
            "{name}: {n} logins in {secs:.2} s = {:.1} logins/s ({cores} concurrent)",
            n / secs
        );
    }
    t.cleanup().await;
}
