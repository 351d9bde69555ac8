//! Password hashing: one bcrypt per check whatever the user or the password length,
//! load shedding when the queue is full, and other libraries' truncating hashes.

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use axum::routing::post;
use sentri::password::{PasswordCheck, PasswordHasher};
use sentri::{ErrorCode, SentriError};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const LENGTHS: [usize; 5] = [8, 71, 72, 73, 1024];

/// A password of `len` bytes whose bytes vary along its length.
fn password(len: usize, seed: u8) -> String {
    (0..len)
        .map(|i| char::from(b'a' + ((i + usize::from(seed)) % 26) as u8))
        .collect()
}

/// bcrypt computations `f` made on `hasher`.
async fn runs_of<F: std::future::Future>(hasher: &PasswordHasher, f: F) -> (u64, F::Output) {
    let before = hasher.bcrypt_runs();
    let out = f.await;
    (hasher.bcrypt_runs() - before, out)
}

#[tokio::test]
async fn known_and_unknown_users_cost_one_bcrypt_at_every_length() {
    let hasher = PasswordHasher::new(4).unwrap();
    for len in LENGTHS {
        let pw = password(len, 0);
        let wrong = password(len, 1);
        let stored = hasher.hash(&pw).await.unwrap();
        let legacy = bcrypt::hash(&pw, 4).unwrap();

        let (n, ok) = runs_of(&hasher, hasher.check(&pw, &stored)).await;
        assert_eq!((n, ok.unwrap()), (1, PasswordCheck::Match), "{len}: right");
        let (n, ok) = runs_of(&hasher, hasher.check(&wrong, &stored)).await;
        assert_eq!(
            (n, ok.unwrap()),
            (1, PasswordCheck::Mismatch),
            "{len}: wrong"
        );
        let (n, ok) = runs_of(&hasher, hasher.check(&wrong, &legacy)).await;
        assert_eq!(
            (n, ok.unwrap()),
            (1, PasswordCheck::Mismatch),
            "{len}: legacy"
        );
        let (n, ok) = runs_of(&hasher, hasher.verify_dummy(&pw)).await;
        assert_eq!(n, 1, "{len}: unknown user");
        ok.unwrap();
        let (n, ok) = runs_of(&hasher, hasher.check(&pw, "$2b$04$garbage")).await;
        assert_eq!(
            (n, ok.unwrap()),
            (1, PasswordCheck::Mismatch),
            "{len}: bad hash"
        );
    }
}

#[tokio::test]
async fn full_queue_sheds_at_once_with_503_and_retry_after() {
    // Slow hashes fill every running permit and the one queue slot.
    let hasher = PasswordHasher::with_queue_limit(12, 1).unwrap();
    let admitted = hasher.concurrency() + 1;
    let blockers: Vec<_> = (0..admitted)
        .map(|i| {
            let h = hasher.clone();
            tokio::spawn(async move { h.hash(&format!("blocking password {i}")).await })
        })
        .collect();
    while hasher.in_flight() < admitted {
        tokio::task::yield_now().await;
    }

    let shed = [
        hasher
            .check("password1", "$2b$12$whatever")
            .await
            .unwrap_err(),
        hasher
            .verify("password1", "$2b$12$whatever")
            .await
            .unwrap_err(),
        hasher.hash("password1").await.unwrap_err(),
        hasher.verify_dummy("password1").await.unwrap_err(),
    ];
    for err in &shed {
        assert_eq!(err.code(), &ErrorCode::ServiceUnavailable, "{err:?}");
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.retry_after(), Some(1));
    }
    let (status, retry_after, body) = login_route(&hasher).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(
        body,
        json!({
            "error": true,
            "statusCode": 503,
            "code": "SERVICE_UNAVAILABLE",
            "message": shed[0].message(),
            "data": null
        })
    );

    for b in blockers {
        b.await.unwrap().unwrap();
    }
    // Shed requests ran no bcrypt, and the hasher serves again once the queue drains.
    assert_eq!(hasher.bcrypt_runs(), admitted as u64);
    assert_eq!(hasher.in_flight(), 0);
    let (status, _, _) = login_route(&hasher).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// A login-like route (verify, 401 on mismatch) behind the error layer.
async fn login_route(hasher: &PasswordHasher) -> (StatusCode, Option<String>, Value) {
    let h = hasher.clone();
    let app = Router::new()
        .route(
            "/login",
            post(move || {
                let h = h.clone();
                async move {
                    if h.verify("password1", "$2b$12$not-a-real-hash").await? {
                        Ok("ok")
                    } else {
                        Err(SentriError::invalid_credentials())
                    }
                }
            }),
        )
        .layer(sentri::http::ErrorLayer::new());
    let res = app
        .oneshot(Request::post("/login").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let retry_after = res
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = to_bytes(res.into_body(), 1 << 16).await.unwrap();
    (status, retry_after, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn other_libraries_long_password_hashes_verify_and_upgrade() {
    let hasher = PasswordHasher::new(4).unwrap();
    let pw = password(100, 0);
    let same_72 = format!("{}{}", &pw[..72], password(28, 5));
    assert_ne!(pw, same_72);
    let parts = bcrypt::hash_with_result(&pw, 4).unwrap();
    for version in [
        bcrypt::Version::TwoA,
        bcrypt::Version::TwoB,
        bcrypt::Version::TwoY,
    ] {
        // The other library truncated to 72 bytes: so does the check, and it asks for
        // an upgrade. A password sharing those 72 bytes matches too (legacy behaviour).
        let legacy = parts.format_for_version(version);
        assert_eq!(
            hasher.check(&pw, &legacy).await.unwrap(),
            PasswordCheck::MatchNeedsUpgrade,
            "{legacy}"
        );
        assert_eq!(
            hasher.check(&same_72, &legacy).await.unwrap(),
            PasswordCheck::MatchNeedsUpgrade
        );
        assert_eq!(
            hasher.check(&pw[..71], &legacy).await.unwrap(),
            PasswordCheck::Mismatch
        );
    }
    // After the upgrade only the exact password matches.
    let upgraded = hasher.hash(&pw).await.unwrap();
    assert!(upgraded.starts_with("$sentri-sha256$$2b$04$"), "{upgraded}");
    assert_eq!(
        hasher.check(&pw, &upgraded).await.unwrap(),
        PasswordCheck::Match
    );
    assert_eq!(
        hasher.check(&same_72, &upgraded).await.unwrap(),
        PasswordCheck::Mismatch
    );
    // A short password's plain hash from another library is current as it is.
    let short = bcrypt::hash("hunter2hunter2", 4).unwrap();
    assert_eq!(
        hasher.check("hunter2hunter2", &short).await.unwrap(),
        PasswordCheck::Match
    );
}

#[tokio::test]
async fn hashes_below_the_configured_cost_need_an_upgrade() {
    let old = PasswordHasher::new(4).unwrap();
    let new = PasswordHasher::new(5).unwrap();
    for len in [8, 100] {
        let pw = password(len, 2);
        let weak = old.hash(&pw).await.unwrap();
        assert_eq!(
            new.check(&pw, &weak).await.unwrap(),
            PasswordCheck::MatchNeedsUpgrade,
            "{len}"
        );
        assert_eq!(
            new.check(&password(len, 3), &weak).await.unwrap(),
            PasswordCheck::Mismatch
        );
        let strong = new.hash(&pw).await.unwrap();
        assert_eq!(new.check(&pw, &strong).await.unwrap(), PasswordCheck::Match);
        // A stronger stored hash is not downgraded.
        assert_eq!(old.check(&pw, &strong).await.unwrap(), PasswordCheck::Match);
    }
}
