//! Workspaces: multi-tenant memberships, roles per workspace, tokens bound to one
//! workspace, and the tenant guard. Switched on with
//! `ServerConfig::with(Workspaces::default())`.
//!
//! **The isolation model.** A workspace is a tenant. A session may be bound to one
//! workspace (`POST /workspaces/{id}/switch`); its access tokens then carry the claim
//! `wid`, and refreshes keep it. `auth.tenant()` (or `auth.authorize_in_workspace(roles)`)
//! admits a request only when its `X-Workspace-Id` header equals the token's `wid`
//! and the caller is an **active** member of that **active** workspace, checked on
//! every request through a cache that a membership change clears at once in the
//! process that made it and, through Redis, in the others (else within
//! `session_cache_ttl`). Every statement over tenant-owned rows takes a `Scope` and
//! carries `workspace_id = <scope>`: a handler cannot forget it.
//!
//! | refusal | status | code |
//! |---|---|---|
//! | no workspace header | 403 | `WORKSPACE_HEADER_REQUIRED` |
//! | header ≠ the token's `wid` (or a personal token) | 403 | `WORKSPACE_MISMATCH` |
//! | not an active member (removed, suspended, invited) or workspace gone | 403 | `WORKSPACE_ACCESS_DENIED` |
//! | lacks the route's workspace role | 403 | `FORBIDDEN` |
//!
//! | route | who | does |
//! |---|---|---|
//! | `POST /workspaces` | signed in | creates one (`name`, optional `slug`); the caller becomes its owner |
//! | `GET /workspaces` | signed in | the caller's workspaces (`?after=<id>&limit=<n>`) |
//! | `GET /workspaces/{id}` | member | one workspace and the caller's roles |
//! | `PATCH /workspaces/{id}` | manager | `name` and/or `slug` |
//! | `DELETE /workspaces/{id}` | owner | deletes it with its memberships and invitations |
//! | `GET /workspaces/{id}/members` | member | members (`?after=<userId>&limit=<n>`) |
//! | `POST /workspaces/{id}/members` | manager | adds an account (`identifier`, `roles`) |
//! | `PATCH /workspaces/{id}/members/{userId}` | manager | `roles` and/or `status` (`active`, `suspended`) |
//! | `DELETE /workspaces/{id}/members/{userId}` | manager | removes a member |
//! | `POST /workspaces/{id}/leave` | member | leaves |
//! | `POST /workspaces/{id}/switch` | member | a new access token bound to the workspace |
//! | `POST /workspaces/personal/switch` | signed in | a new access token bound to none |
//! | `POST /workspaces/{id}/invitations` | manager | invites an address (`address`, `roles`) |
//! | `GET /workspaces/{id}/invitations` | manager | pending invitations |
//! | `DELETE /workspaces/{id}/invitations/{invitationId}` | manager | revokes one |
//! | `POST /workspaces/invitations/accept` | signed in as the invited address | joins (`token`) |
//!
//! Managers hold a role of [`Workspaces::managers`] (default `owner`, `admin`). Only an
//! owner grants or takes the owner role, changes or removes an owner, or deletes the
//! workspace; the last active owner cannot leave, be removed, suspended or demoted
//! (409 `LAST_OWNER`, decided under a lock on the workspace row, so concurrent changes
//! cannot both pass). Invitations are mailed when [`Workspaces::invitation_mail`] is
//! set, else the token is returned to the inviter.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sentri::SentriError> {
//! use axum::{Router, routing::get};
//! use sentri::http::CurrentWorkspace;
//! use sentri::{ServerConfig, capability::workspaces::Workspaces, create_auth, db::Database};
//! use sentri::token::SigningKey;
//! let db = Database::connect("sqlite::memory:").await?;
//! let key = SigningKey::hs256(b"a secret of at least thirty-two bytes!!")?;
//! let auth = create_auth(ServerConfig::new(db, key, ["user"]).with(Workspaces::default()))?;
//! auth.migrate().await?;
//! let app: Router = Router::new()
//!     .nest("/auth", auth.router())
//!     .route("/api/projects", get(|ws: CurrentWorkspace| async move { ws.id }).route_layer(auth.tenant()))
//!     .route("/api/billing", get(|| async { "billing" }).route_layer(auth.authorize_in_workspace(["owner"])));
//! # Ok(()) }
//! ```

mod cache;
mod routes;
mod service;
mod store;

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, StatusCode};

pub use service::WorkspaceService;

use super::{Capability, Core};
use crate::core::BoxFuture;
use crate::core::error::{Result, SentriError};
use crate::core::principal::AuthUser;
use crate::db::Migration;
use crate::http::tenant::{DEFAULT_WORKSPACE_HEADER, Membership};
use crate::identity::ProvisionUser;
use crate::mail::{MailQueue, Mailbox, Mailer, QueueOptions};

/// The workspaces capability and its settings. Build one per server.
///
/// | setting | default |
/// |---|---|
/// | [`roles`](Self::roles) | `owner`, `admin`, `member` |
/// | [`owner_role`](Self::owner_role) | `owner` |
/// | [`managers`](Self::managers) | `owner`, `admin` |
/// | [`default_role`](Self::default_role) | `member` |
/// | [`header`](Self::header) | `X-Workspace-Id` |
/// | [`invitation_ttl`](Self::invitation_ttl) | 7 days |
/// | [`invitation_mail`](Self::invitation_mail) | none: the token is returned to the inviter |
/// | [`cache_capacity`](Self::cache_capacity) | 100 000 users (64 workspaces each) |
#[derive(Clone)]
#[non_exhaustive]
pub struct Workspaces {
    roles: Vec<String>,
    owner: String,
    managers: Vec<String>,
    default_role: String,
    header: HeaderName,
    invitation_ttl: Duration,
    mail: Option<(Arc<dyn Mailer>, Mailbox, String)>,
    cache_capacity: u64,
    state: Arc<OnceLock<Arc<WorkspaceService>>>,
}

impl Default for Workspaces {
    fn default() -> Self {
        Self {
            roles: ["owner", "admin", "member"].map(String::from).to_vec(),
            owner: "owner".to_owned(),
            managers: ["owner", "admin"].map(String::from).to_vec(),
            default_role: "member".to_owned(),
            header: HeaderName::from_static(DEFAULT_WORKSPACE_HEADER),
            invitation_ttl: Duration::from_secs(7 * 24 * 3600),
            mail: None,
            cache_capacity: 100_000,
            state: Arc::new(OnceLock::new()),
        }
    }
}

impl fmt::Debug for Workspaces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workspaces")
            .field("roles", &self.roles)
            .field("owner", &self.owner)
            .field("managers", &self.managers)
            .field("default_role", &self.default_role)
            .field("header", &self.header)
            .field("invitation_ttl", &self.invitation_ttl)
            .field("mail", &self.mail.is_some())
            .finish_non_exhaustive()
    }
}

impl Workspaces {
    /// The roles a member can hold within a workspace (must include the owner role,
    /// the managers and the default role; checked when the server is built).
    pub fn roles<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.roles = roles.into_iter().map(Into::into).collect();
        self
    }

    /// The role of owners (default `owner`).
    pub fn owner_role(mut self, role: impl Into<String>) -> Self {
        self.owner = role.into();
        self
    }

    /// The roles that manage members and invitations (default `owner`, `admin`).
    pub fn managers<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.managers = roles.into_iter().map(Into::into).collect();
        self
    }

    /// The role of a member added or invited without roles (default `member`).
    pub fn default_role(mut self, role: impl Into<String>) -> Self {
        self.default_role = role.into();
        self
    }

    /// The header naming a request's workspace (default `X-Workspace-Id`).
    pub fn header(mut self, header: HeaderName) -> Self {
        self.header = header;
        self
    }

    /// How long an invitation can be accepted (default 7 days).
    pub fn invitation_ttl(mut self, ttl: Duration) -> Self {
        self.invitation_ttl = ttl;
        self
    }

    /// Mails invitations through `mailer` from `from`, with `link` (containing
    /// `{token}`, e.g. `https://app.example.com/invitations/accept?token={token}`) as the
    /// accept link; the token is then not returned to the inviter.
    pub fn invitation_mail(
        mut self,
        mailer: Arc<dyn Mailer>,
        from: Mailbox,
        link: impl Into<String>,
    ) -> Self {
        self.mail = Some((mailer, from, link.into()));
        self
    }

    /// How many users' memberships each process caches for the tenant guard (default
    /// 100 000 users, up to 64 workspaces each; all are dropped when it is full).
    pub fn cache_capacity(mut self, n: u64) -> Self {
        self.cache_capacity = n.max(1);
        self
    }

    fn settings(&self) -> service::Settings {
        service::Settings {
            roles: self.roles.clone(),
            owner: self.owner.clone(),
            managers: self.managers.clone(),
            default_role: self.default_role.clone(),
            header: self.header.clone(),
            invitation_ttl: self.invitation_ttl,
            mail: self
                .mail
                .as_ref()
                .map(|(mailer, from, link)| service::InviteMail {
                    queue: MailQueue::start(
                        mailer.clone(),
                        QueueOptions::default(),
                        Arc::new(|_, _| {}),
                    ),
                    from: from.clone(),
                    link: link.clone(),
                }),
            cache_capacity: self.cache_capacity,
        }
    }

    /// The service of `core`'s server, started on first use.
    fn service(&self, core: &Core) -> Result<&Arc<WorkspaceService>> {
        let svc = self
            .state
            .get_or_init(|| WorkspaceService::start(core.clone(), self.settings()));
        if !Arc::ptr_eq(&svc.core.sessions, &core.sessions) {
            return Err(SentriError::configuration(
                "one Workspaces value is used by two servers: build one per server",
            ));
        }
        Ok(svc)
    }
}

impl Capability for Workspaces {
    fn name(&self) -> &'static str {
        "workspaces"
    }

    fn check(&self) -> Result<()> {
        let known = |r: &String| self.roles.contains(r);
        let needed = std::iter::once(&self.owner)
            .chain(&self.managers)
            .chain(std::iter::once(&self.default_role));
        if let Some(missing) = needed.clone().find(|r| !known(r)) {
            return Err(SentriError::configuration(format!(
                "workspaces: role {missing:?} is not one of the workspace roles"
            )));
        }
        if let Some((_, _, link)) = &self.mail
            && !link.contains("{token}")
        {
            return Err(SentriError::configuration(
                "workspaces: the invitation link must contain {token}",
            ));
        }
        Ok(())
    }

    fn migrations(&self) -> &'static [Migration] {
        store::MIGRATIONS
    }

    fn error_codes(&self) -> &'static [(&'static str, StatusCode)] {
        &[
            ("WORKSPACE_HEADER_REQUIRED", StatusCode::FORBIDDEN),
            ("WORKSPACE_MISMATCH", StatusCode::FORBIDDEN),
            ("WORKSPACE_ACCESS_DENIED", StatusCode::FORBIDDEN),
            ("WORKSPACE_NOT_FOUND", StatusCode::NOT_FOUND),
            ("WORKSPACE_SLUG_TAKEN", StatusCode::CONFLICT),
            ("LAST_OWNER", StatusCode::CONFLICT),
            ("ALREADY_MEMBER", StatusCode::CONFLICT),
            ("MEMBER_NOT_FOUND", StatusCode::NOT_FOUND),
            ("INVITATION_INVALID", StatusCode::BAD_REQUEST),
            ("INVITATION_ADDRESS_MISMATCH", StatusCode::FORBIDDEN),
        ]
    }

    fn routes(&self, core: &Core) -> Router {
        match self.service(core) {
            Ok(svc) => routes::router(core, svc.clone()),
            Err(err) => {
                tracing::error!(error = %err, "sentri: workspace routes are off");
                Router::new()
            }
        }
    }

    #[cfg(feature = "openapi")]
    fn openapi(&self, doc: &crate::http::openapi::ApiDoc) -> utoipa::openapi::OpenApi {
        routes::openapi(doc)
    }

    fn membership(&self, core: &Core) -> Option<Arc<dyn Membership>> {
        let svc = self.service(core).ok()?;
        Some(svc.clone())
    }

    fn provisioned<'a>(
        &'a self,
        core: &'a Core,
        user: &'a AuthUser,
        input: &'a ProvisionUser,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let Some(ws) = &input.workspace else {
                return Ok(false);
            };
            self.service(core)?
                .provision(&user.id, &ws.name, &ws.slug, ws.roles.clone())
                .await?;
            Ok(true)
        })
    }
}
