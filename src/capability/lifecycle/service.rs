//! The lifecycle flows as a service: what the routes call.

use std::fmt;
use std::sync::Arc;

use super::Lifecycle;
use super::store::{AddressCheck, NewToken, Purpose, Signups, TokenRow, Tokens};
use crate::capability::{Core, CredentialReset, FirstFactor, SignIn};
use crate::core::crypto::{random_token, secrets_equal, sha256_hex};
use crate::core::error::{ErrorCode, Result, SentriError};
use crate::core::events::{AuthEvent, AuthEventKind};
use crate::core::principal::{AuthUser, SessionMeta};
use crate::identity::{EmailState, NewUser, UserRecord, unusable_password_hash};
use crate::mail::{
    FailureHook, MailQueue, Mailbox, Message, Template, TemplateVars, is_address, validate_address,
};

/// Link tokens: 32 random bytes (256 bits), base64url.
const TOKEN_BYTES: usize = 32;
const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;

/// The account's address: the identifier when it is an address, else the stored one.
pub(super) fn address_of(user: &UserRecord, state: &EmailState) -> Option<String> {
    Core::address_of(&user.identifier, state)
}

/// Verified: a verification time is stored *for the current address* (changing the
/// address therefore asks for a new verification).
pub(super) fn is_verified(user: &UserRecord, state: &EmailState) -> bool {
    Core::is_verified(&user.identifier, state)
}

/// `n` decimal digits, uniform (rejection sampling over the system RNG).
fn numeric_code(digits: u32) -> Result<String> {
    let modulus = 10u64.pow(digits);
    let limit = u64::MAX - (u64::MAX % modulus);
    loop {
        let mut bytes = [0u8; 8];
        aws_lc_rs::rand::fill(&mut bytes)
            .map_err(|_| SentriError::internal(std::io::Error::other("system RNG unavailable")))?;
        let n = u64::from_le_bytes(bytes);
        if n < limit {
            return Ok(format!("{:0width$}", n % modulus, width = digits as usize));
        }
    }
}

/// The stored hash of a code: bound to its row, so equal codes never collide.
fn code_hash(row_id: &str, code: &str) -> String {
    sha256_hex(&format!("{row_id}:{code}"))
}

/// An id no user and no token has (ids are UUID v7): the statements of an unknown
/// account run against it, so they cost what a known account's do.
const NO_ROW: &str = "00000000-0000-0000-0000-000000000000";

fn invalid_token() -> SentriError {
    SentriError::token_invalid("Invalid or expired token")
}

fn invalid_code() -> SentriError {
    SentriError::token_invalid("Invalid or expired code")
}

/// The lifecycle operations. Cheap to clone.
#[derive(Clone)]
pub struct LifecycleService {
    core: Core,
    config: Arc<Lifecycle>,
    queue: MailQueue,
    /// Background jobs started and not yet finished.
    in_flight: Arc<tokio::sync::watch::Sender<usize>>,
}

/// Counts one background job until dropped (also when the job panics).
struct InFlight(Arc<tokio::sync::watch::Sender<usize>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl fmt::Debug for LifecycleService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LifecycleService").finish_non_exhaustive()
    }
}

impl LifecycleService {
    pub(super) fn new(core: Core, config: Lifecycle) -> Self {
        let events = core.events.clone();
        let clock = core.clone();
        let hook: FailureHook =
            Arc::new(move |user: Option<String>, err: &crate::mail::MailError| {
                let mut event = AuthEvent::new(AuthEventKind::MailFailed, clock.now_ms());
                event.user_id = user;
                event.error = Some(
                    SentriError::new(ErrorCode::ServiceUnavailable, "Message not sent")
                        .with_source(err.clone()),
                );
                events.emit(event);
            });
        let queue = MailQueue::start(config.mailer.clone(), config.queue, hook);
        Self {
            core,
            config: Arc::new(config),
            queue,
            in_flight: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    pub(super) fn core(&self) -> &Core {
        &self.core
    }

    fn tokens(&self) -> Tokens<'_> {
        Tokens(&self.core.identity.db)
    }

    pub(super) fn now(&self) -> i64 {
        self.core.now_ms()
    }

    fn emit(&self, kind: AuthEventKind, user_id: &str) {
        self.core
            .emit(AuthEvent::new(kind, self.now()).user(user_id));
    }

    /// Checks a request's identifier without looking anything up: normalised, and a
    /// well-formed ASCII address when it contains `@`.
    pub(super) fn check_identifier(&self, identifier: &str) -> Result<String> {
        let identifier = self.core.identity.normalize(identifier)?;
        if identifier.contains('@') {
            validate_address(&identifier)?;
        }
        Ok(identifier)
    }

    async fn user_and_email(&self, user_id: &str) -> Result<Option<(UserRecord, EmailState)>> {
        let db = &self.core.identity.db;
        let Some(user) = db.find_user_by_id(user_id).await? else {
            return Ok(None);
        };
        let state = db.user_email(user_id).await?.unwrap_or_default();
        Ok(Some((user, state)))
    }

    async fn by_identifier(&self, identifier: &str) -> Result<Option<(UserRecord, EmailState)>> {
        let db = &self.core.identity.db;
        let Some(user) = db.find_user_by_identifier(identifier).await? else {
            return Ok(None);
        };
        let state = db.user_email(&user.id).await?.unwrap_or_default();
        Ok(Some((user, state)))
    }

    /// `true` when the user's current address is verified.
    pub async fn email_verified(&self, user_id: &str) -> Result<bool> {
        Ok(self
            .user_and_email(user_id)
            .await?
            .is_some_and(|(u, s)| is_verified(&u, &s)))
    }

    /// Stores a new token for `user` at `address`; returns the secret to mail.
    async fn issue(
        &self,
        purpose: Purpose,
        user_id: &str,
        address: &str,
        code: bool,
        now: i64,
    ) -> Result<String> {
        self.issue_within(purpose, user_id, address, code, now, &[])
            .await?
            .ok_or_else(invalid_token)
    }

    /// [`issue`](Self::issue) under `limits` (`(since, max)` windows of the store's
    /// [`insert_within`](Tokens::insert_within)): `None` when one is reached. No limits:
    /// always stored.
    async fn issue_within(
        &self,
        purpose: Purpose,
        user_id: &str,
        address: &str,
        code: bool,
        now: i64,
        limits: &[(i64, u32)],
    ) -> Result<Option<String>> {
        let id = uuid::Uuid::now_v7().to_string();
        let (secret, hash) = if code {
            let code = numeric_code(self.config.code_digits)?;
            let hash = code_hash(&id, &code);
            (code, hash)
        } else {
            let token = random_token(TOKEN_BYTES);
            let hash = sha256_hex(&token);
            (token, hash)
        };
        let ttl = i64::try_from(self.config.ttl(purpose).as_millis()).unwrap_or(i64::MAX);
        let row = NewToken {
            id: &id,
            user_id,
            purpose,
            token_hash: &hash,
            address,
            now,
            expires_at: now.saturating_add(ttl),
        };
        if limits.is_empty() {
            self.tokens().insert(&row).await?;
        } else if !self.tokens().insert_within(&row, limits).await? {
            return Ok(None);
        }
        Ok(Some(secret))
    }

    /// Queues a message to `address` (about `user_id`, when there is an account).
    fn send_to(
        &self,
        template: &Template,
        vars: &TemplateVars,
        address: &str,
        user_id: Option<&str>,
    ) {
        let built = Mailbox::new(None, address).and_then(|to| {
            let (subject, text, html) = template.render(vars);
            Message::new(self.config.from.clone(), to, subject, text, html)
        });
        match built {
            Ok(message) => self.queue.enqueue(message, user_id.map(str::to_owned)),
            Err(err) => {
                tracing::error!(target: "sentri::mail", error = %err, "sentri: a message could not be built");
                let mut event = AuthEvent::new(AuthEventKind::MailFailed, self.now());
                event.user_id = user_id.map(str::to_owned);
                self.core.emit(event);
            }
        }
    }

    fn send(&self, template: &Template, vars: &TemplateVars, address: &str, user_id: &str) {
        self.send_to(template, vars, address, Some(user_id));
    }

    fn vars(&self, purpose: Purpose) -> TemplateVars {
        TemplateVars::new(
            self.config.app_name.clone(),
            self.config.ttl(purpose).as_secs() / 60,
        )
    }

    fn link(&self, path: &str, token: &str) -> String {
        format!(
            "{}{}?token={}",
            self.config.app_url.trim_end_matches('/'),
            path,
            token
        )
    }

    /// Sends a verification message to the user's current address unless it is
    /// verified, it has none, or the resend throttle says no. Never reveals which.
    pub(super) async fn send_verification(&self, user_id: &str, now: i64) -> Result<()> {
        let Some((user, state)) = self.user_and_email(user_id).await? else {
            return Ok(());
        };
        let Some(address) = address_of(&user, &state) else {
            return Ok(());
        };
        if is_verified(&user, &state) {
            return Ok(());
        }
        let code = self.config.verification == VerificationMode::Code;
        // The resend throttle, per account and address: checked and counted in the
        // same transaction as the insert, so parallel resends never exceed it.
        let limits = [
            (now - MINUTE_MS, self.config.resend_per_minute),
            (now - HOUR_MS, self.config.resend_per_hour),
        ];
        let Some(secret) = self
            .issue_within(Purpose::Verify, user_id, &address, code, now, &limits)
            .await?
        else {
            return Ok(());
        };
        let vars = self.vars(Purpose::Verify);
        if code {
            self.send(
                &self.config.templates.verify_code,
                &vars.code(secret),
                &address,
                user_id,
            );
        } else {
            let link = self.link(&self.config.verify_path, &secret);
            self.send(
                &self.config.templates.verify_link,
                &vars.link(link),
                &address,
                user_id,
            );
        }
        Ok(())
    }

    /// After the account's identifier changed: a notice to the previous address when it
    /// was verified (the stored one), and a verification message to the new address.
    pub(super) async fn address_changed(&self, user_id: &str, now: i64) -> Result<()> {
        let Some((user, state)) = self.user_and_email(user_id).await? else {
            return Ok(());
        };
        let current = address_of(&user, &state);
        if let (Some(old), Some(_)) = (&state.email, state.verified_at)
            && current.as_ref() != Some(old)
        {
            let vars = TemplateVars::new(self.config.app_name.clone(), 0);
            self.send(&self.config.templates.address_changed, &vars, old, user_id);
        }
        if self.config.email_verification {
            self.send_verification(user_id, now).await?;
        }
        Ok(())
    }

    /// `POST /verify-email/resend` at `now` (the request's time): the work behind the
    /// (constant) answer.
    pub(super) async fn resend_verification(&self, identifier: &str, now: i64) -> Result<()> {
        if let Some((user, _)) = self.by_identifier(identifier).await? {
            self.send_verification(&user.id, now).await?;
        }
        Ok(())
    }

    /// Verifies the address a link token was sent to.
    pub async fn verify_link(&self, token: &str) -> Result<()> {
        let now = self.now();
        let row = self
            .tokens()
            .live_by_hash(Purpose::Verify, &sha256_hex(token), now)
            .await?
            .ok_or_else(invalid_token)?;
        if !self.tokens().consume(&row.id, now).await? {
            return Err(invalid_token());
        }
        self.mark_verified(&row).await
    }

    /// Verifies with a code: each try spends one of the newest code's attempts first,
    /// so `max_code_attempts` wrong codes kill it, however many are sent at once.
    pub async fn verify_code(&self, identifier: &str, code: &str) -> Result<()> {
        let digits = self.config.code_digits as usize;
        if code.len() != digits || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SentriError::validation(format!(
                "code must be {digits} digits"
            )));
        }
        let identifier = self.check_identifier(identifier)?;
        let now = self.now();
        // The same work whatever the account: an unknown identifier, an account without
        // a live code and one with a code all read the user, read the newest code and
        // write one attempt (of the code, else of a decoy row), so the answer takes the
        // same time and tells nothing about the account.
        let user = self
            .core
            .identity
            .db
            .find_user_by_identifier(&identifier)
            .await?;
        let user_id = user.as_ref().map_or(NO_ROW, |u| u.id.as_str());
        let tokens = self.tokens();
        let row = tokens.newest_live(Purpose::Verify, user_id, now).await?;
        let row_id = row.as_ref().map_or(NO_ROW, |r| r.id.as_str());
        let spent = match &row {
            Some(r) => {
                tokens
                    .spend_attempt(&r.id, self.config.max_code_attempts, now)
                    .await?
            }
            None => false,
        };
        if !spent {
            // No live code, or its attempts are spent: write a decoy attempt instead.
            let slot = sha256_hex(&identifier)
                .as_bytes()
                .first()
                .copied()
                .unwrap_or(0);
            tokens.spend_decoy(slot).await?;
        }
        let presented = code_hash(row_id, code);
        let expected = row.as_ref().map_or(NO_ROW, |r| r.token_hash.as_str());
        let matches = secrets_equal(presented.as_bytes(), expected.as_bytes());
        let Some(row) = row.filter(|_| spent && matches) else {
            return Err(invalid_code());
        };
        if !tokens.consume(&row.id, now).await? {
            return Err(invalid_code());
        }
        self.mark_verified(&row).await
    }

    /// Records `row.address` as verified, if it is still the user's address.
    async fn mark_verified(&self, row: &TokenRow) -> Result<()> {
        let Some((user, state)) = self.user_and_email(&row.user_id).await? else {
            return Err(invalid_token());
        };
        if address_of(&user, &state).as_deref() != Some(row.address.as_str()) {
            return Err(invalid_token());
        }
        self.core
            .identity
            .db
            .set_user_email(&user.id, &row.address, Some(self.now()))
            .await?;
        self.emit(AuthEventKind::EmailVerified, &user.id);
        Ok(())
    }

    /// `POST /forgot-password` at `now`: the work behind the (constant) answer.
    pub(super) async fn request_reset(&self, identifier: &str, now: i64) -> Result<()> {
        let Some((user, state)) = self.by_identifier(identifier).await? else {
            return Ok(());
        };
        let Some(address) = address_of(&user, &state) else {
            return Ok(());
        };
        let token = self
            .issue(Purpose::Reset, &user.id, &address, false, now)
            .await?;
        let vars = self
            .vars(Purpose::Reset)
            .link(self.link(&self.config.reset_path, &token));
        self.send(
            &self.config.templates.reset_password,
            &vars,
            &address,
            &user.id,
        );
        Ok(())
    }

    /// Resets a password with a mailed token: the policy, the token's address against
    /// the account's current one (`TOKEN_INVALID`, nothing changed, when it differs),
    /// then in one transaction the token is used, the hash stored (only while the
    /// account still has that address) and every other mailed token of the account
    /// ended; then every credential of the account is ended
    /// ([`Core::end_every_credential`]) and the address marked verified.
    pub async fn reset_password(&self, token: &str, new_password: &str) -> Result<()> {
        let span = crate::core::observe::op_span!("reset_password");
        crate::core::observe::traced(
            span,
            self.reset_password_once(token, new_password),
            |_| "ok",
        )
        .await
    }

    async fn reset_password_once(&self, token: &str, new_password: &str) -> Result<()> {
        let identity = &self.core.identity;
        identity.policy.validate(new_password)?;
        let now = self.now();
        let row = self
            .tokens()
            .live_by_hash(Purpose::Reset, &sha256_hex(token), now)
            .await?
            .ok_or_else(invalid_token)?;
        // The token must have been sent to the account's current address, checked
        // before anything is used or set: a link mailed to an address the account no
        // longer has is as dead as any other.
        let (user, state) = self
            .user_and_email(&row.user_id)
            .await?
            .ok_or_else(invalid_token)?;
        if address_of(&user, &state).as_deref() != Some(row.address.as_str()) {
            return Err(invalid_token());
        }
        let address = AddressCheck {
            identifier: &user.identifier,
            email: (!is_address(&user.identifier)).then_some(row.address.as_str()),
        };
        let hash = identity.hasher.hash(new_password).await?;
        let purposes = [Purpose::Reset, Purpose::Magic, Purpose::Verify];
        if !self
            .tokens()
            .consume_and_set_password(&row, &address, &hash, &purposes, now)
            .await?
        {
            return Err(invalid_token());
        }
        self.core
            .end_every_credential(
                &row.user_id,
                crate::capability::CredentialReset::PasswordReset,
            )
            .await?;
        self.emit(AuthEventKind::PasswordReset, &row.user_id);
        // The token proved the address; a changed address stays unverified.
        match self.mark_verified(&row).await {
            Ok(()) => Ok(()),
            Err(err) if err.is(&ErrorCode::TokenInvalid) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Ends what this capability mailed to `user_id` (every reset, sign-in and
    /// verification token), then, unless `reset` is the first proof of the address,
    /// queues the notice of `reset` to the account's address: when that address is
    /// verified, or after a reset (the reset link just proved it). An address nobody
    /// proved is not mailed, so nobody can make the server mail an address at will.
    pub(super) async fn end_credentials(
        &self,
        user_id: &str,
        reset: CredentialReset,
    ) -> Result<()> {
        self.tokens().end_all(user_id, self.now()).await?;
        if !self.config.security_notices {
            return Ok(());
        }
        let templates = &self.config.templates;
        let template = match reset {
            CredentialReset::PasswordReset => &templates.password_reset_notice,
            CredentialReset::PasswordChanged => &templates.password_changed_notice,
            CredentialReset::LogoutAll => &templates.logout_all_notice,
            _ => return Ok(()),
        };
        let Some((user, state)) = self.user_and_email(user_id).await? else {
            return Ok(());
        };
        let Some(address) = address_of(&user, &state) else {
            return Ok(());
        };
        if reset == CredentialReset::PasswordReset || is_verified(&user, &state) {
            let vars = TemplateVars::new(self.config.app_name.clone(), 0);
            self.send(template, &vars, &address, user_id);
        }
        Ok(())
    }

    /// The account's address may have changed: every token mailed before (to whichever
    /// address) is ended.
    pub(super) async fn end_mailed_tokens(&self, user_id: &str) -> Result<()> {
        self.tokens().end_all(user_id, self.now()).await
    }

    /// Sign-up by link is on: the flag, public sign-up open, `/register` not behind an
    /// API key.
    fn signup_by_link(&self) -> bool {
        self.config.magic_link_signup && self.config.signup && !self.core.registration_key
    }

    /// `POST /magic-link/request` at `now`: the work behind the (constant) answer.
    pub(super) async fn request_magic_link(&self, identifier: &str, now: i64) -> Result<()> {
        let Some((user, state)) = self.by_identifier(identifier).await? else {
            if self.signup_by_link() && is_address(identifier) {
                return self.request_signup_link(identifier, now).await;
            }
            return Ok(());
        };
        let Some(address) = address_of(&user, &state) else {
            return Ok(());
        };
        let token = self
            .issue(Purpose::Magic, &user.id, &address, false, now)
            .await?;
        let vars = self
            .vars(Purpose::Magic)
            .link(self.link(&self.config.magic_path, &token));
        self.send(&self.config.templates.magic_link, &vars, &address, &user.id);
        Ok(())
    }

    /// A sign-in link to an address without an account (`magic_link_signup`): bound
    /// to the address; the account is created when it is used.
    async fn request_signup_link(&self, address: &str, now: i64) -> Result<()> {
        let id = uuid::Uuid::now_v7().to_string();
        let token = random_token(TOKEN_BYTES);
        let ttl = i64::try_from(self.config.magic_link_ttl.as_millis()).unwrap_or(i64::MAX);
        Signups(&self.core.identity.db)
            .insert(
                &id,
                &sha256_hex(&token),
                address,
                now,
                now.saturating_add(ttl),
            )
            .await?;
        let vars = self
            .vars(Purpose::Magic)
            .link(self.link(&self.config.magic_path, &token));
        self.send_to(&self.config.templates.magic_link, &vars, address, None);
        Ok(())
    }

    /// The account a used sign-up link stands for: created (no password, the default
    /// role, the address verified) unless an account with that identifier exists by
    /// now (another sign-up link or a registration won the race: the link proved the
    /// address, which is that account's identifier, as a sign-in link would, with the
    /// same consequence for an account registered without that proof:
    /// [`Core::address_proven`]).
    async fn sign_up(&self, address: &str) -> Result<AuthUser> {
        let identity = &self.core.identity;
        let db = &identity.db;
        let (user, created) = match db.find_user_by_identifier(address).await? {
            Some(user) => (user, false),
            None => {
                let hash = unusable_password_hash();
                let roles = identity.default_roles();
                let new = NewUser {
                    identifier: address,
                    password_hash: &hash,
                    roles: &roles,
                };
                match db.create_user(&new).await {
                    Ok(user) => (user, true),
                    Err(err) if err.is(&ErrorCode::UserAlreadyExists) => {
                        let user = db.find_user_by_identifier(address).await?;
                        (user.ok_or(err)?, false)
                    }
                    Err(err) => return Err(err),
                }
            }
        };
        if created {
            db.set_user_email(&user.id, address, Some(self.now()))
                .await?;
        } else {
            self.core.address_proven(&user.id, address).await?;
        }
        if created {
            // After the address is verified: no verification message follows.
            self.emit(AuthEventKind::Registered, &user.id);
        }
        self.emit(AuthEventKind::EmailVerified, &user.id);
        Ok(user.to_auth_user())
    }

    /// Signs in with a mailed link: the token is used (once), the address marked
    /// verified, then the login pipeline runs as for a password login (so a second
    /// factor, when the user has one, is asked for: [`SignIn::Challenge`]). With
    /// `magic_link_signup`, a sign-up link first creates its account.
    pub async fn consume_magic_link(&self, token: &str, meta: SessionMeta) -> Result<SignIn> {
        let span = crate::core::observe::op_span!("magic_link");
        crate::core::observe::traced(
            span,
            self.consume_magic_link_once(token, meta),
            |s| match s {
                crate::capability::SignIn::Session(_) => "ok",
                crate::capability::SignIn::Challenge(_) => "challenge",
            },
        )
        .await
    }

    async fn consume_magic_link_once(&self, token: &str, meta: SessionMeta) -> Result<SignIn> {
        let now = self.now();
        let hash = sha256_hex(token);
        let Some(row) = self
            .tokens()
            .live_by_hash(Purpose::Magic, &hash, now)
            .await?
        else {
            if self.signup_by_link()
                && let Some(signup) = Signups(&self.core.identity.db).consume(&hash, now).await?
            {
                let user = self.sign_up(&signup.address).await?;
                return self.core.sign_in(user, meta, FirstFactor::EmailLink).await;
            }
            return Err(invalid_token());
        };
        if !self.tokens().consume(&row.id, now).await? {
            return Err(invalid_token());
        }
        self.proven_by_sign_in(&row).await?;
        let user = self.core.identity.get_user(&row.user_id).await?;
        self.core.sign_in(user, meta, FirstFactor::EmailLink).await
    }

    /// A used sign-in link proved `row.address`, which must still be the account's
    /// address. The first proof on an account registered without one ends every earlier
    /// credential and removes the password ([`Core::address_proven`]) before the
    /// session is opened; a plain verification link (not a sign-in) only marks the
    /// address verified ([`mark_verified`](Self::mark_verified)).
    async fn proven_by_sign_in(&self, row: &TokenRow) -> Result<()> {
        let Some((user, state)) = self.user_and_email(&row.user_id).await? else {
            return Err(invalid_token());
        };
        if address_of(&user, &state).as_deref() != Some(row.address.as_str()) {
            return Err(invalid_token());
        }
        self.core.address_proven(&user.id, &row.address).await?;
        self.emit(AuthEventKind::EmailVerified, &user.id);
        Ok(())
    }

    /// Runs `work` off the request path; a failure is logged, never answered.
    pub(super) fn background<F>(&self, what: &'static str, work: F)
    where
        F: Future<Output = Result<()>> + Send + 'static,
    {
        self.in_flight.send_modify(|n| *n += 1);
        let job = InFlight(self.in_flight.clone());
        tokio::spawn(async move {
            let _job = job;
            if let Err(err) = work.await {
                tracing::warn!(target: "sentri::lifecycle", error = %err, what, "sentri: background work failed");
            }
        });
    }
}

impl LifecycleService {
    /// Waits until every background job started so far has finished.
    pub(super) async fn settled(&self) {
        let mut jobs = self.in_flight.subscribe();
        // The sender lives in `self`: waiting cannot fail.
        let _ = jobs.wait_for(|n| *n == 0).await;
    }
}

/// How an address is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerificationMode {
    /// A numeric code (6–10 digits) typed back with the identifier.
    Code,
    /// A link with a 256-bit token.
    Link,
}
