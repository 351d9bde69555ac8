//! Workspaces (issue #14): tenant isolation over HTTP on the three databases (a
//! table-driven attack matrix), the last-owner rule under races, invitations once only,
//! removal racing a switch, pagination over 10 000 workspaces, bad input.

mod example;
mod isolation;
#[cfg(feature = "postgres")]
mod rls;
mod rules;
mod verified;

use std::time::Duration;

use axum::Router;
use axum::http::{Method, StatusCode};
use axum::routing::get;
use sentri::capability::workspaces::Workspaces;
use sentri::db::Database;
use sentri::http::CurrentWorkspace;
use sentri::identity::ProvisionUser;
use sentri::{ServerAuth, ServerConfig, create_auth};
use serde_json::json;

use crate::support::http::{Reply, bearer, call, login};
use crate::support::services::config;

pub const PW: &str = "password1";

/// The test configuration with workspaces; a long session cache, so that only the
/// explicit invalidation (never the TTL) can make a change visible at once.
pub fn ws_config(db: Database) -> ServerConfig {
    config(db)
        .with(Workspaces::default())
        .session_cache_ttl(Duration::from_secs(60))
}

/// A migrated server and its app: the example routes plus `GET /api/ws` behind
/// `tenant()` and `GET /api/ws/admin` behind `authorize_in_workspace(["owner", "admin"])`.
pub async fn ws_app(cfg: ServerConfig) -> (ServerAuth, Router) {
    let auth = create_auth(cfg).unwrap();
    auth.migrate().await.unwrap();
    let app = crate::support::http::app(&auth)
        .route(
            "/api/ws",
            get(|ws: CurrentWorkspace| async move {
                axum::Json(json!({ "workspace": ws.id, "roles": ws.roles.to_vec() }))
            })
            .route_layer(auth.tenant()),
        )
        .route(
            "/api/ws/admin",
            get(|ws: CurrentWorkspace| async move { axum::Json(json!({ "workspace": ws.id })) })
                .route_layer(auth.authorize_in_workspace(["owner", "admin"])),
        );
    (auth, app)
}

/// A signed-in user: id, access token, refresh token.
pub struct Member {
    pub id: String,
    pub token: String,
    pub refresh: String,
}

/// The verified address of the account `name` made by [`member`]: the identifier when
/// it is an address, else `name@example.test`.
pub fn address_of(name: &str) -> String {
    if name.contains('@') {
        name.to_owned()
    } else {
        format!("{name}@example.test")
    }
}

/// Provisions `name` with a verified address ([`address_of`]) and signs in.
pub async fn member(auth: &ServerAuth, app: &Router, name: &str) -> Member {
    let mut input = ProvisionUser::new(name, PW).mark_email_verified(true);
    if !name.contains('@') {
        input = input.email(address_of(name));
    }
    let user = auth.provision_user(input).await.unwrap();
    let r = login(app, name, PW).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    Member {
        id: user.id,
        token: r.body["data"]["accessToken"].as_str().unwrap().to_owned(),
        refresh: r.cookie("refresh_token").expect("refresh cookie"),
    }
}

/// `method /auth<path>` as the bearer of `token`.
pub use crate::roles::admin_call as api;

/// Creates a workspace as `owner`; its id.
pub async fn workspace(app: &Router, owner: &Member, name: &str) -> String {
    let r = api(
        app,
        &owner.token,
        Method::POST,
        "/workspaces",
        Some(json!({ "name": name })),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["data"]["roles"], json!(["owner"]));
    r.body["data"]["workspace"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Adds `who` (made by [`member`]) to workspace `ws` with `roles`: `by` adds the member
/// by address (an invitation), `who` signs in and accepts it.
pub async fn add(app: &Router, by: &Member, ws: &str, who: &str, roles: &[&str]) {
    let body = json!({ "identifier": address_of(who), "roles": roles });
    let r = api(
        app,
        &by.token,
        Method::POST,
        &format!("/workspaces/{ws}/members"),
        Some(body),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let token = r.body["data"]["token"]
        .as_str()
        .expect("no mailer: the token");
    let r = login(app, who, PW).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let access = r.body["data"]["accessToken"].as_str().unwrap();
    let r = api(
        app,
        access,
        Method::POST,
        "/workspaces/invitations/accept",
        Some(json!({ "token": token })),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

/// An access token of `m`'s session switched to `ws`.
pub async fn switch(app: &Router, m: &Member, ws: &str) -> String {
    let r = api(
        app,
        &m.token,
        Method::POST,
        &format!("/workspaces/{ws}/switch"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["data"]["workspaceId"], json!(ws));
    r.body["data"]["accessToken"].as_str().unwrap().to_owned()
}

/// `GET path` with a bearer token and an optional workspace header.
pub async fn tenant_get(app: &Router, token: &str, ws: Option<&str>, path: &str) -> Reply {
    let auth = bearer(token);
    let mut headers = vec![("authorization", auth.as_str())];
    if let Some(ws) = ws {
        headers.push(("x-workspace-id", ws));
    }
    call(app, Method::GET, path, &headers, None).await
}
