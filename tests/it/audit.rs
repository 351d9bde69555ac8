//! The audit log: every event kind of the core flows lands in `sentri_auth_events` with
//! its fields and without secrets; a stuck database drops and counts instead of
//! blocking; retention purge; keyset pagination over 10 000 events.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use sentri::capability::Capability;
use sentri::capability::audit::{Audit, AuditQuery, AuditRecord};
use sentri::clock::{Clock, ManualClock};
use sentri::db::Database;
use sentri::{AuthEvent, AuthEventKind, LoginInput, RegisterInput, ServerAuth, SessionMeta};

use crate::support::common::unique;
use crate::support::db::{TestDb, databases};
use crate::support::http::{app, bearer, call, expect};
use crate::support::services::config;

fn meta() -> SessionMeta {
    SessionMeta {
        user_agent: Some("audit-test/1.0".into()),
        ip: Some("192.0.2.9".into()),
    }
}

async fn audited(t: &TestDb, clock: &ManualClock, audit: &Audit) -> ServerAuth {
    let cfg = config(t.db.clone())
        .clock(clock.clone())
        .with(audit.clone());
    let auth = sentri::create_auth(cfg).unwrap();
    auth.migrate().await.unwrap();
    auth
}

/// Every row, newest first (one page).
async fn all_rows(audit: &Audit) -> Vec<AuditRecord> {
    let mut q = AuditQuery::default();
    q.limit = 500;
    audit.query(&q).await.unwrap().events
}

/// Waits (bounded) until `n` events were written.
async fn written(audit: &Audit, n: u64) {
    for _ in 0..500 {
        if audit.written() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("only {} of {n} events written", audit.written());
}

fn login(id: &str, pw: &str) -> LoginInput {
    LoginInput {
        identifier: id.into(),
        password: pw.into(),
    }
}

#[tokio::test]
async fn every_event_kind_lands_with_its_fields_and_no_secret() {
    for t in databases("audit::kinds").await {
        let clock = ManualClock::starting_now();
        let audit = Audit::new(t.db.clone());
        let auth = audited(&t, &clock, &audit).await;
        let router = app(&auth);
        let user = auth
            .register(RegisterInput {
                identifier: "ava".into(),
                password: "password1".into(),
                roles: Some(vec!["admin".into()]),
            })
            .await
            .unwrap();
        // A password typed into the identifier field must not reach the table.
        auth.login(login("hunter2-typed-secret", "x-password"), meta())
            .await
            .unwrap_err();
        auth.login(login("ava", "wrong-password"), meta())
            .await
            .unwrap_err();
        let a = auth.login(login("ava", "password1"), meta()).await.unwrap();
        let b = auth.refresh(&a.refresh_token, meta()).await.unwrap();
        clock.advance(Duration::from_secs(11));
        auth.refresh(&a.refresh_token, meta()).await.unwrap_err(); // reuse
        let c = auth.login(login("ava", "password1"), meta()).await.unwrap();
        auth.logout(Some(&c.refresh_token)).await.unwrap();
        let d = auth.login(login("ava", "password1"), meta()).await.unwrap();
        auth.logout_all(&user.id).await.unwrap();
        auth.change_identifier(&user.id, "ava2", "password1")
            .await
            .unwrap();
        auth.assign_roles(&user.id, &["admin".into(), "editor".into()])
            .await
            .unwrap();
        auth.change_password(&user.id, "password1", "password2")
            .await
            .unwrap();
        use AuthEventKind::*;
        let kinds = [
            Registered,
            LoginFailed,
            LoginFailed,
            LoginSucceeded,
            Refreshed,
            ReuseDetected,
            LoginSucceeded,
            Logout,
            LoginSucceeded,
            LogoutAll,
            IdentifierChanged,
            RolesChanged,
            PasswordChanged,
        ];
        written(&audit, kinds.len() as u64).await;
        let mut rows = all_rows(&audit).await;
        rows.reverse();
        let got: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
        let want: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        assert_eq!(got, want, "{}", t.name);
        for r in &rows {
            if r.kind == "login_failed" && r.user_id.is_none() {
                continue; // an unknown identifier: no user to name
            }
            assert_eq!(
                r.user_id.as_deref(),
                Some(user.id.as_str()),
                "{}: {r:?}",
                t.name
            );
        }
        let failed = &rows[2];
        assert_eq!(failed.outcome, "failed");
        assert_eq!(
            failed.details.as_deref(),
            Some(r#"{"error":"INVALID_CREDENTIALS"}"#)
        );
        let ok = &rows[3];
        assert_eq!(ok.outcome, "ok");
        assert_eq!(ok.session_id.as_deref(), Some(a.session_id.as_str()));
        assert_eq!(ok.ip.as_deref(), Some("192.0.2.9"));
        assert_eq!(ok.user_agent.as_deref(), Some("audit-test/1.0"));
        assert_eq!(rows[5].outcome, "failed", "{}: reuse", t.name);
        // No secret in any row.
        let dump = serde_json::to_string(&rows).unwrap();
        let secrets = [
            "password1",
            "password2",
            "wrong-password",
            "x-password",
            "hunter2",
            &a.refresh_token,
            &a.access_token,
            &b.refresh_token,
            &c.refresh_token,
            &d.access_token,
        ];
        for s in secrets {
            assert!(!dump.contains(s), "{}: a secret in the audit log", t.name);
        }
        // The admin route reads them back; a plain user is refused.
        let admin = auth
            .login(login("ava2", "password2"), meta())
            .await
            .unwrap();
        let auth_h = bearer(&admin.access_token);
        let path = format!(
            "/auth/audit/events?userId={}&type=login_succeeded&limit=2",
            user.id
        );
        let r = call(
            &router,
            Method::GET,
            &path,
            &[("authorization", &auth_h)],
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}: {:?}", t.name, r.body);
        assert_eq!(r.body["data"]["events"].as_array().unwrap().len(), 2);
        let cursor = r.body["data"]["nextCursor"].as_str().unwrap().to_owned();
        let next = format!("{path}&cursor={cursor}");
        let r = call(
            &router,
            Method::GET,
            &next,
            &[("authorization", &auth_h)],
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", t.name);
        assert!(!r.body["data"]["events"].as_array().unwrap().is_empty());
        for bad in ["limit=0", "limit=501", "cursor=nope", "from=abc", "other=1"] {
            let p = format!("/auth/audit/events?{bad}");
            let r = call(
                &router,
                Method::GET,
                &p,
                &[("authorization", &auth_h)],
                None,
            )
            .await;
            expect(&r, StatusCode::BAD_REQUEST, "VALIDATION_ERROR", bad);
        }
        auth.register(RegisterInput {
            identifier: "pat".into(),
            password: "password1".into(),
            roles: None,
        })
        .await
        .unwrap();
        let pat = auth.login(login("pat", "password1"), meta()).await.unwrap();
        let r = call(
            &router,
            Method::GET,
            "/auth/audit/events",
            &[("authorization", &bearer(&pat.access_token))],
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}: {:?}", t.name, r.body);
        assert_eq!(audit.dropped(), 0);
        t.cleanup().await;
    }
}

#[tokio::test]
async fn a_database_that_never_answers_drops_and_counts_instead_of_blocking() {
    let path = std::env::temp_dir().join(format!("{}.db", unique("sentri-audit-stuck")));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let db = Database::connect(&url).await.unwrap();
    let audit = Audit::new(db.clone()).queue(4).batch(8);
    let auth = sentri::create_auth(config(db).with(audit.clone())).unwrap();
    auth.migrate().await.unwrap();
    // Another connection holds SQLite's write lock: every insert waits.
    let mut lock = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN EXCLUSIVE")
        .execute(&mut lock)
        .await
        .unwrap();
    let sink = audit.event_sinks().remove(0);
    for i in 0..100 {
        let event = AuthEvent::new(AuthEventKind::LoginFailed, i);
        sink.handle(Arc::new(event)).await; // returns at once, never waits
    }
    // The writer had no chance to run: 4 queued, the other 96 dropped and counted.
    assert_eq!(audit.dropped(), 96);
    tokio::time::sleep(Duration::from_millis(50)).await; // the writer now waits on the lock
    sqlx::raw_sql("COMMIT").execute(&mut lock).await.unwrap();
    written(&audit, 4).await;
    assert_eq!(
        (audit.written(), audit.failed(), audit.dropped()),
        (4, 0, 96)
    );
    assert_eq!(all_rows(&audit).await.len(), 4);
    drop(lock);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[tokio::test]
async fn retention_purges_old_events_by_the_configured_clock() {
    for t in databases("audit::retention").await {
        let clock = ManualClock::starting_now();
        let day = Duration::from_secs(24 * 3600);
        let audit = Audit::new(t.db.clone()).retention(day * 30);
        let auth = audited(&t, &clock, &audit).await;
        let _ = app(&auth); // routes built: the audit uses the server's clock
        let now = clock.now_ms();
        let day_ms = 24 * 3600 * 1000;
        let events: Vec<AuthEvent> = [now - 40 * day_ms, now - 31 * day_ms, now - 29 * day_ms, now]
            .into_iter()
            .map(|at| AuthEvent::new(AuthEventKind::Logout, at))
            .collect();
        audit.write(&events).await.unwrap();
        assert_eq!(audit.purge_now().await.unwrap(), 2, "{}", t.name);
        assert_eq!(all_rows(&audit).await.len(), 2, "{}", t.name);
        clock.advance(day * 2);
        assert_eq!(audit.purge_now().await.unwrap(), 1, "{}", t.name);
        let left = all_rows(&audit).await;
        assert_eq!(left.iter().map(|r| r.at_ms).collect::<Vec<_>>(), [now]);
        t.cleanup().await;
    }
}

#[tokio::test]
async fn keyset_pages_over_ten_thousand_events_have_no_duplicates_or_gaps() {
    for t in databases("audit::pages").await {
        let clock = ManualClock::starting_now();
        let audit = Audit::new(t.db.clone()).batch(500);
        let _auth = audited(&t, &clock, &audit).await;
        // 10 000 events, ties on time (7 per millisecond), two users.
        let events: Vec<AuthEvent> = (0..10_000i64)
            .map(|i| {
                let user = if i % 3 == 0 { "u-three" } else { "u-other" };
                AuthEvent::new(AuthEventKind::Refreshed, 1_000_000 + i / 7).user(user)
            })
            .collect();
        audit.write(&events).await.unwrap();
        let walk = |mut q: AuditQuery| {
            let audit = audit.clone();
            async move {
                let mut seen = Vec::new();
                loop {
                    let page = audit.query(&q).await.unwrap();
                    seen.extend(page.events.into_iter().map(|r| (r.at_ms, r.id)));
                    match page.next {
                        Some(c) => q.after = Some(c),
                        None => return seen,
                    }
                }
            }
        };
        let mut q = AuditQuery::default();
        q.limit = 97;
        let seen = walk(q.clone()).await;
        assert_eq!(seen.len(), 10_000, "{}", t.name);
        assert!(
            seen.windows(2).all(|w| w[0] > w[1]),
            "{}: strictly newest first",
            t.name
        );
        assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 10_000);
        // Filters: one user within a time range.
        q.user_id = Some("u-three".into());
        q.from_ms = Some(1_000_100);
        q.to_ms = Some(1_000_200);
        let want = (0..10_000i64)
            .filter(|i| i % 3 == 0 && (100..200).contains(&(i / 7)))
            .count();
        assert_eq!(walk(q).await.len(), want, "{}", t.name);
        t.cleanup().await;
    }
}
