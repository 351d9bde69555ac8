//! The tenant guard: the workspace a request names in its header must be the workspace
//! its access token is bound to (`wid`), and the caller an active member of it.
//!
//! The rule lives here, with the other guard rules; where memberships come from is a
//! [`Membership`] (the workspaces capability implements it), so `http` knows no
//! capability.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::HeaderName;
use axum::http::request::Parts;

use super::guard::CurrentUser;
use crate::core::BoxFuture;
use crate::core::error::{ErrorCode, Result, SentriError};

/// The default header naming the workspace of a request.
pub const DEFAULT_WORKSPACE_HEADER: &str = "x-workspace-id";

/// An active member's roles within one workspace, shared.
pub type MemberRoles = Arc<[String]>;

/// Where the tenant guard learns memberships (implemented by the workspaces capability).
pub trait Membership: Send + Sync + 'static {
    /// The header naming the workspace of a request.
    fn header(&self) -> &HeaderName;

    /// The roles a member can hold within a workspace: workspace guards check the role
    /// names they are built with against them (and panic at start-up on another).
    fn workspace_roles(&self) -> &[String];

    /// `user`'s roles while they are an active member of the active `workspace`
    /// (`Some(None)`: not an active member), when a warm cache knows; `None`: ask
    /// [`active_roles`](Self::active_roles).
    fn cached(&self, workspace: &str, user: &str) -> Option<Option<MemberRoles>>;

    /// `user`'s roles while they are an active member of the active `workspace`
    /// (`None`: not an active member), from the store.
    fn active_roles<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Option<MemberRoles>>>;
}

/// The workspace of a request that passed the tenant guard (`auth.tenant()` or
/// `auth.authorize_in_workspace(..)`), and the caller's roles in it. An extractor.
///
/// On a route without a tenant guard it rejects: 401 without any sentri layer, 500
/// (an app bug, logged) behind another guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentWorkspace {
    /// The workspace id (the token's `wid`, equal to the request's header).
    pub id: String,
    /// The caller's roles within the workspace.
    pub roles: MemberRoles,
}

impl CurrentWorkspace {
    /// `true` when the caller holds `role` in the workspace.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CurrentWorkspace {
    type Rejection = SentriError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self> {
        if let Some(ws) = parts.extensions.get::<CurrentWorkspace>() {
            return Ok(ws.clone());
        }
        if parts.extensions.get::<CurrentUser>().is_none() {
            return Err(SentriError::unauthorized("Authentication required"));
        }
        tracing::error!("sentri: the CurrentWorkspace extractor needs a tenant guard on its route");
        Err(SentriError::new(ErrorCode::InternalError, "Internal error"))
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for CurrentWorkspace {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> std::result::Result<Option<Self>, Infallible> {
        Ok(parts.extensions.get::<CurrentWorkspace>().cloned())
    }
}

/// The rule of a tenant guard: the header, the token's workspace, an active
/// membership, and (when listed) one of `roles` within the workspace.
pub(crate) struct TenantRule {
    pub(crate) members: Arc<dyn Membership>,
    pub(crate) roles: Vec<String>,
}

impl TenantRule {
    /// A rule over `members`; panics at start-up on a role no member can hold.
    pub(crate) fn new(members: Arc<dyn Membership>, roles: Vec<String>) -> Self {
        let valid = members.workspace_roles();
        for role in &roles {
            assert!(
                valid.contains(role),
                "sentri: role {role:?} is not one of the workspace roles {valid:?}"
            );
        }
        Self { members, roles }
    }

    /// Admits `current`'s request into the workspace it names, or says why not (403
    /// with a code of its own for each reason; never another workspace's data). On a
    /// warm membership cache the answer is ready without an `await`; otherwise it is a
    /// boxed store read (kept out of every guarded request's future).
    pub(crate) fn admit<'a>(
        &'a self,
        parts: &Parts,
        current: &'a CurrentUser,
    ) -> Result<Admission<'a>> {
        let Some(named) = parts.headers.get(self.members.header()) else {
            return Err(SentriError::new(
                ErrorCode::WorkspaceHeaderRequired,
                format!("The {} header is required", self.members.header()),
            ));
        };
        let workspace = match current.workspace_id.as_deref() {
            Some(wid) if wid.as_bytes() == named.as_bytes() => wid,
            _ => {
                return Err(SentriError::new(
                    ErrorCode::WorkspaceMismatch,
                    "The access token is not bound to this workspace: switch to it first",
                ));
            }
        };
        let user = current.user.id.as_str();
        if let Some(roles) = self.members.cached(workspace, user) {
            return self.decide(workspace, roles).map(Admission::Ready);
        }
        Ok(Admission::Pending(Box::pin(async move {
            let roles = self.members.active_roles(workspace, user).await?;
            self.decide(workspace, roles)
        })))
    }

    /// The answer for a member holding `roles` (`None`: not an active member).
    fn decide(&self, workspace: &str, roles: Option<MemberRoles>) -> Result<CurrentWorkspace> {
        let Some(roles) = roles else {
            return Err(SentriError::new(
                ErrorCode::WorkspaceAccessDenied,
                "Not an active member of this workspace",
            ));
        };
        if !self.roles.is_empty() && !roles.iter().any(|r| self.roles.contains(r)) {
            return Err(SentriError::forbidden("Insufficient workspace role"));
        }
        Ok(CurrentWorkspace {
            id: workspace.to_owned(),
            roles,
        })
    }
}

/// What [`TenantRule::admit`] found: an answer, or a store read to await for one.
pub(crate) enum Admission<'a> {
    Ready(CurrentWorkspace),
    Pending(BoxFuture<'a, Result<CurrentWorkspace>>),
}
