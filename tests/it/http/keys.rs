//! The JWKS endpoint: none for HS256, current and previous public keys otherwise, and
//! `create_auth_server`'s generated key on PostgreSQL.

use axum::http::{Method, StatusCode, header};
use sentri::token::{Algorithm, SigningKey};
use sentri::{ServerConfig, create_auth};

use crate::support::db::databases;
use crate::support::http::call;
#[cfg(feature = "postgres")]
use crate::support::http::{app, login, register};
use crate::support::services::config;

#[tokio::test]
async fn keys_endpoint() {
    let t = databases("http::keys").await.remove(0);
    let hs = create_auth(config(t.db.clone())).unwrap();
    let r = call(&hs.router::<()>(), Method::GET, "/keys", &[], None).await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "NOT_FOUND"));

    let current = SigningKey::generate(Algorithm::ES256).await.unwrap();
    let previous = SigningKey::generate(Algorithm::EdDSA).await.unwrap();
    let auth = create_auth(
        ServerConfig::new(t.db.clone(), current.clone(), ["user"])
            .previous_key(previous.clone())
            .salt_rounds(4),
    )
    .unwrap();
    let r = call(&auth.router::<()>(), Method::GET, "/keys", &[], None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CACHE_CONTROL], "public, max-age=300");
    let keys = r.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["kid"], current.kid());
    assert_eq!(keys[1]["kid"], previous.kid());
    assert!(
        keys.iter().all(|k| k.get("d").is_none()),
        "no private members"
    );
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn create_auth_server_on_postgres_serves_generated_keys() {
    let Some(url) =
        crate::support::common::service_url("SENTRI_TEST_POSTGRES_URL", "http::create_auth_server")
    else {
        return;
    };
    let auth = sentri::create_auth_server(sentri::CreateServerOptions {
        db: sentri::PostgresConfig::ConnectionString {
            connection_string: url,
            max: Some(5),
        },
        valid_roles: vec!["user".into(), "admin".into()],
        key: None,
        configure: Some(Box::new(|c: ServerConfig| c.salt_rounds(4))),
    })
    .await
    .unwrap();
    let app = app(&auth);
    let r = call(&app, Method::GET, "/auth/keys", &[], None).await;
    assert_eq!(r.status, StatusCode::OK);
    let keys = r.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(
        (keys[0]["kty"].as_str(), keys[0]["alg"].as_str()),
        (Some("RSA"), Some("RS256"))
    );
    let id = crate::support::common::unique("cas");
    assert_eq!(
        register(&app, &id, "password1").await.status,
        StatusCode::CREATED
    );
    let r = login(&app, &id, "password1").await;
    assert_eq!(r.status, StatusCode::OK);
    let token = r.body["data"]["accessToken"].as_str().unwrap();
    let header = sentri::token::peek_kid(token).unwrap();
    assert_eq!(header, keys[0]["kid"].as_str().unwrap());
    let bad = sentri::create_auth_server(sentri::CreateServerOptions {
        db: sentri::PostgresConfig::ConnectionString {
            connection_string: "mysql://x@y/z".into(),
            max: None,
        },
        valid_roles: vec!["user".into()],
        key: None,
        configure: None,
    })
    .await
    .unwrap_err();
    assert_eq!(bad.code().as_str(), "CONFIGURATION_ERROR");
}
