//! The API key routes: parse, call the service, answer. Managing keys takes a signed-in
//! session: a key never creates, changes or revokes keys.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::service::{KeyService, KeyUpdate, KeyView, NewKey};
use crate::capability::Core;
use crate::core::error::{ErrorCode, Result, SentriError};
use crate::http::guard::CurrentUser;
use crate::http::{JsonBody, no_store, success};

type Svc = State<Arc<KeyService>>;

pub(super) fn router(svc: Arc<KeyService>, core: &Core) -> Router {
    let own = Router::new()
        .route(
            "/api-keys",
            get(list).merge(post(create).route_layer(core.sensitive())),
        )
        .route("/api-keys/{id}", get(show).patch(update).delete(revoke))
        .route_layer(core.protect());
    let admin = Router::new()
        .route("/users/{user_id}/api-keys", get(list_for))
        .route(
            "/users/{user_id}/api-keys/{id}",
            axum::routing::delete(revoke_for),
        )
        .route_layer(core.any_role(vec![core.identity.roles.admin.clone()]));
    own.merge(admin).with_state(svc)
}

/// The OpenAPI description of [`router`].
#[cfg(feature = "openapi")]
pub(super) fn openapi(doc: &crate::http::openapi::ApiDoc) -> utoipa::openapi::OpenApi {
    use crate::core::error::ErrorCode as E;
    use crate::http::openapi::{Method, any, object, of};
    use utoipa::openapi::schema::{ArrayBuilder, Type};
    let key = || object([("apiKey", any())]);
    let keys = || object([("apiKeys", ArrayBuilder::new().items(any()).into())]);
    let own = |m, p, s| {
        doc.op(m, p, "api-keys", s)
            .describe("Needs a signed-in session: an API key cannot manage keys (403).")
            .signed_in(doc)
    };
    let id = "The key id";
    doc.paths([
        own(Method::Get, "/api-keys", "The caller's API keys").ok_data(200, "API keys", keys()),
        own(Method::Post, "/api-keys", "Create an API key")
            .sensitive()
            .body::<CreateBody>()
            .ok_data(
                201,
                "API key created: the secret `key` is shown once",
                object([("key", of(Type::String)), ("apiKey", any())]),
            )
            .err(&[E::InvalidScope, E::InvalidRole]),
        own(
            Method::Get,
            "/api-keys/{id}",
            "One of the caller's API keys",
        )
        .path_param("id", id)
        .ok_data(200, "API key", key())
        .err(&[E::ApiKeyNotFound]),
        own(
            Method::Patch,
            "/api-keys/{id}",
            "Rename or rescope an API key",
        )
        .path_param("id", id)
        .body::<UpdateBody>()
        .ok_data(200, "API key updated", key())
        .err(&[E::ApiKeyNotFound, E::InvalidScope, E::InvalidRole]),
        own(Method::Delete, "/api-keys/{id}", "Revoke an API key")
            .path_param("id", id)
            .ok_data(200, "API key revoked", key())
            .err(&[E::ApiKeyNotFound]),
        doc.op(
            Method::Get,
            "/users/{user_id}/api-keys",
            "api-keys",
            "A user's API keys (admin)",
        )
        .admin(doc)
        .path_param("user_id", "The user's id")
        .ok_data(200, "API keys", keys())
        .err(&[E::UserNotFound]),
        doc.op(
            Method::Delete,
            "/users/{user_id}/api-keys/{id}",
            "api-keys",
            "Revoke a user's API key (admin)",
        )
        .admin(doc)
        .path_param("user_id", "The user's id")
        .path_param("id", id)
        .ok_data(200, "API key revoked", key())
        .err(&[E::ApiKeyNotFound]),
    ])
}

/// The caller's user id, when it signed in with a session (403 for a key).
fn session_user(user: &CurrentUser) -> Result<&str> {
    if user.credential.is_some() {
        return Err(SentriError::forbidden(
            "API keys cannot manage API keys: sign in",
        ));
    }
    Ok(&user.user.id)
}

fn views(keys: Vec<super::store::KeyRecord>) -> Vec<KeyView> {
    keys.into_iter().map(KeyView::from).collect()
}

fn key_id(path: std::result::Result<Path<String>, PathRejection>) -> Result<String> {
    path.map(|Path(id)| id)
        .map_err(|_| SentriError::new(ErrorCode::ApiKeyNotFound, "API key not found"))
}

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
    expires_in: Option<u64>,
    metadata: Option<serde_json::Value>,
}

async fn create(
    State(svc): Svc,
    user: CurrentUser,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<Response> {
    let owner = session_user(&user)?;
    let input = NewKey {
        name: body.name,
        scopes: body.scopes,
        roles: body.roles,
        expires_in: body.expires_in,
        metadata: body.metadata,
    };
    let created = svc.create(owner, &user.session_id, input).await?;
    let data = json!({ "key": created.secret, "apiKey": KeyView::from(created.key) });
    let mut res = success(
        StatusCode::CREATED,
        "API key created: store the key now, it is not shown again",
        data,
    );
    no_store(res.headers_mut());
    Ok(res)
}

async fn list(State(svc): Svc, user: CurrentUser) -> Result<Response> {
    let keys = svc.list(session_user(&user)?).await?;
    Ok(success(
        StatusCode::OK,
        "API keys",
        json!({ "apiKeys": views(keys) }),
    ))
}

async fn show(
    State(svc): Svc,
    user: CurrentUser,
    path: std::result::Result<Path<String>, PathRejection>,
) -> Result<Response> {
    let key = svc.get(session_user(&user)?, &key_id(path)?).await?;
    Ok(success(
        StatusCode::OK,
        "API key",
        json!({ "apiKey": KeyView::from(key) }),
    ))
}

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateBody {
    name: Option<String>,
    scopes: Option<Vec<String>>,
    roles: Option<Vec<String>>,
}

async fn update(
    State(svc): Svc,
    user: CurrentUser,
    path: std::result::Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<UpdateBody>,
) -> Result<Response> {
    let owner = session_user(&user)?;
    let input = KeyUpdate {
        name: body.name,
        scopes: body.scopes,
        roles: body.roles,
    };
    let key = svc.update(owner, &key_id(path)?, input).await?;
    Ok(success(
        StatusCode::OK,
        "API key updated",
        json!({ "apiKey": KeyView::from(key) }),
    ))
}

async fn revoke(
    State(svc): Svc,
    user: CurrentUser,
    path: std::result::Result<Path<String>, PathRejection>,
) -> Result<Response> {
    let key = svc.revoke(session_user(&user)?, &key_id(path)?).await?;
    Ok(success(
        StatusCode::OK,
        "API key revoked",
        json!({ "apiKey": KeyView::from(key) }),
    ))
}

async fn list_for(
    State(svc): Svc,
    user: CurrentUser,
    path: std::result::Result<Path<String>, PathRejection>,
) -> Result<Response> {
    session_user(&user)?;
    let Ok(Path(owner)) = path else {
        return Err(SentriError::user_not_found());
    };
    let keys = svc.list(&owner).await?;
    Ok(success(
        StatusCode::OK,
        "API keys",
        json!({ "apiKeys": views(keys) }),
    ))
}

async fn revoke_for(
    State(svc): Svc,
    user: CurrentUser,
    path: std::result::Result<Path<(String, String)>, PathRejection>,
) -> Result<Response> {
    session_user(&user)?;
    let Ok(Path((owner, id))) = path else {
        return Err(SentriError::new(
            ErrorCode::ApiKeyNotFound,
            "API key not found",
        ));
    };
    let key = svc.revoke(&owner, &id).await?;
    Ok(success(
        StatusCode::OK,
        "API key revoked",
        json!({ "apiKey": KeyView::from(key) }),
    ))
}
