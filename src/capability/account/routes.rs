//! The account routes: parse, call the service (or its override), answer.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use serde::Deserialize;

use super::{Account, AccountService};
use crate::capability::Core;
use crate::core::error::{Result, SentriError};
use crate::http::guard::CurrentUser;
use crate::http::{JsonBody, success};

#[derive(Clone)]
struct State_ {
    account: Account,
    service: AccountService,
    core: Core,
}

pub(super) fn router(account: Account, core: &Core) -> Router {
    let state = State_ {
        account,
        service: AccountService::new(core.clone()),
        core: core.clone(),
    };
    let signed_in = Router::new()
        .route("/change-password", post(change_password))
        .route("/change-identifier", post(change_identifier))
        .route_layer(core.sensitive())
        .route_layer(core.protect());
    let admin = Router::new()
        .route("/users/{user_id}/roles", post(assign_roles))
        .route_layer(core.any_role(vec![core.identity.roles.admin.clone()]));
    signed_in.merge(admin).with_state(state)
}

/// The OpenAPI description of [`router`].
#[cfg(feature = "openapi")]
pub(super) fn openapi(doc: &crate::http::openapi::ApiDoc) -> utoipa::openapi::OpenApi {
    use crate::core::error::ErrorCode as E;
    use crate::http::openapi::{Method, object, of, user};
    use utoipa::openapi::schema::Type;
    doc.paths([
        doc.op(Method::Post, "/change-password", "account", "Change the password")
            .describe("Checks the current password, then ends every credential of the user (sessions, API keys) and clears the cookies.")
            .signed_in(doc)
            .sensitive()
            .body::<ChangePasswordBody>()
            .ok_data(200, "Password changed", of(Type::Null))
            .err(&[E::InvalidCredentials, E::TwoFactorRequired, E::UserNotFound, E::TooManyAttempts]),
        doc.op(Method::Post, "/change-identifier", "account", "Change the identifier")
            .signed_in(doc)
            .sensitive()
            .body::<ChangeIdentifierBody>()
            .ok_data(200, "Identifier changed", object([("user", user())]))
            .err(&[E::InvalidCredentials, E::UserAlreadyExists, E::UserNotFound, E::TooManyAttempts]),
        doc.op(Method::Post, "/users/{user_id}/roles", "account", "Add roles to a user (admin)")
            .admin(doc)
            .path_param("user_id", "The user's id")
            .body::<RolesBody>()
            .ok_data(200, "Roles assigned", object([("user", user())]))
            .err(&[E::UserNotFound, E::InvalidRole]),
    ])
}

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
struct ChangePasswordBody {
    current_password: String,
    new_password: String,
}

async fn change_password(
    State(s): State<State_>,
    user: CurrentUser,
    JsonBody(body): JsonBody<ChangePasswordBody>,
) -> Result<Response> {
    let input = (user.user.id, body.current_password, body.new_password);
    s.account
        .change_password
        .run(s.service, input, |svc, (u, c, n)| async move {
            svc.change_password(&u, &c, &n).await
        })
        .await?;
    let res = success(StatusCode::OK, "Password changed", serde_json::Value::Null);
    Ok(s.core.transport.with_cleared_cookies(res))
}

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
struct ChangeIdentifierBody {
    identifier: String,
    current_password: String,
}

async fn change_identifier(
    State(s): State<State_>,
    user: CurrentUser,
    JsonBody(body): JsonBody<ChangeIdentifierBody>,
) -> Result<Response> {
    let input = (user.user.id, body.identifier, body.current_password);
    let updated = s
        .account
        .change_identifier
        .run(s.service, input, |svc, (u, i, c)| async move {
            svc.change_identifier(&u, &i, &c).await
        })
        .await?;
    Ok(success(
        StatusCode::OK,
        "Identifier changed",
        serde_json::json!({ "user": updated }),
    ))
}

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
struct RolesBody {
    roles: Vec<String>,
}

async fn assign_roles(
    State(s): State<State_>,
    path: std::result::Result<Path<String>, axum::extract::rejection::PathRejection>,
    JsonBody(body): JsonBody<RolesBody>,
) -> Result<Response> {
    let Ok(Path(user_id)) = path else {
        return Err(SentriError::user_not_found());
    };
    let user = s
        .account
        .assign_roles
        .run(s.service, (user_id, body.roles), |svc, (u, r)| async move {
            svc.assign_roles(&u, &r).await
        })
        .await?;
    Ok(success(
        StatusCode::OK,
        "Roles assigned",
        serde_json::json!({ "user": user }),
    ))
}
