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

/// The OpenAPI description of [`router`].
#[cfg(feature = "openapi")]
pub(super) fn openapi(doc: &crate::http::openapi::ApiDoc) -> utoipa::openapi::OpenApi {
    use crate::core::error::ErrorCode as E;
    use crate::http::openapi::{Method, any, nullable, object, of, user};
    use utoipa::openapi::schema::{ArrayBuilder, Type};
    let role = || object([("role", any())]);
    let admin = |m, p, s| {
        doc.op(m, p, "roles", s)
            .describe("Needs the admin role or the `roles:manage` permission.")
            .admin(doc)
    };
    doc.paths([
        admin(Method::Get, "/roles", "The role catalogue").ok_data(
            200,
            "Roles",
            object([("roles", ArrayBuilder::new().items(any()).into())]),
        ),
        admin(Method::Post, "/roles", "Create a role")
            .body::<CreateBody>()
            .ok_data(201, "Role created", role())
            .err(&[E::RoleAlreadyExists, E::InvalidPermission, E::InvalidRole]),
        admin(Method::Get, "/roles/{role}", "One role")
            .path_param("role", "The role name")
            .ok_data(200, "Role", role())
            .err(&[E::RoleNotFound]),
        admin(
            Method::Patch,
            "/roles/{role}",
            "Change a role's description or permissions",
        )
        .path_param("role", "The role name")
        .body::<UpdateBody>()
        .ok_data(200, "Role updated", role())
        .err(&[E::RoleNotFound, E::InvalidPermission]),
        admin(Method::Delete, "/roles/{role}", "Delete a role")
            .describe("A role held by users needs `reassign=<role>` or `strip=true`.")
            .path_param("role", "The role name")
            .query(
                "reassign",
                Type::String,
                "Give the holders this role instead",
            )
            .query("strip", Type::Boolean, "Take the role from its holders")
            .ok_data(200, "Role deleted", of(Type::Null))
            .err(&[
                E::RoleNotFound,
                E::RoleInUse,
                E::LastAdmin,
                E::ValidationError,
                E::InvalidRole,
                E::Forbidden,
            ]),
        admin(
            Method::Get,
            "/roles/{role}/users",
            "The users holding a role",
        )
        .path_param("role", "The role name")
        .query(
            "after",
            Type::String,
            "The last user id of the previous page",
        )
        .query("limit", Type::Integer, "Page size, 1 to 200 (default 50)")
        .ok_data(
            200,
            "Role holders",
            object([
                ("users", ArrayBuilder::new().items(any()).into()),
                ("next", nullable(Type::String)),
            ]),
        )
        .err(&[E::RoleNotFound, E::ValidationError]),
        admin(Method::Get, "/users/{user_id}/roles", "A user's roles")
            .path_param("user_id", "The user's id")
            .ok_data(200, "User roles", object([("user", user())]))
            .err(&[E::UserNotFound]),
        admin(Method::Put, "/users/{user_id}/roles", "Set a user's roles")
            .path_param("user_id", "The user's id")
            .body::<RolesBody>()
            .ok_data(200, "Roles set", object([("user", user())]))
            .err(&[E::UserNotFound, E::InvalidRole, E::LastAdmin]),
        admin(
            Method::Delete,
            "/users/{user_id}/roles/{role}",
            "Take a role from a user",
        )
        .path_param("user_id", "The user's id")
        .path_param("role", "The role name")
        .ok_data(200, "Role revoked", object([("user", user())]))
        .err(&[E::UserNotFound, E::InvalidRole, E::LastAdmin]),
    ])
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
