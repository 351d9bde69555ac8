//! `create_auth`, [`ServerAuth`] and the auth services.
//!
//! The services are plain async methods over the store and the token service; the
//! router (`auth.router()`) only parses input, calls them (or the application's
//! override) and formats the envelope. Applications can call them directly.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use serde::{Deserialize, Serialize};

use crate::config::{
    AccessCookieConfig, BoxFuture, CookieConfig, Handlers, Hooks, IdentifierCase, RevocationCheck,
    SameSite, ServerConfig,
};
use crate::error::{Result, SentriError};
use crate::password::{PasswordCheck, PasswordHasher};
use crate::session::SessionCache;
use crate::store::{Database, NewUser};
use crate::token::{AccessClaims, RefreshClaims, TokenOptions, TokenService};
use crate::user::AuthUser;

pub use crate::identifier::normalize_identifier;

/// Longest identifier accepted, in bytes (an e-mail address is at most 320).
pub const MAX_IDENTIFIER_BYTES: usize = 320;
/// Shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted, in bytes (longer ones are refused before hashing).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// What a configuration builds: a [`ServerConfig`] gives a [`ServerAuth`], a
/// `ClientConfig` a `ClientAuth`. The Rust form of sentri's `createAuth` overloads.
pub trait AuthConfig {
    /// The auth value this configuration builds.
    type Auth;
    /// Checks the configuration and builds the auth value.
    fn build(self) -> Result<Self::Auth>;
}

/// Builds sentri from a configuration. Invalid configuration is a
/// `CONFIGURATION_ERROR` here, never at request time.
///
/// ```no_run
/// # async fn demo() -> Result<(), sentri::SentriError> {
/// use sentri::{create_auth, ServerConfig, store::Database, token::SigningKey};
/// let db = Database::connect("sqlite::memory:").await?;
/// let auth = create_auth(ServerConfig::new(
///     db,
///     SigningKey::hs256(b"0123456789abcdef0123456789abcdef")?,
///     ["user", "admin"],
/// ))?;
/// auth.migrate().await?;
/// # Ok(()) }
/// ```
pub fn create_auth<C: AuthConfig>(config: C) -> Result<C::Auth> {
    config.build()
}

impl AuthConfig for ServerConfig {
    type Auth = ServerAuth;
    fn build(self) -> Result<ServerAuth> {
        ServerAuth::from_config(self)
    }
}

/// Input of [`ServerAuth::register`].
#[derive(Clone, Deserialize)]
pub struct RegisterInput {
    /// The login identifier (normalised with NFKC_Casefold by default, see
    /// [`crate::identifier`]).
    pub identifier: String,
    /// The password (8 characters to 1024 bytes).
    pub password: String,
    /// Requested roles; default: the first valid role.
    #[serde(default)]
    pub roles: Option<Vec<String>>,
}

impl fmt::Debug for RegisterInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisterInput")
            .field("identifier", &self.identifier)
            .field("password", &"<redacted>")
            .field("roles", &self.roles)
            .finish()
    }
}

/// Input of [`ServerAuth::login`].
#[derive(Clone, Deserialize)]
pub struct LoginInput {
    /// The login identifier as typed.
    pub identifier: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for LoginInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginInput")
            .field("identifier", &self.identifier)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Where a session was opened from (stored with the session, truncated to fit).
#[derive(Debug, Clone, Default)]
pub struct SessionMeta {
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
    /// The client address.
    pub ip: Option<String>,
}

/// Result of a login: a token pair and the user.
#[derive(Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthResult {
    /// The signed access token.
    pub access_token: String,
    /// The signed refresh token.
    pub refresh_token: String,
    /// The user.
    pub user: AuthUser,
    /// The session id (`sid` claim), stable across refreshes.
    pub session_id: String,
}

impl fmt::Debug for AuthResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthResult")
            .field("access_token", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("user", &self.user)
            .field("session_id", &self.session_id)
            .finish()
    }
}

/// Result of a refresh: a new pair of the same session and the user.
pub type RefreshResult = AuthResult;

pub(crate) struct Inner {
    pub(crate) db: Database,
    pub(crate) tokens: TokenService,
    pub(crate) hasher: PasswordHasher,
    pub(crate) valid_roles: Vec<String>,
    pub(crate) public_roles: Vec<String>,
    pub(crate) admin_role: String,
    pub(crate) api_key: Option<String>,
    pub(crate) cookie: Option<CookieConfig>,
    pub(crate) access_cookie: Option<AccessCookieConfig>,
    pub(crate) hooks: Hooks,
    /// Bounds the hook tasks running at once.
    pub(crate) hook_tasks: Arc<tokio::sync::Semaphore>,
    pub(crate) handlers: Handlers,
    pub(crate) is_token_revoked: Option<RevocationCheck>,
    pub(crate) refresh_ttl: Duration,
    pub(crate) access_ttl: Duration,
    pub(crate) session_max_lifetime: Duration,
    pub(crate) refresh_grace: Duration,
    pub(crate) identifier_case: IdentifierCase,
    pub(crate) redis_url: Option<String>,
    /// Live session (family) ids, trusted for `session_cache_ttl`.
    pub(crate) sessions: SessionCache,
    pub(crate) revocations: crate::revocation::Revocations,
    pub(crate) trusted_origins: crate::http::csrf::TrustedOrigins,
    pub(crate) clock: Arc<dyn crate::clock::Clock>,
}

/// sentri in server mode: owns users and sessions, issues and verifies tokens.
///
/// Cheap to clone (an `Arc` inside). Built by [`create_auth`] from a [`ServerConfig`].
#[derive(Clone)]
pub struct ServerAuth {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for ServerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerAuth")
            .field("database", &self.inner.db)
            .field("tokens", &self.inner.tokens)
            .field("valid_roles", &self.inner.valid_roles)
            .finish_non_exhaustive()
    }
}

/// The documented upper bound of each duration setting.
const MAX_ACCESS_TTL: Duration = Duration::from_secs(86_400);
const MAX_REFRESH_TTL: Duration = Duration::from_secs(365 * 86_400);
const MAX_SESSION_LIFETIME: Duration = Duration::from_secs(365 * 86_400);
const MAX_GRACE: Duration = Duration::from_secs(60);
const MAX_CACHE_TTL: Duration = Duration::from_secs(60);
const MAX_LEEWAY: Duration = Duration::from_secs(60);
const PURGE_RANGE: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(86_400));
/// Hook tasks running at once; more are dropped with a warning.
const MAX_HOOK_TASKS: usize = 1024;

fn at_most(value: Duration, max: Duration, what: &str) -> Result<Duration> {
    if value > max {
        return Err(SentriError::configuration(format!(
            "{what} must be at most {} s",
            max.as_secs()
        )));
    }
    Ok(value)
}

fn check_cookie(
    name: &str,
    secure: bool,
    same_site: SameSite,
    path: &str,
    domain: Option<&str>,
    which: &str,
) -> Result<()> {
    let bad = |msg: &str| Err(SentriError::configuration(format!("{which}: {msg}")));
    if name.is_empty() {
        return bad("name must not be empty");
    }
    if same_site == SameSite::None && !secure {
        return bad("SameSite=None requires secure = true");
    }
    if name.starts_with(crate::config::HOST_PREFIX) && (!secure || path != "/" || domain.is_some())
    {
        return bad("a __Host- cookie must be secure, with path \"/\" and no domain");
    }
    if name.starts_with("__Secure-") && !secure {
        return bad("a __Secure- cookie must be secure");
    }
    Ok(())
}

/// Public roles: as configured, else the first valid role that is not the admin role.
fn public_roles_of(config: &ServerConfig, valid_roles: &[String]) -> Result<Vec<String>> {
    let public_roles = match &config.public_roles {
        Some(roles) => dedupe(roles.iter().cloned()),
        None => valid_roles
            .iter()
            .find(|r| **r != config.admin_role)
            .cloned()
            .into_iter()
            .collect(),
    };
    if public_roles.iter().any(|r| !valid_roles.contains(r)) {
        return Err(SentriError::configuration(
            "public_roles must be a subset of valid_roles",
        ));
    }
    if public_roles.contains(&config.admin_role) {
        tracing::warn!(
            role = %config.admin_role,
            "sentri: public_roles includes the admin role: anyone can register as an administrator"
        );
    }
    Ok(public_roles)
}

/// The session durations, checked against their bounds.
struct Durations {
    access_ttl: Duration,
    refresh_ttl: Duration,
    session_max_lifetime: Duration,
}

fn durations_of(config: &ServerConfig) -> Result<Durations> {
    at_most(config.leeway, MAX_LEEWAY, "leeway")?;
    at_most(config.refresh_grace, MAX_GRACE, "refresh_grace")?;
    at_most(config.session_cache_ttl, MAX_CACHE_TTL, "session_cache_ttl")?;
    if let Some(every) = config.purge_interval
        && !(PURGE_RANGE.0..=PURGE_RANGE.1).contains(&every)
    {
        return Err(SentriError::configuration(
            "purge_interval must be between 60 s and 1 day",
        ));
    }
    Ok(Durations {
        access_ttl: at_most(
            config.access_expires_in.resolve()?,
            MAX_ACCESS_TTL,
            "access_expires_in",
        )?,
        refresh_ttl: at_most(
            config.refresh_expires_in.resolve()?,
            MAX_REFRESH_TTL,
            "refresh_expires_in",
        )?,
        session_max_lifetime: at_most(
            config.session_max_lifetime.resolve()?,
            MAX_SESSION_LIFETIME,
            "session_max_lifetime",
        )?,
    })
}

fn check_config(config: &ServerConfig) -> Result<()> {
    if let Some(key) = &config.api_key
        && key.len() < 16
    {
        return Err(SentriError::configuration(
            "api_key must be at least 16 bytes",
        ));
    }
    if let Some(c) = &config.cookie {
        check_cookie(
            &c.name,
            c.secure,
            c.same_site,
            &c.path,
            c.domain.as_deref(),
            "cookie",
        )?;
    }
    if let Some(c) = &config.access_cookie {
        check_cookie(
            &c.name,
            c.secure,
            c.same_site,
            &c.path,
            c.domain.as_deref(),
            "access_cookie",
        )?;
    }
    Ok(())
}

fn valid_roles_of(config: &ServerConfig) -> Result<Vec<String>> {
    let valid_roles = dedupe(config.valid_roles.iter().cloned());
    if valid_roles.is_empty() {
        return Err(SentriError::configuration("valid_roles must not be empty"));
    }
    if valid_roles.iter().any(|r| r.trim().is_empty()) {
        return Err(SentriError::configuration(
            "valid_roles must not contain empty names",
        ));
    }
    Ok(valid_roles)
}

impl ServerAuth {
    fn from_config(config: ServerConfig) -> Result<Self> {
        let valid_roles = valid_roles_of(&config)?;
        let public_roles = public_roles_of(&config, &valid_roles)?;
        let durations = durations_of(&config)?;
        check_config(&config)?;
        let trusted_origins = crate::http::csrf::TrustedOrigins::new(&config.trusted_origins)?;
        let hasher = match config.hash_queue_limit {
            Some(waiting) => PasswordHasher::with_queue_limit(config.salt_rounds, waiting)?,
            None => PasswordHasher::new(config.salt_rounds)?,
        };
        let tokens = TokenService::new(
            config.keys,
            TokenOptions {
                issuer: config.issuer,
                audience: config.audience,
                leeway: config.leeway,
                access_ttl: durations.access_ttl,
                refresh_ttl: durations.refresh_ttl,
            },
        )?;
        let revocations = crate::revocation::Revocations::new(config.redis_url.as_deref())?;
        let auth = ServerAuth {
            inner: Arc::new(Inner {
                db: config.database,
                tokens,
                hasher,
                valid_roles,
                public_roles,
                admin_role: config.admin_role,
                api_key: config.api_key,
                cookie: config.cookie,
                access_cookie: config.access_cookie,
                hooks: config.hooks,
                hook_tasks: Arc::new(tokio::sync::Semaphore::new(MAX_HOOK_TASKS)),
                handlers: config.handlers,
                is_token_revoked: config.is_token_revoked,
                refresh_ttl: durations.refresh_ttl,
                access_ttl: durations.access_ttl,
                session_max_lifetime: durations.session_max_lifetime,
                refresh_grace: config.refresh_grace,
                identifier_case: config.identifier_case,
                redis_url: config.redis_url,
                sessions: SessionCache::new(config.session_cache_ttl),
                revocations,
                trusted_origins,
                clock: config.clock,
            }),
        };
        auth.inner.revocations.start(&auth);
        crate::session::start_purge(&auth, config.purge_interval);
        Ok(auth)
    }

    // ---- accessors -----------------------------------------------------------------

    /// The database.
    pub fn database(&self) -> &Database {
        &self.inner.db
    }

    /// The token service (signing and verification).
    pub fn tokens(&self) -> &TokenService {
        &self.inner.tokens
    }

    /// The configured valid roles.
    pub fn valid_roles(&self) -> &[String] {
        &self.inner.valid_roles
    }

    /// Roles a public registration may ask for.
    pub fn public_roles(&self) -> &[String] {
        &self.inner.public_roles
    }

    /// Access-token lifetime.
    pub fn access_ttl(&self) -> Duration {
        self.inner.access_ttl
    }

    /// Refresh-token lifetime.
    pub fn refresh_ttl(&self) -> Duration {
        self.inner.refresh_ttl
    }

    /// The configured Redis URL, if any.
    pub fn redis_url(&self) -> Option<&str> {
        self.inner.redis_url.as_deref()
    }

    /// Applies pending schema migrations (idempotent; safe from several processes).
    ///
    /// Once per database it also rewrites stored identifiers into the current normal form
    /// (NFKC_Casefold, see [`crate::identifier`]); if two accounts would merge it changes
    /// nothing and fails with `CONFIGURATION_ERROR` naming their user ids, so an operator
    /// decides, never a silent merge.
    pub async fn migrate(&self) -> Result<()> {
        self.inner.db.migrate().await?;
        self.inner
            .db
            .normalize_identifiers_once(self.inner.identifier_case)
            .await
    }

    // ---- passwords and tokens ------------------------------------------------------

    /// Hashes a password with the configured bcrypt cost (on the blocking pool).
    pub async fn hash_password(&self, password: &str) -> Result<String> {
        self.inner.hasher.hash(password).await
    }

    /// Verifies a password against a stored hash (on the blocking pool).
    pub async fn verify_password(&self, password: &str, hash: &str) -> Result<bool> {
        self.inner.hasher.verify(password, hash).await
    }

    /// Signs an access token for `user` bound to session `session_id`.
    pub fn sign_access_token(&self, user: &AuthUser, session_id: &str) -> Result<String> {
        Ok(self.inner.tokens.sign_access(user, session_id)?.0)
    }

    /// Signs a refresh token for a session. Only tokens whose `jti` hash is stored in a
    /// session row can be redeemed, so this is mostly useful for tests and tooling.
    pub fn sign_refresh_token(&self, user_id: &str, session_id: &str, jti: &str) -> Result<String> {
        self.inner.tokens.sign_refresh(user_id, session_id, jti)
    }

    /// Verifies an access token (signature, algorithm, `typ`, `exp`/`nbf`, `iss`/`aud`).
    /// Does not check the session; see [`ServerAuth::is_session_active`].
    pub fn verify_access_token(&self, token: &str) -> Result<AccessClaims> {
        self.inner.tokens.verify_access(token)
    }

    /// Verifies a refresh token's signature and claims (not whether it was rotated).
    pub fn verify_refresh_token(&self, token: &str) -> Result<RefreshClaims> {
        self.inner.tokens.verify_refresh(token)
    }

    // ---- services ------------------------------------------------------------------

    /// Normalises an identifier (NFKC_Casefold by default, see [`crate::identifier`]) and
    /// checks it: non-empty, at most 320 bytes, no control or invisible characters.
    pub fn normalize_identifier(&self, identifier: &str) -> Result<String> {
        normalize_identifier(identifier, self.inner.identifier_case)
    }

    /// Checks that `roles` may be requested by this caller: any valid role with the API
    /// key (`trusted`), only `public_roles` without it (else `FORBIDDEN`).
    pub fn check_registration_roles(&self, roles: Option<&[String]>, trusted: bool) -> Result<()> {
        self.check_roles(roles.unwrap_or(&[]))?;
        if !trusted
            && let Some(roles) = roles
            && roles.iter().any(|r| !self.inner.public_roles.contains(r))
        {
            return Err(SentriError::forbidden(
                "These roles cannot be requested without the API key",
            ));
        }
        Ok(())
    }

    fn check_roles(&self, roles: &[String]) -> Result<()> {
        if roles.iter().any(|r| !self.inner.valid_roles.contains(r)) {
            return Err(SentriError::invalid_role("Invalid role"));
        }
        Ok(())
    }

    /// Registers a user. Roles are checked against `valid_roles` (the caller is trusted
    /// here: the router applies the public-roles rule before calling this). No tokens
    /// are issued.
    pub async fn register(&self, input: RegisterInput) -> Result<AuthUser> {
        let identifier = self.normalize_identifier(&input.identifier)?;
        validate_password(&input.password)?;
        let roles = match input.roles {
            Some(roles) if !roles.is_empty() => dedupe(roles),
            _ => self
                .inner
                .public_roles
                .first()
                .cloned()
                .into_iter()
                .collect(),
        };
        self.check_roles(&roles)?;
        // Spend no bcrypt time on an identifier that is taken (the insert below still
        // enforces uniqueness for registrations that race).
        if self
            .inner
            .db
            .find_user_by_identifier(&identifier)
            .await?
            .is_some()
        {
            return Err(SentriError::user_already_exists());
        }
        let hash = self.inner.hasher.hash(&input.password).await?;
        let user = self
            .inner
            .db
            .create_user(&NewUser {
                identifier: &identifier,
                password_hash: &hash,
                roles: &roles,
            })
            .await?;
        Ok(user.to_auth_user())
    }

    /// Logs a user in: the same `INVALID_CREDENTIALS` (in the same time) for an unknown
    /// identifier and a wrong password; opens a session and returns a token pair.
    pub async fn login(&self, input: LoginInput, meta: SessionMeta) -> Result<AuthResult> {
        let result = self.login_inner(&input, meta).await;
        match &result {
            Ok(res) => self.fire_login(res.user.clone()),
            Err(err) => self.fire_failed_login(input.identifier.clone(), err.clone()),
        }
        result
    }

    async fn login_inner(&self, input: &LoginInput, meta: SessionMeta) -> Result<AuthResult> {
        if input.password.is_empty() || input.password.len() > MAX_PASSWORD_BYTES {
            return Err(SentriError::validation(
                "password must be between 1 and 1024 bytes",
            ));
        }
        let identifier = self.normalize_identifier(&input.identifier)?;
        let Some(user) = self.inner.db.find_user_by_identifier(&identifier).await? else {
            self.inner.hasher.verify_dummy(&input.password).await?;
            return Err(SentriError::invalid_credentials());
        };
        let verified_hash = match self
            .inner
            .hasher
            .check(&input.password, &user.password_hash)
            .await?
        {
            PasswordCheck::Mismatch => return Err(SentriError::invalid_credentials()),
            PasswordCheck::Match => user.password_hash.clone(),
            PasswordCheck::MatchNeedsUpgrade => self.upgrade_hash(&user, &input.password).await?,
        };
        let res = self.open_family(user.to_auth_user(), meta).await?;
        // A password change that committed between our check and our insert revoked every
        // session before ours existed: do not let the old password keep a session.
        match self.inner.db.find_user_by_id(&res.user.id).await? {
            Some(now) if now.password_hash == verified_hash => Ok(res),
            _ => {
                self.revoke_session(&res.session_id).await?;
                Err(SentriError::invalid_credentials())
            }
        }
    }

    /// Re-hashes a password whose stored hash is a legacy or cheaper one; returns the hash
    /// now stored (the old one when a concurrent change won).
    async fn upgrade_hash(
        &self,
        user: &crate::store::UserRecord,
        password: &str,
    ) -> Result<String> {
        let new = self.inner.hasher.hash(password).await?;
        if self
            .inner
            .db
            .replace_password_hash(&user.id, &user.password_hash, &new)
            .await?
        {
            tracing::info!(user = %user.id, "sentri: password hash upgraded");
            return Ok(new);
        }
        Ok(user.password_hash.clone())
    }

    /// The user, fresh from the store, or `USER_NOT_FOUND`.
    pub async fn get_user(&self, user_id: &str) -> Result<AuthUser> {
        if uuid::Uuid::try_parse(user_id).is_err() {
            return Err(SentriError::user_not_found());
        }
        match self.inner.db.find_user_by_id(user_id).await? {
            Some(user) => Ok(user.to_auth_user()),
            None => Err(SentriError::user_not_found()),
        }
    }

    /// Changes a user's identifier after checking the current password
    /// (`INVALID_CREDENTIALS` when wrong, `USER_ALREADY_EXISTS` when taken).
    pub async fn change_identifier(
        &self,
        user_id: &str,
        new_identifier: &str,
        current_password: &str,
    ) -> Result<AuthUser> {
        let identifier = self.normalize_identifier(new_identifier)?;
        self.check_current_password(user_id, current_password)
            .await?;
        match self
            .inner
            .db
            .update_user_identifier(user_id, &identifier)
            .await?
        {
            Some(user) => Ok(user.to_auth_user()),
            None => Err(SentriError::user_not_found()),
        }
    }

    /// Re-authentication for account changes: the user exists and `password` is theirs.
    async fn check_current_password(&self, user_id: &str, password: &str) -> Result<()> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(SentriError::invalid_credentials());
        }
        if uuid::Uuid::try_parse(user_id).is_err() {
            return Err(SentriError::user_not_found());
        }
        let Some(user) = self.inner.db.find_user_by_id(user_id).await? else {
            return Err(SentriError::user_not_found());
        };
        if !self
            .inner
            .hasher
            .verify(password, &user.password_hash)
            .await?
        {
            return Err(SentriError::invalid_credentials());
        }
        Ok(())
    }

    /// Changes a password after checking the current one, then revokes every session
    /// of the user.
    pub async fn change_password(&self, user_id: &str, current: &str, new: &str) -> Result<()> {
        validate_password(new)?;
        self.check_current_password(user_id, current).await?;
        let hash = self.inner.hasher.hash(new).await?;
        self.inner.db.update_user_password(user_id, &hash).await?;
        self.logout_all(user_id).await
    }

    /// Adds roles to a user (merged with the existing ones, checked against
    /// `valid_roles`). Tokens already issued carry the old roles until they expire.
    pub async fn assign_roles(&self, user_id: &str, roles: &[String]) -> Result<AuthUser> {
        if roles.is_empty() {
            return Err(SentriError::validation("roles must not be empty"));
        }
        self.check_roles(roles)?;
        let user = self.get_user(user_id).await?;
        let merged = dedupe(user.roles.into_iter().chain(roles.iter().cloned()));
        match self.inner.db.update_user_roles(user_id, &merged).await? {
            Some(user) => Ok(user.to_auth_user()),
            None => Err(SentriError::user_not_found()),
        }
    }

    // ---- hooks ---------------------------------------------------------------------

    fn fire_login(&self, user: AuthUser) {
        if let Some(hook) = &self.inner.hooks.on_login {
            self.spawn_hook("on_login", || hook(user));
        }
    }

    fn fire_failed_login(&self, identifier: String, err: SentriError) {
        if let Some(hook) = &self.inner.hooks.on_failed_login {
            self.spawn_hook("on_failed_login", || hook((identifier, err)));
        }
    }

    pub(crate) fn fire_logout(&self, user_id: String) {
        if let Some(hook) = &self.inner.hooks.on_logout {
            self.spawn_hook("on_logout", || hook(user_id));
        }
    }

    /// Runs a hook on its own task: a panic is caught and logged, a slow hook delays
    /// nothing. At most `MAX_HOOK_TASKS` run at once; beyond that the hook is skipped
    /// with a warning rather than piling up tasks.
    fn spawn_hook(&self, name: &'static str, make: impl FnOnce() -> BoxFuture<'static, ()>) {
        let Ok(permit) = self.inner.hook_tasks.clone().try_acquire_owned() else {
            tracing::warn!(
                hook = name,
                "sentri: too many hook tasks running; hook skipped"
            );
            return;
        };
        let fut = make();
        tokio::spawn(async move {
            let _permit = permit;
            if std::panic::AssertUnwindSafe(fut)
                .catch_unwind()
                .await
                .is_err()
            {
                tracing::error!(hook = name, "hook panicked");
            }
        });
    }
}

/// Checks a new password: at least 8 characters, at most 1024 bytes.
pub fn validate_password(password: &str) -> Result<()> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(SentriError::validation(
            "password must be at most 1024 bytes",
        ));
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(SentriError::validation(
            "password must be at least 8 characters",
        ));
    }
    Ok(())
}

fn dedupe<I: IntoIterator<Item = String>>(items: I) -> Vec<String> {
    let mut seen = HashSet::new();
    items
        .into_iter()
        .filter(|r| seen.insert(r.clone()))
        .collect()
}

/// Cuts a string to at most `max` bytes on a character boundary.
pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

pub(crate) fn sha256_hex(input: &str) -> String {
    use std::fmt::Write;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, input.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest.as_ref() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_bounds() {
        assert!(validate_password("").is_err());
        assert!(validate_password("1234567").is_err());
        assert!(validate_password("12345678").is_ok());
        assert!(validate_password(&"x".repeat(1024)).is_ok());
        assert!(validate_password(&"x".repeat(1025)).is_err());
    }

    #[test]
    fn clip_respects_char_boundaries() {
        assert_eq!(clip("héllo", 2), "h");
        assert_eq!(clip("abc", 10), "abc");
    }
}
