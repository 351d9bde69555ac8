//! Sensitive operations need a recent authentication (on the three databases): the
//! access token carries `auth_time`, a refresh never renews it, `POST /reauthenticate`
//! does (the password, and the second factor when the account has one), and the window
//! is decided in one place (`Core::check_sensitive`) for every sensitive route.

use std::time::Duration;

use axum::Router;
use axum::http::{Method, StatusCode};
use sentri::capability::two_factor::{TwoFactor, totp_code};
use sentri::capability::workspaces::Workspaces;
use sentri::clock::{Clock, ManualClock};
use sentri::core::seal::Sealer;
use sentri::{CookieConfig, ServerAuth, ServerConfig, create_auth};
use serde_json::{Value, json};

use crate::support::db::{TestDb, databases};
use crate::support::http::{Reply, app, bearer, call, expect, login, register};
use crate::support::services::config;

const PW: &str = "password1";
const WINDOW: Duration = Duration::from_secs(10 * 60);

struct Rig {
    auth: ServerAuth,
    app: Router,
    clock: ManualClock,
}

async fn rig(t: &TestDb, f: impl FnOnce(ServerConfig) -> ServerConfig) -> Rig {
    let clock = ManualClock::starting_now();
    let cfg = config(t.db.clone())
        .clock(clock.clone())
        .cookie(Some(CookieConfig::default()))
        .with(TwoFactor::new(Sealer::new("k1", [7; 32]).unwrap()))
        .with(Workspaces::default());
    let auth = create_auth(f(cfg)).unwrap();
    auth.migrate().await.unwrap();
    let app = app(&auth);
    Rig { auth, app, clock }
}

impl Rig {
    async fn post(&self, path: &str, access: &str, body: Value) -> Reply {
        call(
            &self.app,
            Method::POST,
            path,
            &[("authorization", &bearer(access))],
            Some(body),
        )
        .await
    }

    async fn patch(&self, path: &str, access: &str, body: Value) -> Reply {
        call(
            &self.app,
            Method::PATCH,
            path,
            &[("authorization", &bearer(access))],
            Some(body),
        )
        .await
    }

    /// Registers and logs in: (access token, refresh cookie).
    async fn signed_in(&self, id: &str) -> (String, String) {
        let r = register(&self.app, id, PW).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let r = login(&self.app, id, PW).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        (token(&r), r.cookie("refresh_token").unwrap())
    }

    fn auth_time(&self, access: &str) -> Option<i64> {
        self.auth.verify_access_token(access).unwrap().auth_time
    }

    fn now_secs(&self) -> i64 {
        self.clock.now_ms() / 1000
    }

    async fn change_identifier(&self, access: &str, to: &str) -> Reply {
        self.post(
            "/auth/change-identifier",
            access,
            json!({"identifier": to, "currentPassword": PW}),
        )
        .await
    }

    fn code(&self, secret: &str) -> String {
        totp_code(secret, u64::try_from(self.now_secs()).unwrap()).unwrap()
    }

    /// Enrols and confirms a TOTP device: its secret.
    async fn enable_2fa(&self, access: &str) -> String {
        let r = self
            .post(
                "/auth/2fa/totp/enroll",
                access,
                json!({"password": PW, "name": "phone"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let device = r.body["data"]["deviceId"].as_str().unwrap().to_owned();
        let secret = r.body["data"]["secret"].as_str().unwrap().to_owned();
        let r = self
            .post(
                "/auth/2fa/totp/confirm",
                access,
                json!({"deviceId": device, "code": self.code(&secret)}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        // Codes of this time step are used now.
        self.clock.advance(Duration::from_secs(30));
        secret
    }
}

fn token(r: &Reply) -> String {
    r.body["data"]["accessToken"]
        .as_str()
        .unwrap_or_else(|| panic!("no access token: {}", r.body))
        .to_owned()
}

async fn refreshed(rig: &Rig, refresh: &str) -> (String, String) {
    let r = call(
        &rig.app,
        Method::POST,
        "/auth/refresh",
        &[("cookie", &format!("refresh_token={refresh}"))],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    (token(&r), r.cookie("refresh_token").unwrap())
}

#[tokio::test]
async fn reauthentication_renews_the_window_and_refresh_never_does() {
    for t in databases("boundaries::reauth_window").await {
        let what = t.name;
        let rig = rig(&t, |c| c).await;
        let (access, refresh) = rig.signed_in("window@example.com").await;
        let login_time = rig.now_secs();
        assert_eq!(
            rig.auth_time(&access),
            Some(login_time),
            "{what}: auth_time"
        );

        // Inside the window the sensitive operation runs.
        let r = rig.change_identifier(&access, "window2@example.com").await;
        assert_eq!(r.status, StatusCode::OK, "{what}: fresh: {}", r.body);

        rig.clock.advance(WINDOW + Duration::from_secs(1));
        let r = rig.change_identifier(&access, "window3@example.com").await;
        expect(&r, StatusCode::FORBIDDEN, "REAUTH_REQUIRED", what);
        // A refresh carries the login's auth_time over: still stale.
        let (access, refresh) = refreshed(&rig, &refresh).await;
        assert_eq!(rig.auth_time(&access), Some(login_time), "{what}: refresh");
        let r = rig.change_identifier(&access, "window3@example.com").await;
        expect(&r, StatusCode::FORBIDDEN, "REAUTH_REQUIRED", what);

        // Re-authentication: the password is required and checked.
        let r = rig.post("/auth/reauthenticate", &access, json!({})).await;
        expect(&r, StatusCode::BAD_REQUEST, "VALIDATION_ERROR", what);
        let r = rig
            .post(
                "/auth/reauthenticate",
                &access,
                json!({"password": "wrong-password"}),
            )
            .await;
        expect(&r, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS", what);
        let r = rig
            .post("/auth/reauthenticate", &access, json!({"password": PW}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{what}: {}", r.body);
        assert_eq!(r.headers["cache-control"], "no-store", "{what}");
        let renewed = token(&r);
        let claims = rig.auth.verify_access_token(&renewed).unwrap();
        assert_eq!(claims.auth_time, Some(rig.now_secs()), "{what}");
        assert_eq!(
            claims.amr.as_deref(),
            Some(&["pwd".to_owned()][..]),
            "{what}"
        );
        assert_eq!(
            claims.sid,
            rig.auth.verify_access_token(&access).unwrap().sid,
            "{what}: the same session"
        );
        // The token from before the re-authentication stays stale; the new one passes.
        let r = rig.change_identifier(&access, "window3@example.com").await;
        expect(&r, StatusCode::FORBIDDEN, "REAUTH_REQUIRED", what);
        let r = rig.change_identifier(&renewed, "window3@example.com").await;
        assert_eq!(r.status, StatusCode::OK, "{what}: {}", r.body);
        // The session's refreshes now carry the new auth_time.
        let reauth_time = rig.now_secs();
        let (after, _) = refreshed(&rig, &refresh).await;
        assert_eq!(rig.auth_time(&after), Some(reauth_time), "{what}");
        // And it ages like a login.
        rig.clock.advance(WINDOW + Duration::from_secs(1));
        let r = rig.change_identifier(&after, "window4@example.com").await;
        expect(&r, StatusCode::FORBIDDEN, "REAUTH_REQUIRED", what);
        t.cleanup().await;
    }
}

#[tokio::test]
async fn a_second_factor_the_account_has_is_part_of_the_reauthentication() {
    for t in databases("boundaries::reauth_2fa").await {
        let what = t.name;
        let rig = rig(&t, |c| c.sensitive_requires_2fa(true)).await;
        let (access, _) = rig.signed_in("factors@example.com").await;
        // A password-only session is fresh but has one factor: refused.
        let r = rig.change_identifier(&access, "factors2@example.com").await;
        expect(&r, StatusCode::FORBIDDEN, "TWO_FACTOR_REQUIRED", what);
        let secret = rig.enable_2fa(&access).await;
        // The password alone no longer re-authenticates this account.
        let r = rig
            .post("/auth/reauthenticate", &access, json!({"password": PW}))
            .await;
        expect(&r, StatusCode::FORBIDDEN, "TWO_FACTOR_REQUIRED", what);
        let r = rig
            .post(
                "/auth/reauthenticate",
                &access,
                json!({"password": PW, "code": "000000"}),
            )
            .await;
        expect(&r, StatusCode::UNAUTHORIZED, "TWO_FACTOR_INVALID", what);
        let r = rig
            .post(
                "/auth/reauthenticate",
                &access,
                json!({"password": PW, "code": rig.code(&secret)}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{what}: {}", r.body);
        let stepped = token(&r);
        let claims = rig.auth.verify_access_token(&stepped).unwrap();
        assert_eq!(claims.aal, Some(2), "{what}");
        assert_eq!(
            claims.amr.unwrap(),
            ["pwd", "otp", "mfa"].map(String::from),
            "{what}"
        );
        let r = rig
            .change_identifier(&stepped, "factors2@example.com")
            .await;
        assert_eq!(r.status, StatusCode::OK, "{what}: {}", r.body);
        // The same code again is a replay.
        let r = rig
            .post(
                "/auth/reauthenticate",
                &stepped,
                json!({"password": PW, "code": rig.code(&secret)}),
            )
            .await;
        expect(&r, StatusCode::UNAUTHORIZED, "TWO_FACTOR_INVALID", what);
        t.cleanup().await;
    }
}

#[tokio::test]
async fn granting_a_managing_workspace_role_needs_a_recent_authentication() {
    for t in databases("boundaries::workspace_grant").await {
        let what = t.name;
        let rig = rig(&t, |c| c).await;
        let (owner, _) = rig.signed_in("owner@example.com").await;
        let (_, _) = rig.signed_in("member@example.com").await;
        let r = rig
            .post(
                "/auth/workspaces",
                &owner,
                json!({"name": "Acme", "slug": "acme"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{what}: {}", r.body);
        let ws = r.body["data"]["workspace"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let r = rig
            .post(
                &format!("/auth/workspaces/{ws}/invitations"),
                &owner,
                json!({"address": "member@example.com", "roles": ["member"]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{what}: {}", r.body);
        rig.clock.advance(WINDOW + Duration::from_secs(1));
        // An ordinary role is not sensitive; admin and owner are.
        let r = rig
            .post(
                &format!("/auth/workspaces/{ws}/invitations"),
                &owner,
                json!({"address": "other@example.com", "roles": ["member"]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{what}: {}", r.body);
        for roles in [json!(["admin"]), json!(["owner"])] {
            let r = rig
                .post(
                    &format!("/auth/workspaces/{ws}/invitations"),
                    &owner,
                    json!({"address": "boss@example.com", "roles": roles}),
                )
                .await;
            expect(&r, StatusCode::FORBIDDEN, "REAUTH_REQUIRED", what);
        }
        let r = call(
            &rig.app,
            Method::DELETE,
            &format!("/auth/workspaces/{ws}"),
            &[("authorization", &bearer(&owner))],
            None,
        )
        .await;
        expect(&r, StatusCode::FORBIDDEN, "REAUTH_REQUIRED", what);
        let r = rig
            .patch(
                &format!("/auth/workspaces/{ws}/members/nobody"),
                &owner,
                json!({"roles": ["admin"]}),
            )
            .await;
        expect(&r, StatusCode::FORBIDDEN, "REAUTH_REQUIRED", what);
        let r = rig
            .post("/auth/reauthenticate", &owner, json!({"password": PW}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{what}: {}", r.body);
        let renewed = token(&r);
        let r = rig
            .post(
                &format!("/auth/workspaces/{ws}/invitations"),
                &renewed,
                json!({"address": "boss@example.com", "roles": ["admin"]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{what}: {}", r.body);
        t.cleanup().await;
    }
}

#[test]
fn the_window_is_configurable_within_bounds() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = sentri::db::Database::connect("sqlite::memory:")
            .await
            .unwrap();
        for bad in [Duration::from_secs(59), Duration::from_secs(86_401)] {
            let err = create_auth(config(db.clone()).reauth_window(bad)).unwrap_err();
            assert_eq!(err.code().as_str(), "CONFIGURATION_ERROR");
        }
        assert!(create_auth(config(db).reauth_window(Duration::from_secs(60))).is_ok());
    });
}
