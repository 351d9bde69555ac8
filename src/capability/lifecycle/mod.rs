//! The account lifecycle capability: email verification, password reset, sign-in by
//! link, per-app flags for each flow and for public sign-up.
//!
//! Routes (under `auth.router()`): `POST /verify-email`, `POST /verify-email/resend`,
//! `POST /forgot-password`, `POST /reset-password`, `POST /magic-link/request`,
//! `POST /magic-link/consume`. A flow that is switched off answers 404 `NOT_FOUND`.
//!
//! **The account's address** is its identifier when the identifier is an email address
//! (an ASCII `local@domain`), else the address stored for it (the `email` of `POST
//! /register`, or set by
//! [`ServerAuth::provision_user`](crate::ServerAuth::provision_user)); addresses are not
//! unique and never sign anyone in by themselves. An account
//! without an address gets no mail. The address is *verified* when a verification time
//! is stored for that very address: changing the identifier of an address account
//! therefore makes it unverified until the new address is proven.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sentri::SentriError> {
//! use sentri::capability::lifecycle::{Lifecycle, VerificationMode};
//! use sentri::mail::SmtpMailer;
//! use sentri::{ServerConfig, db::Database, token::SigningKey};
//! let db = Database::connect("sqlite::memory:").await?;
//! let key = SigningKey::hs256(b"a secret of at least thirty-two bytes!!")?;
//! let lifecycle = Lifecycle::new(SmtpMailer::from_url("smtp://app:pw@mail.example.com:587")?)
//!     .sender("Acme", "no-reply@acme.example")?
//!     .app_url("https://acme.example")
//!     .verification(VerificationMode::Link)
//!     .require_email_verification(true);
//! let config = ServerConfig::new(db, key, ["user", "admin"]).with(lifecycle);
//! # Ok(()) }
//! ```

mod routes;
mod service;
mod store;

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;

pub use service::{LifecycleService, VerificationMode};
use store::Purpose;

use super::{Capability, Core, CredentialReset, FirstFactor, LoginStep, StepOutcome};
use crate::core::BoxFuture;
use crate::core::error::{ErrorCode, Result, SentriError};
use crate::core::events::{AuthEvent, AuthEventKind, EventSink};
use crate::core::principal::{AuthUser, SessionMeta};
use crate::db::Migration;
use crate::mail::{Mailbox, Mailer, QueueOptions, Templates};

/// The account lifecycle and its settings. Builder-style; see the [module docs](self).
#[derive(Clone)]
#[non_exhaustive]
pub struct Lifecycle {
    pub(crate) signup: bool,
    pub(crate) email_verification: bool,
    pub(crate) reset_password: bool,
    pub(crate) magic_link: bool,
    pub(crate) magic_link_signup: bool,
    pub(crate) require_email_verification: bool,
    pub(crate) verification: VerificationMode,
    pub(crate) code_digits: u32,
    pub(crate) max_code_attempts: u32,
    pub(crate) resend_per_minute: u32,
    pub(crate) resend_per_hour: u32,
    pub(crate) verification_ttl: Duration,
    pub(crate) reset_ttl: Duration,
    pub(crate) magic_link_ttl: Duration,
    pub(crate) app_name: String,
    pub(crate) from: Mailbox,
    pub(crate) app_url: String,
    pub(crate) verify_path: String,
    pub(crate) reset_path: String,
    pub(crate) magic_path: String,
    pub(crate) templates: Templates,
    pub(crate) mailer: Arc<dyn Mailer>,
    pub(crate) queue: QueueOptions,
    pub(crate) security_notices: bool,
    service: Arc<OnceLock<LifecycleService>>,
}

impl fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lifecycle")
            .field("signup", &self.signup)
            .field("email_verification", &self.email_verification)
            .field("reset_password", &self.reset_password)
            .field("magic_link", &self.magic_link)
            .field("magic_link_signup", &self.magic_link_signup)
            .field(
                "require_email_verification",
                &self.require_email_verification,
            )
            .field("verification", &self.verification)
            .field("code_digits", &self.code_digits)
            .field("app_name", &self.app_name)
            .field("app_url", &self.app_url)
            .finish_non_exhaustive()
    }
}

impl Lifecycle {
    /// Every flow on, sending through `mailer`, with these defaults: public sign-up on;
    /// verification by a 6-digit code, valid 20 minutes, 5 wrong codes kill it, resend
    /// at most once a minute and 5 times an hour; login of an unverified account
    /// allowed; reset links valid 30 minutes, sign-in links 15 minutes; app name
    /// `"sentri"`, sender `no-reply@example.invalid` (set yours with
    /// [`sender`](Self::sender)), `app_url` `http://localhost:3000` with the paths
    /// `/verify-email`, `/reset-password` and `/magic-link`; the default [`Templates`]
    /// and [`QueueOptions`].
    pub fn new(mailer: impl Mailer) -> Self {
        Self::with_mailer(Arc::new(mailer))
    }

    /// [`new`](Self::new) with a shared mailer.
    pub fn with_mailer(mailer: Arc<dyn Mailer>) -> Self {
        Self {
            signup: true,
            email_verification: true,
            reset_password: true,
            magic_link: true,
            magic_link_signup: false,
            require_email_verification: false,
            verification: VerificationMode::Code,
            code_digits: 6,
            max_code_attempts: 5,
            resend_per_minute: 1,
            resend_per_hour: 5,
            verification_ttl: Duration::from_secs(20 * 60),
            reset_ttl: Duration::from_secs(30 * 60),
            magic_link_ttl: Duration::from_secs(15 * 60),
            app_name: "sentri".into(),
            from: Mailbox::fixed("sentri", "no-reply@example.invalid"),
            app_url: "http://localhost:3000".into(),
            verify_path: "/verify-email".into(),
            reset_path: "/reset-password".into(),
            magic_path: "/magic-link".into(),
            templates: Templates::default(),
            mailer,
            queue: QueueOptions::default(),
            security_notices: true,
            service: Arc::new(OnceLock::new()),
        }
    }

    /// Public sign-up (`POST /register`); off: it answers 404 (default on).
    pub fn signup(mut self, on: bool) -> Self {
        self.signup = on;
        self
    }

    /// Email verification routes and the message at registration (default on).
    pub fn email_verification(mut self, on: bool) -> Self {
        self.email_verification = on;
        self
    }

    /// Password reset routes (default on).
    pub fn reset_password(mut self, on: bool) -> Self {
        self.reset_password = on;
        self
    }

    /// Sign-in link routes (default on).
    pub fn magic_link(mut self, on: bool) -> Self {
        self.magic_link = on;
        self
    }

    /// Sign-up on first use of a sign-in link (default off). When on, and public sign-up
    /// is open too ([`signup`](Self::signup) on and no `ServerConfig::api_key`), `POST
    /// /magic-link/request` for a well-formed address without an account sends a sign-in
    /// link anyway (the answer is the same 202 as ever), and consuming it creates the
    /// account: the identifier is the address, the default role as `/register` gives
    /// it, no password (sign in by link, or set one through `/forgot-password`), the
    /// address verified. Then it signs in like any sign-in link (the login steps run).
    /// A `register` override of the app is not called for these accounts.
    ///
    /// ```
    /// # fn demo(mailer: sentri::mail::LogMailer) {
    /// use sentri::capability::lifecycle::Lifecycle;
    /// let lifecycle = Lifecycle::new(mailer).magic_link_signup(true);
    /// # let _ = lifecycle;
    /// # }
    /// ```
    pub fn magic_link_signup(mut self, on: bool) -> Self {
        self.magic_link_signup = on;
        self
    }

    /// A password login of an account whose address is not verified answers 403
    /// `EMAIL_NOT_VERIFIED` (only after the password was right) (default off). An
    /// account without any address cannot be verified and is refused too.
    pub fn require_email_verification(mut self, on: bool) -> Self {
        self.require_email_verification = on;
        self
    }

    /// Verification by code or link (default code).
    pub fn verification(mut self, mode: VerificationMode) -> Self {
        self.verification = mode;
        self
    }

    /// Digits of a verification code, 6 to 10 (default 6); `CONFIGURATION_ERROR`
    /// outside that range.
    pub fn code_digits(mut self, digits: u32) -> Result<Self> {
        if !(6..=10).contains(&digits) {
            return Err(SentriError::configuration(
                "code_digits must be between 6 and 10",
            ));
        }
        self.code_digits = digits;
        Ok(self)
    }

    /// Wrong codes that kill a code (default 5, at least 1).
    pub fn max_code_attempts(mut self, n: u32) -> Self {
        self.max_code_attempts = n.max(1);
        self
    }

    /// Verification messages per account per minute and per hour (default 1 and 5).
    pub fn resend_limits(mut self, per_minute: u32, per_hour: u32) -> Self {
        self.resend_per_minute = per_minute;
        self.resend_per_hour = per_hour;
        self
    }

    /// Lifetimes of verification codes/links, reset links and sign-in links (defaults
    /// 20, 30 and 15 minutes).
    pub fn ttls(mut self, verification: Duration, reset: Duration, magic_link: Duration) -> Self {
        self.verification_ttl = verification;
        self.reset_ttl = reset;
        self.magic_link_ttl = magic_link;
        self
    }

    /// The application's name (in messages and as the sender's display name) and the
    /// sender's address. `VALIDATION_ERROR` for a name with control characters (e.g. a
    /// `\r\n`) or a malformed address.
    pub fn sender(mut self, app_name: &str, address: &str) -> Result<Self> {
        self.from = Mailbox::new(Some(app_name), address)?;
        self.app_name = app_name.to_owned();
        Ok(self)
    }

    /// The base URL of the links, e.g. `https://app.example` (default
    /// `http://localhost:3000`).
    pub fn app_url(mut self, url: impl Into<String>) -> Self {
        self.app_url = url.into();
        self
    }

    /// The paths of the verification, reset and sign-in pages under `app_url`; each
    /// gets `?token=…` (defaults `/verify-email`, `/reset-password`, `/magic-link`).
    pub fn paths(
        mut self,
        verify: impl Into<String>,
        reset: impl Into<String>,
        magic_link: impl Into<String>,
    ) -> Self {
        self.verify_path = verify.into();
        self.reset_path = reset.into();
        self.magic_path = magic_link.into();
        self
    }

    /// Replaces the message templates.
    pub fn templates(mut self, templates: Templates) -> Self {
        self.templates = templates;
        self
    }

    /// The notice mailed to the account after a password reset, a password change or
    /// logout-all (default on): the templates
    /// [`password_reset_notice`](Templates::password_reset_notice),
    /// [`password_changed_notice`](Templates::password_changed_notice) and
    /// [`logout_all_notice`](Templates::logout_all_notice), fixed texts without any
    /// secret, to the account's address when it is verified (after a reset: always, the
    /// reset link just proved it). Off: no notice; the tokens still end.
    pub fn security_notices(mut self, on: bool) -> Self {
        self.security_notices = on;
        self
    }

    /// Sets the send queue's options (capacity, tries, backoff).
    pub fn queue(mut self, options: QueueOptions) -> Self {
        self.queue = options;
        self
    }

    /// Waits until the work that requests answered so far moved off the request path
    /// (the `202` answers of `/forgot-password`, `/magic-link/request` and
    /// `/verify-email/resend`) has finished: its tokens are stored and its messages
    /// queued (not necessarily delivered). For a graceful shutdown, and for tests.
    /// Returns at once before the capability served its first request.
    ///
    /// ```no_run
    /// # async fn demo(lifecycle: sentri::capability::lifecycle::Lifecycle) {
    /// // `lifecycle` is a clone of the value given to `ServerConfig::with`.
    /// lifecycle.settled().await;
    /// # }
    /// ```
    pub async fn settled(&self) {
        if let Some(service) = self.service.get() {
            service.settled().await;
        }
    }

    fn ttl(&self, purpose: Purpose) -> Duration {
        match purpose {
            Purpose::Verify => self.verification_ttl,
            Purpose::Reset => self.reset_ttl,
            Purpose::Magic => self.magic_link_ttl,
        }
    }

    /// The one service of this capability (its send queue is started on first use).
    fn service(&self, core: &Core) -> LifecycleService {
        self.service
            .get_or_init(|| {
                // The service's copy gets its own (unused) cell: no reference cycle.
                let mut config = self.clone();
                config.service = Arc::new(OnceLock::new());
                LifecycleService::new(core.clone(), config)
            })
            .clone()
    }
}

impl Capability for Lifecycle {
    fn name(&self) -> &'static str {
        "lifecycle"
    }

    fn migrations(&self) -> &'static [Migration] {
        store::MIGRATIONS
    }

    fn error_codes(&self) -> &'static [(&'static str, StatusCode)] {
        &[("EMAIL_NOT_VERIFIED", StatusCode::FORBIDDEN)]
    }

    fn routes(&self, core: &Core) -> Router {
        routes::router(self, self.service(core))
    }

    #[cfg(feature = "openapi")]
    fn openapi(&self, doc: &crate::http::openapi::ApiDoc) -> utoipa::openapi::OpenApi {
        routes::openapi(self, doc)
    }

    fn login_step(&self) -> Option<Arc<dyn LoginStep>> {
        self.require_email_verification.then(|| {
            Arc::new(RequireVerified {
                lifecycle: self.clone(),
            }) as Arc<dyn LoginStep>
        })
    }

    /// Ends every reset, sign-in and verification token of the user, then mails the
    /// notice of `reset` ([`security_notices`](Lifecycle::security_notices)).
    fn end_credentials<'a>(
        &'a self,
        core: &'a Core,
        user_id: &'a str,
        reset: CredentialReset,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.service(core).end_credentials(user_id, reset).await })
    }

    /// Ends every token mailed to the user (to the old address, or the current one).
    fn address_changed<'a>(
        &'a self,
        core: &'a Core,
        user_id: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.service(core).end_mailed_tokens(user_id).await })
    }

    fn event_sinks(&self) -> Vec<Arc<dyn EventSink>> {
        vec![Arc::new(AccountMail {
            service: self.service.clone(),
            verification: self.email_verification,
        })]
    }

    fn closes_signup(&self) -> bool {
        !self.signup
    }

    fn mails_accounts(&self) -> bool {
        true
    }
}

/// Halts a password login of an unverified account with `EMAIL_NOT_VERIFIED`.
struct RequireVerified {
    lifecycle: Lifecycle,
}

impl LoginStep for RequireVerified {
    fn after_first_factor<'a>(
        &'a self,
        core: &'a Core,
        user: &'a AuthUser,
        _meta: &'a SessionMeta,
        factor: FirstFactor,
    ) -> BoxFuture<'a, Result<StepOutcome>> {
        Box::pin(async move {
            // A link sign-in just proved the address.
            if factor == FirstFactor::EmailLink {
                return Ok(StepOutcome::Continue);
            }
            if self
                .lifecycle
                .service(core)
                .email_verified(&user.id)
                .await?
            {
                return Ok(StepOutcome::Continue);
            }
            Ok(StepOutcome::Halt(SentriError::new(
                ErrorCode::EmailNotVerified,
                "Email address not verified",
            )))
        })
    }
}

/// Mail that follows account events, off the request path (on the event task): the
/// verification message after registration, and after an identifier change a notice to
/// the previous verified address plus a verification message to the new one.
struct AccountMail {
    service: Arc<OnceLock<LifecycleService>>,
    verification: bool,
}

impl EventSink for AccountMail {
    fn handle(&self, event: Arc<AuthEvent>) -> BoxFuture<'static, ()> {
        let service = self.service.get().cloned();
        let verification = self.verification;
        Box::pin(async move {
            let (Some(service), Some(user_id)) = (service, event.user_id.as_deref()) else {
                return;
            };
            let sent = match event.kind {
                AuthEventKind::Registered if verification => {
                    service.send_verification(user_id, event.at_ms).await
                }
                AuthEventKind::IdentifierChanged => {
                    service.address_changed(user_id, event.at_ms).await
                }
                _ => Ok(()),
            };
            if let Err(err) = sent {
                tracing::warn!(target: "sentri::lifecycle", error = %err, "sentri: account message not sent");
            }
        })
    }
}
