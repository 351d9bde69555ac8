//! Races on the three databases: of N parallel submissions of one TOTP code (each on
//! its own 2FA token) or of one backup code, exactly one completes a login.

use std::time::Duration;

use axum::http::StatusCode;
use sentri::capability::two_factor::TwoFactor;

use super::{rig_full, sealer};
use crate::support::db::databases;

const PARALLEL: usize = 20;

fn trials() -> usize {
    std::env::var("SENTRI_RACE_TRIALS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(3, |n| n.clamp(1, 10))
}

/// Submits `code` on `PARALLEL` fresh tokens at once; returns the statuses.
async fn storm(r: &super::Rig, user: &str, code: &str) -> Vec<StatusCode> {
    let mut tokens = Vec::new();
    for _ in 0..PARALLEL {
        tokens.push(r.challenge(user).await);
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(PARALLEL));
    let mut tasks = Vec::new();
    for token in tokens {
        let (app, code, barrier) = (r.app.clone(), code.to_owned(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let body = serde_json::json!({"twoFactorToken": token, "code": code});
            let res = crate::support::http::call(
                &app,
                axum::http::Method::POST,
                "/auth/2fa/verify",
                &[],
                Some(body),
            )
            .await;
            res.status
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_code_is_accepted_once_under_concurrency() {
    for t in databases("two_factor::race_totp").await {
        let two_factor = TwoFactor::new(sealer()).failure_limit(1000, Duration::from_secs(60));
        let r = rig_full(&t, two_factor, |c| c).await;
        let a = r.signed_in("rae").await;
        let (_, secret, backups) = r.enable(&a).await;
        for (trial, backup) in backups.iter().enumerate().take(trials()) {
            let code = r.code(&secret, 0);
            let statuses = storm(&r, "rae", &code).await;
            let wins = statuses.iter().filter(|s| **s == StatusCode::OK).count();
            assert_eq!(wins, 1, "{} trial {trial}: {statuses:?}", t.name);
            assert!(
                statuses
                    .iter()
                    .all(|s| *s == StatusCode::OK || *s == StatusCode::UNAUTHORIZED),
                "{statuses:?}"
            );
            // The same code again, after the storm: refused.
            let token = r.challenge("rae").await;
            assert_eq!(
                r.verify(&token, &code).await.status,
                StatusCode::UNAUTHORIZED
            );
            r.next_step();
            // One backup code, in parallel: one wins.
            let statuses = storm(&r, "rae", backup).await;
            let wins = statuses.iter().filter(|s| **s == StatusCode::OK).count();
            assert_eq!(wins, 1, "{} backup trial {trial}: {statuses:?}", t.name);
        }
        t.cleanup().await;
    }
}
