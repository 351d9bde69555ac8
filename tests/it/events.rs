//! Security events: every security-relevant action reaches the event sinks with who,
//! what and where; a sink never slows a request (a full queue drops, counted).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sentri::clock::ManualClock;
use sentri::{AuthEvent, AuthEventKind, EventSink, LoginInput, RegisterInput, SessionMeta};

use crate::support::db::databases;
use crate::support::services::config;

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Arc<AuthEvent>>>>);

impl EventSink for Recorder {
    fn handle(&self, event: Arc<AuthEvent>) -> sentri::core::BoxFuture<'static, ()> {
        self.0.lock().unwrap().push(event);
        Box::pin(async {})
    }
}

impl Recorder {
    /// Waits (bounded) until `n` events arrived, then returns them.
    async fn wait_for(&self, n: usize) -> Vec<Arc<AuthEvent>> {
        for _ in 0..500 {
            if self.0.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.0.lock().unwrap().clone()
    }
}

fn meta() -> SessionMeta {
    SessionMeta {
        user_agent: Some("events-test/1.0".into()),
        ip: Some("192.0.2.7".into()),
    }
}

#[tokio::test]
async fn every_security_action_emits_one_typed_event() {
    for t in databases("events::kinds").await {
        let clock = ManualClock::starting_now();
        let sink = Recorder::default();
        let cfg = config(t.db.clone())
            .clock(clock.clone())
            .event_sink(sink.clone());
        let auth = sentri::create_auth(cfg).unwrap();
        let input = |pw: &str| LoginInput {
            identifier: "eve".into(),
            password: pw.into(),
        };
        let user = auth
            .register(RegisterInput {
                identifier: "eve".into(),
                password: "password1".into(),
                roles: None,
            })
            .await
            .unwrap();
        auth.login(input("wrong-password"), meta())
            .await
            .unwrap_err();
        let a = auth.login(input("password1"), meta()).await.unwrap();
        let b = auth.refresh(&a.refresh_token, meta()).await.unwrap();
        clock.advance(Duration::from_secs(11));
        auth.refresh(&a.refresh_token, meta()).await.unwrap_err(); // reuse
        let c = auth.login(input("password1"), meta()).await.unwrap();
        auth.logout(Some(&c.refresh_token)).await.unwrap();
        auth.change_identifier(&user.id, "eve2", "password1")
            .await
            .unwrap();
        auth.assign_roles(&user.id, &["editor".into()])
            .await
            .unwrap();
        auth.change_password(&user.id, "password1", "password2")
            .await
            .unwrap();
        let _ = b;
        use AuthEventKind::*;
        let expected = [
            Registered,
            LoginFailed,
            LoginSucceeded,
            Refreshed,
            ReuseDetected,
            LoginSucceeded,
            Logout,
            IdentifierChanged,
            RolesChanged,
            PasswordChanged,
        ];
        let events = sink.wait_for(expected.len()).await;
        let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
        // logout-all of the password change comes before PasswordChanged only when a
        // session is still live; here none is, so the sequence is exact.
        assert_eq!(kinds, expected, "{}", t.name);
        for e in &events {
            if e.kind != LoginFailed {
                assert_eq!(
                    e.user_id.as_deref(),
                    Some(user.id.as_str()),
                    "{}: {e:?}",
                    t.name
                );
            }
            let shown = format!("{e:?}");
            assert!(!shown.contains("password1") && !shown.contains(&a.refresh_token));
        }
        let failed = &events[1];
        assert_eq!(failed.identifier.as_deref(), Some("eve"));
        assert_eq!(
            failed.error.as_ref().unwrap().code().as_str(),
            "INVALID_CREDENTIALS"
        );
        let ok = &events[2];
        assert_eq!(ok.session_id.as_deref(), Some(a.session_id.as_str()));
        assert_eq!(ok.meta, meta(), "{}: where it came from", t.name);
        assert_eq!(events[4].session_id.as_deref(), Some(a.session_id.as_str()));
        assert_eq!(auth.dropped_events(), 0);
        t.cleanup().await;
    }
}

/// A sink that never finishes: the first event blocks the event task for good.
#[derive(Clone, Default)]
struct Stuck(Arc<std::sync::atomic::AtomicBool>);

impl EventSink for Stuck {
    fn handle(&self, _event: Arc<AuthEvent>) -> sentri::core::BoxFuture<'static, ()> {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        Box::pin(std::future::pending())
    }
}

#[tokio::test]
async fn a_stuck_sink_never_slows_requests_and_drops_are_counted() {
    let t = databases("events::stuck").await.remove(0);
    let stuck = Stuck::default();
    let cfg = config(t.db.clone())
        .event_sink(stuck.clone())
        .event_queue(4);
    let auth = sentri::create_auth(cfg).unwrap();
    auth.register(RegisterInput {
        identifier: "stuck".into(),
        password: "password1".into(),
        roles: None,
    })
    .await
    .unwrap();
    // Wait (bounded) until the event task is stuck in the sink with the first event.
    for _ in 0..500 {
        if stuck.0.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(stuck.0.load(std::sync::atomic::Ordering::SeqCst));
    // Far more events than the queue holds: every login still completes.
    for _ in 0..20 {
        let input = LoginInput {
            identifier: "stuck".into(),
            password: "password1".into(),
        };
        auth.login(input, SessionMeta::default()).await.unwrap();
    }
    // 21 events: one taken by the stuck sink, 4 queued, the rest dropped and counted.
    assert_eq!(auth.dropped_events(), 16);
    t.cleanup().await;
}

#[tokio::test]
async fn the_hooks_of_sentri_2_1_run_on_top_of_the_events() {
    let t = databases("events::hooks").await.remove(0);
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let (s1, s2, s3) = (seen.clone(), seen.clone(), seen.clone());
    let hooks = sentri::Hooks::default()
        .on_login(move |u| {
            let s = s1.clone();
            async move { s.lock().unwrap().push(format!("login {}", u.identifier)) }
        })
        .on_failed_login(move |id, e| {
            let s = s2.clone();
            async move { s.lock().unwrap().push(format!("failed {id} {}", e.code())) }
        })
        .on_logout(move |_| {
            let s = s3.clone();
            async move { s.lock().unwrap().push("logout".into()) }
        });
    let auth = sentri::create_auth(config(t.db.clone()).hooks(hooks)).unwrap();
    auth.register(RegisterInput {
        identifier: "hana".into(),
        password: "password1".into(),
        roles: None,
    })
    .await
    .unwrap();
    let input = |pw: &str| LoginInput {
        identifier: "hana".into(),
        password: pw.into(),
    };
    auth.login(input("nope-nope"), SessionMeta::default())
        .await
        .unwrap_err();
    let s = auth
        .login(input("password1"), SessionMeta::default())
        .await
        .unwrap();
    auth.logout(Some(&s.refresh_token)).await.unwrap();
    for _ in 0..500 {
        if seen.lock().unwrap().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    assert_eq!(
        got,
        ["failed hana INVALID_CREDENTIALS", "login hana", "logout"]
    );
    t.cleanup().await;
}
