//! Only verified addresses are trusted, against the real `oidc-provider-mock`
//! (`SENTRI_TEST_OIDC_ISSUER`): a provider's verified e-mail never auto-links to an
//! account whose own address nobody proved (issue #29, item 3a), a signed-in link's
//! sign-in is the first proof of the address (what was set up before it ends), and
//! domains compare through IDNA, never folded into another domain (item 4).

use axum::Router;
use axum::http::{Method, StatusCode};
use sentri::ServerAuth;
use sentri::capability::api_keys::ApiKeys;
use sentri::capability::sso::Sso;
use serde_json::json;

use super::{BASE, callback, location, provider, signed_in_user};
use crate::support::common::{service_url, unique};
use crate::support::db::{TestDb, databases};
use crate::support::http::{
    bearer, call, expect, login, profile, profile_with, refresh_with, register,
};
use crate::support::services::config;

const PW: &str = "correct horse battery";

/// The mock's issuer, with `sub` given these claims; `None`: skipped loudly.
async fn mock_user(test: &str, sub: &str, email: &str) -> Option<String> {
    let issuer = service_url("SENTRI_TEST_OIDC_ISSUER", test)?;
    let issuer = issuer.trim_end_matches('/').to_owned();
    let res = reqwest::Client::new()
        .put(format!("{issuer}/users/{sub}"))
        .json(&json!({"email": email, "email_verified": true}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    Some(issuer)
}

/// Auth with API keys and the mock as provider `mock` (auto-linking by verified e-mail
/// on, accounts created on first sign-in).
async fn build(t: &TestDb, issuer: &str) -> (Router, ServerAuth) {
    let sso = Sso::new(BASE)
        .provider(provider(issuer, "mock").link_verified_email(true))
        .cookie_secure(false);
    let auth =
        sentri::create_auth(config(t.db.clone()).with(ApiKeys::default()).with(sso)).unwrap();
    auth.migrate().await.unwrap();
    (crate::support::http::app(&auth), auth)
}

/// The mock's consent form: signs `sub` in, returns the callback path on the app.
async fn consent(url: &str, sub: &str) -> String {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("sub", sub)
        .finish();
    let res = client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_redirection(), "{}", res.status());
    let loc = res.headers()["location"].to_str().unwrap().to_owned();
    loc.strip_prefix("http://localhost").unwrap().to_owned()
}

/// A whole browser sign-in of `sub` at the mock; the callback's answer. With `link`
/// (an access token), the flow links the identity to that signed-in account instead.
async fn mock_flow(app: &Router, sub: &str, link: Option<&str>) -> crate::support::http::Reply {
    let h = link.map(bearer);
    let headers: Vec<(&str, &str)> = h.iter().map(|h| ("authorization", h.as_str())).collect();
    let path = if link.is_some() {
        "/auth/sso/mock/link?returnTo=%2Fapp"
    } else {
        "/auth/sso/mock/start?returnTo=%2Fapp"
    };
    let method = if link.is_some() {
        Method::POST
    } else {
        Method::GET
    };
    let r = call(app, method, path, &headers, None).await;
    let (cookie, url) = if link.is_some() {
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        (
            r.cookie("sentri_sso").expect("binding cookie"),
            r.body["data"]["url"].as_str().unwrap().to_owned(),
        )
    } else {
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{:?}", r.body);
        (
            r.cookie("sentri_sso").expect("binding cookie"),
            location(&r),
        )
    };
    let path = consent(&url, sub).await;
    callback(app, &path, Some(&cookie)).await
}

/// The attacker's credentials on the account `id`: (access, refresh, API key).
async fn attacker(app: &Router, id: &str) -> (String, String, String) {
    let r = register(app, id, PW).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = login(app, id, PW).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let access = r.body["data"]["accessToken"].as_str().unwrap().to_owned();
    let refresh = r.cookie("refresh_token").unwrap();
    let h = bearer(&access);
    let r = call(
        app,
        Method::POST,
        "/auth/api-keys",
        &[("authorization", &h)],
        Some(json!({"name": "kept"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let key = r.body["data"]["key"].as_str().unwrap().to_owned();
    (access, refresh, key)
}

async fn links(t: &TestDb) -> i64 {
    t.scalar("SELECT COUNT(*) FROM sentri_sso_links").await
}

/// Issue #29, 3(a): the attacker registered the victim's address and never verified
/// it. The victim's first SSO sign-in (verified e-mail, auto-linking on) is refused
/// with 409 `SSO_LINK_CONFLICT`: no session, no link, no account, nothing of the
/// attacker's account changed. Once the address is verified, the same sign-in links.
#[tokio::test]
async fn sso_never_auto_links_to_an_unverified_account() {
    let sub = unique("victim");
    let victim = format!("{sub}@corp.test");
    let Some(issuer) = mock_user("verified::sso_prehijack", &sub, &victim).await else {
        return;
    };
    for t in databases("verified::sso_prehijack").await {
        let n = t.name;
        let (app, _auth) = build(&t, &issuer).await;
        let (access, refresh, key) = attacker(&app, &victim).await;
        let r = mock_flow(&app, &sub, None).await;
        expect(&r, StatusCode::CONFLICT, "SSO_LINK_CONFLICT", n);
        assert!(r.cookie("refresh_token").is_none(), "{n}: no session");
        assert_eq!(links(&t).await, 0, "{n}: no link");
        assert_eq!(t.db.count_users().await.unwrap(), 1, "{n}: no account");
        let user =
            t.db.find_user_by_identifier(&victim)
                .await
                .unwrap()
                .unwrap();
        let state = t.db.user_email(&user.id).await.unwrap().unwrap();
        assert_eq!(state.verified_at, None, "{n}: still unverified");
        // Nothing was proven, so nothing of the account changed.
        assert_eq!(profile_with(&app, &access).await.status, StatusCode::OK);
        assert_eq!(login(&app, &victim, PW).await.status, StatusCode::OK);
        let r = profile(&app, &[("x-sentri-key", &key)]).await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {:?}", r.body);
        assert_eq!(refresh_with(&app, &refresh).await.status, StatusCode::OK);
        // The address verified (by its owner): the provider's verified e-mail links.
        t.db.set_user_email(&user.id, &victim, Some(1))
            .await
            .unwrap();
        let r = mock_flow(&app, &sub, None).await;
        assert_eq!(signed_in_user(&app, &r).await, user.id, "{n}");
        assert_eq!(links(&t).await, 1, "{n}");
        t.cleanup().await;
    }
}

/// The first SSO sign-in that proves the account's address (an identity linked from a
/// signed-in session, whose provider vouches for that address) ends everything set up
/// before it: the password is removed and every earlier session and key is refused;
/// the SSO session opened after it works. A second sign-in changes nothing more.
#[tokio::test]
async fn the_first_sso_sign_in_proving_the_address_ends_earlier_credentials() {
    let sub = unique("owner");
    let address = format!("{sub}@corp.test");
    let Some(issuer) = mock_user("verified::sso_proof", &sub, &address).await else {
        return;
    };
    for t in databases("verified::sso_proof").await {
        let n = t.name;
        let (app, _auth) = build(&t, &issuer).await;
        let (access, refresh, key) = attacker(&app, &address).await;
        let r = mock_flow(&app, &sub, Some(&access)).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{n}: linked {:?}", r.body);
        assert_eq!(links(&t).await, 1, "{n}");
        // Linking is no sign-in: nothing ended yet.
        assert_eq!(profile_with(&app, &access).await.status, StatusCode::OK);
        let r = mock_flow(&app, &sub, None).await;
        let id = signed_in_user(&app, &r).await;
        let fresh = r.cookie("access_token").unwrap();
        let state = t.db.user_email(&id).await.unwrap().unwrap();
        assert_eq!(state.email.as_deref(), Some(address.as_str()), "{n}");
        assert!(state.verified_at.is_some(), "{n}: verified by the sign-in");
        expect(
            &login(&app, &address, PW).await,
            StatusCode::UNAUTHORIZED,
            "INVALID_CREDENTIALS",
            n,
        );
        expect(
            &refresh_with(&app, &refresh).await,
            StatusCode::UNAUTHORIZED,
            "TOKEN_INVALID",
            n,
        );
        let r = profile_with(&app, &access).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{n}: {:?}", r.body);
        let r = profile(&app, &[("x-sentri-key", &key)]).await;
        expect(&r, StatusCode::UNAUTHORIZED, "API_KEY_INVALID", n);
        assert_eq!(profile_with(&app, &fresh).await.status, StatusCode::OK);
        // The next sign-in proves nothing new: the session above lives on.
        let r = mock_flow(&app, &sub, None).await;
        assert_eq!(signed_in_user(&app, &r).await, id, "{n}");
        assert_eq!(profile_with(&app, &fresh).await.status, StatusCode::OK);
        t.cleanup().await;
    }
}

/// Issue #29, item 4: the provider's verified `bob@straße.test` is not the local,
/// verified `bob@strasse.test` (non-transitional IDNA keeps `ß`): no link to it; the
/// provider's address gets an account of its own, in its ASCII form.
#[tokio::test]
async fn sso_addresses_never_fold_across_domains() {
    let sub = unique("bob");
    let local = format!("{sub}@strasse.test");
    let Some(issuer) = mock_user("verified::sso_idna", &sub, &format!("{sub}@straße.test")).await
    else {
        return;
    };
    for t in databases("verified::sso_idna").await {
        let n = t.name;
        let (app, _auth) = build(&t, &issuer).await;
        assert_eq!(register(&app, &local, PW).await.status, StatusCode::CREATED);
        let bob = t.db.find_user_by_identifier(&local).await.unwrap().unwrap();
        t.db.set_user_email(&bob.id, &local, Some(1)).await.unwrap();
        let r = mock_flow(&app, &sub, None).await;
        let id = signed_in_user(&app, &r).await;
        assert_ne!(id, bob.id, "{n}: not the strasse account");
        let created = t.db.find_user_by_id(&id).await.unwrap().unwrap();
        assert_eq!(
            created.identifier,
            format!("{sub}@xn--strae-oqa.test"),
            "{n}"
        );
        let state = t.db.user_email(&id).await.unwrap().unwrap();
        assert!(state.verified_at.is_some(), "{n}: vouched by the provider");
        assert_eq!(
            t.scalar(&format!(
                "SELECT COUNT(*) FROM sentri_sso_links WHERE user_id = '{}'",
                bob.id
            ))
            .await,
            0,
            "{n}"
        );
        assert_eq!(login(&app, &local, PW).await.status, StatusCode::OK, "{n}");
        t.cleanup().await;
    }
}
