//! Login steps run in order whatever credential completes the one before: when the
//! second factor is met at `POST /2fa/verify`, the steps registered after two-factor
//! still run (here lifecycle's required verified address halts the login with
//! `EMAIL_NOT_VERIFIED`, no session, no tokens, no cookies), in both registration
//! orders; once the address is verified the same login opens a level-2 session.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use sentri::capability::lifecycle::Lifecycle;
use sentri::capability::two_factor::TwoFactor;
use sentri::core::BoxFuture;
use sentri::mail::{MailError, Mailer, Message};
use sentri::{ServerConfig, create_auth};
use serde_json::json;

use super::{PW, Rig, assurance_of, rig, sealer};
use crate::support::db::databases;
use crate::support::http::{Reply, call, expect, login};

/// Keeps the text of every message.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<String>>>);

impl Mailer for Captured {
    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), MailError>> {
        self.0.lock().unwrap().push(message.text().to_owned());
        Box::pin(async { Ok(()) })
    }
}

impl Captured {
    /// The six-digit code of the first message (waits for it, bounded).
    async fn code(&self) -> String {
        for _ in 0..2000 {
            if let Some(text) = self.0.lock().unwrap().first() {
                let digits: Vec<&str> = text
                    .split(|c: char| !c.is_ascii_digit())
                    .filter(|w| w.len() == 6)
                    .collect();
                return digits.first().expect("a code in the message").to_string();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no verification message");
    }
}

/// Both steps on the rig's database and clock, in `order`.
fn both(cfg: ServerConfig, lifecycle: Lifecycle, two_factor_first: bool) -> ServerConfig {
    let two_factor = TwoFactor::new(sealer());
    if two_factor_first {
        cfg.with(two_factor).with(lifecycle)
    } else {
        cfg.with(lifecycle).with(two_factor)
    }
}

fn refused_without_session(r: &Reply, what: &str) {
    expect(r, StatusCode::FORBIDDEN, "EMAIL_NOT_VERIFIED", what);
    assert!(r.cookies().is_empty(), "{what}: no cookies");
    assert!(r.body["data"].is_null(), "{what}: no tokens: {:?}", r.body);
}

#[tokio::test]
async fn steps_after_two_factor_still_run_when_the_second_factor_is_met() {
    for t in databases("two_factor::steps").await {
        for two_factor_first in [true, false] {
            let n = format!("{} (two-factor first: {two_factor_first})", t.name);
            let id = format!("kim{two_factor_first}@example.com");
            // The account and its device, made on a server without the address rule.
            let setup = rig(&t).await;
            let mail = Captured::default();
            let lifecycle = Lifecycle::new(mail.clone()).require_email_verification(true);
            let auth = create_auth(both(
                crate::support::services::config(t.db.clone()).clock(setup.clock.clone()),
                lifecycle.clone(),
                two_factor_first,
            ))
            .unwrap();
            auth.migrate().await.unwrap();
            let app = crate::support::http::app(&auth);
            let r = crate::support::http::register(&app, &id, PW).await;
            assert_eq!(r.status, StatusCode::CREATED, "{n}: {:?}", r.body);
            let r = login(&setup.app, &id, PW).await;
            let access = r.body["data"]["accessToken"].as_str().unwrap().to_owned();
            let (_, secret, _) = setup.enable(&access).await;
            let both = Rig {
                auth,
                app: app.clone(),
                clock: setup.clock.clone(),
            };

            let r = login(&app, &id, PW).await;
            if two_factor_first {
                assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
                let token = r.body["data"]["twoFactorToken"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                let r = both.verify(&token, &both.code(&secret, 0)).await;
                refused_without_session(&r, &format!("{n}: after /2fa/verify"));
                both.next_step();
            } else {
                refused_without_session(&r, &format!("{n}: at login"));
            }

            // Verified, the same login goes through both steps to a level-2 session.
            let code = mail.code().await;
            let r = call(
                &app,
                Method::POST,
                "/auth/verify-email",
                &[],
                Some(json!({"identifier": id, "code": code})),
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
            let token = both.challenge(&id).await;
            let r = both.verify(&token, &both.code(&secret, 0)).await;
            assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
            let access = r.body["data"]["accessToken"].as_str().unwrap();
            assert_eq!(
                assurance_of(access),
                (json!(2), json!(["pwd", "otp", "mfa"])),
                "{n}"
            );
            lifecycle.settled().await;
        }
        t.cleanup().await;
    }
}
