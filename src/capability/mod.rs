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
mod address;
#[cfg(feature = "api-keys")]
#[cfg_attr(docsrs, doc(cfg(feature = "api-keys")))]
pub mod api_keys;
pub mod audit;
pub mod devices;
pub mod lifecycle;
pub mod roles;
#[cfg(feature = "sso")]
#[cfg_attr(docsrs, doc(cfg(feature = "sso")))]
pub mod sso;
pub mod two_factor;
mod user_roles;
pub mod workspaces;

use std::fmt;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;

use crate::core::BoxFuture;
use crate::core::error::Result;
use crate::core::events::{AuthEvent, AuthEventKind, EventBus, EventSink};
use crate::core::principal::{Assurance, AuthUser, SessionMeta};
use crate::db::Migration;
use crate::http::guard::{Authenticate, CurrentUser, GuardLayer};
use crate::http::tenant::Membership;
use crate::http::transport::Transport;
use crate::identity::Identity;
use crate::identity::ProvisionUser;
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
    /// Every capability's login step, in registration order, with its capability's
    /// name (so a step that challenged can have the steps after it run).
    pub(crate) login_steps: Arc<[(&'static str, Arc<dyn LoginStep>)]>,
    /// Every enabled capability, for the hooks that reach all of them (e.g.
    /// [`Core::end_every_credential`]).
    pub(crate) capabilities: Arc<[Arc<dyn Capability>]>,
    pub(crate) throttle: Throttle,
    /// `ServerConfig::sensitive_requires_2fa`.
    pub(crate) sensitive_requires_2fa: bool,
    /// `ServerConfig::reauth_window`.
    pub(crate) reauth_window: std::time::Duration,
    /// `ServerConfig::api_key` is set: `POST /register` is for trusted callers only, so
    /// no capability may create accounts for the public (e.g. sign-up by link).
    pub(crate) registration_key: bool,
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

    /// A layer that requires a session signed in with a second factor (the server's
    /// `require_2fa()`).
    pub fn require_2fa(&self) -> GuardLayer {
        GuardLayer::require_2fa(self.guard.clone())
    }

    /// A layer for sensitive operations: a session whose authentication is recent (see
    /// [`Core::check_sensitive`]); the server's `require_recent_auth()`.
    pub fn sensitive(&self) -> GuardLayer {
        GuardLayer::sensitive(self.guard.clone())
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
    /// ends the login with its error, the first that challenges ends it with its
    /// [`Challenge`] (`Ok(Some(..))`: no session may be opened). Every way of signing in
    /// passes through here.
    pub async fn run_login_steps(
        &self,
        user: &AuthUser,
        meta: &SessionMeta,
        factor: FirstFactor,
    ) -> Result<Option<Challenge>> {
        self.run_steps(self.login_steps.iter(), user, meta, factor)
            .await
    }

    async fn run_steps<'s>(
        &self,
        steps: impl Iterator<Item = &'s (&'static str, Arc<dyn LoginStep>)>,
        user: &AuthUser,
        meta: &SessionMeta,
        factor: FirstFactor,
    ) -> Result<Option<Challenge>> {
        for (_, step) in steps {
            match step.after_first_factor(self, user, meta, factor).await? {
                StepOutcome::Continue => {}
                StepOutcome::Halt(err) => return Err(err),
                StepOutcome::Challenge(challenge) => return Ok(Some(challenge)),
            }
        }
        Ok(None)
    }

    /// Goes on with a login whose step of capability `after` challenged, once that
    /// challenge was met (e.g. `POST /2fa/verify`): the login steps registered after
    /// `after` run in order, as they would have for a login that was never
    /// challenged (one may halt, e.g. `EMAIL_NOT_VERIFIED`, or challenge in turn), then
    /// a session is opened with `assurance`. Meeting a challenge never skips a later
    /// step. When no capability named `after` has a step, every step runs again.
    pub async fn resume_sign_in(
        &self,
        after: &str,
        user: AuthUser,
        meta: SessionMeta,
        factor: FirstFactor,
        assurance: &Assurance,
    ) -> Result<SignIn> {
        let steps = &self.login_steps;
        let start = steps
            .iter()
            .position(|(name, _)| *name == after)
            .map_or(0, |at| at + 1);
        if let Some(challenge) = self
            .run_steps(steps[start..].iter(), &user, &meta, factor)
            .await?
        {
            return Ok(SignIn::Challenge(challenge));
        }
        let res = self.open_session(user, meta, assurance).await?;
        Ok(SignIn::Session(res))
    }

    /// Signs `user` in after a first factor other than the password (a magic link, an
    /// external identity provider): the login steps, then (unless a step challenged) a
    /// new session and token pair and a `login_succeeded` event. The password login runs
    /// the same steps. Answer it with [`Core::sign_in_response`].
    pub async fn sign_in(
        &self,
        user: AuthUser,
        meta: SessionMeta,
        factor: FirstFactor,
    ) -> Result<SignIn> {
        if let Some(challenge) = self.run_login_steps(&user, &meta, factor).await? {
            return Ok(SignIn::Challenge(challenge));
        }
        let res = self.open_session(user, meta, &factor.assurance()).await?;
        Ok(SignIn::Session(res))
    }

    /// Opens a session for `user` proven with `assurance` (after the login steps, or
    /// once a challenge was met) and emits `login_succeeded`.
    pub async fn open_session(
        &self,
        user: AuthUser,
        meta: SessionMeta,
        assurance: &Assurance,
    ) -> Result<AuthResult> {
        let res = self
            .sessions
            .open_family(user, meta.clone(), assurance)
            .await?;
        let mut event = AuthEvent::new(AuthEventKind::LoginSucceeded, self.now_ms())
            .user(&res.user.id)
            .session(&res.session_id);
        event.user = Some(res.user.clone());
        self.emit(event.meta(meta));
        Ok(res)
    }

    /// The HTTP answer of a sign-in: the standard token response (with cookies) for a
    /// session, `200 {data: <challenge>}` without tokens or cookies for a challenge.
    pub fn sign_in_response(&self, outcome: &SignIn, message: &'static str) -> Response {
        match outcome {
            SignIn::Session(res) => self.transport.token_response(StatusCode::OK, message, res),
            SignIn::Challenge(c) => crate::http::success(StatusCode::OK, c.message, c.data.clone()),
        }
    }

    /// Ends every credential of `user_id`: every session, then whatever each enabled
    /// capability issued ([`Capability::end_credentials`]: API keys, outstanding
    /// mailed tokens, two-factor challenges, …). When this returns, none of them
    /// authenticates anything, in any process. Password reset, password change and
    /// logout-all go through here.
    pub async fn end_every_credential(&self, user_id: &str, reset: CredentialReset) -> Result<()> {
        self.sessions.logout_all(user_id).await?;
        for capability in self.capabilities.iter() {
            capability.end_credentials(self, user_id, reset).await?;
        }
        Ok(())
    }

    /// Tells every enabled capability that the address of `user_id` may have changed
    /// (its identifier, or its separate `email`), through
    /// [`Capability::address_changed`]: what was mailed to the old address (reset,
    /// sign-in and verification tokens) must stop working. The account capability's
    /// change of identifier calls it once the new identifier is stored, before it
    /// answers.
    pub async fn address_changed(&self, user_id: &str) -> Result<()> {
        for capability in self.capabilities.iter() {
            capability.address_changed(self, user_id).await?;
        }
        Ok(())
    }

    /// Re-authenticates the session `sid` of `user_id`: proves every factor the account
    /// has (its password when it has one, the code of each enrolled
    /// [`ReauthFactor`]), then records the new authentication on the session (its
    /// `auth_time`, `amr` and level) and signs an access token carrying it; the
    /// session's refresh tokens go on issuing tokens that carry it.
    ///
    /// 400 `VALIDATION_ERROR` without the password the account has, 403
    /// `TWO_FACTOR_REQUIRED` without the code of an enrolled factor, 401
    /// `INVALID_CREDENTIALS` / `TWO_FACTOR_INVALID` for a wrong one (throttled like a
    /// login), 403 `REAUTH_REQUIRED` for an account with neither (sign in again).
    pub async fn reauthenticate(
        &self,
        user_id: &str,
        sid: &str,
        password: Option<&str>,
        code: Option<&str>,
    ) -> Result<(String, crate::token::AccessClaims)> {
        let stored = self
            .identity
            .db
            .find_user_by_id(user_id)
            .await?
            .ok_or_else(crate::SentriError::user_not_found)?;
        let mut factors = Vec::new();
        for capability in self.capabilities.iter() {
            if let Some(factor) = capability.reauth_factor()
                && factor.enrolled(self, user_id).await?
            {
                factors.push(factor);
            }
        }
        let has_password = crate::identity::has_password(&stored.password_hash);
        if !has_password && factors.is_empty() {
            return Err(crate::SentriError::new(
                crate::ErrorCode::ReauthRequired,
                "Sign in again to confirm it is you",
            ));
        }
        let mut amr: Vec<String> = Vec::new();
        if has_password {
            let password =
                password.ok_or_else(|| crate::SentriError::validation("password is required"))?;
            let key = crate::throttle::ThrottleKey::subject("current-password", user_id);
            let attempt = self.throttle.attempt(&[key]).await?;
            let checked = self
                .identity
                .check_current_password(user_id, password)
                .await;
            attempt.settle(&checked).await;
            checked?;
            amr.push("pwd".to_owned());
        }
        if !factors.is_empty() {
            let code = code.ok_or_else(|| {
                crate::SentriError::new(
                    crate::ErrorCode::TwoFactorRequired,
                    "The second factor's code is required",
                )
            })?;
            // Every enrolled factor is offered the code; the first that accepts it counts.
            let mut proven = None;
            let mut refusal = None;
            for factor in &factors {
                match factor.verify(self, user_id, code).await {
                    Ok(method) => {
                        proven = Some(method);
                        break;
                    }
                    Err(err) => refusal = Some(err),
                }
            }
            match (proven, refusal) {
                (Some(method), _) => amr.push(method.to_owned()),
                (None, Some(err)) => return Err(err),
                (None, None) => return Err(crate::SentriError::invalid_credentials()),
            }
        }
        let level = if amr.len() >= 2 {
            amr.push("mfa".to_owned());
            2
        } else {
            1
        };
        let assurance = Assurance {
            amr,
            level,
            auth_time: None,
        };
        let signed = self
            .sessions
            .reauthenticated(sid, user_id, &assurance)
            .await?;
        self.emit(
            AuthEvent::new(AuthEventKind::Reauthenticated, self.now_ms())
                .user(user_id)
                .session(sid),
        );
        Ok(signed)
    }

    /// The one rule of sensitive operations (change password or identifier, create an
    /// API key, link or unlink an identity provider, remove a second factor or
    /// regenerate backup codes, grant owner or admin in a workspace, delete a
    /// workspace, end other sessions): the caller authenticated (logged in or
    /// re-authenticated, `auth_time`) within `ServerConfig::reauth_window` (403
    /// `REAUTH_REQUIRED` otherwise), and, when `ServerConfig::sensitive_requires_2fa` is
    /// on, with a second factor (403 `TWO_FACTOR_REQUIRED` otherwise). A caller without
    /// an assurance (an API key) never passes.
    pub fn check_sensitive(&self, assurance: Option<&Assurance>) -> Result<()> {
        if self.sensitive_requires_2fa && !assurance.is_some_and(Assurance::has_second_factor) {
            return Err(crate::SentriError::new(
                crate::ErrorCode::TwoFactorRequired,
                "This operation requires signing in with a second factor",
            ));
        }
        crate::http::guard::check_fresh(
            assurance,
            self.now_ms().div_euclid(1000),
            self.reauth_window,
        )
    }
}

/// A login that needs one more step: answered `200` with `data` (e.g.
/// `{"twoFactorRequired": true, "twoFactorToken": "…"}`), and no session, tokens or
/// cookies. `Debug` never shows `data` (it carries a secret).
#[derive(Clone)]
pub struct Challenge {
    /// The envelope message.
    pub message: &'static str,
    /// The envelope data.
    pub data: serde_json::Value,
}

impl fmt::Debug for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Challenge")
            .field("message", &self.message)
            .field("data", &"<redacted>")
            .finish()
    }
}

/// How a sign-in ended: a session, or a challenge to meet first.
#[derive(Debug, Clone)]
pub enum SignIn {
    /// A session was opened.
    Session(AuthResult),
    /// No session: the client must meet this challenge (e.g. `POST /2fa/verify`).
    Challenge(Challenge),
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

impl FirstFactor {
    /// Its RFC 8176 `amr` value: `pwd`; `email` and `ext` (not registered in RFC 8176)
    /// for a link sent by e-mail and an external provider.
    pub fn amr(self) -> &'static str {
        match self {
            Self::Password => "pwd",
            Self::EmailLink => "email",
            Self::External => "ext",
        }
    }

    /// The factor whose [`amr`](Self::amr) value is `amr`; an unknown value reads as
    /// [`Password`](Self::Password), the factor later login steps trust least.
    pub(crate) fn from_amr(amr: &str) -> Self {
        match amr {
            "email" => Self::EmailLink,
            "ext" => Self::External,
            _ => Self::Password,
        }
    }

    /// The assurance of a login by this factor alone (level 1).
    pub fn assurance(self) -> Assurance {
        Assurance::single(self.amr())
    }
}

/// Why every credential of an account is being ended (see
/// [`Core::end_every_credential`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialReset {
    /// The password was reset through a mailed token.
    PasswordReset,
    /// The user changed their password.
    PasswordChanged,
    /// The user ended every session (`POST /logout-all`).
    LogoutAll,
    /// The first proof of control of the account's address, on an account that was
    /// registered without that proof: nothing set up before it is trusted.
    AddressProven,
}

/// What a login step decided.
#[derive(Debug)]
pub enum StepOutcome {
    /// The login goes on (to the next step, then a session is opened).
    Continue,
    /// The login stops here with this error (e.g. "second factor required"); no session
    /// is opened.
    Halt(crate::SentriError),
    /// The login stops here without a session; the client is answered `200` with the
    /// challenge (e.g. "second factor required" and its 2FA token).
    Challenge(Challenge),
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
///
/// A guard admits it only where the route says so (`require_scopes`, or
/// [`GuardLayer::admit`] with its [`kind`](Credential::kind)); elsewhere a request that
/// [presents](Credential::presented) it is refused with 403 `CREDENTIAL_NOT_ADMITTED`
/// before any lookup.
pub trait Credential: Send + Sync + 'static {
    /// Its kind, as [`CredentialInfo::kind`](crate::http::CredentialInfo) carries it
    /// (e.g. `"api_key"`).
    fn kind(&self) -> &'static str;

    /// `true` when the request head carries this kind of credential (a cheap look at the
    /// headers, no lookup), valid or not.
    fn presented(&self, parts: &Parts) -> bool;

    /// Authenticates the request head, or says it carries no such credential.
    fn authenticate<'a>(
        &'a self,
        core: &'a Core,
        parts: &'a Parts,
    ) -> BoxFuture<'a, Result<Option<CurrentUser>>>;
}

/// A way to re-authenticate besides the password (`POST /reauthenticate`), offered by
/// a capability: a TOTP code, a passkey, … A re-authentication proves every factor the
/// account has, as a login would.
pub trait ReauthFactor: Send + Sync + 'static {
    /// `true` when `user_id` has this factor: a re-authentication of that user must
    /// prove it.
    fn enrolled<'a>(&'a self, core: &'a Core, user_id: &'a str) -> BoxFuture<'a, Result<bool>>;

    /// Checks `code` for `user_id`: the RFC 8176 method it proved (e.g. `"otp"`), or
    /// its refusal (e.g. `TWO_FACTOR_INVALID`).
    fn verify<'a>(
        &'a self,
        core: &'a Core,
        user_id: &'a str,
        code: &'a str,
    ) -> BoxFuture<'a, Result<&'static str>>;
}

/// One capability of the auth server. See the [module docs](self).
pub trait Capability: Send + Sync + 'static {
    /// A unique, stable name (also the component of its migrations).
    fn name(&self) -> &'static str;

    /// Checks its configuration when the auth is built (`CONFIGURATION_ERROR` fails
    /// `create_auth`).
    fn check(&self) -> Result<()> {
        Ok(())
    }

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

    /// A factor users can re-authenticate with (`POST /reauthenticate`).
    fn reauth_factor(&self) -> Option<Arc<dyn ReauthFactor>> {
        None
    }

    /// Ends every credential this capability issued to `user_id` (its keys, its
    /// outstanding tokens and challenges), for [`Core::end_every_credential`]. When it
    /// returns, none of them may authenticate anything in any process. The default
    /// issues none.
    fn end_credentials<'a>(
        &'a self,
        _core: &'a Core,
        _user_id: &'a str,
        _reset: CredentialReset,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// Runs after the address of `user_id` may have changed ([`Core::address_changed`]):
    /// whatever this capability mailed to the previous address must stop working. The
    /// default mails nothing.
    fn address_changed<'a>(
        &'a self,
        _core: &'a Core,
        _user_id: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// Sinks that receive every security event.
    fn event_sinks(&self) -> Vec<Arc<dyn EventSink>> {
        Vec::new()
    }

    /// The OpenAPI description of its [routes](Capability::routes) (feature `openapi`),
    /// merged into [`ServerAuth::openapi`](crate::ServerAuth::openapi). Every route a
    /// capability serves must be described here (`tests/it/openapi.rs` checks sentri's
    /// own). The default describes none.
    #[cfg(feature = "openapi")]
    #[cfg_attr(docsrs, doc(cfg(feature = "openapi")))]
    fn openapi(&self, doc: &crate::http::openapi::ApiDoc) -> utoipa::openapi::OpenApi {
        doc.paths([])
    }

    /// How its [credential](Capability::credential) appears in the OpenAPI document: its
    /// security scheme (name and definition) and the codes it refuses with.
    #[cfg(feature = "openapi")]
    #[cfg_attr(docsrs, doc(cfg(feature = "openapi")))]
    fn openapi_credential(
        &self,
    ) -> Option<(
        crate::http::openapi::CredentialDoc,
        utoipa::openapi::security::SecurityScheme,
    )> {
        None
    }

    /// `true` when this capability closes public sign-up: the core `POST /register`
    /// then answers 404 `NOT_FOUND` (trusted server-side creation still works).
    fn closes_signup(&self) -> bool {
        false
    }

    /// `true` when this capability mails accounts: `POST /register` then accepts an
    /// optional `email` for an account whose identifier is not an address.
    fn mails_accounts(&self) -> bool {
        false
    }

    /// The memberships the tenant guard checks (the workspaces capability).
    fn membership(&self, _core: &Core) -> Option<Arc<dyn Membership>> {
        None
    }

    /// Runs after `provision_user` created (or found) `user`: the capability handles
    /// the part of `input` that is its own (e.g. a workspace to create or join).
    /// `Ok(true)`: it handled something.
    fn provisioned<'a>(
        &'a self,
        _core: &'a Core,
        _user: &'a AuthUser,
        _input: &'a ProvisionUser,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async { Ok(false) })
    }
}
