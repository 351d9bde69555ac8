//! The devices routes: parse, call the session service, answer.

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{delete, get, post};
use serde_json::{Value, json};

use crate::capability::Core;
use crate::core::error::{ErrorCode, Result, SentriError};
use crate::http::guard::CurrentUser;
use crate::http::success;
use crate::session::DeviceSession;

pub(super) fn router(core: &Core) -> Router {
    let signed_in = Router::new()
        .route("/sessions", get(list_own))
        .route(
            "/sessions/revoke-others",
            post(revoke_others).route_layer(core.sensitive()),
        )
        .route("/sessions/{id}", delete(end_own))
        .route_layer(core.protect());
    let admin = Router::new()
        .route("/users/{user_id}/sessions", get(list_user))
        .route("/users/{user_id}/sessions/{id}", delete(end_user))
        .route_layer(core.any_role(vec![core.identity.roles.admin.clone()]));
    signed_in.merge(admin).with_state(core.clone())
}

/// The OpenAPI description of [`router`].
#[cfg(feature = "openapi")]
pub(super) fn openapi(doc: &crate::http::openapi::ApiDoc) -> utoipa::openapi::OpenApi {
    use crate::core::error::ErrorCode as E;
    use crate::http::openapi::{Method, object, of};
    use utoipa::openapi::schema::{ArrayBuilder, Type};
    let sessions = || {
        let session = object([
            ("id", of(Type::String)),
            ("createdAt", of(Type::Integer)),
            ("lastUsedAt", crate::http::openapi::nullable(Type::Integer)),
            ("expiresAt", of(Type::Integer)),
            ("userAgent", crate::http::openapi::nullable(Type::String)),
            ("ip", crate::http::openapi::nullable(Type::String)),
            ("current", of(Type::Boolean)),
        ]);
        object([("sessions", ArrayBuilder::new().items(session).into())])
    };
    doc.paths([
        doc.op(
            Method::Get,
            "/sessions",
            "devices",
            "The caller's sessions, one per device",
        )
        .signed_in(doc)
        .ok_data(200, "Sessions", sessions()),
        doc.op(
            Method::Post,
            "/sessions/revoke-others",
            "devices",
            "End every other session of the caller",
        )
        .signed_in(doc)
        .sensitive()
        .ok_data(
            200,
            "Other sessions ended",
            object([("ended", of(Type::Integer))]),
        ),
        doc.op(
            Method::Delete,
            "/sessions/{id}",
            "devices",
            "End one of the caller's sessions",
        )
        .describe(
            "Ending the current session clears the cookies. Ending another session is \
             sensitive: it needs an authentication within the re-authentication window.",
        )
        .signed_in(doc)
        .path_param("id", "The session id")
        .ok_data(200, "Session ended", of(Type::Null))
        .err(&[E::NotFound, E::ReauthRequired, E::TwoFactorRequired]),
        doc.op(
            Method::Get,
            "/users/{user_id}/sessions",
            "devices",
            "A user's sessions (admin)",
        )
        .admin(doc)
        .path_param("user_id", "The user's id")
        .ok_data(200, "Sessions", sessions())
        .err(&[E::UserNotFound]),
        doc.op(
            Method::Delete,
            "/users/{user_id}/sessions/{id}",
            "devices",
            "End a user's session (admin)",
        )
        .admin(doc)
        .path_param("user_id", "The user's id")
        .path_param("id", "The session id")
        .ok_data(200, "Session ended", of(Type::Null))
        .err(&[E::NotFound]),
    ])
}

fn not_found() -> SentriError {
    SentriError::new(ErrorCode::NotFound, "No such session")
}

fn device_json(d: &DeviceSession, current: Option<&str>) -> Value {
    json!({
        "id": d.id,
        "createdAt": d.created_at,
        "lastUsedAt": d.last_used_at,
        "expiresAt": d.expires_at,
        "userAgent": d.user_agent,
        "ip": d.ip,
        "current": current == Some(d.id.as_str()),
    })
}

async fn sessions_of(core: &Core, user_id: &str, current: Option<&str>) -> Result<Response> {
    let list = core.sessions.device_sessions(user_id).await?;
    let sessions: Vec<Value> = list.iter().map(|d| device_json(d, current)).collect();
    Ok(success(
        StatusCode::OK,
        "Sessions",
        json!({ "sessions": sessions }),
    ))
}

async fn list_own(State(core): State<Core>, user: CurrentUser) -> Result<Response> {
    sessions_of(&core, &user.user.id, Some(&user.session_id)).await
}

async fn end_own(
    State(core): State<Core>,
    user: CurrentUser,
    assurance: Option<crate::core::principal::Assurance>,
    path: std::result::Result<Path<String>, PathRejection>,
) -> Result<Response> {
    let Ok(Path(sid)) = path else {
        return Err(not_found());
    };
    // Ending one's own session is a logout; ending another is sensitive.
    if sid != user.session_id {
        core.check_sensitive(assurance.as_ref())?;
    }
    core.sessions.end_user_session(&user.user.id, &sid).await?;
    let res = success(StatusCode::OK, "Session ended", Value::Null);
    if sid == user.session_id {
        // The caller ended its own session: its cookies are dead too.
        return Ok(core.transport.with_cleared_cookies(res));
    }
    Ok(res)
}

async fn revoke_others(State(core): State<Core>, user: CurrentUser) -> Result<Response> {
    let ended = core
        .sessions
        .end_other_sessions(&user.user.id, &user.session_id)
        .await?;
    Ok(success(
        StatusCode::OK,
        "Other sessions ended",
        json!({ "ended": ended }),
    ))
}

async fn list_user(
    State(core): State<Core>,
    path: std::result::Result<Path<String>, PathRejection>,
) -> Result<Response> {
    let Ok(Path(user_id)) = path else {
        return Err(SentriError::user_not_found());
    };
    core.identity.get_user(&user_id).await?;
    sessions_of(&core, &user_id, None).await
}

async fn end_user(
    State(core): State<Core>,
    path: std::result::Result<Path<(String, String)>, PathRejection>,
) -> Result<Response> {
    let Ok(Path((user_id, sid))) = path else {
        return Err(not_found());
    };
    core.sessions.end_user_session(&user_id, &sid).await?;
    Ok(success(StatusCode::OK, "Session ended", Value::Null))
}
