//! Two-factor authentication over HTTP on the three databases: enrolment, the step-up
//! login, backup codes, replay and its races, the skew window, the limits, the 2FA
//! token's life, the assurance level through refresh, and disabling.

mod flows;
mod races;
mod steps;

use std::time::Duration;

use axum::Router;
use axum::http::{Method, StatusCode};
use axum::routing::get;
use base64::Engine as _;
use sentri::capability::two_factor::{TwoFactor, totp_code};
use sentri::clock::{Clock, ManualClock};
use sentri::core::seal::Sealer;
use sentri::{ServerAuth, ServerConfig, create_auth};
use serde_json::{Value, json};

use crate::support::db::TestDb;
use crate::support::http::{Reply, bearer, call, login, register};
use crate::support::services::config;

pub const PW: &str = "password1";

/// A server with 2FA on `t`, its clock and its router (the example routes plus
/// `GET /api/secure` behind `require_2fa()`).
pub struct Rig {
    pub auth: ServerAuth,
    pub app: Router,
    pub clock: ManualClock,
}

pub async fn rig_with(t: &TestDb, f: impl FnOnce(ServerConfig) -> ServerConfig) -> Rig {
    rig_full(t, TwoFactor::new(sealer()), f).await
}

pub async fn rig_full(
    t: &TestDb,
    two_factor: TwoFactor,
    f: impl FnOnce(ServerConfig) -> ServerConfig,
) -> Rig {
    let clock = ManualClock::starting_now();
    let auth = create_auth(f(config(t.db.clone())
        .clock(clock.clone())
        .with(two_factor)))
    .unwrap();
    auth.migrate().await.unwrap();
    let app = crate::support::http::app(&auth).route(
        "/api/secure",
        get(|| async { "secure" }).route_layer(auth.require_2fa()),
    );
    Rig { auth, app, clock }
}

pub async fn rig(t: &TestDb) -> Rig {
    rig_with(t, |c| c).await
}

pub fn sealer() -> Sealer {
    Sealer::new("k1", [7u8; 32]).unwrap()
}

impl Rig {
    /// The code of `secret` `offset` steps from the clock's now.
    pub fn code(&self, secret: &str, offset: i64) -> String {
        let secs = self.clock.now_ms() / 1000 + offset * 30;
        totp_code(secret, u64::try_from(secs).unwrap()).unwrap()
    }

    /// Moves to the start of a later time step (codes of earlier steps are used).
    pub fn next_step(&self) {
        self.clock.advance(Duration::from_secs(30));
    }

    pub async fn post(&self, path: &str, access: &str, body: Value) -> Reply {
        call(
            &self.app,
            Method::POST,
            path,
            &[("authorization", &bearer(access))],
            Some(body),
        )
        .await
    }

    pub async fn get(&self, path: &str, access: &str) -> Reply {
        call(
            &self.app,
            Method::GET,
            path,
            &[("authorization", &bearer(access))],
            None,
        )
        .await
    }

    /// Registers and logs in (no 2FA yet): the access token.
    pub async fn signed_in(&self, id: &str) -> String {
        let r = register(&self.app, id, PW).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let r = login(&self.app, id, PW).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.body["data"]["accessToken"].as_str().unwrap().to_owned()
    }

    /// Enrols and confirms a device: (device id, secret, backup codes).
    pub async fn enable(&self, access: &str) -> (String, String, Vec<String>) {
        let r = self
            .post(
                "/auth/2fa/totp/enroll",
                access,
                json!({"password": PW, "name": "phone"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let id = r.body["data"]["deviceId"].as_str().unwrap().to_owned();
        let secret = r.body["data"]["secret"].as_str().unwrap().to_owned();
        let r = self
            .post(
                "/auth/2fa/totp/confirm",
                access,
                json!({"deviceId": id, "code": self.code(&secret, 0)}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let codes = r.body["data"]["backupCodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
        self.next_step();
        (id, secret, codes)
    }

    /// `POST /auth/login` of a 2FA user: the 2FA token (asserts the challenge shape).
    pub async fn challenge(&self, id: &str) -> String {
        let r = login(&self.app, id, PW).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(r.body["data"]["twoFactorRequired"], true, "{:?}", r.body);
        assert!(r.body["data"]["accessToken"].is_null(), "no token");
        assert!(r.cookies().is_empty(), "no cookies on a challenge");
        r.body["data"]["twoFactorToken"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn verify(&self, token: &str, code: &str) -> Reply {
        call(
            &self.app,
            Method::POST,
            "/auth/2fa/verify",
            &[],
            Some(json!({"twoFactorToken": token, "code": code})),
        )
        .await
    }
}

/// The `aal` and `amr` claims of an access token (decoded, not verified).
pub fn assurance_of(access: &str) -> (Value, Value) {
    let payload = access.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims: Value = serde_json::from_slice(&bytes).unwrap();
    (claims["aal"].clone(), claims["amr"].clone())
}
