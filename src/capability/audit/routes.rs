//! `GET /audit/events`: parse the filters, read one page, answer in the envelope.

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::{Audit, AuditCursor, AuditQuery, DEFAULT_PAGE, MAX_PAGE};
use crate::capability::Core;
use crate::core::error::{Result, SentriError};
use crate::http::success;

pub(super) fn router(core: &Core, audit: Audit, roles: Vec<String>) -> Router {
    Router::new()
        .route("/audit/events", get(list))
        .route_layer(core.any_role(roles))
        .with_state(audit)
}

/// The OpenAPI description of [`router`].
#[cfg(feature = "openapi")]
pub(super) fn openapi(doc: &crate::http::openapi::ApiDoc) -> utoipa::openapi::OpenApi {
    use crate::http::openapi::{Method, any, nullable, object};
    use utoipa::openapi::schema::{ArrayBuilder, Type};
    doc.paths([doc
        .op(
            Method::Get,
            "/audit/events",
            "audit",
            "Audit events, newest first (admin)",
        )
        .admin(doc)
        .query("userId", Type::String, "Only this user's events")
        .query("workspaceId", Type::String, "Only this workspace's events")
        .query("type", Type::String, "Only this kind, e.g. `login_failed`")
        .query("from", Type::Integer, "From this time (epoch ms)")
        .query("to", Type::Integer, "Until this time (epoch ms)")
        .query("limit", Type::Integer, "Page size, 1 to 500 (default 50)")
        .query("cursor", Type::String, "`nextCursor` of the previous page")
        .ok_data(
            200,
            "Audit events",
            object([
                ("events", ArrayBuilder::new().items(any()).into()),
                ("nextCursor", nullable(Type::String)),
            ]),
        )
        .err(&[crate::core::error::ErrorCode::ValidationError])])
}

/// The query string as sent.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Params {
    user_id: Option<String>,
    workspace_id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    from: Option<i64>,
    to: Option<i64>,
    limit: Option<u64>,
    cursor: Option<String>,
}

fn parse(p: Params) -> Result<AuditQuery> {
    let limit = p.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(SentriError::validation("limit must be between 1 and 500"));
    }
    let after = match p.cursor.as_deref() {
        Some(c) => {
            Some(AuditCursor::decode(c).ok_or_else(|| SentriError::validation("Invalid cursor"))?)
        }
        None => None,
    };
    Ok(AuditQuery {
        user_id: p.user_id,
        workspace_id: p.workspace_id,
        kind: p.kind,
        from_ms: p.from,
        to_ms: p.to,
        after,
        limit,
    })
}

async fn list(
    State(audit): State<Audit>,
    params: std::result::Result<Query<Params>, QueryRejection>,
) -> Result<Response> {
    let Ok(Query(params)) = params else {
        return Err(SentriError::validation("Invalid query parameters"));
    };
    let page = audit.query(&parse(params)?).await?;
    Ok(success(
        StatusCode::OK,
        "Audit events",
        json!({
            "events": page.events,
            "nextCursor": page.next.map(|c| c.encode()),
        }),
    ))
}
