//! Single sign-on over HTTP on the three databases, against the in-process provider in
//! `idp.rs`: sign-in, linking rules, link/unlink, the login steps, the attacks of the
//! issue, and races (one callback per flow, one account per identity, never unlinking
//! the last way to sign in).

mod idp;
mod interop;
#[cfg(feature = "api-keys")]
mod verified;

use std::sync::Arc;

use axum::Router;
use axum::http::{Method, StatusCode};
use sentri::capability::sso::{Sso, SsoProvider};
use sentri::capability::{Capability, Core, FirstFactor, LoginStep, StepOutcome};
use sentri::token::Algorithm;
use sentri::{AuthUser, ServerAuth, SessionMeta, create_auth};
use serde_json::{Value, json};

use crate::support::db::{TestDb, databases};
use crate::support::http::{Reply, app, bearer, call, expect, login, profile_with, register};
use crate::support::services::config;
use idp::{CLIENT_ID, CLIENT_SECRET, Idp, Mode, TokenHook};

const BASE: &str = "http://localhost/auth";
const PW: &str = "correct horse battery";

pub(crate) fn provider(issuer: &str, name: &str) -> SsoProvider {
    SsoProvider::new(name, issuer, CLIENT_ID)
        .client_secret(CLIENT_SECRET)
        .allow_insecure_http(true)
}

fn sso(issuer: &str) -> Sso {
    Sso::new(BASE)
        .provider(provider(issuer, "test"))
        .provider(provider(issuer, "trusted").link_verified_email(true))
        .provider(provider(issuer, "corp").allowed_domains(["corp.example"]))
        .provider(provider(issuer, "closed").create_users(false))
        .allow_return_to("https://app.example")
        .cookie_secure(false)
}

async fn build(t: &TestDb, sso: Sso) -> (Router, ServerAuth) {
    let auth = create_auth(config(t.db.clone()).with(sso)).unwrap();
    auth.migrate().await.unwrap();
    (app(&auth), auth)
}

/// `GET /auth/sso/{provider}/start?returnTo=…`.
async fn start(app: &Router, provider: &str, return_to: &str) -> Reply {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("returnTo", return_to)
        .finish();
    call(
        app,
        Method::GET,
        &format!("/auth/sso/{provider}/start?{q}"),
        &[],
        None,
    )
    .await
}

fn location(r: &Reply) -> String {
    r.headers["location"].to_str().unwrap().to_owned()
}

/// The browser at the provider: follows the authorization URL, returns the callback
/// path on the app (the provider redirects to `BASE/sso/{p}/callback?code&state`).
async fn authorize(url: &str) -> String {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = client.get(url).send().await.unwrap();
    assert!(res.status().is_redirection(), "{}", res.status());
    let loc = res.headers()["location"].to_str().unwrap().to_owned();
    loc.strip_prefix("http://localhost").unwrap().to_owned()
}

async fn callback(app: &Router, path: &str, cookie: Option<&str>) -> Reply {
    let c = cookie.map(|c| format!("sentri_sso={c}"));
    let headers: Vec<(&str, &str)> = c.iter().map(|c| ("cookie", c.as_str())).collect();
    call(app, Method::GET, path, &headers, None).await
}

/// A started sign-in: (binding cookie, the provider's authorization URL).
async fn begin_at(app: &Router, provider: &str) -> (String, String) {
    let r = start(app, provider, "/app").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{:?}", r.body);
    (
        r.cookie("sentri_sso").expect("binding cookie"),
        location(&r),
    )
}

/// A started flow: (binding cookie, callback path).
async fn begin(app: &Router, provider: &str, return_to: &str) -> (String, String) {
    let r = start(app, provider, return_to).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{:?}", r.body);
    let cookie = r.cookie("sentri_sso").expect("binding cookie");
    let path = authorize(&location(&r)).await;
    (cookie, path)
}

/// A whole browser sign-in of this identity through `provider`; the callback's answer.
async fn sign_in(
    app: &Router,
    idp: &Idp,
    provider: &str,
    sub: &str,
    email: &str,
    verified: bool,
) -> Reply {
    idp.next_user(sub, email, verified);
    let (cookie, path) = begin(app, provider, "/app").await;
    callback(app, &path, Some(&cookie)).await
}

/// The user id of a successful sign-in (303 to `/app`, session cookies set).
async fn signed_in_user(app: &Router, r: &Reply) -> String {
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{:?}", r.body);
    assert_eq!(location(r), "/app");
    assert!(r.cookie("refresh_token").is_some_and(|c| !c.is_empty()));
    assert_eq!(
        r.cookie("sentri_sso").as_deref(),
        Some(""),
        "binding cleared"
    );
    let access = r.cookie("access_token").expect("access cookie");
    let me = profile_with(app, &access).await;
    assert_eq!(me.status, StatusCode::OK, "{:?}", me.body);
    me.body["user"]["id"].as_str().unwrap().to_owned()
}

fn no_session(r: &Reply) {
    assert!(
        r.cookie("refresh_token").is_none(),
        "no session: {:?}",
        r.cookies()
    );
}

async fn links(app: &Router, token: &str) -> Vec<String> {
    let r = call(
        app,
        Method::GET,
        "/auth/sso/links",
        &[("authorization", &bearer(token))],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body["data"]["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["provider"].as_str().unwrap().to_owned())
        .collect()
}

async fn unlink(app: &Router, token: &str, provider: &str) -> Reply {
    let path = format!("/auth/sso/links/{provider}");
    call(
        app,
        Method::DELETE,
        &path,
        &[("authorization", &bearer(token))],
        None,
    )
    .await
}

async fn access_of(app: &Router, id: &str) -> String {
    let r = login(app, id, PW).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body["data"]["accessToken"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn first_sign_in_creates_the_account_and_the_next_finds_the_link() {
    let idp = Idp::start(Algorithm::ES256).await;
    for t in databases("sso::first").await {
        let (app, _auth) = build(&t, sso(&idp.issuer)).await;
        let r = sign_in(&app, &idp, "test", "sub-1", "Ann@Example.com", true).await;
        let ann = signed_in_user(&app, &r).await;
        assert_eq!(t.db.count_users().await.unwrap(), 1, "{}", t.name);
        // A second sign-in (even with another e-mail now) finds the link.
        let r = sign_in(&app, &idp, "test", "sub-1", "other@example.com", true).await;
        assert_eq!(signed_in_user(&app, &r).await, ann, "{}", t.name);
        assert_eq!(t.db.count_users().await.unwrap(), 1, "{}", t.name);
        // The account has no password: password login fails like any wrong password.
        let r = login(&app, "ann@example.com", PW).await;
        expect(
            &r,
            StatusCode::UNAUTHORIZED,
            "INVALID_CREDENTIALS",
            "no password",
        );
        let access = sign_in(&app, &idp, "test", "sub-1", "x@example.com", true)
            .await
            .cookie("access_token")
            .unwrap();
        assert_eq!(links(&app, &access).await, ["test"]);
        // Its only way to sign in cannot be unlinked.
        let r = unlink(&app, &access, "test").await;
        expect(
            &r,
            StatusCode::CONFLICT,
            "SSO_LAST_SIGN_IN_METHOD",
            "last link",
        );
        expect(
            &unlink(&app, &access, "corp").await,
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "not linked",
        );
        assert_eq!(links(&app, &access).await, ["test"]);
        t.cleanup().await;
    }
}

#[tokio::test]
async fn verified_email_links_only_when_allowed_and_unverified_never() {
    let idp = Idp::start(Algorithm::RS256).await;
    for t in databases("sso::email").await {
        let (app, _auth) = build(&t, sso(&idp.issuer)).await;
        assert_eq!(
            register(&app, "alice@example.com", PW).await.status,
            StatusCode::CREATED
        );
        let alice = access_of(&app, "alice@example.com").await;
        // Linking by e-mail off: the existing account is not taken over.
        let r = sign_in(&app, &idp, "test", "a-1", "alice@example.com", true).await;
        expect(&r, StatusCode::CONFLICT, "SSO_LINK_CONFLICT", "linking off");
        no_session(&r);
        // Linking on, but the e-mail is not verified: never links (nor creates).
        let r = sign_in(&app, &idp, "trusted", "a-2", "alice@example.com", false).await;
        expect(&r, StatusCode::FORBIDDEN, "SSO_NOT_ALLOWED", "unverified");
        no_session(&r);
        assert_eq!(t.db.count_users().await.unwrap(), 1);
        assert!(links(&app, &alice).await.is_empty(), "{}", t.name);
        // Linking on and verified, but the account's own address is not: refused,
        // never landing in an account whose address nobody proved.
        let r = sign_in(&app, &idp, "trusted", "a-2", "ALICE@example.com", true).await;
        expect(
            &r,
            StatusCode::CONFLICT,
            "SSO_LINK_CONFLICT",
            "unverified account",
        );
        no_session(&r);
        assert!(links(&app, &alice).await.is_empty(), "{}", t.name);
        // Once the account's address is verified: the existing account.
        let user =
            t.db.find_user_by_identifier("alice@example.com")
                .await
                .unwrap()
                .unwrap();
        t.db.set_user_email(&user.id, "alice@example.com", Some(1))
            .await
            .unwrap();
        let r = sign_in(&app, &idp, "trusted", "a-2", "ALICE@example.com", true).await;
        let id = signed_in_user(&app, &r).await;
        let me = profile_with(&app, &alice).await;
        assert_eq!(me.body["user"]["id"].as_str(), Some(id.as_str()));
        assert_eq!(links(&app, &alice).await, ["trusted"]);
        assert_eq!(t.db.count_users().await.unwrap(), 1);
        // The password still works, and now the account may drop the link.
        let alice = access_of(&app, "alice@example.com").await;
        assert_eq!(unlink(&app, &alice, "trusted").await.status, StatusCode::OK);
        assert!(links(&app, &alice).await.is_empty());
        t.cleanup().await;
    }
}

#[tokio::test]
async fn domain_allowlist_and_sign_up_off() {
    let idp = Idp::start(Algorithm::ES256).await;
    for t in databases("sso::domains").await {
        let (app, _auth) = build(&t, sso(&idp.issuer)).await;
        for (email, verified) in [
            ("x@other.example", true),
            ("x@corp.example", false),
            ("x@corp.example.evil", true),
        ] {
            let r = sign_in(&app, &idp, "corp", "c-1", email, verified).await;
            expect(&r, StatusCode::FORBIDDEN, "SSO_NOT_ALLOWED", email);
            no_session(&r);
        }
        let r = sign_in(&app, &idp, "corp", "c-1", "y@Corp.Example", true).await;
        signed_in_user(&app, &r).await;
        let r = sign_in(&app, &idp, "closed", "c-2", "z@example.com", true).await;
        expect(&r, StatusCode::FORBIDDEN, "SSO_NOT_ALLOWED", "sign-up off");
        assert_eq!(t.db.count_users().await.unwrap(), 1, "{}", t.name);
        t.cleanup().await;
    }
}

/// `POST /auth/sso/{provider}/link` as `token`: the browser cookie and callback path.
async fn begin_link(app: &Router, token: &str, provider: &str) -> (String, String) {
    let path = format!("/auth/sso/{provider}/link?returnTo=%2Fsettings");
    let r = call(
        app,
        Method::POST,
        &path,
        &[("authorization", &bearer(token))],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let cookie = r.cookie("sentri_sso").expect("binding cookie");
    let url = r.body["data"]["url"].as_str().unwrap().to_owned();
    (cookie, authorize(&url).await)
}

#[tokio::test]
async fn link_and_unlink() {
    let idp = Idp::start(Algorithm::ES256).await;
    for t in databases("sso::link").await {
        let (app, _auth) = build(&t, sso(&idp.issuer)).await;
        register(&app, "bob@example.com", PW).await;
        register(&app, "carol@example.com", PW).await;
        let bob = access_of(&app, "bob@example.com").await;
        let carol = access_of(&app, "carol@example.com").await;
        let r = call(&app, Method::POST, "/auth/sso/test/link", &[], None).await;
        expect(
            &r,
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "link needs a session",
        );

        idp.next_user("b-1", "bob@elsewhere.example", false);
        let (cookie, path) = begin_link(&app, &bob, "test").await;
        let r = callback(&app, &path, Some(&cookie)).await;
        assert_eq!(
            (r.status, location(&r).as_str()),
            (StatusCode::SEE_OTHER, "/settings")
        );
        no_session(&r);
        assert_eq!(links(&app, &bob).await, ["test"]);
        // Signing in with that identity is Bob.
        let r = sign_in(&app, &idp, "test", "b-1", "whatever@example.com", false).await;
        let id = signed_in_user(&app, &r).await;
        let me = profile_with(&app, &bob).await;
        assert_eq!(me.body["user"]["id"].as_str(), Some(id.as_str()));
        // Carol cannot link Bob's identity.
        idp.next_user("b-1", "bob@elsewhere.example", true);
        let (cookie, path) = begin_link(&app, &carol, "test").await;
        let r = callback(&app, &path, Some(&cookie)).await;
        expect(
            &r,
            StatusCode::CONFLICT,
            "SSO_LINK_CONFLICT",
            "linked elsewhere",
        );
        assert!(links(&app, &carol).await.is_empty());
        // Bob has a password: the link may go.
        let r = unlink(&app, &bob, "test").await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert!(links(&app, &bob).await.is_empty());
        t.cleanup().await;
    }
}

/// Invariant: a link flow in flight when the account's credentials end (here
/// logout-all by the owner; a reset and a password change take the same path) cannot
/// complete: an intruder's session cannot attach its identity after the recovery.
#[tokio::test]
async fn a_link_flow_in_flight_dies_with_the_recovery() {
    let idp = Idp::start(Algorithm::ES256).await;
    for t in databases("sso::recovery").await {
        let (app, _auth) = build(&t, sso(&idp.issuer)).await;
        register(&app, "dora@example.com", PW).await;
        let intruder = access_of(&app, "dora@example.com").await;
        let owner = access_of(&app, "dora@example.com").await;
        idp.next_user("intruder-1", "mallory@elsewhere.example", false);
        let (cookie, path) = begin_link(&app, &intruder, "test").await;
        let r = call(
            &app,
            Method::POST,
            "/auth/logout-all",
            &[("authorization", &bearer(&owner))],
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}: {:?}", t.name, r.body);
        let r = callback(&app, &path, Some(&cookie)).await;
        expect(&r, StatusCode::BAD_REQUEST, "SSO_STATE_INVALID", t.name);
        let owner = access_of(&app, "dora@example.com").await;
        assert!(links(&app, &owner).await.is_empty(), "{}", t.name);
        t.cleanup().await;
    }
}

/// A login step that demands a second factor for external sign-ins.
struct SecondFactor;

impl LoginStep for SecondFactor {
    fn after_first_factor<'a>(
        &'a self,
        _core: &'a Core,
        _user: &'a AuthUser,
        _meta: &'a SessionMeta,
        factor: FirstFactor,
    ) -> sentri::core::BoxFuture<'a, sentri::Result<StepOutcome>> {
        Box::pin(async move {
            Ok(if factor == FirstFactor::External {
                StepOutcome::Halt(sentri::SentriError::custom(
                    "SECOND_FACTOR_REQUIRED",
                    "Second factor required",
                    StatusCode::UNAUTHORIZED,
                ))
            } else {
                StepOutcome::Continue
            })
        })
    }
}

struct TwoFactor;

impl Capability for TwoFactor {
    fn name(&self) -> &'static str {
        "test-2fa"
    }
    fn login_step(&self) -> Option<Arc<dyn LoginStep>> {
        Some(Arc::new(SecondFactor))
    }
}

#[tokio::test]
async fn login_steps_apply_to_sso() {
    let idp = Idp::start(Algorithm::ES256).await;
    for t in databases("sso::steps").await {
        let auth =
            create_auth(config(t.db.clone()).with(sso(&idp.issuer)).with(TwoFactor)).unwrap();
        auth.migrate().await.unwrap();
        let app = app(&auth);
        let r = sign_in(&app, &idp, "test", "s-1", "s@example.com", true).await;
        expect(
            &r,
            StatusCode::UNAUTHORIZED,
            "SECOND_FACTOR_REQUIRED",
            "step halts",
        );
        no_session(&r);
        t.cleanup().await;
    }
}

fn hook(f: impl Fn(&Idp, Value) -> String + Send + Sync + 'static) -> Option<TokenHook> {
    Some(Arc::new(f))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn attacks_are_refused_with_clear_errors() {
    let idp = Idp::start(Algorithm::ES256).await;
    let stranger = sentri::token::SigningKey::generate(Algorithm::ES256)
        .await
        .unwrap();
    let stranger_pem = stranger.to_pkcs8_pem().unwrap();
    for t in databases("sso::attacks").await {
        let (app, _auth) = build(&t, sso(&idp.issuer)).await;
        // Open redirects.
        for target in [
            "https://evil.example/x",
            "//evil.example",
            "/\\evil.example",
            "https://app.example.evil/x",
            "http://app.example/x",
            "javascript:alert(1)",
            "/ok\r\nSet-Cookie: x=y",
        ] {
            expect(
                &start(&app, "test", target).await,
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                target,
            );
        }
        assert_eq!(
            start(&app, "test", "https://app.example/ok").await.status,
            StatusCode::SEE_OTHER
        );
        expect(
            &start(&app, "nope", "/").await,
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "unknown provider",
        );

        // State: missing, no cookie, another browser's cookie, reused.
        idp.next_user("v-1", "v@example.com", true);
        let (mine, path) = begin(&app, "test", "/app").await;
        let (theirs, _) = begin(&app, "test", "/app").await;
        let no_state = path
            .split('&')
            .filter(|p| !p.starts_with("state="))
            .collect::<Vec<_>>()
            .join("&");
        let state_invalid = |r: &Reply, what: &str| {
            expect(r, StatusCode::BAD_REQUEST, "SSO_STATE_INVALID", what);
            no_session(r);
        };
        let exchanges = idp.token_requests();
        state_invalid(&callback(&app, &no_state, Some(&mine)).await, "no state");
        state_invalid(&callback(&app, &path, None).await, "no cookie");
        state_invalid(&callback(&app, &path, Some(&theirs)).await, "other browser");
        let other_provider = path.replace("/sso/test/", "/sso/corp/");
        state_invalid(
            &callback(&app, &other_provider, Some(&mine)).await,
            "other provider",
        );
        assert_eq!(
            idp.token_requests(),
            exchanges,
            "no code exchanged for a bad state"
        );
        let r = callback(&app, &path, Some(&mine)).await;
        signed_in_user(&app, &r).await;
        state_invalid(&callback(&app, &path, Some(&mine)).await, "reused");

        // Code replay: an old code with a fresh flow's state.
        let (fresh, fresh_path) = begin(&app, "test", "/app").await;
        let old_code = path
            .split(['?', '&'])
            .find(|p| p.starts_with("code="))
            .unwrap();
        let new_code = fresh_path
            .split(['?', '&'])
            .find(|p| p.starts_with("code="))
            .unwrap();
        let replay = fresh_path.replace(new_code, old_code);
        let r = callback(&app, &replay, Some(&fresh)).await;
        expect(&r, StatusCode::UNAUTHORIZED, "SSO_REJECTED", "code replay");
        no_session(&r);

        // The provider refuses the sign-in.
        let (c, p) = begin(&app, "test", "/app").await;
        let state = p
            .split(['?', '&'])
            .find(|x| x.starts_with("state="))
            .unwrap();
        let denied = format!("/auth/sso/test/callback?{state}&error=access_denied");
        let r = callback(&app, &denied, Some(&c)).await;
        expect(
            &r,
            StatusCode::UNAUTHORIZED,
            "SSO_REJECTED",
            "access_denied",
        );

        // ID tokens that must be refused.
        let pem = stranger_pem.clone();
        let jwk = idp.key.public_jwk().unwrap();
        let cases: Vec<(&str, Option<TokenHook>)> = vec![
            (
                "wrong aud",
                hook(|i, mut c| {
                    c["aud"] = json!("someone-else");
                    i.sign(&c)
                }),
            ),
            (
                "aud list without azp",
                hook(|i, mut c| {
                    c["aud"] = json!(["someone-else", CLIENT_ID]);
                    i.sign(&c)
                }),
            ),
            (
                "foreign azp",
                hook(|i, mut c| {
                    c["azp"] = json!("someone-else");
                    i.sign(&c)
                }),
            ),
            (
                "expired",
                hook(|i, mut c| {
                    c["exp"] = json!(now() - 600);
                    c["iat"] = json!(now() - 900);
                    i.sign(&c)
                }),
            ),
            (
                "iat in the future",
                hook(|i, mut c| {
                    c["iat"] = json!(now() + 3600);
                    c["exp"] = json!(now() + 7200);
                    i.sign(&c)
                }),
            ),
            (
                "wrong iss",
                hook(|i, mut c| {
                    c["iss"] = json!("https://evil.example");
                    i.sign(&c)
                }),
            ),
            (
                "nonce mismatch",
                hook(|i, mut c| {
                    c["nonce"] = json!("not-the-nonce");
                    i.sign(&c)
                }),
            ),
            (
                "no nonce",
                hook(|i, mut c| {
                    c.as_object_mut().unwrap().remove("nonce");
                    i.sign(&c)
                }),
            ),
            (
                "alg none",
                hook(|_, c| Idp::unsigned(&json!({"alg": "none", "typ": "JWT"}), &c)),
            ),
            (
                "unknown key",
                hook(move |_, c| {
                    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
                    h.kid = Some("stranger".into());
                    jsonwebtoken::encode(
                        &h,
                        &c,
                        &jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
                    )
                    .unwrap()
                }),
            ),
            (
                "HS256 keyed with the public JWK",
                hook(move |i, c| i.hs256(&c, jwk.to_string().as_bytes())),
            ),
            (
                "HS256 keyed with the client secret",
                hook(|i, c| i.hs256(&c, CLIENT_SECRET.as_bytes())),
            ),
            (
                "signature stripped",
                hook(|i, c| {
                    let t = i.sign(&c);
                    t[..t.rfind('.').unwrap() + 1].to_owned()
                }),
            ),
        ];
        for (what, h) in cases {
            idp.set_hook(h);
            let r = sign_in(&app, &idp, "test", "v-1", "v@example.com", true).await;
            expect(&r, StatusCode::UNAUTHORIZED, "SSO_ID_TOKEN_INVALID", what);
            no_session(&r);
        }
        idp.set_hook(None);

        // The token endpoint down or answering garbage.
        for mode in [Mode::Down, Mode::Garbage] {
            idp.set_token(mode);
            let r = sign_in(&app, &idp, "test", "v-1", "v@example.com", true).await;
            expect(
                &r,
                StatusCode::BAD_GATEWAY,
                "SSO_PROVIDER_ERROR",
                &format!("token {mode:?}"),
            );
            no_session(&r);
        }
        idp.set_token(Mode::Normal);
        signed_in_user(
            &app,
            &sign_in(&app, &idp, "test", "v-1", "v@example.com", true).await,
        )
        .await;
        t.cleanup().await;
    }
}

#[tokio::test]
async fn discovery_down_or_garbage_is_a_clear_502() {
    for mode in [Mode::Down, Mode::Garbage] {
        let idp = Idp::start(Algorithm::ES256).await;
        idp.set_discovery(mode);
        for t in databases("sso::discovery").await {
            let (app, _auth) = build(&t, sso(&idp.issuer)).await;
            let r = start(&app, "test", "/app").await;
            expect(
                &r,
                StatusCode::BAD_GATEWAY,
                "SSO_PROVIDER_ERROR",
                &format!("{mode:?}"),
            );
            assert!(r.cookie("sentri_sso").is_none());
            t.cleanup().await;
        }
    }
}

fn trials() -> usize {
    std::env::var("SENTRI_RACE_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(5, |n: usize| n.clamp(1, 30))
}

#[tokio::test]
async fn races_one_callback_per_flow_one_account_per_identity_never_the_last_link() {
    const N: usize = 8;
    let idp = Idp::start(Algorithm::ES256).await;
    for t in databases("sso::races").await {
        let (app, _auth) = build(&t, sso(&idp.issuer)).await;
        for trial in 0..trials() {
            // One flow, N parallel callbacks: exactly one signs in.
            idp.next_user(
                &format!("r-{trial}"),
                &format!("r{trial}@example.com"),
                true,
            );
            let (cookie, path) = begin(&app, "test", "/app").await;
            let calls = (0..N).map(|_| {
                let (app, path, cookie) = (app.clone(), path.clone(), cookie.clone());
                tokio::spawn(async move { callback(&app, &path, Some(&cookie)).await })
            });
            let replies: Vec<Reply> = futures_util::future::join_all(calls)
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect();
            let ok = replies
                .iter()
                .filter(|r| r.status == StatusCode::SEE_OTHER)
                .count();
            assert_eq!(ok, 1, "{}: one callback per flow", t.name);
            for r in replies.iter().filter(|r| r.status != StatusCode::SEE_OTHER) {
                expect(r, StatusCode::BAD_REQUEST, "SSO_STATE_INVALID", "losers");
            }

            // N first sign-ins of one new identity at once: one account, all signed in.
            let sub = format!("n-{trial}");
            idp.next_user(&sub, &format!("n{trial}@example.com"), true);
            let mut flows = Vec::new();
            for _ in 0..N {
                flows.push(begin(&app, "test", "/app").await);
            }
            let before = t.db.count_users().await.unwrap();
            let calls = flows.into_iter().map(|(cookie, path)| {
                let app = app.clone();
                tokio::spawn(async move { callback(&app, &path, Some(&cookie)).await })
            });
            let replies = futures_util::future::join_all(calls).await;
            let mut ids = std::collections::HashSet::new();
            for r in replies {
                ids.insert(signed_in_user(&app, &r.unwrap()).await);
            }
            assert_eq!(ids.len(), 1, "{}: one account per identity", t.name);
            assert_eq!(t.db.count_users().await.unwrap(), before + 1, "{}", t.name);

            // A passwordless account with two links; both unlinked at once: one stays.
            let access = sign_in(&app, &idp, "test", &sub, "n@example.com", true)
                .await
                .cookie("access_token")
                .unwrap();
            idp.next_user(&format!("m-{trial}"), "m@example.com", true);
            let (cookie, path) = begin_link(&app, &access, "trusted").await;
            assert_eq!(
                callback(&app, &path, Some(&cookie)).await.status,
                StatusCode::SEE_OTHER
            );
            assert_eq!(links(&app, &access).await.len(), 2);
            let (a, b) = tokio::join!(
                unlink(&app, &access, "test"),
                unlink(&app, &access, "trusted")
            );
            let mut statuses = [a.status, b.status];
            statuses.sort();
            assert_eq!(
                statuses,
                [StatusCode::OK, StatusCode::CONFLICT],
                "{}: last link kept",
                t.name
            );
            assert_eq!(links(&app, &access).await.len(), 1, "{}", t.name);
        }
        t.cleanup().await;
    }
}
