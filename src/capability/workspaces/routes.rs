//! The workspace routes: parse, call the service, answer. Every route needs a
//! signed-in caller; what the caller may do in a workspace the service decides.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, patch, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::WorkspaceService;
use super::store::{InvitationRecord, MemberRecord, WorkspaceRecord};
use crate::capability::Core;
use crate::core::error::{ErrorCode, Result, SentriError};
use crate::core::principal::Assurance;
use crate::http::{CurrentUser, JsonBody, success};

type Svc = Arc<WorkspaceService>;
type PathOf<T> = std::result::Result<Path<T>, axum::extract::rejection::PathRejection>;
type QueryOf<T> = std::result::Result<Query<T>, axum::extract::rejection::QueryRejection>;

/// The longest page.
const MAX_PAGE: u64 = 200;

pub(super) fn router(core: &Core, svc: Svc) -> Router {
    Router::new()
        .route("/workspaces", get(mine).post(create))
        .route("/workspaces/personal/switch", post(switch_personal))
        .route("/workspaces/invitations/accept", post(accept))
        .route(
            "/workspaces/{id}",
            get(show)
                .patch(update)
                .merge(axum::routing::delete(remove).route_layer(core.sensitive())),
        )
        .route("/workspaces/{id}/members", get(members).post(add_member))
        .route(
            "/workspaces/{id}/members/{user_id}",
            patch(update_member).delete(remove_member),
        )
        .route("/workspaces/{id}/leave", post(leave))
        .route("/workspaces/{id}/switch", post(switch))
        .route(
            "/workspaces/{id}/invitations",
            get(invitations).post(invite),
        )
        .route(
            "/workspaces/{id}/invitations/{invitation_id}",
            axum::routing::delete(revoke_invitation),
        )
        .route_layer(core.protect())
        .with_state(svc)
}

/// The OpenAPI description of [`router`].
#[cfg(feature = "openapi")]
pub(super) fn openapi(doc: &crate::http::openapi::ApiDoc) -> utoipa::openapi::OpenApi {
    use crate::core::error::ErrorCode as E;
    use crate::http::openapi::{Method, any, nullable, object, of, strings};
    use utoipa::openapi::schema::{ArrayBuilder, Type};
    let workspace = || {
        object([
            ("id", of(Type::String)),
            ("name", of(Type::String)),
            ("slug", of(Type::String)),
            ("status", of(Type::String)),
            ("createdAt", of(Type::Integer)),
            ("updatedAt", of(Type::Integer)),
        ])
    };
    let member = || {
        object([
            ("userId", of(Type::String)),
            ("identifier", nullable(Type::String)),
            ("roles", strings()),
            ("status", of(Type::String)),
            ("createdAt", of(Type::Integer)),
            ("updatedAt", of(Type::Integer)),
        ])
    };
    let page = |item| {
        object([
            ("items", ArrayBuilder::new().items(item).into()),
            ("next", nullable(Type::String)),
        ])
    };
    let op = |m, p, s| doc.op(m, p, "workspaces", s).signed_in(doc);
    let in_ws = |m, p, s| {
        op(m, p, s)
            .path_param("id", "The workspace id")
            .err(&[E::WorkspaceNotFound])
    };
    let paging = |o: crate::http::openapi::Op, what| {
        o.query("after", Type::String, what)
            .query("limit", Type::Integer, "Page size, 1 to 200 (default 50)")
            .err(&[E::ValidationError])
    };
    let member_path = |m, s| {
        in_ws(m, "/workspaces/{id}/members/{user_id}", s)
            .describe("Managers only; an owner's membership and the owner role need an owner.")
            .path_param("user_id", "The member's user id")
            .err(&[E::MemberNotFound, E::LastOwner, E::NotFound, E::Forbidden])
    };
    let invitation_created_schema = || object([("invitation", any()), ("token", of(Type::String))]);
    let token_answer = || {
        object([
            ("accessToken", of(Type::String)),
            ("workspaceId", nullable(Type::String)),
        ])
    };
    doc.paths([
        op(
            Method::Post,
            "/workspaces",
            "Create a workspace (the caller becomes its owner)",
        )
        .body::<CreateBody>()
        .ok_data(
            201,
            "Workspace created",
            object([("workspace", workspace()), ("roles", strings())]),
        )
        .err(&[E::WorkspaceSlugTaken]),
        paging(
            op(Method::Get, "/workspaces", "The caller's workspaces"),
            "The last workspace id of the previous page",
        )
        .ok_data(200, "Workspaces", page(any())),
        in_ws(
            Method::Get,
            "/workspaces/{id}",
            "One of the caller's workspaces",
        )
        .ok_data(
            200,
            "Workspace",
            object([("workspace", workspace()), ("roles", strings())]),
        ),
        in_ws(
            Method::Patch,
            "/workspaces/{id}",
            "Rename a workspace or change its slug (managers)",
        )
        .body::<UpdateBody>()
        .ok_data(
            200,
            "Workspace updated",
            object([("workspace", workspace())]),
        )
        .err(&[E::Forbidden, E::WorkspaceSlugTaken]),
        in_ws(
            Method::Delete,
            "/workspaces/{id}",
            "Delete a workspace (owners)",
        )
        .sensitive()
        .ok_data(200, "Workspace deleted", of(Type::Null))
        .err(&[E::Forbidden]),
        paging(
            in_ws(Method::Get, "/workspaces/{id}/members", "The members"),
            "The last user id of the previous page",
        )
        .ok_data(200, "Members", page(member())),
        in_ws(
            Method::Post,
            "/workspaces/{id}/members",
            "Invite an address to become a member (managers)",
        )
        .describe(
            "An invitation to the identifier, which must be an address: the same answer \
             whether an account holds it, and no one joins before accepting it with that \
             address verified. The token is in the answer only when no mailer is configured.",
        )
        .body::<AddMemberBody>()
        .ok_data(201, "Invitation created", invitation_created_schema())
        .err(&[E::InvalidRole, E::Forbidden])
        .err(&[E::ReauthRequired, E::TwoFactorRequired]),
        member_path(Method::Patch, "Change a member's roles or status")
            .body::<UpdateMemberBody>()
            .ok_data(200, "Member updated", object([("member", member())]))
            .err(&[E::ReauthRequired, E::TwoFactorRequired])
            .err(&[E::InvalidRole, E::ServiceUnavailable]),
        member_path(Method::Delete, "Remove a member")
            .ok_data(200, "Member removed", of(Type::Null))
            .err(&[E::ServiceUnavailable]),
        in_ws(Method::Post, "/workspaces/{id}/leave", "Leave a workspace")
            .ok_data(200, "Left the workspace", of(Type::Null))
            .err(&[E::MemberNotFound, E::LastOwner, E::ServiceUnavailable]),
        in_ws(
            Method::Post,
            "/workspaces/{id}/switch",
            "A new access token bound to the workspace",
        )
        .describe("The session's later refreshes keep the binding (claim `wid`).")
        .ok_data(200, "Switched workspace", token_answer())
        .err(&[E::Forbidden, E::TokenInvalid]),
        op(
            Method::Post,
            "/workspaces/personal/switch",
            "A new access token bound to no workspace",
        )
        .ok_data(200, "Switched to personal", token_answer())
        .err(&[E::Forbidden, E::TokenInvalid]),
        in_ws(
            Method::Post,
            "/workspaces/{id}/invitations",
            "Invite an address (managers)",
        )
        .describe("The token is in the answer only when no mailer is configured.")
        .body::<InviteBody>()
        .ok_data(201, "Invitation created", invitation_created_schema())
        .err(&[E::InvalidRole, E::Forbidden])
        .err(&[E::ReauthRequired, E::TwoFactorRequired]),
        in_ws(
            Method::Get,
            "/workspaces/{id}/invitations",
            "Pending invitations (managers)",
        )
        .ok_data(
            200,
            "Invitations",
            object([("items", ArrayBuilder::new().items(any()).into())]),
        )
        .err(&[E::Forbidden]),
        in_ws(
            Method::Delete,
            "/workspaces/{id}/invitations/{invitation_id}",
            "Revoke an invitation (managers)",
        )
        .path_param("invitation_id", "The invitation id")
        .ok_data(200, "Invitation revoked", of(Type::Null))
        .err(&[E::Forbidden, E::NotFound]),
        op(
            Method::Post,
            "/workspaces/invitations/accept",
            "Accept an invitation as the invited address",
        )
        .describe(
            "The caller's verified address (the identifier when it is an address) must be \
             the invitation's; the workspace's other pending invitations to it are revoked.",
        )
        .body::<AcceptBody>()
        .ok_data(
            200,
            "Invitation accepted",
            object([("workspace", workspace())]),
        )
        .err(&[
            E::InvitationInvalid,
            E::InvitationAddressMismatch,
            E::AlreadyMember,
            E::WorkspaceNotFound,
        ]),
    ])
}

fn id_of(path: PathOf<String>) -> Result<String> {
    path.map(|Path(p)| p)
        .map_err(|_| SentriError::new(ErrorCode::WorkspaceNotFound, "Workspace not found"))
}

fn ids_of(path: PathOf<(String, String)>) -> Result<(String, String)> {
    path.map(|Path(p)| p)
        .map_err(|_| SentriError::new(ErrorCode::NotFound, "Not found"))
}

fn workspace_view(ws: &WorkspaceRecord) -> Value {
    json!({
        "id": ws.id,
        "name": ws.name,
        "slug": ws.slug,
        "status": ws.status,
        "createdAt": ws.created_at,
        "updatedAt": ws.updated_at,
    })
}

fn member_view(m: &MemberRecord) -> Value {
    json!({
        "userId": m.user_id,
        "identifier": m.identifier,
        "roles": m.roles,
        "status": m.status.as_str(),
        "createdAt": m.created_at,
        "updatedAt": m.updated_at,
    })
}

fn invitation_view(i: &InvitationRecord) -> Value {
    json!({
        "id": i.id,
        "workspaceId": i.workspace_id,
        "address": i.address,
        "roles": i.roles,
        "inviterId": i.inviter_id,
        "expiresAt": i.expires_at,
        "createdAt": i.created_at,
    })
}

#[derive(Deserialize)]
struct PageQuery {
    after: Option<String>,
    limit: Option<u64>,
}

/// `(after, limit)` of a page query; 400 on a malformed one.
fn page(query: QueryOf<PageQuery>) -> Result<(Option<String>, u64)> {
    let Ok(Query(q)) = query else {
        return Err(SentriError::validation("query: after=<id>&limit=<1..200>"));
    };
    if q.after.as_ref().is_some_and(|a| a.len() > 64) {
        return Err(SentriError::validation("after is too long"));
    }
    Ok((q.after, q.limit.unwrap_or(50).clamp(1, MAX_PAGE)))
}

/// The page's items and the cursor of the next page (`null` on the last).
fn paged<T>(items: &[T], limit: u64, view: fn(&T) -> Value, cursor: fn(&T) -> &str) -> Value {
    let next = (items.len() as u64 == limit)
        .then(|| items.last().map(cursor))
        .flatten();
    json!({ "items": items.iter().map(view).collect::<Vec<_>>(), "next": next })
}

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    slug: Option<String>,
}

async fn create(
    State(s): State<Svc>,
    me: CurrentUser,
    JsonBody(b): JsonBody<CreateBody>,
) -> Result<Response> {
    let (ws, roles) = s.create(&me.user.id, &b.name, b.slug.as_deref()).await?;
    Ok(success(
        StatusCode::CREATED,
        "Workspace created",
        json!({ "workspace": workspace_view(&ws), "roles": roles }),
    ))
}

async fn mine(
    State(s): State<Svc>,
    me: CurrentUser,
    query: QueryOf<PageQuery>,
) -> Result<Response> {
    let (after, limit) = page(query)?;
    let list = s.mine(&me.user.id, after.as_deref(), limit).await?;
    let data = paged(
        &list,
        limit,
        |w| {
            let mut v = workspace_view(&w.workspace);
            v["roles"] = json!(w.roles);
            v["membership"] = json!(w.status.as_str());
            v
        },
        |w| &w.workspace.id,
    );
    Ok(success(StatusCode::OK, "Workspaces", data))
}

async fn show(State(s): State<Svc>, me: CurrentUser, path: PathOf<String>) -> Result<Response> {
    let (ws, roles) = s.get(&id_of(path)?, &me.user.id).await?;
    Ok(success(
        StatusCode::OK,
        "Workspace",
        json!({ "workspace": workspace_view(&ws), "roles": roles }),
    ))
}

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    name: Option<String>,
    slug: Option<String>,
}

async fn update(
    State(s): State<Svc>,
    me: CurrentUser,
    path: PathOf<String>,
    JsonBody(b): JsonBody<UpdateBody>,
) -> Result<Response> {
    let ws = s
        .update(
            &id_of(path)?,
            &me.user.id,
            b.name.as_deref(),
            b.slug.as_deref(),
        )
        .await?;
    Ok(success(
        StatusCode::OK,
        "Workspace updated",
        json!({ "workspace": workspace_view(&ws) }),
    ))
}

async fn remove(State(s): State<Svc>, me: CurrentUser, path: PathOf<String>) -> Result<Response> {
    s.delete(&id_of(path)?, &me.user.id).await?;
    Ok(success(StatusCode::OK, "Workspace deleted", Value::Null))
}

async fn members(
    State(s): State<Svc>,
    me: CurrentUser,
    path: PathOf<String>,
    query: QueryOf<PageQuery>,
) -> Result<Response> {
    let id = id_of(path)?;
    let (after, limit) = page(query)?;
    let list = s.members(&id, &me.user.id, after.as_deref(), limit).await?;
    Ok(success(
        StatusCode::OK,
        "Members",
        paged(&list, limit, member_view, |m| &m.user_id),
    ))
}

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
struct AddMemberBody {
    identifier: String,
    #[serde(default)]
    roles: Vec<String>,
}

async fn add_member(
    State(s): State<Svc>,
    me: CurrentUser,
    assurance: Option<Assurance>,
    path: PathOf<String>,
    JsonBody(b): JsonBody<AddMemberBody>,
) -> Result<Response> {
    s.check_grant(&b.roles, assurance.as_ref())?;
    let (inv, token) = s
        .add_member(&id_of(path)?, &me.user.id, &b.identifier, b.roles)
        .await?;
    Ok(invitation_created(&inv, token))
}

/// `201 {invitation, token?}`: the answer of an invitation, and of a member added by
/// identifier (the same whether an account holds that address).
fn invitation_created(inv: &InvitationRecord, token: Option<String>) -> Response {
    let mut data = json!({ "invitation": invitation_view(inv) });
    if let Some(token) = token {
        data["token"] = Value::String(token);
    }
    let mut res = success(StatusCode::CREATED, "Invitation created", data);
    crate::http::no_store(res.headers_mut());
    res
}

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
struct UpdateMemberBody {
    roles: Option<Vec<String>>,
    status: Option<String>,
}

async fn update_member(
    State(s): State<Svc>,
    me: CurrentUser,
    assurance: Option<Assurance>,
    path: PathOf<(String, String)>,
    JsonBody(b): JsonBody<UpdateMemberBody>,
) -> Result<Response> {
    if let Some(roles) = &b.roles {
        s.check_grant(roles, assurance.as_ref())?;
    }
    let (id, user) = ids_of(path)?;
    let m = s
        .update_member(&id, &me.user.id, &user, b.roles, b.status.as_deref())
        .await?;
    Ok(success(
        StatusCode::OK,
        "Member updated",
        json!({ "member": member_view(&m) }),
    ))
}

async fn remove_member(
    State(s): State<Svc>,
    me: CurrentUser,
    path: PathOf<(String, String)>,
) -> Result<Response> {
    let (id, user) = ids_of(path)?;
    s.remove_member(&id, &me.user.id, &user).await?;
    Ok(success(StatusCode::OK, "Member removed", Value::Null))
}

async fn leave(State(s): State<Svc>, me: CurrentUser, path: PathOf<String>) -> Result<Response> {
    s.remove_member(&id_of(path)?, &me.user.id, &me.user.id)
        .await?;
    Ok(success(StatusCode::OK, "Left the workspace", Value::Null))
}

async fn switch(State(s): State<Svc>, me: CurrentUser, path: PathOf<String>) -> Result<Response> {
    let id = id_of(path)?;
    let token = s.switch(&id, &me.user.id, &me.session_id).await?;
    let transport = &s.core.transport;
    Ok(transport.access_response("Switched workspace", &token, json!({ "workspaceId": id })))
}

async fn switch_personal(State(s): State<Svc>, me: CurrentUser) -> Result<Response> {
    let token = s.switch_personal(&me.user.id, &me.session_id).await?;
    let transport = &s.core.transport;
    Ok(transport.access_response(
        "Switched to personal",
        &token,
        json!({ "workspaceId": null }),
    ))
}

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
struct InviteBody {
    address: String,
    #[serde(default)]
    roles: Vec<String>,
}

async fn invite(
    State(s): State<Svc>,
    me: CurrentUser,
    assurance: Option<Assurance>,
    path: PathOf<String>,
    JsonBody(b): JsonBody<InviteBody>,
) -> Result<Response> {
    s.check_grant(&b.roles, assurance.as_ref())?;
    let (inv, token) = s
        .invite(&id_of(path)?, &me.user.id, &b.address, b.roles)
        .await?;
    Ok(invitation_created(&inv, token))
}

async fn invitations(
    State(s): State<Svc>,
    me: CurrentUser,
    path: PathOf<String>,
) -> Result<Response> {
    let list = s.invitations(&id_of(path)?, &me.user.id).await?;
    let items: Vec<Value> = list.iter().map(invitation_view).collect();
    Ok(success(
        StatusCode::OK,
        "Invitations",
        json!({ "items": items }),
    ))
}

async fn revoke_invitation(
    State(s): State<Svc>,
    me: CurrentUser,
    path: PathOf<(String, String)>,
) -> Result<Response> {
    let (id, inv) = ids_of(path)?;
    s.revoke_invitation(&id, &me.user.id, &inv).await?;
    Ok(success(StatusCode::OK, "Invitation revoked", Value::Null))
}

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
struct AcceptBody {
    token: String,
}

async fn accept(
    State(s): State<Svc>,
    me: CurrentUser,
    JsonBody(b): JsonBody<AcceptBody>,
) -> Result<Response> {
    let ws = s.accept(&me.user, &b.token).await?;
    Ok(success(
        StatusCode::OK,
        "Invitation accepted",
        json!({ "workspace": workspace_view(&ws) }),
    ))
}
