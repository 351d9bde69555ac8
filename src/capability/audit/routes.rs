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
