//! The roles routes: parse, call the service, answer.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{delete, get};
use serde::Deserialize;

use super::RolesService;
use crate::capability::Core;
use crate::core::error::{Result, SentriError};
use crate::http::guard::GuardLayer;
use crate::http::{JsonBody, success};
use crate::identity::ROLES_MANAGE;

type PathOf<T> = std::result::Result<Path<T>, axum::extract::rejection::PathRejection>;
type QueryOf<T> = std::result::Result<Query<T>, axum::extract::rejection::QueryRejection>;

pub(super) fn router(core: &Core) -> Router {
    let guard = GuardLayer::role_or_permission(
        core.guard.clone(),
        vec![core.identity.roles.admin.clone()],
        ROLES_MANAGE,
    );
    Router::new()
        .route("/roles", get(list).post(create))
        .route("/roles/{role}", get(show).patch(update).delete(remove))
        .route("/roles/{role}/users", get(holders))
        .route("/users/{user_id}/roles", get(user).put(set))
        .route("/users/{user_id}/roles/{role}", delete(revoke))
        .route_layer(guard)
        .with_state(RolesService::new(core.clone()))
}

fn role_path(path: PathOf<String>) -> Result<String> {
    path.map(|Path(p)| p)
        .map_err(|_| SentriError::new(crate::ErrorCode::RoleNotFound, "Role not found"))
}

fn user_path(path: PathOf<String>) -> Result<String> {
    path.map(|Path(p)| p)
        .map_err(|_| SentriError::user_not_found())
}

async fn list(State(s): State<RolesService>) -> Result<Response> {
    let roles: Vec<_> = s.list().await?.iter().map(|r| s.view(r)).collect();
    Ok(success(
        StatusCode::OK,
        "Roles",
        serde_json::json!({ "roles": roles }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    permissions: Vec<String>,
}

async fn create(
    State(s): State<RolesService>,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<Response> {
    let role = s
        .create(&body.name, &body.description, body.permissions)
        .await?;
    Ok(success(
        StatusCode::CREATED,
        "Role created",
        serde_json::json!({ "role": s.view(&role) }),
    ))
}

async fn show(State(s): State<RolesService>, path: PathOf<String>) -> Result<Response> {
    let role = s.get(&role_path(path)?).await?;
    Ok(success(
        StatusCode::OK,
        "Role",
        serde_json::json!({ "role": s.view(&role) }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    description: Option<String>,
    permissions: Option<Vec<String>>,
}

async fn update(
    State(s): State<RolesService>,
    path: PathOf<String>,
    JsonBody(body): JsonBody<UpdateBody>,
) -> Result<Response> {
    let name = role_path(path)?;
    let role = s
        .update(&name, body.description.as_deref(), body.permissions)
        .await?;
    Ok(success(
        StatusCode::OK,
        "Role updated",
        serde_json::json!({ "role": s.view(&role) }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    reassign: Option<String>,
    #[serde(default)]
    strip: bool,
}

async fn remove(
    State(s): State<RolesService>,
    path: PathOf<String>,
    query: QueryOf<DeleteQuery>,
) -> Result<Response> {
    let name = role_path(path)?;
    let Ok(Query(q)) = query else {
        return Err(SentriError::validation(
            "query: reassign=<role> or strip=true",
        ));
    };
    s.delete(&name, q.reassign, q.strip).await?;
    Ok(success(
        StatusCode::OK,
        "Role deleted",
        serde_json::Value::Null,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    after: Option<String>,
    limit: Option<u64>,
}

async fn holders(
    State(s): State<RolesService>,
    path: PathOf<String>,
    query: QueryOf<PageQuery>,
) -> Result<Response> {
    let name = role_path(path)?;
    let Ok(Query(q)) = query else {
        return Err(SentriError::validation(
            "query: after=<user id>&limit=<1..200>",
        ));
    };
    let limit = q.limit.unwrap_or(50).clamp(1, super::service::MAX_PAGE);
    let users = s.holders(&name, q.after.as_deref(), limit).await?;
    let next = (users.len() as u64 == limit)
        .then(|| users.last().map(|u| u.id.clone()))
        .flatten();
    Ok(success(
        StatusCode::OK,
        "Role holders",
        serde_json::json!({ "users": users, "next": next }),
    ))
}

async fn user(State(s): State<RolesService>, path: PathOf<String>) -> Result<Response> {
    let user = s.user(&user_path(path)?).await?;
    Ok(success(
        StatusCode::OK,
        "User roles",
        serde_json::json!({ "user": user }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesBody {
    roles: Vec<String>,
}

async fn set(
    State(s): State<RolesService>,
    path: PathOf<String>,
    JsonBody(body): JsonBody<RolesBody>,
) -> Result<Response> {
    let user = s.set(&user_path(path)?, body.roles).await?;
    Ok(success(
        StatusCode::OK,
        "Roles set",
        serde_json::json!({ "user": user }),
    ))
}

async fn revoke(State(s): State<RolesService>, path: PathOf<(String, String)>) -> Result<Response> {
    let Ok(Path((user_id, role))) = path else {
        return Err(SentriError::user_not_found());
    };
    let user = s.revoke(&user_id, &role).await?;
    Ok(success(
        StatusCode::OK,
        "Role revoked",
        serde_json::json!({ "user": user }),
    ))
}
