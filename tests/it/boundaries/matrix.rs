//! The route × credential matrix: every operation `auth.router()` serves with every
//! capability on (read from the served OpenAPI document, which `tests/it/openapi.rs`
//! holds equal to the routes in the source) is tried with every credential kind, and
//! the answer must be the one its declared policy promises. An operation missing from
//! [`POLICIES`] fails the test: a new route must say what it admits.
//!
//! Credentials: none; a session (fresh login); a stale session (logged in more than the
//! re-authentication window ago); a step-up session (stale, then `POST /reauthenticate`);
//! an API key with every scope; a 2FA challenge token as a bearer; a refresh token as a
//! bearer; another user's (fresh) session.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::Router;
use axum::http::{Method, StatusCode};
use axum::routing::get;
use sentri::capability::api_keys::ApiKeys;
use sentri::capability::audit::Audit;
use sentri::capability::devices::Devices;
use sentri::capability::lifecycle::Lifecycle;
use sentri::capability::roles::Roles;
use sentri::capability::sso::{Sso, SsoProvider};
use sentri::capability::two_factor::{TwoFactor, totp_code};
use sentri::capability::workspaces::Workspaces;
use sentri::clock::{Clock, ManualClock};
use sentri::core::seal::Sealer;
use sentri::db::Database;
use sentri::mail::LogMailer;
use sentri::{AccessCookieConfig, CookieConfig, ServerAuth, create_auth};
use serde_json::{Value, json};

use crate::support::common::unique;
use crate::support::http::{Reply, bearer, call};
use crate::support::services::config;

const PW: &str = "password1";
const REGISTRATION_KEY: &str = "registration-key-registration-key";
const SCOPE: &str = "orders:read";

/// What a route admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    /// No guard: every credential gets exactly what no credential gets.
    Public,
    /// Sessions only (`protect()`).
    Session,
    /// Sessions only, authenticated within the re-authentication window.
    Sensitive,
    /// Sessions only, of an admin.
    Admin,
}

use Policy::{Admin, Public, Sensitive, Session};

/// Every operation of `auth.router()` and what it admits.
const POLICIES: &[(&str, &str, Policy)] = &[
    // core
    ("POST", "/register", Public),
    ("POST", "/login", Public),
    ("POST", "/refresh", Public),
    ("POST", "/logout", Public),
    ("GET", "/keys", Public),
    ("GET", "/openapi.json", Public),
    ("POST", "/logout-all", Session),
    ("POST", "/reauthenticate", Session),
    ("GET", "/me", Session),
    // account
    ("POST", "/change-password", Sensitive),
    ("POST", "/change-identifier", Sensitive),
    ("POST", "/users/{user_id}/roles", Admin),
    // api keys
    ("GET", "/api-keys", Session),
    ("POST", "/api-keys", Sensitive),
    ("GET", "/api-keys/{id}", Session),
    ("PATCH", "/api-keys/{id}", Session),
    ("DELETE", "/api-keys/{id}", Session),
    ("GET", "/users/{user_id}/api-keys", Admin),
    ("DELETE", "/users/{user_id}/api-keys/{id}", Admin),
    // audit
    ("GET", "/audit/events", Admin),
    // devices
    ("GET", "/sessions", Session),
    ("POST", "/sessions/revoke-others", Sensitive),
    // Ending another session than the caller's is sensitive ({id} is another one).
    ("DELETE", "/sessions/{id}", Sensitive),
    ("GET", "/users/{user_id}/sessions", Admin),
    ("DELETE", "/users/{user_id}/sessions/{id}", Admin),
    // lifecycle
    ("POST", "/verify-email", Public),
    ("POST", "/verify-email/resend", Public),
    ("POST", "/forgot-password", Public),
    ("POST", "/reset-password", Public),
    ("POST", "/magic-link/request", Public),
    ("POST", "/magic-link/consume", Public),
    // roles
    ("GET", "/roles", Admin),
    ("POST", "/roles", Admin),
    ("GET", "/roles/{role}", Admin),
    ("PATCH", "/roles/{role}", Admin),
    ("DELETE", "/roles/{role}", Admin),
    ("GET", "/roles/{role}/users", Admin),
    ("GET", "/users/{user_id}/roles", Admin),
    ("PUT", "/users/{user_id}/roles", Admin),
    ("DELETE", "/users/{user_id}/roles/{role}", Admin),
    // sso
    ("POST", "/sso/{provider}/link", Sensitive),
    ("GET", "/sso/links", Session),
    ("DELETE", "/sso/links/{provider}", Sensitive),
    ("GET", "/sso/{provider}/start", Public),
    ("GET", "/sso/{provider}/callback", Public),
    // two-factor
    ("GET", "/2fa", Session),
    ("POST", "/2fa/totp/enroll", Session),
    ("POST", "/2fa/totp/confirm", Session),
    ("DELETE", "/2fa/totp/{id}", Sensitive),
    ("POST", "/2fa/backup-codes", Sensitive),
    ("POST", "/2fa/verify", Public),
    // workspaces
    ("GET", "/workspaces", Session),
    ("POST", "/workspaces", Session),
    ("POST", "/workspaces/personal/switch", Session),
    ("POST", "/workspaces/invitations/accept", Session),
    ("GET", "/workspaces/{id}", Session),
    ("PATCH", "/workspaces/{id}", Session),
    ("DELETE", "/workspaces/{id}", Sensitive),
    ("GET", "/workspaces/{id}/members", Session),
    ("POST", "/workspaces/{id}/members", Session),
    ("PATCH", "/workspaces/{id}/members/{user_id}", Session),
    ("DELETE", "/workspaces/{id}/members/{user_id}", Session),
    ("POST", "/workspaces/{id}/leave", Session),
    ("POST", "/workspaces/{id}/switch", Session),
    ("GET", "/workspaces/{id}/invitations", Session),
    ("POST", "/workspaces/{id}/invitations", Session),
    (
        "DELETE",
        "/workspaces/{id}/invitations/{invitation_id}",
        Session,
    ),
];

/// Codes only a guard answers with: a caller the guard admitted never sees them.
const GUARD_CODES: [&str; 5] = [
    "UNAUTHORIZED",
    "TOKEN_INVALID",
    "TOKEN_EXPIRED",
    "CREDENTIAL_NOT_ADMITTED",
    "REAUTH_REQUIRED",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Credential {
    None,
    Session,
    Stale,
    StepUp,
    ApiKey,
    TwoFactorToken,
    RefreshAsBearer,
    OtherUser,
}

const CREDENTIALS: [Credential; 8] = [
    Credential::None,
    Credential::Session,
    Credential::Stale,
    Credential::StepUp,
    Credential::ApiKey,
    Credential::TwoFactorToken,
    Credential::RefreshAsBearer,
    Credential::OtherUser,
];

struct Server {
    auth: ServerAuth,
    app: Router,
    clock: ManualClock,
    /// The 2FA user's identifier and TOTP secret.
    two_factor_user: (String, String),
}

/// A server with every capability on, the cookies, a registration key and a test clock;
/// the app adds one route that admits API keys (`require_scopes`).
async fn server() -> Server {
    let db = Database::connect("sqlite::memory:").await.unwrap();
    let clock = ManualClock::starting_now();
    let sso = Sso::new("http://127.0.0.1:1/auth").provider(SsoProvider::new(
        "oidc",
        "https://idp.example.com",
        "client",
    ));
    let config = config(db.clone())
        .clock(clock.clone())
        .cookie(Some(CookieConfig::default()))
        .access_cookie(Some(AccessCookieConfig::default()))
        .api_key(REGISTRATION_KEY)
        .serve_openapi(true)
        .with(Audit::new(db))
        .with(Roles::default())
        .with(Devices::default())
        .with(ApiKeys::default().scopes([SCOPE]))
        .with(TwoFactor::new(Sealer::new("k1", [7; 32]).unwrap()))
        .with(Lifecycle::new(LogMailer).magic_link(true))
        .with(Workspaces::default())
        .with(sso);
    let auth = create_auth(config).unwrap();
    auth.migrate().await.unwrap();
    let app = Router::new()
        .nest("/auth", auth.router())
        .route(
            "/api/orders",
            get(|| async { "orders" }).route_layer(auth.require_scopes([SCOPE])),
        )
        .layer(auth.error_handler());
    let mut server = Server {
        auth,
        app,
        clock,
        two_factor_user: (String::new(), String::new()),
    };
    server.two_factor_user = server.enrol_two_factor_user().await;
    server
}

/// One victim's credentials and resources, made afresh for each trial.
struct Fixture {
    victim: String,
    fresh: String,
    stale: String,
    step_up: String,
    api_key: String,
    refresh: String,
    two_factor_token: String,
    other: String,
    /// Resources of the victim that paths name.
    target_session: String,
    key_id: String,
    workspace: String,
    invitation: String,
}

impl Server {
    async fn post(&self, path: &str, headers: &[(&str, &str)], body: Value) -> Reply {
        call(&self.app, Method::POST, path, headers, Some(body)).await
    }

    async fn login(&self, id: &str) -> Reply {
        let r = self
            .post(
                "/auth/login",
                &[],
                json!({"identifier": id, "password": PW}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "login: {}", r.body);
        r
    }

    async fn register(&self, id: &str, roles: &[&str]) {
        let r = self
            .post(
                "/auth/register",
                &[("x-api-key", REGISTRATION_KEY)],
                json!({"identifier": id, "password": PW, "roles": roles}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "register: {}", r.body);
    }

    fn code(&self, secret: &str) -> String {
        let secs = u64::try_from(self.clock.now_ms() / 1000).unwrap();
        totp_code(secret, secs).unwrap()
    }

    async fn enrol_two_factor_user(&self) -> (String, String) {
        let id = format!("{}@matrix.test", unique("tf"));
        self.register(&id, &["user"]).await;
        let access = token(&self.login(&id).await);
        let auth = bearer(&access);
        let r = self
            .post(
                "/auth/2fa/totp/enroll",
                &[("authorization", &auth)],
                json!({"password": PW, "name": "phone"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "enroll: {}", r.body);
        let device = r.body["data"]["deviceId"].as_str().unwrap().to_owned();
        let secret = r.body["data"]["secret"].as_str().unwrap().to_owned();
        let r = self
            .post(
                "/auth/2fa/totp/confirm",
                &[("authorization", &auth)],
                json!({"deviceId": device, "code": self.code(&secret)}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "confirm: {}", r.body);
        (id, secret)
    }

    async fn fixture(&self) -> Fixture {
        let victim_id = format!("{}@matrix.test", unique("v"));
        self.register(&victim_id, &["admin", "user"]).await;
        let stale = token(&self.login(&victim_id).await);
        let before_step_up = token(&self.login(&victim_id).await);
        let target = token(&self.login(&victim_id).await);
        // Past the re-authentication window (default 10 minutes) for the three above.
        self.clock.advance(Duration::from_secs(11 * 60));
        let r = self.login(&victim_id).await;
        let fresh = token(&r);
        let refresh = r.cookie("refresh_token").expect("refresh cookie");
        let r = self
            .post(
                "/auth/reauthenticate",
                &[("authorization", &bearer(&before_step_up))],
                json!({"password": PW}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "reauthenticate: {}", r.body);
        let step_up = token(&r);
        let as_fresh = bearer(&fresh);
        let r = self
            .post(
                "/auth/api-keys",
                &[("authorization", &as_fresh)],
                json!({"name": "every scope", "scopes": [SCOPE]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "api key: {}", r.body);
        let api_key = r.body["data"]["key"].as_str().unwrap().to_owned();
        let key_id = r.body["data"]["apiKey"]["id"].as_str().unwrap().to_owned();
        let r = self
            .post(
                "/auth/workspaces",
                &[("authorization", &as_fresh)],
                json!({"name": "Victim's", "slug": unique("ws").replace('_', "-")}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "workspace: {}", r.body);
        let workspace = r.body["data"]["workspace"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let r = self
            .post(
                &format!("/auth/workspaces/{workspace}/invitations"),
                &[("authorization", &as_fresh)],
                json!({"address": format!("{}@matrix.test", unique("inv"))}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "invitation: {}", r.body);
        let invitation = r.body["data"]["invitation"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let other_id = format!("{}@matrix.test", unique("o"));
        self.register(&other_id, &["user"]).await;
        let other = token(&self.login(&other_id).await);
        let r = self.login(&self.two_factor_user.0).await;
        assert_eq!(r.body["data"]["twoFactorRequired"], true, "{}", r.body);
        let two_factor_token = r.body["data"]["twoFactorToken"]
            .as_str()
            .unwrap()
            .to_owned();
        let claims = |t: &str| self.auth.verify_access_token(t).unwrap();
        Fixture {
            victim: claims(&fresh).sub,
            target_session: claims(&target).sid,
            fresh,
            stale,
            step_up,
            api_key,
            refresh,
            two_factor_token,
            other,
            key_id,
            workspace,
            invitation,
        }
    }

    /// `method path` as `credential` (a JSON body `{}` unless `GET`).
    async fn try_as(&self, f: &Fixture, credential: Credential, method: &str, path: &str) -> Reply {
        let token = match credential {
            Credential::None => None,
            Credential::Session => Some(bearer(&f.fresh)),
            Credential::Stale => Some(bearer(&f.stale)),
            Credential::StepUp => Some(bearer(&f.step_up)),
            Credential::ApiKey => Some(bearer(&f.api_key)),
            Credential::TwoFactorToken => Some(bearer(&f.two_factor_token)),
            Credential::RefreshAsBearer => Some(bearer(&f.refresh)),
            Credential::OtherUser => Some(bearer(&f.other)),
        };
        let headers: Vec<(&str, &str)> = token
            .as_deref()
            .map(|t| vec![("authorization", t)])
            .unwrap_or_default();
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let body = (m != Method::GET).then(|| json!({}));
        call(
            &self.app,
            m,
            &format!("/auth{}", concrete(path, f)),
            &headers,
            body,
        )
        .await
    }

    /// The victim's credentials and resources still stand (after another user's call).
    async fn victim_unharmed(&self, f: &Fixture, what: &str) {
        let as_fresh = [("authorization", bearer(&f.fresh))];
        let headers: Vec<(&str, &str)> = as_fresh.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = call(&self.app, Method::GET, "/auth/me", &headers, None).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{what}: victim's session: {}",
            r.body
        );
        let path = format!("/auth/workspaces/{}", f.workspace);
        let r = call(&self.app, Method::GET, &path, &headers, None).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{what}: victim's workspace: {}",
            r.body
        );
        let key = [("authorization", bearer(&f.api_key))];
        let headers: Vec<(&str, &str)> = key.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = call(&self.app, Method::GET, "/api/orders", &headers, None).await;
        assert_eq!(r.status, StatusCode::OK, "{what}: victim's key: {}", r.body);
        let sessions = self
            .auth
            .database()
            .list_user_sessions(&f.victim)
            .await
            .unwrap();
        assert!(
            sessions.iter().any(|s| s.family_id == f.target_session),
            "{what}: victim's other session"
        );
    }
}

fn token(r: &Reply) -> String {
    r.body["data"]["accessToken"]
        .as_str()
        .unwrap_or_else(|| panic!("no access token: {}", r.body))
        .to_owned()
}

/// `true` when `path` names a resource of the victim (a user id, key, session,
/// workspace or invitation).
fn names_victim_resource(path: &str) -> bool {
    ["{user_id}", "{invitation_id}"]
        .iter()
        .any(|p| path.contains(p))
        || (path.contains("{id}") && !path.starts_with("/2fa/"))
}

/// `path` with the victim's ids in its parameters.
fn concrete(path: &str, f: &Fixture) -> String {
    let id = if path.contains("api-keys") {
        f.key_id.as_str()
    } else if path.contains("sessions") {
        f.target_session.as_str()
    } else if path.starts_with("/workspaces") {
        f.workspace.as_str()
    } else {
        // A well-formed id of nothing (a 2FA device).
        "01890000-0000-7000-8000-000000000000"
    };
    path.split('/')
        .map(|s| match s {
            "{user_id}" => f.victim.as_str(),
            "{role}" => "user",
            "{provider}" => "oidc",
            "{invitation_id}" => f.invitation.as_str(),
            "{id}" => id,
            other => other,
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn documented_operations(auth: &ServerAuth) -> BTreeSet<(String, String)> {
    let doc = serde_json::to_value(auth.openapi()).unwrap();
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

#[track_caller]
fn passes_guard(r: &Reply, what: &str) {
    assert!(
        !GUARD_CODES.contains(&r.code()),
        "{what}: refused by a guard: {} {}",
        r.status,
        r.body
    );
}

#[track_caller]
fn refused(r: &Reply, status: StatusCode, code: &str, what: &str) {
    assert_eq!((r.status, r.code()), (status, code), "{what}: {}", r.body);
}

#[tokio::test]
async fn every_route_admits_exactly_its_declared_credential_kinds() {
    let server = server().await;
    let documented = documented_operations(&server.auth);
    let declared: BTreeSet<(String, String)> = POLICIES
        .iter()
        .map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let undeclared: Vec<_> = documented.difference(&declared).collect();
    assert!(
        undeclared.is_empty(),
        "routes without a declared credential policy: {undeclared:?}"
    );
    let gone: Vec<_> = declared.difference(&documented).collect();
    assert!(gone.is_empty(), "policies of routes not served: {gone:?}");

    for &(method, path, policy) in POLICIES {
        // Refusals change nothing: one fixture serves every credential that must be
        // refused; each credential that may pass gets a fixture of its own.
        let shared = server.fixture().await;
        let baseline = server.try_as(&shared, Credential::None, method, path).await;
        for credential in CREDENTIALS {
            let what = format!("{method} {path} as {credential:?} ({policy:?})");
            let may_pass = matches!(
                credential,
                Credential::Session
                    | Credential::Stale
                    | Credential::StepUp
                    | Credential::OtherUser
            );
            let own;
            let f = if may_pass {
                own = server.fixture().await;
                &own
            } else {
                &shared
            };
            let r = server.try_as(f, credential, method, path).await;
            // No 5xx, but the one the handler answers when the (deliberately unreachable)
            // identity provider is reached: the guard let the caller through.
            let provider_down =
                r.status == StatusCode::BAD_GATEWAY && r.code() == "SSO_PROVIDER_ERROR";
            assert!(
                !r.status.is_server_error() || provider_down,
                "{what}: {} {}",
                r.status,
                r.body
            );
            if policy == Public {
                // A public route grants no credential anything.
                assert_eq!(
                    (r.status, r.code()),
                    (baseline.status, baseline.code()),
                    "{what}: answered unlike an anonymous call: {}",
                    r.body
                );
                continue;
            }
            match credential {
                Credential::None => refused(&r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", &what),
                Credential::ApiKey => {
                    refused(&r, StatusCode::FORBIDDEN, "CREDENTIAL_NOT_ADMITTED", &what)
                }
                Credential::TwoFactorToken | Credential::RefreshAsBearer => {
                    refused(&r, StatusCode::UNAUTHORIZED, "TOKEN_INVALID", &what)
                }
                Credential::Stale if policy == Sensitive => {
                    refused(&r, StatusCode::FORBIDDEN, "REAUTH_REQUIRED", &what)
                }
                Credential::Session | Credential::Stale | Credential::StepUp => {
                    passes_guard(&r, &what)
                }
                Credential::OtherUser if policy == Admin => {
                    refused(&r, StatusCode::FORBIDDEN, "FORBIDDEN", &what);
                    server.victim_unharmed(f, &what).await;
                }
                Credential::OtherUser if names_victim_resource(path) => {
                    // 403/404, or 400 for the empty body before anything is read.
                    assert!(
                        r.status.is_client_error(),
                        "{what}: another user reached the victim's resource: {} {}",
                        r.status,
                        r.body
                    );
                    server.victim_unharmed(f, &what).await;
                }
                Credential::OtherUser => passes_guard(&r, &what),
            }
        }
    }
}
