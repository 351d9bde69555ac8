//! Roles and permissions (issue #22): the catalogue and its admin routes, assigning,
//! revoking and setting a user's roles, role changes reaching `protect()` at once (here
//! and, through Redis, on another instance), permission guards, the migration of the
//! landed JSON roles, and the rules that keep the catalogue consistent under races.

mod catalogue;
pub mod example;
mod migration;
mod propagation;

use axum::Router;
use axum::http::{Method, StatusCode};
use axum::routing::get;
use sentri::capability::roles::Roles;
use sentri::db::Database;
use sentri::identity::ProvisionUser;
use sentri::{CurrentUser, ServerAuth, ServerConfig, create_auth};
use serde_json::{Value, json};

use crate::support::http::{Reply, bearer, call, login};
use crate::support::services::config;

pub const PW: &str = "password1";

/// The test configuration with the roles capability, `posts:write` granted to
/// `editor` in code and `tickets:read` declared (granted through the routes).
pub fn roles_config(db: Database) -> ServerConfig {
    config(db)
        .with(Roles::default())
        .grant("editor", ["posts:write"])
        .permissions(["tickets:read", "tickets:write"])
}

/// A migrated server (catalogue seeded) and its app: the example routes plus
/// permission-guarded ones.
pub async fn roles_app(cfg: ServerConfig) -> (ServerAuth, Router) {
    let auth = create_auth(cfg).unwrap();
    auth.migrate().await.unwrap();
    let app = crate::support::http::app(&auth)
        .route(
            "/api/posts",
            get(|p: sentri::core::principal::Permissions| async move {
                axum::Json(json!({ "permissions": p.iter().collect::<Vec<_>>() }))
            })
            .route_layer(auth.require_permission("posts:write")),
        )
        .route(
            "/api/any",
            get(|| async { "any" })
                .route_layer(auth.require_any_permission(["posts:write", "tickets:read"])),
        )
        .route(
            "/api/all",
            get(|| async { "all" })
                .route_layer(auth.require_all_permissions(["posts:write", "tickets:read"])),
        )
        .route(
            "/api/editor",
            get(|u: CurrentUser| async move { axum::Json(json!({ "roles": u.user.roles })) })
                .route_layer(auth.authorize(["editor"])),
        );
    (auth, app)
}

/// Provisions `id` with `roles` and signs in: (user id, access token, refresh token).
pub async fn user_with(
    auth: &ServerAuth,
    app: &Router,
    id: &str,
    roles: &[&str],
) -> (String, String, String) {
    let user = auth
        .provision_user(ProvisionUser::new(id, PW).roles(roles.iter().copied()))
        .await
        .unwrap();
    let r = login(app, id, PW).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    (
        user.id,
        r.body["data"]["accessToken"].as_str().unwrap().to_owned(),
        r.cookie("refresh_token").expect("refresh cookie"),
    )
}

/// `method /auth<path>` as the bearer of `token`.
pub async fn admin_call(
    app: &Router,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Reply {
    let auth = bearer(token);
    call(
        app,
        method,
        &format!("/auth{path}"),
        &[("authorization", &auth)],
        body,
    )
    .await
}

/// `GET path` as the bearer of `token`.
pub async fn get_as(app: &Router, token: &str, path: &str) -> Reply {
    call(
        app,
        Method::GET,
        path,
        &[("authorization", &bearer(token))],
        None,
    )
    .await
}

/// The roles in a `{"data": {"user": …}}` answer.
pub fn roles_of(r: &Reply) -> Vec<String> {
    serde_json::from_value(r.body["data"]["user"]["roles"].clone())
        .unwrap_or_else(|_| panic!("no user roles in {:?}", r.body))
}
