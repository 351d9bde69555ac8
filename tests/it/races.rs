//! The revocation race suite: an attacker holding a victim's refresh token rotates it
//! and immediately replays the previous token (the grace path), continuing with
//! whichever token it got, while the victim revokes at a random moment by logout-all,
//! change-password, or presenting a superseded token (reuse detection). When the
//! revocation returns, nothing of the family may work: no refresh token, no live row,
//! no access token passing `is_session_active` on this process.
//!
//! `SENTRI_RACE_TRIALS` sets the trials per database and operation (default 300).

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sentri::{LoginInput, RegisterInput, ServerAuth, SessionMeta};

use crate::support::db::databases;
use crate::support::services::config;

#[derive(Debug, Clone, Copy)]
enum Revocation {
    LogoutAll,
    ChangePassword,
    ReuseDetection,
}

fn trials() -> usize {
    std::env::var("SENTRI_RACE_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// Trials run at once (each with its own user).
const PARALLEL: usize = 6;

#[derive(Default)]
struct Counters {
    in_flight: AtomicU64,
    rotations: AtomicU64,
    replays: AtomicU64,
}

/// What one trial saw.
#[derive(Default)]
struct Outcome {
    raced: bool,
    rotations: u64,
    replays: u64,
    survivors: Vec<String>,
}

/// The attacker: rotate, replay the previous token, continue with what came back.
/// Returns every refresh token it held, newest last, and the access tokens.
async fn attacker(
    auth: ServerAuth,
    first: String,
    stop: Arc<AtomicBool>,
    c: Arc<Counters>,
) -> (Vec<String>, Vec<String>) {
    let (mut refresh, mut access) = (vec![first.clone()], Vec::new());
    let mut current = first;
    while !stop.load(Ordering::SeqCst) {
        c.in_flight.fetch_add(1, Ordering::SeqCst);
        let rotated = auth.refresh(&current, SessionMeta::default()).await;
        c.in_flight.fetch_sub(1, Ordering::SeqCst);
        let Ok(next) = rotated else { break };
        c.rotations.fetch_add(1, Ordering::SeqCst);
        let previous = std::mem::replace(&mut current, next.refresh_token.clone());
        refresh.push(next.refresh_token);
        access.push(next.access_token);
        c.in_flight.fetch_add(1, Ordering::SeqCst);
        let replayed = auth.refresh(&previous, SessionMeta::default()).await;
        c.in_flight.fetch_sub(1, Ordering::SeqCst);
        let Ok(again) = replayed else { break };
        c.replays.fetch_add(1, Ordering::SeqCst);
        current = again.refresh_token.clone();
        refresh.push(again.refresh_token);
        access.push(again.access_token);
    }
    (refresh, access)
}

async fn revoke(auth: &ServerAuth, how: Revocation, user_id: &str, first: &str) {
    match how {
        Revocation::LogoutAll => auth.logout_all(user_id).await.expect("logout_all"),
        Revocation::ChangePassword => auth
            .change_password(user_id, "password1", "password2")
            .await
            .expect("change_password"),
        Revocation::ReuseDetection => {
            let err = auth
                .refresh(first, SessionMeta::default())
                .await
                .expect_err("a twice-superseded token is reuse");
            assert_eq!(err.code().as_str(), "TOKEN_INVALID");
        }
    }
}

async fn trial(auth: ServerAuth, how: Revocation, n: usize, seed: u64) -> Outcome {
    let name = format!("race{n}_{seed}");
    let user = auth
        .register(RegisterInput {
            identifier: name.clone(),
            password: "password1".into(),
            roles: None,
        })
        .await
        .expect("register");
    let login = auth
        .login(
            LoginInput {
                identifier: name,
                password: "password1".into(),
            },
            SessionMeta::default(),
        )
        .await
        .expect("login");
    let (stop, c) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(Counters::default()),
    );
    let task = tokio::spawn(attacker(
        auth.clone(),
        login.refresh_token.clone(),
        stop.clone(),
        c.clone(),
    ));
    // A random moment: after 2–7 rotations (the login token is then twice superseded),
    // plus a random number of scheduler turns.
    let wait_for = 2 + seed % 6;
    while c.rotations.load(Ordering::SeqCst) < wait_for && !task.is_finished() {
        tokio::task::yield_now().await;
    }
    for _ in 0..(seed / 7) % 40 {
        tokio::task::yield_now().await;
    }
    let before = (
        c.rotations.load(Ordering::SeqCst),
        c.replays.load(Ordering::SeqCst),
    );
    let in_flight_at_start = c.in_flight.load(Ordering::SeqCst) > 0;
    revoke(&auth, how, &user.id, &login.refresh_token).await;
    let after = (
        c.rotations.load(Ordering::SeqCst),
        c.replays.load(Ordering::SeqCst),
    );
    stop.store(true, Ordering::SeqCst);
    let (refresh, access) = task.await.expect("attacker panicked");

    let mut out = Outcome {
        raced: in_flight_at_start || after != before,
        rotations: after.0,
        replays: after.1,
        ..Outcome::default()
    };
    let sid = &login.session_id;
    if auth.is_session_active(sid).await.unwrap() {
        out.survivors
            .push("is_session_active after revocation".into());
    }
    let family = auth.database().find_family(sid).await.unwrap();
    if family.is_some_and(|f| f.revoked_at.is_none())
        || !auth
            .database()
            .list_user_sessions(&user.id)
            .await
            .unwrap()
            .is_empty()
    {
        out.survivors.push("a live row of the family".into());
    }
    for token in access.iter().rev().take(2) {
        let claims = auth.verify_access_token(token).unwrap();
        if auth.is_session_active(&claims.sid).await.unwrap() {
            out.survivors
                .push("an access token's session is active".into());
        }
    }
    let mut newest: Vec<&String> = refresh.iter().rev().take(3).collect();
    newest.dedup();
    for token in newest {
        if auth.refresh(token, SessionMeta::default()).await.is_ok() {
            out.survivors.push("a refresh token still rotates".into());
        }
    }
    out
}

async fn race_suite(how: Revocation) {
    for t in databases(&format!("races::{how:?}")).await {
        let auth = sentri::create_auth(config(t.db.clone())).unwrap();
        let total = trials();
        let (mut raced, mut rotations, mut replays, mut survivors) = (0, 0, 0, Vec::new());
        let mut started = 0;
        while started < total {
            let batch: Vec<_> = (started..total.min(started + PARALLEL))
                .map(|n| {
                    let seed = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20;
                    tokio::spawn(trial(auth.clone(), how, n, seed))
                })
                .collect();
            started += batch.len();
            for task in batch {
                let o = task.await.expect("trial panicked");
                raced += usize::from(o.raced);
                rotations += o.rotations;
                replays += o.replays;
                survivors.extend(o.survivors);
            }
        }
        // Straight to stderr: the count of raced trials is printed on every run.
        let _ = writeln!(
            std::io::stderr(),
            "races[{}/{how:?}]: {total} trials, {raced} with a rotation or replay in flight at revocation, \
             {rotations} rotations, {replays} grace replays, {} survivors",
            t.name,
            survivors.len()
        );
        assert!(
            survivors.is_empty(),
            "{}/{how:?}: survivors: {survivors:?}",
            t.name
        );
        assert!(
            raced * 4 >= total,
            "{}/{how:?}: only {raced} of {total} trials raced",
            t.name
        );
        t.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_by_logout_all_is_final_under_races() {
    race_suite(Revocation::LogoutAll).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_by_change_password_is_final_under_races() {
    race_suite(Revocation::ChangePassword).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_by_reuse_detection_is_final_under_races() {
    race_suite(Revocation::ReuseDetection).await;
}
