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
use crate::password::PasswordHasher;
use crate::store::{Database, NewSession, NewUser, SessionRecord, now_ms};
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
    /// The login identifier (normalised: trim, NFKC, and lower-cased by default).
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
    pub(crate) handlers: Handlers,
    pub(crate) is_token_revoked: Option<RevocationCheck>,
    pub(crate) refresh_ttl: Duration,
    pub(crate) access_ttl: Duration,
    pub(crate) refresh_grace: Duration,
    pub(crate) identifier_case: IdentifierCase,
    pub(crate) redis_url: Option<String>,
    /// Live session (family) ids, trusted for `session_cache_ttl`.
    pub(crate) sessions: moka::future::Cache<String, ()>,
    pub(crate) revocations: crate::revocation::Revocations,
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

fn check_same_site(same_site: SameSite, secure: bool, which: &str) -> Result<()> {
    if same_site == SameSite::None && !secure {
        return Err(SentriError::configuration(format!(
            "{which}: SameSite=None requires secure = true"
        )));
    }
    Ok(())
}

impl ServerAuth {
    fn from_config(config: ServerConfig) -> Result<Self> {
        let valid_roles = dedupe(config.valid_roles);
        if valid_roles.is_empty() {
            return Err(SentriError::configuration("valid_roles must not be empty"));
        }
        if valid_roles.iter().any(|r| r.trim().is_empty()) {
            return Err(SentriError::configuration(
                "valid_roles must not contain empty names",
            ));
        }
        let public_roles = match config.public_roles {
            Some(roles) => dedupe(roles),
            None => vec![valid_roles[0].clone()],
        };
        if let Some(bad) = public_roles.iter().find(|r| !valid_roles.contains(r)) {
            return Err(SentriError::configuration(format!(
                "public_roles: {bad:?} is not one of valid_roles"
            )));
        }
        let access_ttl = config.access_expires_in.resolve()?;
        let refresh_ttl = config.refresh_expires_in.resolve()?;
        if config.leeway > Duration::from_secs(60) {
            return Err(SentriError::configuration("leeway must be at most 60 s"));
        }
        if let Some(key) = &config.api_key
            && key.len() < 16
        {
            return Err(SentriError::configuration(
                "api_key must be at least 16 bytes",
            ));
        }
        if let Some(c) = &config.cookie {
            check_same_site(c.same_site, c.secure, "cookie")?;
            if c.name.is_empty() {
                return Err(SentriError::configuration("cookie name must not be empty"));
            }
        }
        if let Some(c) = &config.access_cookie {
            check_same_site(c.same_site, c.secure, "access_cookie")?;
            if c.name.is_empty() {
                return Err(SentriError::configuration(
                    "access_cookie name must not be empty",
                ));
            }
        }
        let hasher = PasswordHasher::new(config.salt_rounds)?;
        let tokens = TokenService::new(
            config.keys,
            TokenOptions {
                issuer: config.issuer,
                audience: config.audience,
                leeway: config.leeway,
                access_ttl,
                refresh_ttl,
            },
        )?;
        let sessions = moka::future::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(config.session_cache_ttl.max(Duration::from_millis(1)))
            .build();
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
                handlers: config.handlers,
                is_token_revoked: config.is_token_revoked,
                refresh_ttl,
                access_ttl,
                refresh_grace: config.refresh_grace,
                identifier_case: config.identifier_case,
                redis_url: config.redis_url,
                sessions,
                revocations,
            }),
        };
        auth.inner.revocations.start(&auth);
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
    pub async fn migrate(&self) -> Result<()> {
        self.inner.db.migrate().await
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

    /// `true` while session `sid` has a live row. Answers from a short-lived in-process
    /// cache when it can (see `ServerConfig::session_cache_ttl`), else from the store.
    pub async fn is_session_active(&self, sid: &str) -> Result<bool> {
        if self.inner.sessions.contains_key(sid) {
            return Ok(true);
        }
        self.session_active_in_store(sid).await
    }

    /// The cache miss of [`is_session_active`](Self::is_session_active): ask the store,
    /// remember a live session. Boxed so that the (large) store future is not part of
    /// every protected request's future, only of the misses.
    fn session_active_in_store<'a>(&'a self, sid: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let live = self.inner.db.family_active(sid, now_ms()).await?;
            if live {
                self.inner.sessions.insert(sid.to_owned(), ()).await;
            }
            Ok(live)
        })
    }

    /// Drops a session from this process's cache and tells other processes (Redis).
    pub(crate) async fn forget_session(&self, sid: &str) {
        self.inner.sessions.invalidate(sid).await;
        self.inner.revocations.publish(sid).await;
    }

    // ---- services ------------------------------------------------------------------

    /// Normalises an identifier: trim, Unicode NFKC, lower-case (unless configured
    /// case-sensitive); then checks it is non-empty, at most 320 bytes and free of
    /// control characters.
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
            _ => vec![self.inner.valid_roles[0].clone()],
        };
        self.check_roles(&roles)?;
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
            self.inner.hasher.verify_dummy(&input.password).await;
            return Err(SentriError::invalid_credentials());
        };
        if !self
            .inner
            .hasher
            .verify(&input.password, &user.password_hash)
            .await?
        {
            return Err(SentriError::invalid_credentials());
        }
        let verified_hash = user.password_hash.clone();
        let user = user.to_auth_user();
        let family = uuid::Uuid::now_v7().to_string();
        let res = self.open_session(user, family, None, None, meta).await?;
        // A password change that committed between our check and our insert revoked every
        // session before ours existed: do not let the old password keep a session.
        match self.inner.db.find_user_by_id(&res.user.id).await? {
            Some(now) if now.password_hash == verified_hash => Ok(res),
            _ => {
                self.delete_family_fully(&res.session_id).await?;
                self.forget_session(&res.session_id).await;
                Err(SentriError::invalid_credentials())
            }
        }
    }

    /// Stores a new session row of `family` and signs its token pair.
    async fn open_session(
        &self,
        user: AuthUser,
        family: String,
        previous_hash: Option<String>,
        rotated_from: Option<String>,
        meta: SessionMeta,
    ) -> Result<AuthResult> {
        let jti = TokenService::new_refresh_jti();
        let row = self.new_session_row(&user.id, &family, &jti, previous_hash, rotated_from, meta);
        self.inner.db.create_session(&row).await?;
        self.finish_session(user, family, &jti).await
    }

    fn new_session_row(
        &self,
        user_id: &str,
        family: &str,
        jti: &str,
        previous_hash: Option<String>,
        rotated_from: Option<String>,
        meta: SessionMeta,
    ) -> NewSession {
        NewSession {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: user_id.to_owned(),
            family_id: family.to_owned(),
            refresh_hash: sha256_hex(jti),
            previous_hash,
            rotated_from,
            expires_at: now_ms().saturating_add(duration_ms(self.inner.refresh_ttl)),
            user_agent: meta.user_agent.map(|s| clip(&s, 512)),
            ip: meta.ip.map(|s| clip(&s, 64)),
        }
    }

    async fn finish_session(
        &self,
        user: AuthUser,
        family: String,
        jti: &str,
    ) -> Result<AuthResult> {
        let (access_token, _) = self.inner.tokens.sign_access(&user, &family)?;
        let refresh_token = self.inner.tokens.sign_refresh(&user.id, &family, jti)?;
        self.inner.sessions.insert(family.clone(), ()).await;
        Ok(AuthResult {
            access_token,
            refresh_token,
            user,
            session_id: family,
        })
    }

    /// Rotates a refresh token: the presented token stops working and a new pair of the
    /// same session is returned. Presenting an already-rotated token again revokes the
    /// whole session (RFC 9700 §4.14.2), except within `refresh_grace` of its rotation,
    /// when a client that raced itself gets a fresh pair of the same session.
    pub async fn refresh(&self, refresh_token: &str, meta: SessionMeta) -> Result<RefreshResult> {
        let claims = self.inner.tokens.verify_refresh(refresh_token)?;
        let hash = sha256_hex(&claims.jti);
        let now = now_ms();
        if let Some(row) = self.inner.db.find_session_by_refresh_hash(&hash).await? {
            if row.family_id != claims.sid || row.user_id != claims.sub {
                return Err(SentriError::token_invalid("Invalid refresh token"));
            }
            if row.expires_at <= now {
                self.delete_family_fully(&row.family_id).await?;
                self.forget_session(&row.family_id).await;
                return Err(SentriError::token_expired());
            }
            let user = self.load_session_user(&row).await?;
            let jti = TokenService::new_refresh_jti();
            let new_row = self.new_session_row(
                &user.id,
                &row.family_id,
                &jti,
                Some(hash.clone()),
                Some(row.id.clone()),
                meta.clone(),
            );
            if self
                .inner
                .db
                .rotate_session(&row.id, &hash, &new_row)
                .await?
                .is_some()
            {
                return self.finish_session(user, row.family_id, &jti).await;
            }
            // Another request rotated it first: fall through to the grace check.
        }
        if let Some(next) = self.inner.db.find_session_by_previous_hash(&hash).await?
            && next.family_id == claims.sid
            && within_grace(now_ms(), next.created_at, self.inner.refresh_grace)
            && next.expires_at > now
        {
            let user = self.load_session_user(&next).await?;
            return self
                .open_session(user, next.family_id, None, next.rotated_from, meta)
                .await;
        }
        let revoked = self.delete_family_fully(&claims.sid).await?;
        if revoked > 0 {
            tracing::warn!(session = %claims.sid, "refresh token reuse detected: session revoked");
            self.forget_session(&claims.sid).await;
        }
        Err(SentriError::token_invalid("Invalid refresh token"))
    }

    async fn load_session_user(&self, row: &SessionRecord) -> Result<AuthUser> {
        match self.inner.db.find_user_by_id(&row.user_id).await? {
            Some(user) => Ok(user.to_auth_user()),
            None => Err(SentriError::token_invalid("Invalid refresh token")),
        }
    }

    /// Ends the session of a refresh token. Always succeeds for a missing, invalid or
    /// already-used token (logout is idempotent).
    pub async fn logout(&self, refresh_token: Option<&str>) -> Result<()> {
        let Some(token) = refresh_token else {
            return Ok(());
        };
        let Ok(claims) = self.inner.tokens.verify_refresh(token) else {
            return Ok(());
        };
        let deleted = self.delete_family_fully(&claims.sid).await?;
        self.forget_session(&claims.sid).await;
        if deleted > 0 {
            self.fire_logout(claims.sub);
        }
        Ok(())
    }

    /// Deletes every row of a session family, sweeping again while rows keep appearing:
    /// a concurrent rotation that committed while the first DELETE waited on its row lock
    /// inserts a row that statement could not see. Returns the rows deleted.
    async fn delete_family_fully(&self, family: &str) -> Result<u64> {
        let mut total = self.inner.db.delete_family(family).await?;
        for _ in 0..3 {
            let more = self.inner.db.delete_family(family).await?;
            total += more;
            if more == 0 {
                break;
            }
        }
        Ok(total)
    }

    /// Ends the session `sid` (e.g. from an access token's `sid` claim).
    pub async fn revoke_session(&self, sid: &str) -> Result<()> {
        self.delete_family_fully(sid).await?;
        self.forget_session(sid).await;
        Ok(())
    }

    /// Ends every session of a user.
    pub async fn logout_all(&self, user_id: &str) -> Result<()> {
        let sessions = self.inner.db.list_user_sessions(user_id).await?;
        // A rotation that committed while our DELETE waited on its row lock inserted a row
        // that statement could not see (READ COMMITTED): sweep until nothing is left.
        self.inner.db.delete_user_sessions(user_id).await?;
        for _ in 0..3 {
            if self.inner.db.delete_user_sessions(user_id).await? == 0 {
                break;
            }
        }
        let families: HashSet<&str> = sessions.iter().map(|s| s.family_id.as_str()).collect();
        for family in families {
            self.forget_session(family).await;
        }
        if !sessions.is_empty() {
            self.fire_logout(user_id.to_owned());
        }
        Ok(())
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

    /// Changes a user's identifier (`USER_ALREADY_EXISTS` when taken).
    pub async fn change_identifier(&self, user_id: &str, new_identifier: &str) -> Result<AuthUser> {
        let identifier = self.normalize_identifier(new_identifier)?;
        if uuid::Uuid::try_parse(user_id).is_err() {
            return Err(SentriError::user_not_found());
        }
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

    /// Changes a password after checking the current one, then revokes every session
    /// of the user.
    pub async fn change_password(&self, user_id: &str, current: &str, new: &str) -> Result<()> {
        validate_password(new)?;
        if current.len() > MAX_PASSWORD_BYTES {
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
            .verify(current, &user.password_hash)
            .await?
        {
            return Err(SentriError::invalid_credentials());
        }
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
            spawn_hook("on_login", hook(user));
        }
    }

    fn fire_failed_login(&self, identifier: String, err: SentriError) {
        if let Some(hook) = &self.inner.hooks.on_failed_login {
            spawn_hook("on_failed_login", hook((identifier, err)));
        }
    }

    fn fire_logout(&self, user_id: String) {
        if let Some(hook) = &self.inner.hooks.on_logout {
            spawn_hook("on_logout", hook(user_id));
        }
    }
}

/// Runs a hook on its own task; a panic is caught and logged, a slow hook delays nothing.
fn spawn_hook(name: &'static str, fut: BoxFuture<'static, ()>) {
    tokio::spawn(async move {
        if std::panic::AssertUnwindSafe(fut)
            .catch_unwind()
            .await
            .is_err()
        {
            tracing::error!(hook = name, "hook panicked");
        }
    });
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

/// `true` while a rotation made at `rotated_at` is less than `grace` old. A zero grace
/// never matches (every reuse is theft).
fn within_grace(now: i64, rotated_at: i64, grace: Duration) -> bool {
    !grace.is_zero() && now.saturating_sub(rotated_at).max(0) < duration_ms(grace)
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
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
