//! Capabilities: each optional feature of the auth server is one folder here that plugs
//! into the core through one trait, [`Capability`].
//!
//! A capability contributes, all optional: its database [migrations](Capability::migrations)
//! (keyed by its name, so switching it on later migrates it alone), its
//! [routes](Capability::routes) (merged into `auth.router()`), the
//! [error codes](Capability::error_codes) it can answer with, a
//! [login step](Capability::login_step) (e.g. a second factor), an extra
//! [credential](Capability::credential) kind for guarded routes (e.g. API keys) and
//! [event sinks](Capability::event_sinks). It reaches the core only through [`Core`]:
//! users, sessions, events, the guard and the cookie transport. A capability never
//! imports another one; what two share belongs in `identity`, `session` or `core`.
//!
//! Enabling one is one builder call:
//!
//! ```no_run
//! # async fn demo() -> Result<(), sentri::SentriError> {
//! use sentri::{ServerConfig, capability::account::Account, db::Database, token::SigningKey};
//! let db = Database::connect("sqlite::memory:").await?;
//! let key = SigningKey::hs256(b"a secret of at least thirty-two bytes!!")?;
//! let config = ServerConfig::new(db, key, ["user", "admin"]).with(Account::default());
//! # Ok(()) }
//! ```

pub mod account;
pub mod audit;
pub mod devices;

use std::fmt;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::http::request::Parts;

use crate::core::BoxFuture;
use crate::core::error::Result;
use crate::core::events::{AuthEvent, AuthEventKind, EventBus, EventSink};
use crate::core::principal::{AuthUser, SessionMeta};
use crate::db::Migration;
use crate::http::guard::{Authenticate, CurrentUser, GuardLayer};
use crate::http::transport::Transport;
use crate::identity::Identity;
use crate::session::{AuthResult, Sessions};
use crate::throttle::Throttle;

/// The narrow view of the core a capability works with. Cheap to clone.
#[derive(Clone)]
pub struct Core {
    pub(crate) identity: Arc<Identity>,
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) events: Arc<EventBus>,
    pub(crate) guard: Arc<dyn Authenticate>,
    pub(crate) transport: Arc<Transport>,
    pub(crate) login_steps: Arc<[Arc<dyn LoginStep>]>,
    pub(crate) throttle: Throttle,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core").finish_non_exhaustive()
    }
}

impl Core {
    /// A layer that requires an authenticated caller (the server's `protect()`).
    pub fn protect(&self) -> GuardLayer {
        GuardLayer::protect(self.guard.clone())
    }

    /// A layer that requires one of `roles`, without the start-up role-name check.
    pub(crate) fn any_role(&self, roles: Vec<String>) -> GuardLayer {
        GuardLayer::any_role_unchecked(self.guard.clone(), roles)
    }

    /// The attempt limiter of secret-checking endpoints (`ServerConfig::throttling`;
    /// admits everything when throttling is off). See [`crate::throttle`].
    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    /// Queues a security event (never blocks).
    pub fn emit(&self, event: AuthEvent) {
        self.events.emit(event);
    }

    /// The current time of the configured clock, unix epoch milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.sessions.now()
    }

    /// Runs every capability's [`LoginStep`] for `user`, in order; the first that halts
    /// ends the login with its error. Every way of signing in passes through here.
    pub async fn run_login_steps(
        &self,
        user: &AuthUser,
        meta: &SessionMeta,
        factor: FirstFactor,
    ) -> Result<()> {
        for step in self.login_steps.iter() {
            if let StepOutcome::Halt(err) =
                step.after_first_factor(self, user, meta, factor).await?
            {
                return Err(err);
            }
        }
        Ok(())
    }

    /// Signs `user` in after a first factor other than the password (a magic link, an
    /// external identity provider): the login steps, then a new session and token pair,
    /// then a `login_succeeded` event. The password login runs the same steps.
    pub async fn sign_in(
        &self,
        user: AuthUser,
        meta: SessionMeta,
        factor: FirstFactor,
    ) -> Result<AuthResult> {
        self.run_login_steps(&user, &meta, factor).await?;
        let res = self.sessions.open_family(user, meta.clone()).await?;
        let mut event = AuthEvent::new(AuthEventKind::LoginSucceeded, self.now_ms())
            .user(&res.user.id)
            .session(&res.session_id);
        event.user = Some(res.user.clone());
        self.emit(event.meta(meta));
        Ok(res)
    }
}

/// How the first factor of a login was proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FirstFactor {
    /// Identifier and password (`POST /login`).
    Password,
    /// A single-use link or code sent to the account's address.
    EmailLink,
    /// An external identity provider (single sign-on).
    External,
}

/// What a login step decided.
#[derive(Debug)]
pub enum StepOutcome {
    /// The login goes on (to the next step, then a session is opened).
    Continue,
    /// The login stops here with this error (e.g. "second factor required"); no session
    /// is opened.
    Halt(crate::SentriError),
}

/// An extra step of every login, after the password (or other first factor) was checked
/// and before a session is opened.
pub trait LoginStep: Send + Sync + 'static {
    /// Decides whether `user`'s login may go on.
    fn after_first_factor<'a>(
        &'a self,
        core: &'a Core,
        user: &'a AuthUser,
        meta: &'a SessionMeta,
        factor: FirstFactor,
    ) -> BoxFuture<'a, Result<StepOutcome>>;
}

/// An extra kind of credential on guarded routes (e.g. an API key header), tried before
/// the access token. `Ok(None)`: not this kind of credential, try the next.
pub trait Credential: Send + Sync + 'static {
    /// Authenticates the request head, or says it carries no such credential.
    fn authenticate<'a>(
        &'a self,
        core: &'a Core,
        parts: &'a Parts,
    ) -> BoxFuture<'a, Result<Option<CurrentUser>>>;
}

/// One capability of the auth server. See the [module docs](self).
pub trait Capability: Send + Sync + 'static {
    /// A unique, stable name (also the component of its migrations).
    fn name(&self) -> &'static str;

    /// Its database migrations, in order.
    fn migrations(&self) -> &'static [Migration] {
        &[]
    }

    /// The error codes it can answer with, and their statuses (for documentation and
    /// clients).
    fn error_codes(&self) -> &'static [(&'static str, StatusCode)] {
        &[]
    }

    /// Its routes, merged into `auth.router()`.
    fn routes(&self, _core: &Core) -> Router {
        Router::new()
    }

    /// A step every login passes through.
    fn login_step(&self) -> Option<Arc<dyn LoginStep>> {
        None
    }

    /// An extra credential kind for guarded routes.
    fn credential(&self) -> Option<Arc<dyn Credential>> {
        None
    }

    /// Sinks that receive every security event.
    fn event_sinks(&self) -> Vec<Arc<dyn EventSink>> {
        Vec::new()
    }
}
