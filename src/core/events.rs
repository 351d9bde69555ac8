//! Security events: every security-relevant action emits an [`AuthEvent`] that the
//! configured [`EventSink`]s receive, off the request path.
//!
//! Emitting never blocks and never fails a request: events go into a bounded queue
//! ([`EventBus`]) drained by one task; when the queue is full the event is dropped,
//! counted ([`EventBus::dropped`]) and a warning is logged. A sink that panics is caught
//! and logged. Events never carry secrets (passwords, tokens, codes, key material).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::FutureExt;

use crate::core::BoxFuture;
use crate::core::error::SentriError;
use crate::core::principal::SessionMeta;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthEventKind {
    /// A user registered.
    Registered,
    /// A login succeeded (a session was opened).
    LoginSucceeded,
    /// A login failed (`error` says why).
    LoginFailed,
    /// A session was refreshed (its refresh token rotated).
    Refreshed,
    /// A session was ended by logout (or by the app revoking it).
    Logout,
    /// Every session of a user was ended.
    LogoutAll,
    /// A session's user proved their factors again (`POST /reauthenticate`): sensitive
    /// operations are open to it for the re-authentication window.
    Reauthenticated,
    /// A superseded refresh token was presented: the session was revoked.
    ReuseDetected,
    /// A password was changed (every session of the user ended).
    PasswordChanged,
    /// An identifier was changed.
    IdentifierChanged,
    /// Roles were changed.
    RolesChanged,
    /// A role was added to the role catalogue (`role` says which).
    RoleCreated,
    /// A role's description or permissions changed (`role` says which).
    RoleUpdated,
    /// A role was deleted from the catalogue (`role` says which).
    RoleDeleted,
    /// An API key was created (`key_id` says which).
    ApiKeyCreated,
    /// An API key was revoked (`key_id` says which).
    ApiKeyRevoked,
    /// A request presented an API key that was refused (`error` says why; rate-limited,
    /// never any key material).
    ApiKeyRejected,
    /// A second-factor device was enrolled (not active until confirmed).
    TwoFactorEnrolled,
    /// A second-factor device was confirmed (2FA is on for the user).
    TwoFactorConfirmed,
    /// A second-factor device was removed.
    TwoFactorDisabled,
    /// A second factor was verified (a step-up login completed).
    TwoFactorVerified,
    /// A wrong second-factor code was submitted.
    TwoFactorFailed,
    /// A backup code was used.
    BackupCodeUsed,
    /// The backup codes were regenerated (the old set no longer works).
    BackupCodesRegenerated,
    /// An account's email address was verified.
    EmailVerified,
    /// A password was reset by an emailed token (every session of the user ended).
    PasswordReset,
    /// A message could not be sent after every retry (`error` says why; no content).
    MailFailed,
    /// A user signed in through an external identity provider (single sign-on).
    SsoSignedIn,
    /// Single sign-on created a new account.
    SsoAccountCreated,
    /// An external identity was linked to an account.
    SsoLinked,
    /// An external identity was unlinked from an account.
    SsoUnlinked,
    /// A single sign-on attempt failed (`error` says why).
    SsoFailed,
    /// A workspace was created (`workspace_id`; `user_id`: its first owner).
    WorkspaceCreated,
    /// A workspace's name or slug changed.
    WorkspaceUpdated,
    /// A workspace was deleted (its memberships and invitations with it).
    WorkspaceDeleted,
    /// A user became an active member of a workspace (`role`: their roles).
    MemberAdded,
    /// A member's roles within a workspace changed (`role`: the new roles).
    MemberRolesChanged,
    /// A member was suspended (the tenant guard refuses them).
    MemberSuspended,
    /// A suspended member was made active again.
    MemberReinstated,
    /// A member was removed from a workspace (or left it).
    MemberRemoved,
    /// An invitation to a workspace was created (never the token or the address).
    InvitationCreated,
    /// An invitation was revoked.
    InvitationRevoked,
    /// An invitation was accepted (`user_id`: who joined).
    InvitationAccepted,
    /// A session was switched to a workspace (its tokens carry `wid`).
    WorkspaceSwitched,
}

impl AuthEventKind {
    /// A stable snake_case name, e.g. `"login_failed"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::LoginSucceeded => "login_succeeded",
            Self::LoginFailed => "login_failed",
            Self::Refreshed => "refreshed",
            Self::Logout => "logout",
            Self::LogoutAll => "logout_all",
            Self::Reauthenticated => "reauthenticated",
            Self::ReuseDetected => "reuse_detected",
            Self::PasswordChanged => "password_changed",
            Self::IdentifierChanged => "identifier_changed",
            Self::RolesChanged => "roles_changed",
            Self::RoleCreated => "role_created",
            Self::RoleUpdated => "role_updated",
            Self::RoleDeleted => "role_deleted",
            Self::ApiKeyCreated => "api_key_created",
            Self::ApiKeyRevoked => "api_key_revoked",
            Self::ApiKeyRejected => "api_key_rejected",
            Self::TwoFactorEnrolled => "two_factor_enrolled",
            Self::TwoFactorConfirmed => "two_factor_confirmed",
            Self::TwoFactorDisabled => "two_factor_disabled",
            Self::TwoFactorVerified => "two_factor_verified",
            Self::TwoFactorFailed => "two_factor_failed",
            Self::BackupCodeUsed => "backup_code_used",
            Self::BackupCodesRegenerated => "backup_codes_regenerated",
            Self::EmailVerified => "email_verified",
            Self::PasswordReset => "password_reset",
            Self::MailFailed => "mail_failed",
            Self::SsoSignedIn => "sso_signed_in",
            Self::SsoAccountCreated => "sso_account_created",
            Self::SsoLinked => "sso_linked",
            Self::SsoUnlinked => "sso_unlinked",
            Self::SsoFailed => "sso_failed",
            Self::WorkspaceCreated => "workspace_created",
            Self::WorkspaceUpdated => "workspace_updated",
            Self::WorkspaceDeleted => "workspace_deleted",
            Self::MemberAdded => "member_added",
            Self::MemberRolesChanged => "member_roles_changed",
            Self::MemberSuspended => "member_suspended",
            Self::MemberReinstated => "member_reinstated",
            Self::MemberRemoved => "member_removed",
            Self::InvitationCreated => "invitation_created",
            Self::InvitationRevoked => "invitation_revoked",
            Self::InvitationAccepted => "invitation_accepted",
            Self::WorkspaceSwitched => "workspace_switched",
        }
    }
}

/// One security event: who, what, when and from where.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuthEvent {
    /// What happened.
    pub kind: AuthEventKind,
    /// When, unix epoch milliseconds (the configured clock).
    pub at_ms: i64,
    /// The user id, when known.
    pub user_id: Option<String>,
    /// The user as the login saw it (successful logins).
    pub user: Option<crate::core::principal::AuthUser>,
    /// The session (family) id, when there is one.
    pub session_id: Option<String>,
    /// The identifier as typed (failed logins only: there is no user id).
    pub identifier: Option<String>,
    /// Client address and user agent, when the action came over HTTP.
    pub meta: SessionMeta,
    /// Why it failed (failed logins).
    pub error: Option<SentriError>,
    /// The API key concerned, by id (never the secret).
    pub key_id: Option<String>,
    /// The catalogue role concerned (role events), or the roles of a
    /// `roles_changed` event, comma-separated.
    pub role: Option<String>,
    /// The workspace concerned (workspace, membership and invitation events).
    pub workspace_id: Option<String>,
}

impl AuthEvent {
    /// An event of `kind` at `at_ms` with nothing else set.
    pub fn new(kind: AuthEventKind, at_ms: i64) -> Self {
        Self {
            kind,
            at_ms,
            user_id: None,
            user: None,
            session_id: None,
            identifier: None,
            meta: SessionMeta::default(),
            error: None,
            key_id: None,
            role: None,
            workspace_id: None,
        }
    }

    /// Sets the workspace concerned.
    pub fn workspace(mut self, workspace_id: impl Into<String>) -> Self {
        self.workspace_id = Some(workspace_id.into());
        self
    }

    /// Sets the role concerned.
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.role = Some(role.into());
        self
    }

    /// Sets the user.
    pub fn user(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// Sets the session.
    pub fn session(mut self, session_id: impl Into<String>) -> Self {
        self.session_id = Some(session_id.into());
        self
    }

    /// Sets where the request came from.
    pub fn meta(mut self, meta: SessionMeta) -> Self {
        self.meta = meta;
        self
    }
}

/// Receives events. Implement it to ship events to an audit log, a SIEM, metrics…
pub trait EventSink: Send + Sync + 'static {
    /// Handles one event. Runs on the event task, never on a request.
    fn handle(&self, event: Arc<AuthEvent>) -> BoxFuture<'static, ()>;
}

/// Logs every event at `info` (failed logins and reuse at `warn`) with `tracing`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingSink;

impl EventSink for TracingSink {
    fn handle(&self, event: Arc<AuthEvent>) -> BoxFuture<'static, ()> {
        let (kind, user, session) = (
            event.kind.as_str(),
            event.user_id.as_deref().unwrap_or("-"),
            event.session_id.as_deref().unwrap_or("-"),
        );
        match event.kind {
            AuthEventKind::LoginFailed
            | AuthEventKind::ReuseDetected
            | AuthEventKind::ApiKeyRejected
            | AuthEventKind::MailFailed => {
                tracing::warn!(target: "sentri::events", kind, user, session, "auth event");
            }
            _ => tracing::info!(target: "sentri::events", kind, user, session, "auth event"),
        }
        Box::pin(async {})
    }
}

/// The default capacity of the event queue.
pub const EVENT_QUEUE: usize = 4096;

/// Delivers events to the sinks from a bounded queue on one task.
pub struct EventBus {
    tx: Option<tokio::sync::mpsc::Sender<Arc<AuthEvent>>>,
    dropped: Arc<AtomicU64>,
}

impl fmt::Debug for EventBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventBus")
            .field("sinks", &self.tx.is_some())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl EventBus {
    /// A bus for `sinks` (no task and no queue when there are none). Outside a Tokio
    /// runtime events are dropped with a warning.
    pub fn new(sinks: Vec<Arc<dyn EventSink>>, capacity: usize) -> Self {
        let dropped = Arc::new(AtomicU64::new(0));
        if sinks.is_empty() {
            return Self { tx: None, dropped };
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("sentri: built outside a Tokio runtime: auth events are off");
            return Self { tx: None, dropped };
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Arc<AuthEvent>>(capacity.max(1));
        handle.spawn(async move {
            while let Some(event) = rx.recv().await {
                for sink in &sinks {
                    let fut = std::panic::AssertUnwindSafe(sink.handle(event.clone()));
                    if fut.catch_unwind().await.is_err() {
                        tracing::error!(kind = event.kind.as_str(), "sentri: event sink panicked");
                    }
                }
            }
        });
        Self {
            tx: Some(tx),
            dropped,
        }
    }

    /// Queues an event for the sinks; never waits. A full queue drops it (counted).
    pub fn emit(&self, event: AuthEvent) {
        count_metrics(&event);
        let Some(tx) = &self.tx else {
            return;
        };
        if tx.try_send(Arc::new(event)).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(dropped = n, "sentri: auth event queue full; event dropped");
        }
    }

    /// How many events were dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The counters an event moves (called for every event emitted, sinks or not).
fn count_metrics(event: &AuthEvent) {
    use crate::core::error::ErrorCode;
    use crate::core::observe::{LOGINS, REGISTRATIONS, REUSE_DETECTIONS, REVOCATIONS, count};
    let kind = event.kind;
    match kind {
        AuthEventKind::LoginSucceeded => count(LOGINS, Some(("outcome", "ok"))),
        AuthEventKind::LoginFailed => {
            let throttled = event.error.as_ref().is_some_and(|e| {
                e.is(&ErrorCode::TooManyAttempts) || e.is(&ErrorCode::TwoFactorLocked)
            });
            let outcome = if throttled { "throttled" } else { "failed" };
            count(LOGINS, Some(("outcome", outcome)));
        }
        AuthEventKind::Registered => count(REGISTRATIONS, None),
        AuthEventKind::ReuseDetected => {
            count(REUSE_DETECTIONS, None);
            count(REVOCATIONS, Some(("reason", kind.as_str())));
        }
        AuthEventKind::Logout
        | AuthEventKind::LogoutAll
        | AuthEventKind::PasswordChanged
        | AuthEventKind::PasswordReset => count(REVOCATIONS, Some(("reason", kind.as_str()))),
        _ => {}
    }
}
