//! The database key store: instances over one database share one key set, two instances
//! booting on an empty store create exactly one key, rotation publishes ahead and
//! retires late, emergency revocation, and the private keys are sealed at rest — on the
//! three databases.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use sentri::ServerAuth;
use sentri::clock::ManualClock;
use sentri::core::seal::Sealer;
use sentri::db::Database;
use sentri::keystore::KeyStoreConfig;
use sentri::token::{Algorithm, peek_kid};

use crate::support::db::{TestDb, databases};
use crate::support::http::{app, expect, login, profile_with, refresh_with, session};
use crate::support::services::config;

const KEK: [u8; 32] = [9u8; 32];
const DAY: Duration = Duration::from_secs(24 * 3600);
const HOUR: Duration = Duration::from_secs(3600);

fn trials() -> usize {
    std::env::var("SENTRI_RACE_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

fn store() -> KeyStoreConfig {
    KeyStoreConfig::new(Sealer::new("kek-1", KEK).unwrap())
}

fn instance_with(db: &Database, clock: &ManualClock, store: KeyStoreConfig) -> ServerAuth {
    sentri::create_auth(
        config(db.clone())
            .clock(clock.clone())
            .signing_key_store(store),
    )
    .unwrap()
}

fn instance(db: &Database, clock: &ManualClock) -> ServerAuth {
    instance_with(db, clock, store())
}

fn kids(auth: &ServerAuth) -> Vec<String> {
    auth.tokens().jwks()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

async fn empty_store(t: &TestDb) {
    t.raw("DELETE FROM sentri_signing_keys").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_booting_together_on_an_empty_store_create_exactly_one_key() {
    for t in databases("scaleout::keystore_boot").await {
        let clock = ManualClock::starting_now();
        instance(&t.db, &clock).migrate().await.unwrap();
        for trial in 0..trials() {
            empty_store(&t).await;
            let instances: Vec<ServerAuth> = (0..6).map(|_| instance(&t.db, &clock)).collect();
            let barrier = Arc::new(tokio::sync::Barrier::new(instances.len()));
            let mut tasks = Vec::new();
            for auth in instances.clone() {
                let barrier = barrier.clone();
                tasks.push(tokio::spawn(async move {
                    barrier.wait().await;
                    auth.load_signing_keys().await
                }));
            }
            for task in tasks {
                task.await.unwrap().unwrap();
            }
            let stored = instances[0].signing_keys().await.unwrap();
            assert_eq!(stored.len(), 1, "{} trial {trial}: {stored:?}", t.name);
            for auth in &instances {
                assert_eq!(
                    kids(auth),
                    vec![stored[0].kid.clone()],
                    "{} trial {trial}",
                    t.name
                );
                assert_eq!(auth.tokens().jwks(), instances[0].tokens().jwks());
            }
        }
        t.cleanup().await;
    }
}

#[tokio::test]
async fn instances_serve_one_jwks_and_accept_each_others_tokens() {
    for t in databases("scaleout::keystore_share").await {
        let clock = ManualClock::starting_now();
        let a = instance(&t.db, &clock);
        let b = instance(&t.db, &clock);
        a.migrate().await.unwrap();
        b.migrate().await.unwrap();
        assert_eq!(a.tokens().jwks(), b.tokens().jwks(), "{}", t.name);
        assert_eq!(a.tokens().current_key().algorithm(), Algorithm::ES256);
        let (access, refresh) = session(&app(&a), "ada", "password1").await;
        assert_eq!(
            profile_with(&app(&b), &access).await.status,
            StatusCode::OK,
            "{}",
            t.name
        );
        let r = refresh_with(&app(&b), &refresh).await;
        assert_eq!(r.status, StatusCode::OK, "{}: {:?}", t.name, r.body);
        let next = r.body["data"]["accessToken"].as_str().unwrap();
        assert_eq!(profile_with(&app(&a), next).await.status, StatusCode::OK);
        // The same JWKS over HTTP.
        let keys_a =
            crate::support::http::call(&app(&a), axum::http::Method::GET, "/auth/keys", &[], None)
                .await;
        let keys_b =
            crate::support::http::call(&app(&b), axum::http::Method::GET, "/auth/keys", &[], None)
                .await;
        assert_eq!(keys_a.status, StatusCode::OK);
        assert_eq!(keys_a.body, keys_b.body, "{}", t.name);
        t.cleanup().await;
    }
}

#[tokio::test]
async fn rotation_publishes_the_new_key_ahead_and_keeps_the_old_one_until_its_tokens_expire() {
    for t in databases("scaleout::keystore_rotation").await {
        let clock = ManualClock::starting_now();
        let a = instance(&t.db, &clock);
        let b = instance(&t.db, &clock);
        a.migrate().await.unwrap();
        b.load_signing_keys().await.unwrap();
        let first = kids(&a);
        assert_eq!(first.len(), 1);
        let (old_token, _) = session(&app(&a), "ada", "password1").await;
        assert_eq!(peek_kid(&old_token).as_deref(), Some(first[0].as_str()));

        // Not yet due.
        clock.advance(30 * DAY - HOUR - Duration::from_secs(1));
        a.refresh_signing_keys().await.unwrap();
        assert_eq!(kids(&a), first, "{}", t.name);
        // Due: published an hour ahead, not signing yet; both instances agree.
        clock.advance(Duration::from_secs(1));
        b.refresh_signing_keys().await.unwrap();
        a.refresh_signing_keys().await.unwrap();
        let both = kids(&b);
        assert_eq!(both.len(), 2, "{}", t.name);
        assert_eq!(both[0], first[0], "{}: the old key still signs", t.name);
        assert_eq!(a.tokens().jwks(), b.tokens().jwks());
        assert_eq!(
            a.signing_keys().await.unwrap().len(),
            2,
            "{}: one new key",
            t.name
        );
        let r = login(&app(&b), "ada", "password1").await;
        let old_key_token = r.body["data"]["accessToken"].as_str().unwrap().to_owned();
        assert_eq!(peek_kid(&old_key_token).as_deref(), Some(first[0].as_str()));
        // (`old_token`'s session has reached its 30-day lifetime by now.)
        assert!(b.tokens().verify_access(&old_token).is_ok());

        // The new key signs from its sign_from on; the old one still verifies.
        clock.advance(HOUR);
        a.refresh_signing_keys().await.unwrap();
        b.refresh_signing_keys().await.unwrap();
        assert_eq!(
            kids(&a),
            vec![both[1].clone(), first[0].clone()],
            "{}",
            t.name
        );
        let r = login(&app(&a), "ada", "password1").await;
        let token = r.body["data"]["accessToken"].as_str().unwrap();
        assert_eq!(peek_kid(token).as_deref(), Some(both[1].as_str()));
        assert_eq!(profile_with(&app(&b), token).await.status, StatusCode::OK);
        assert_eq!(
            profile_with(&app(&b), &old_key_token).await.status,
            StatusCode::OK,
            "{}",
            t.name
        );

        // Until the longest token it signed has expired: refresh lifetime + leeway, and
        // one refresh interval (60 s) during which a lagging instance still signed with it.
        clock.advance(7 * DAY + Duration::from_secs(5));
        b.refresh_signing_keys().await.unwrap();
        assert_eq!(kids(&b).len(), 2, "{}: leeway + a lagging reload", t.name);
        assert!(b.tokens().verify_access(&old_key_token).is_ok());
        clock.advance(Duration::from_secs(60));
        b.refresh_signing_keys().await.unwrap();
        assert_eq!(kids(&b), vec![both[1].clone()], "{}: retired", t.name);
        // (Its tokens' own `exp` follows the system clock; the key is what is gone.)
        let err = b.tokens().verify_access(&old_key_token).unwrap_err();
        assert_eq!(err.code().as_str(), "TOKEN_INVALID", "{}", t.name);
        let stored = b.signing_keys().await.unwrap();
        assert!(
            stored[0].retire_at.is_some(),
            "{}: retire time recorded",
            t.name
        );
        t.cleanup().await;
    }
}

#[tokio::test]
async fn manual_rotation_publishes_at_once_and_signs_after_publish_ahead() {
    for t in databases("scaleout::keystore_manual").await {
        let clock = ManualClock::starting_now();
        let a = instance(&t.db, &clock);
        a.migrate().await.unwrap();
        let first = kids(&a);
        let kid = a.rotate_signing_key().await.unwrap();
        assert_eq!(kids(&a), vec![first[0].clone(), kid.clone()], "{}", t.name);
        assert_eq!(a.tokens().current_key().kid(), first[0]);
        clock.advance(HOUR);
        a.refresh_signing_keys().await.unwrap();
        assert_eq!(a.tokens().current_key().kid(), kid, "{}", t.name);
        t.cleanup().await;
    }
}

#[tokio::test]
async fn an_emergency_revocation_stops_the_key_at_once_here_and_on_reload_elsewhere() {
    for t in databases("scaleout::keystore_revoke").await {
        let clock = ManualClock::starting_now();
        let a = instance(&t.db, &clock);
        let b = instance(&t.db, &clock);
        a.migrate().await.unwrap();
        b.load_signing_keys().await.unwrap();
        let (token, _) = session(&app(&a), "ada", "password1").await;
        let kid = peek_kid(&token).unwrap();
        assert!(a.revoke_signing_key(&kid).await.unwrap());
        assert!(
            !a.revoke_signing_key(&kid).await.unwrap(),
            "already revoked"
        );
        assert!(!a.revoke_signing_key("no-such-kid").await.unwrap());
        expect(
            &profile_with(&app(&a), &token).await,
            StatusCode::UNAUTHORIZED,
            "TOKEN_INVALID",
            "revoking instance",
        );
        assert!(!kids(&a).contains(&kid), "{}", t.name);
        // The other instance still holds the key until it reloads (documented window).
        assert_eq!(profile_with(&app(&b), &token).await.status, StatusCode::OK);
        // A new key signs at once; the other instance learns it from the first token
        // that names it (a rate-limited reload), and with it the revocation.
        let r = login(&app(&a), "ada", "password1").await;
        let new_token = r.body["data"]["accessToken"].as_str().unwrap();
        assert_ne!(peek_kid(new_token).unwrap(), kid);
        assert_eq!(
            profile_with(&app(&b), new_token).await.status,
            StatusCode::OK,
            "{}",
            t.name
        );
        expect(
            &profile_with(&app(&b), &token).await,
            StatusCode::UNAUTHORIZED,
            "TOKEN_INVALID",
            "other instance",
        );
        t.cleanup().await;
    }
}

#[tokio::test]
async fn private_keys_are_sealed_at_rest_and_a_wrong_kek_fails_at_start_up() {
    for t in databases("scaleout::keystore_sealed").await {
        let clock = ManualClock::starting_now();
        let a = instance(&t.db, &clock);
        a.migrate().await.unwrap();
        let stored = a.signing_keys().await.unwrap();
        let sealed = &stored[0].sealed_private_key;
        assert!(sealed.starts_with("v1.kek-1."), "{}", t.name);
        let pem = a.tokens().current_key().to_pkcs8_pem().unwrap();
        assert!(!sealed.contains("PRIVATE KEY"));
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        for chunk in body.as_bytes().chunks(12) {
            let chunk = std::str::from_utf8(chunk).unwrap();
            assert!(
                !sealed.contains(chunk),
                "{}: plaintext in the sealed key",
                t.name
            );
        }
        assert!(!format!("{:?}", stored[0]).contains(sealed.as_str()));

        // Another key under the same id, or an unknown id: CONFIGURATION_ERROR at start.
        for wrong in [
            Sealer::new("kek-1", [8u8; 32]).unwrap(),
            Sealer::new("kek-2", [8u8; 32]).unwrap(),
        ] {
            let b = instance_with(&t.db, &clock, KeyStoreConfig::new(wrong));
            let err = b.migrate().await.unwrap_err();
            assert_eq!(err.code().as_str(), "CONFIGURATION_ERROR", "{}", t.name);
            assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        }
        // A rotated KEK that still holds the old one opens the stored keys.
        let rotated = Sealer::new("kek-2", [8u8; 32])
            .unwrap()
            .with_older("kek-1", KEK)
            .unwrap();
        let c = instance_with(&t.db, &clock, KeyStoreConfig::new(rotated));
        c.migrate().await.unwrap();
        assert_eq!(kids(&c), kids(&a));
        t.cleanup().await;
    }
}

#[tokio::test]
async fn a_symmetric_algorithm_or_bad_schedule_is_a_configuration_error() {
    let t = databases("scaleout::keystore_config").await.remove(0);
    let clock = ManualClock::starting_now();
    for bad in [
        store().algorithm(Algorithm::HS256),
        store().rotation_period(HOUR).publish_ahead(HOUR),
        store().refresh_interval(Duration::ZERO),
    ] {
        let err = sentri::create_auth(
            config(t.db.clone())
                .clock(clock.clone())
                .signing_key_store(bad),
        )
        .unwrap_err();
        assert_eq!(err.code().as_str(), "CONFIGURATION_ERROR");
    }
    // Without a store, the key-store methods say so.
    let plain = crate::support::services::auth(t.db.clone());
    assert_eq!(
        plain
            .rotate_signing_key()
            .await
            .unwrap_err()
            .code()
            .as_str(),
        "CONFIGURATION_ERROR"
    );
    t.cleanup().await;
}

/// An emergency revocation racing other instances' reloads leaves exactly one
/// replacement key: whichever instance inserts it first, the others (the revoking one
/// included) stop there instead of adding another under the next generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_racing_reloads_makes_exactly_one_replacement() {
    for t in databases("scaleout::keystore_revoke_race").await {
        let clock = ManualClock::starting_now();
        instance(&t.db, &clock).migrate().await.unwrap();
        for trial in 0..trials() * 2 {
            empty_store(&t).await;
            let instances: Vec<ServerAuth> = (0..5).map(|_| instance(&t.db, &clock)).collect();
            for auth in &instances {
                auth.load_signing_keys().await.unwrap();
            }
            let revoked = instances[0].tokens().current_key().kid().to_owned();
            let barrier = Arc::new(tokio::sync::Barrier::new(instances.len()));
            let mut tasks = Vec::new();
            for (i, auth) in instances.iter().cloned().enumerate() {
                let (barrier, revoked) = (barrier.clone(), revoked.clone());
                tasks.push(tokio::spawn(async move {
                    barrier.wait().await;
                    if i == 0 {
                        assert!(auth.revoke_signing_key(&revoked).await.unwrap());
                    } else {
                        for _ in 0..3 {
                            auth.refresh_signing_keys().await.unwrap();
                        }
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            let stored = instances[0].signing_keys().await.unwrap();
            let live: Vec<_> = stored.iter().filter(|k| k.revoked_at.is_none()).collect();
            assert_eq!(stored.len(), 2, "{} trial {trial}: {stored:?}", t.name);
            assert_eq!(live.len(), 1, "{} trial {trial}: {stored:?}", t.name);
            for auth in &instances {
                auth.refresh_signing_keys().await.unwrap();
                assert_eq!(
                    kids(auth),
                    vec![live[0].kid.clone()],
                    "{} trial {trial}",
                    t.name
                );
            }
        }
        t.cleanup().await;
    }
}
