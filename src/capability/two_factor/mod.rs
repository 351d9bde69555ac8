//! The two-factor capability: TOTP devices (RFC 6238) with replay protection, backup
//! codes, a step-up login and the assurance level guarded routes can require.
//!
//! Routes (all under `auth.router()`):
//!
//! | route | who | body | answer |
//! | --- | --- | --- | --- |
//! | `GET /2fa` | signed in | | `{enabled, devices: [{id, name, confirmed, createdAt}], backupCodesRemaining}` |
//! | `POST /2fa/totp/enroll` | signed in | `{password, name?}` | `{deviceId, name, secret, otpauthUrl}` (shown once) |
//! | `POST /2fa/totp/confirm` | signed in | `{deviceId, code}` | `{backupCodes}` (first device: shown once; else `null`) |
//! | `DELETE /2fa/totp/{id}` | signed in | `{password, code}` (TOTP or backup code) | `null` |
//! | `POST /2fa/backup-codes` | signed in | `{password, code}` | `{backupCodes}` (the old set stops working) |
//! | `POST /2fa/verify` | anyone | `{twoFactorToken, code}` | the login response (tokens, cookies) |
//!
//! A login (password, or any capability's [`Core::sign_in`]) of a user with a confirmed
//! device answers `200 {twoFactorRequired: true, twoFactorToken, expiresIn}` and opens no
//! session; `POST /2fa/verify` completes it with a session of assurance level 2.
//!
//! ```
//! use sentri::capability::two_factor::TwoFactor;
//! use sentri::core::seal::Sealer;
//! let sealer = Sealer::new("kek-2026", [7u8; 32]).unwrap();
//! let two_factor = TwoFactor::new(sealer).issuer("Example Inc.");
//! # let _ = two_factor;
//! ```

mod routes;
mod service;
mod store;
mod totp;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;

pub use service::{Enrolment, TwoFactorService};
pub use totp::totp_code;

use super::{Capability, Core, CredentialReset, FirstFactor, LoginStep, ReauthFactor, StepOutcome};
use crate::core::BoxFuture;
use crate::core::error::Result;
use crate::core::principal::{AuthUser, SessionMeta};
use crate::core::seal::Sealer;
use crate::db::Migration;

type AccountName = Arc<dyn Fn(&AuthUser) -> String + Send + Sync>;

/// The two-factor capability and its settings.
#[derive(Clone)]
#[non_exhaustive]
pub struct TwoFactor {
    /// Seals TOTP secrets at rest (AES-256-GCM, key id for rotation). Required.
    pub(crate) sealer: Arc<Sealer>,
    /// The issuer in `otpauth://` URLs (default `"sentri"`).
    pub(crate) issuer: String,
    /// The account name in `otpauth://` URLs (default: the user's identifier).
    pub(crate) account_name: AccountName,
    /// Steps of clock skew accepted on each side (default 1, at most 10).
    pub(crate) skew: u8,
    /// Backup codes per set (default 10, 1 to 50).
    pub(crate) backup_codes: usize,
    /// Lifetime of a 2FA token (default 5 minutes).
    pub(crate) challenge_ttl: Duration,
    /// Codes one 2FA token accepts before it dies (default 5).
    pub(crate) challenge_attempts: u32,
    /// Attempts per user in `failure_window` before `TWO_FACTOR_LOCKED` (default 10).
    pub(crate) max_failures: u32,
    /// The window of the per-user limit; it slides with each attempt (default 15 min).
    pub(crate) failure_window: Duration,
    /// How long an unconfirmed enrolment can be confirmed (default 10 minutes).
    pub(crate) enroll_ttl: Duration,
    /// Devices per user, unconfirmed included (default 5).
    pub(crate) max_devices: usize,
}

impl fmt::Debug for TwoFactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwoFactor")
            .field("sealer", &self.sealer)
            .field("issuer", &self.issuer)
            .field("skew", &self.skew)
            .field("backup_codes", &self.backup_codes)
            .field("challenge_ttl", &self.challenge_ttl)
            .field("challenge_attempts", &self.challenge_attempts)
            .field("max_failures", &self.max_failures)
            .field("failure_window", &self.failure_window)
            .field("enroll_ttl", &self.enroll_ttl)
            .field("max_devices", &self.max_devices)
            .finish_non_exhaustive()
    }
}

impl TwoFactor {
    /// The capability with every default, sealing secrets with `sealer`.
    pub fn new(sealer: Sealer) -> Self {
        Self {
            sealer: Arc::new(sealer),
            issuer: "sentri".to_owned(),
            account_name: Arc::new(|u: &AuthUser| u.identifier.clone()),
            skew: 1,
            backup_codes: 10,
            challenge_ttl: Duration::from_secs(300),
            challenge_attempts: 5,
            max_failures: 10,
            failure_window: Duration::from_secs(900),
            enroll_ttl: Duration::from_secs(600),
            max_devices: 5,
        }
    }

    /// Sets the issuer shown by authenticator apps.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }

    /// Sets how the account is named in authenticator apps.
    pub fn account_name(mut self, f: impl Fn(&AuthUser) -> String + Send + Sync + 'static) -> Self {
        self.account_name = Arc::new(f);
        self
    }

    /// Sets the accepted clock skew in 30 s steps on each side (capped at 10).
    pub fn skew(mut self, steps: u8) -> Self {
        self.skew = steps.min(10);
        self
    }

    /// Sets the number of backup codes per set (1 to 50).
    pub fn backup_codes(mut self, n: usize) -> Self {
        self.backup_codes = n.clamp(1, 50);
        self
    }

    /// Sets the lifetime of a 2FA token (at least 30 s, at most 30 minutes).
    pub fn challenge_ttl(mut self, ttl: Duration) -> Self {
        self.challenge_ttl = ttl.clamp(Duration::from_secs(30), Duration::from_secs(1800));
        self
    }

    /// Sets how many codes one 2FA token accepts (1 to 10).
    pub fn challenge_attempts(mut self, n: u32) -> Self {
        self.challenge_attempts = n.clamp(1, 10);
        self
    }

    /// Sets the per-user limit: `max` attempts per sliding `window` (max at least 1).
    pub fn failure_limit(mut self, max: u32, window: Duration) -> Self {
        self.max_failures = max.max(1);
        self.failure_window = window;
        self
    }

    fn service(&self, core: &Core) -> TwoFactorService {
        TwoFactorService {
            config: Arc::new(self.clone()),
            core: core.clone(),
            store: store::Store {
                db: core.identity.db.clone(),
            },
        }
    }
}

/// The capability's name, which also names its login step (see
/// [`Core::resume_sign_in`]).
const STEP_NAME: &str = "two_factor";

/// The login step: challenges users who have a confirmed device.
struct Step(TwoFactor);

impl LoginStep for Step {
    fn after_first_factor<'a>(
        &'a self,
        core: &'a Core,
        user: &'a AuthUser,
        _meta: &'a SessionMeta,
        factor: FirstFactor,
    ) -> BoxFuture<'a, Result<StepOutcome>> {
        Box::pin(async move {
            match self.0.service(core).challenge(user, factor).await? {
                Some(challenge) => Ok(StepOutcome::Challenge(challenge)),
                None => Ok(StepOutcome::Continue),
            }
        })
    }
}

/// Re-authentication by a second factor: a TOTP code or a backup code.
struct CodeFactor(TwoFactor);

impl ReauthFactor for CodeFactor {
    fn enrolled<'a>(&'a self, core: &'a Core, user_id: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move { self.0.service(core).is_enabled(user_id).await })
    }

    fn verify<'a>(
        &'a self,
        core: &'a Core,
        user_id: &'a str,
        code: &'a str,
    ) -> BoxFuture<'a, Result<&'static str>> {
        Box::pin(async move {
            self.0.service(core).check_code(user_id, code).await?;
            Ok("otp")
        })
    }
}

impl Capability for TwoFactor {
    fn name(&self) -> &'static str {
        STEP_NAME
    }

    fn migrations(&self) -> &'static [Migration] {
        store::MIGRATIONS
    }

    fn error_codes(&self) -> &'static [(&'static str, StatusCode)] {
        &[
            ("TWO_FACTOR_REQUIRED", StatusCode::FORBIDDEN),
            ("TWO_FACTOR_INVALID", StatusCode::UNAUTHORIZED),
            ("TWO_FACTOR_LOCKED", StatusCode::TOO_MANY_REQUESTS),
        ]
    }

    fn routes(&self, core: &Core) -> Router {
        routes::router(self.service(core), core)
    }

    #[cfg(feature = "openapi")]
    fn openapi(&self, doc: &crate::http::openapi::ApiDoc) -> utoipa::openapi::OpenApi {
        routes::openapi(doc)
    }

    fn login_step(&self) -> Option<Arc<dyn LoginStep>> {
        Some(Arc::new(Step(self.clone())))
    }

    fn reauth_factor(&self) -> Option<Arc<dyn ReauthFactor>> {
        Some(Arc::new(CodeFactor(self.clone())))
    }

    /// Deletes every outstanding challenge of the user: a login that passed the first
    /// factor before the credentials ended cannot finish with `POST /2fa/verify`. On the
    /// first proof of the account's address (`AddressProven`) the devices and backup
    /// codes go too: they were set up by whoever held the account before that proof,
    /// and would otherwise challenge (or let in) its owner's next sign-in.
    fn end_credentials<'a>(
        &'a self,
        core: &'a Core,
        user_id: &'a str,
        reset: CredentialReset,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let store = &self.service(core).store;
            if reset == CredentialReset::AddressProven {
                store.delete_all(user_id).await
            } else {
                store.delete_challenges(user_id).await
            }
        })
    }
}
