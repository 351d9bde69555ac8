//! Interoperability: the whole browser flow against an OpenID provider sentri did not
//! write, `oidc-provider-mock` from PyPI, started by `.ci/run` (`SENTRI_TEST_OIDC_ISSUER`;
//! skipped loudly without it, failing under `SENTRI_TEST_REQUIRE_SERVICES=1`).

use axum::http::StatusCode;
use sentri::capability::sso::Sso;

use super::{BASE, begin_at, build, callback, provider, signed_in_user};
use crate::support::common::{service_url, unique};
use crate::support::db::databases;

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

#[tokio::test]
async fn full_flow_against_oidc_provider_mock() {
    let Some(issuer) = service_url("SENTRI_TEST_OIDC_ISSUER", "sso::interop") else {
        return;
    };
    let issuer = issuer.trim_end_matches('/').to_owned();
    let sub = unique("interop");
    let email = format!("{sub}@example.com");
    let res = reqwest::Client::new()
        .put(format!("{issuer}/users/{sub}"))
        .json(&serde_json::json!({"email": email, "email_verified": true}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    for t in databases("sso::interop").await {
        let sso = Sso::new(BASE)
            .provider(provider(&issuer, "mock"))
            .cookie_secure(false);
        let (app, _auth) = build(&t, sso).await;
        let mut ids = Vec::new();
        for _ in 0..2 {
            let (cookie, url) = begin_at(&app, "mock").await;
            let path = consent(&url, &sub).await;
            let r = callback(&app, &path, Some(&cookie)).await;
            ids.push(signed_in_user(&app, &r).await);
        }
        assert_eq!(
            ids[0], ids[1],
            "{}: the second sign-in finds the link",
            t.name
        );
        assert_eq!(t.db.count_users().await.unwrap(), 1);
        // A replayed callback is refused.
        let (cookie, url) = begin_at(&app, "mock").await;
        let path = consent(&url, &sub).await;
        assert_eq!(
            callback(&app, &path, Some(&cookie)).await.status,
            StatusCode::SEE_OTHER
        );
        let again = callback(&app, &path, Some(&cookie)).await;
        assert_eq!(again.status, StatusCode::BAD_REQUEST, "{:?}", again.body);
        t.cleanup().await;
    }
}
