//! Server mode: [`create_auth`](crate::create_auth), [`ServerAuth`] and its builder [`ServerConfig`].
//!
//! `ServerAuth` composes the core services (users in `identity`, sessions in `session`,
//! tokens, events) with the enabled capabilities. Its methods are plain async services;
//! `auth.router()` is the core routes merged with every capability's routes, and only
//! parses input, calls a service (or the application's override) and formats the
//! envelope.

mod authenticate;
pub mod config;
#[cfg(feature = "openapi")]
mod openapi;
#[cfg(feature = "postgres")]
mod postgres;
mod routes;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;

pub use config::{Hooks, Overrides, ServerConfig};
#[cfg(feature = "postgres")]
pub use postgres::{CreateServerOptions, PostgresConfig, create_auth_server};

use crate::capability::account::AccountService;
use crate::capability::{Capability, Core, Credential, FirstFactor, SignIn};
use crate::core::error::{Result, SentriError};
use crate::core::events::{AuthEvent, AuthEventKind, EventBus, EventSink};
use crate::core::principal::{AuthUser, SessionMeta};
use crate::core::{AuthConfig, RevocationCheck};
use crate::db::{Database, Migration};
use crate::http::TrustedProxies;
use crate::http::csrf::TrustedOrigins;
use crate::http::transport::Transport;
use crate::identity::roles::RoleCatalogue;
use crate::identity::{
    IdentifierCase, Identity, LoginInput, ProvisionUser, RegisterInput, Roles, normalize_identifier,
};
use crate::keystore::{KeyStore, SigningKeyInfo};
use crate::password::PasswordHasher;
use crate::session::{AuthResult, RefreshResult, SessionCache, Sessions};
use crate::throttle::{Throttle, ThrottleKey};
use crate::token::{AccessClaims, RefreshClaims, TokenOptions, TokenService};

/// The address a provisioned account gets: the identifier when it is one (an `email`
/// must then be the same), else the given `email` (checked).
fn provisioned_address(
    identifier: &str,
    email: Option<&str>,
    case: IdentifierCase,
) -> Result<Option<String>> {
    // An address compares as every address does (IDNA domain, see `normalize_identifier`).
    let email = email.map(|e| normalize_identifier(e, case)).transpose()?;
    let email = email.as_deref();
    if crate::mail::is_address(identifier) {
        if email.is_some_and(|e| e != identifier) {
            return Err(SentriError::validation(
                "email must be the identifier when the identifier is an address",
            ));
        }
        return Ok(Some(identifier.to_owned()));
    }
    match email {
        Some(email) => {
            crate::mail::validate_address(email)?;
            Ok(Some(email.to_owned()))
        }
        None => Ok(None),
    }
}

impl AuthConfig for ServerConfig {
    type Auth = ServerAuth;
    fn build(self) -> Result<ServerAuth> {
        ServerAuth::from_config(self)
    }
}

/// The core migrations: users, then sessions.
pub(crate) fn core_migrations() -> impl Iterator<Item = &'static Migration> {
    crate::identity::schema::MIGRATIONS
        .iter()
        .chain(crate::identity::roles::schema::MIGRATIONS)
        .chain(crate::session::schema::MIGRATIONS)
}

/// Creates or upgrades the core tables (users and sessions) on `db`, as
/// [`ServerAuth::migrate`] does before the capabilities' tables.
pub async fn migrate_core(db: &Database) -> Result<()> {
    let all: Vec<Migration> = core_migrations().copied().collect();
    db.run_migrations(&all).await
}

pub(crate) struct Inner {
    pub(crate) core: Core,
    pub(crate) tokens: TokenService,
    /// The database key store, when enabled.
    pub(crate) keystore: Option<Arc<KeyStore>>,
    pub(crate) api_key: Option<String>,
    pub(crate) overrides: Overrides,
    pub(crate) is_token_revoked: Option<RevocationCheck>,
    pub(crate) redis_url: Option<String>,
    pub(crate) trusted_proxies: Option<Arc<TrustedProxies>>,
    pub(crate) capabilities: Vec<Arc<dyn Capability>>,
    pub(crate) credentials: Vec<Arc<dyn Credential>>,
    /// `false` when a capability closed public sign-up (`POST /register` is 404).
    pub(crate) signup_open: bool,
    /// A capability mails accounts: `POST /register` takes an optional `email`.
    pub(crate) register_email: bool,
    /// The memberships of the tenant guard (the workspaces capability), when enabled.
    pub(crate) membership: Option<Arc<dyn crate::http::Membership>>,
    /// `ServerConfig::serve_openapi`, and the document once rendered.
    #[cfg(feature = "openapi")]
    pub(crate) openapi: (bool, std::sync::OnceLock<bytes::Bytes>),
}

/// sentri in server mode: owns users and sessions, issues and verifies tokens.
///
/// Cheap to clone (an `Arc` inside). Built by [`create_auth`](crate::create_auth) from a [`ServerConfig`].
#[derive(Clone)]
pub struct ServerAuth {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for ServerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerAuth")
            .field("database", &self.inner.core.identity.db)
            .field("tokens", &self.inner.tokens)
            .field("valid_roles", &self.inner.core.identity.roles.valid)
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
/// The accepted range of `reauth_window`.
const REAUTH_RANGE: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(86_400));

fn at_most(value: Duration, max: Duration, what: &str) -> Result<Duration> {
    if value > max {
        return Err(SentriError::configuration(format!(
            "{what} must be at most {} s",
            max.as_secs()
        )));
    }
    Ok(value)
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
    if !(REAUTH_RANGE.0..=REAUTH_RANGE.1).contains(&config.reauth_window) {
        return Err(SentriError::configuration(
            "reauth_window must be between 60 s and 1 day",
        ));
    }
    if let Some(every) = config.purge_interval
        && !(PURGE_RANGE.0..=PURGE_RANGE.1).contains(&every)
    {
        return Err(SentriError::configuration(
            "purge_interval must be between 60 s and 1 day",
        ));
    }
    let access = config.access_expires_in.resolve()?;
    let refresh = config.refresh_expires_in.resolve()?;
    let lifetime = config.session_max_lifetime.resolve()?;
    Ok(Durations {
        access_ttl: at_most(access, MAX_ACCESS_TTL, "access_expires_in")?,
        refresh_ttl: at_most(refresh, MAX_REFRESH_TTL, "refresh_expires_in")?,
        session_max_lifetime: at_most(lifetime, MAX_SESSION_LIFETIME, "session_max_lifetime")?,
    })
}

fn hasher_of(config: &ServerConfig) -> Result<PasswordHasher> {
    #[cfg(feature = "argon2")]
    if let Some(params) = config.argon2id {
        return match config.hash_queue_limit {
            Some(waiting) => PasswordHasher::argon2id_with_queue_limit(params, waiting),
            None => PasswordHasher::argon2id(params),
        };
    }
    match config.hash_queue_limit {
        Some(waiting) => PasswordHasher::with_queue_limit(config.bcrypt_cost, waiting),
        None => PasswordHasher::new(config.bcrypt_cost),
    }
}

/// The key store of `config`, when enabled (the longest token it signs lives the refresh
/// lifetime plus the leeway).
fn keystore_of(
    config: &ServerConfig,
    tokens: &TokenService,
    durations: &Durations,
) -> Result<Option<Arc<KeyStore>>> {
    let Some(store) = &config.signing_key_store else {
        return Ok(None);
    };
    let lifetime = durations.refresh_ttl.max(durations.access_ttl) + config.leeway;
    let keystore = KeyStore::new(
        config.database.clone(),
        store.clone(),
        config.clock.clone(),
        tokens.clone(),
        lifetime,
    )?;
    Ok(Some(Arc::new(keystore)))
}

fn events_of(config: &ServerConfig) -> Arc<EventBus> {
    let mut sinks: Vec<Arc<dyn EventSink>> = config.event_sinks.clone();
    if let Some(hooks) = config::HooksSink::new(config.hooks.clone()) {
        sinks.push(Arc::new(hooks));
    }
    for capability in &config.capabilities {
        sinks.extend(capability.event_sinks());
    }
    Arc::new(EventBus::new(sinks, config.event_queue))
}

/// The role catalogue of `config`: grants may name the valid roles and the admin role.
fn catalogue_of(config: &ServerConfig, roles: &Roles) -> Result<RoleCatalogue> {
    RoleCatalogue::new(
        config.database.clone(),
        &config.permissions,
        &config.grants,
        &roles.catalogue_seed(),
        config.session_cache_ttl,
    )
}

/// Throttling is on but requests carry no peer address (the app was not served with
/// `into_make_service_with_connect_info`): said once.
fn warn_no_client_address() {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            "throttling: a login without a client address; serve the app with into_make_service_with_connect_info::<SocketAddr>() for per-address limits"
        );
    }
}

fn throttle_of(config: &ServerConfig) -> Result<Throttle> {
    match &config.throttling {
        Some(policy) => Throttle::new(
            policy.clone(),
            config.clock.clone(),
            config.redis_url.as_deref(),
        ),
        None => Ok(Throttle::disabled()),
    }
}

/// The server's own authenticator, handed to capabilities before the server exists
/// (the guard layers they build resolve it at request time).
pub(crate) struct LateGuard(std::sync::OnceLock<std::sync::Weak<Inner>>);

impl ServerAuth {
    fn from_config(config: ServerConfig) -> Result<Self> {
        let durations = durations_of(&config)?;
        if config.api_key.as_ref().is_some_and(|k| k.len() < 16) {
            return Err(SentriError::configuration(
                "api_key must be at least 16 bytes",
            ));
        }
        let transport = Transport {
            cookie: config.cookie.clone(),
            access_cookie: config.access_cookie.clone(),
            refresh_ttl: durations.refresh_ttl,
            access_ttl: durations.access_ttl,
            trusted_origins: TrustedOrigins::new(&config.trusted_origins)?,
        };
        transport.check()?;
        for capability in &config.capabilities {
            capability.check()?;
        }
        let roles = Roles::new(
            &config.valid_roles,
            config.public_roles.as_deref(),
            &config.admin_role,
        )?;
        let tokens = TokenService::new(
            config.keys.clone(),
            TokenOptions {
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
                leeway: config.leeway,
                access_ttl: durations.access_ttl,
                refresh_ttl: durations.refresh_ttl,
                verified_cache_bytes: config.verified_token_cache_bytes,
            },
        )?;
        let events = events_of(&config);
        let catalogue = catalogue_of(&config, &roles)?;
        let identity = Arc::new(Identity {
            db: config.database.clone(),
            hasher: hasher_of(&config)?,
            roles,
            case: config.identifier_case,
            policy: config.password_policy.clone(),
            catalogue,
        });
        let cache = Arc::new(SessionCache::new(config.session_cache_ttl));
        let sessions = Arc::new(Sessions {
            db: config.database.clone(),
            tokens: tokens.clone(),
            cache: cache.clone(),
            bus: crate::session::bus::Revocations::new(config.redis_url.as_deref())?,
            clock: config.clock.clone(),
            events: events.clone(),
            refresh_ttl: durations.refresh_ttl,
            max_lifetime: durations.session_max_lifetime,
            grace: config.refresh_grace,
        });
        sessions.bus.start(&cache);
        crate::session::start_purge(&sessions, config.purge_interval);
        let throttle = throttle_of(&config)?;
        let keystore = keystore_of(&config, &tokens, &durations)?;
        Ok(Self::assemble(
            config,
            identity,
            sessions,
            events,
            tokens,
            (transport, throttle),
            keystore,
        ))
    }

    /// Ties the services, the capabilities and the guard together.
    fn assemble(
        config: ServerConfig,
        identity: Arc<Identity>,
        sessions: Arc<Sessions>,
        events: Arc<EventBus>,
        tokens: TokenService,
        (transport, throttle): (Transport, Throttle),
        keystore: Option<Arc<KeyStore>>,
    ) -> Self {
        let guard = Arc::new(LateGuard(std::sync::OnceLock::new()));
        let core = Core {
            identity,
            sessions,
            events,
            guard: guard.clone(),
            transport: Arc::new(transport),
            login_steps: config
                .capabilities
                .iter()
                .filter_map(|c| Some((c.name(), c.login_step()?)))
                .collect(),
            capabilities: config.capabilities.iter().cloned().collect(),
            throttle,
            sensitive_requires_2fa: config.sensitive_requires_2fa,
            reauth_window: config.reauth_window,
            registration_key: config.api_key.is_some(),
        };
        let capabilities = config.capabilities;
        let membership = capabilities.iter().find_map(|c| c.membership(&core));
        let inner = Arc::new(Inner {
            core,
            tokens,
            keystore,
            api_key: config.api_key,
            overrides: config.overrides,
            is_token_revoked: config.is_token_revoked,
            redis_url: config.redis_url,
            trusted_proxies: config.trusted_proxies.map(Arc::new),
            credentials: capabilities.iter().filter_map(|c| c.credential()).collect(),
            signup_open: !capabilities.iter().any(|c| c.closes_signup()),
            register_email: capabilities.iter().any(|c| c.mails_accounts()),
            membership,
            #[cfg(feature = "openapi")]
            openapi: (config.serve_openapi, std::sync::OnceLock::new()),
            capabilities,
        });
        let _ = guard.0.set(Arc::downgrade(&inner));
        ServerAuth { inner }
    }

    pub(crate) fn core(&self) -> &Core {
        &self.inner.core
    }

    fn identity(&self) -> &Identity {
        &self.inner.core.identity
    }

    fn sessions(&self) -> &Sessions {
        &self.inner.core.sessions
    }

    fn account(&self) -> AccountService {
        AccountService::new(self.inner.core.clone())
    }

    // ---- accessors -----------------------------------------------------------------

    /// The database.
    pub fn database(&self) -> &Database {
        &self.identity().db
    }

    /// The token service (signing and verification).
    pub fn tokens(&self) -> &TokenService {
        &self.inner.tokens
    }

    /// The configured valid roles.
    pub fn valid_roles(&self) -> &[String] {
        &self.identity().roles.valid
    }

    /// Roles a public registration may ask for.
    pub fn public_roles(&self) -> &[String] {
        &self.identity().roles.public
    }

    /// Access-token lifetime.
    pub fn access_ttl(&self) -> Duration {
        self.inner.core.transport.access_ttl
    }

    /// Refresh-token lifetime.
    pub fn refresh_ttl(&self) -> Duration {
        self.sessions().refresh_ttl
    }

    /// The configured Redis URL, if any.
    pub fn redis_url(&self) -> Option<&str> {
        self.inner.redis_url.as_deref()
    }

    /// The attempt limiter (`ServerConfig::throttling`; disabled when off).
    pub fn throttle(&self) -> &Throttle {
        self.core().throttle()
    }

    /// bcrypt computations run so far (for tests: a refused attempt must cost none).
    #[doc(hidden)]
    pub fn bcrypt_runs(&self) -> u64 {
        self.identity().hasher.bcrypt_runs()
    }

    /// Security events dropped because the event queue was full.
    pub fn dropped_events(&self) -> u64 {
        self.inner.core.events.dropped()
    }

    /// Applies pending schema migrations of the core and of every enabled capability
    /// (idempotent; safe from several processes).
    ///
    /// Once per database it also rewrites stored identifiers into the current normal form
    /// (NFKC_Casefold, see [`normalize_identifier`]); if two accounts would merge it
    /// changes nothing and fails with `CONFIGURATION_ERROR` naming their user ids, so an
    /// operator decides, never a silent merge.
    pub async fn migrate(&self) -> Result<()> {
        let capabilities = self.inner.capabilities.iter();
        let keystore = self.inner.keystore.iter();
        let all: Vec<Migration> = core_migrations()
            .copied()
            .chain(keystore.flat_map(|_| crate::keystore::MIGRATIONS.iter().copied()))
            .chain(capabilities.flat_map(|c| c.migrations().iter().copied()))
            .collect();
        self.database().run_migrations(&all).await?;
        let seed = self.identity().roles.catalogue_seed();
        self.database()
            .seed_roles(&seed, self.sessions().now())
            .await?;
        self.load_signing_keys().await?;
        self.database()
            .normalize_identifiers_once(self.identity().case)
            .await
    }

    // ---- passwords and tokens ------------------------------------------------------

    /// Hashes a password with the configured algorithm and cost (on the blocking pool).
    pub async fn hash_password(&self, password: &str) -> Result<String> {
        self.identity().hasher.hash(password).await
    }

    /// Verifies a password against a stored hash (on the blocking pool).
    pub async fn verify_password(&self, password: &str, hash: &str) -> Result<bool> {
        self.identity().hasher.verify(password, hash).await
    }

    /// Signs an access token for `user` bound to session `session_id`. It carries no
    /// authorization version (`av`): once the user's roles have changed, `protect()`
    /// treats it as stale (sessions opened by login or refresh carry the current one).
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

    // ---- users ---------------------------------------------------------------------

    /// Normalises an identifier (NFKC_Casefold by default, see [`normalize_identifier`])
    /// and checks it: non-empty, at most 320 bytes, no control or invisible characters.
    pub fn normalize_identifier(&self, identifier: &str) -> Result<String> {
        normalize_identifier(identifier, self.identity().case)
    }

    /// Checks that `roles` may be requested by this caller: any valid role with the API
    /// key (`trusted`), only `public_roles` without it (else `FORBIDDEN`).
    pub fn check_registration_roles(&self, roles: Option<&[String]>, trusted: bool) -> Result<()> {
        let rules = &self.identity().roles;
        rules.check(roles.unwrap_or(&[]))?;
        if !trusted
            && let Some(roles) = roles
            && roles.iter().any(|r| !rules.public.contains(r))
        {
            return Err(SentriError::forbidden(
                "These roles cannot be requested without the API key",
            ));
        }
        Ok(())
    }

    /// Registers a user. Roles are checked against `valid_roles` (the caller is trusted
    /// here: the router applies the public-roles rule before calling this). No tokens
    /// are issued.
    pub async fn register(&self, input: RegisterInput) -> Result<AuthUser> {
        self.register_with_email(input, None).await
    }

    /// [`register`](Self::register) with the account's address when its identifier is
    /// a username (what `POST /register` runs with an `email` when a capability mails
    /// accounts). Checked like [`provision_user`](Self::provision_user)'s: for an
    /// address identifier `email` must be that address, else a well-formed ASCII
    /// address (`VALIDATION_ERROR`). Stored unverified, before the `registered` event
    /// (so the verification message goes to it). Addresses are not unique: an address
    /// is never an identifier of another account, so it signs no one in.
    ///
    /// ```no_run
    /// # async fn demo(auth: sentri::ServerAuth) -> sentri::Result<()> {
    /// let input: sentri::RegisterInput = serde_json::from_value(serde_json::json!({
    ///     "identifier": "ada", "password": "correct horse battery"
    /// })).expect("a register body");
    /// auth.register_with_email(input, Some("ada@example.com".into())).await?;
    /// # Ok(()) }
    /// ```
    pub async fn register_with_email(
        &self,
        input: RegisterInput,
        email: Option<String>,
    ) -> Result<AuthUser> {
        let span = crate::core::observe::op_span!("register");
        crate::core::observe::traced(span, self.register_with_email_once(input, email), |_| "ok")
            .await
    }

    async fn register_with_email_once(
        &self,
        input: RegisterInput,
        email: Option<String>,
    ) -> Result<AuthUser> {
        let identity = self.identity();
        let address = match email.as_deref() {
            Some(email) => {
                let identifier = identity.normalize(&input.identifier)?;
                provisioned_address(&identifier, Some(email), identity.case)?
                    .filter(|address| *address != identifier)
            }
            None => None,
        };
        let user = identity.register(input).await?;
        if let Some(address) = address {
            identity.db.set_user_email(&user.id, &address, None).await?;
        }
        let event = AuthEvent::new(AuthEventKind::Registered, self.sessions().now()).user(&user.id);
        self.inner.core.events.emit(event);
        Ok(user)
    }

    /// Creates a user from trusted server-side code (an admin bootstrap; not a route):
    /// any role of `valid_roles` or the role catalogue, the password policy, an optional address and verification; works
    /// when public sign-up is closed.
    ///
    /// Idempotent for exactly the same target: when a user with this identifier exists
    /// with the same roles, password and address, it is returned (and marked verified
    /// if asked); any other existing user with this identifier is `USER_ALREADY_EXISTS`
    /// (409).
    pub async fn provision_user(&self, input: ProvisionUser) -> Result<AuthUser> {
        let identity = self.identity();
        let identifier = identity.normalize(&input.identifier)?;
        identity.policy.validate(&input.password)?;
        let address = provisioned_address(&identifier, input.email.as_deref(), identity.case)?;
        let roles = match input.roles.as_slice() {
            [] => identity.default_roles(),
            given => crate::identity::dedupe(given.iter().cloned()),
        };
        identity.check_assignable(&roles).await?;
        let (user, created) = match self
            .existing_match(&identifier, &input, &roles, address.as_deref())
            .await?
        {
            Some(user) => (user, false),
            None => match self
                .create_provisioned(&identifier, &input.password, &roles)
                .await
            {
                Ok(user) => (user, true),
                // A concurrent provisioning of the same target won the insert.
                Err(err) if err.is(&crate::core::error::ErrorCode::UserAlreadyExists) => {
                    let existing = self
                        .existing_match(&identifier, &input, &roles, address.as_deref())
                        .await?;
                    (existing.ok_or(err)?, false)
                }
                Err(err) => return Err(err),
            },
        };
        if let Some(address) = address {
            self.store_provisioned_address(&user.id, &address, input.mark_email_verified)
                .await?;
        }
        self.provision_capabilities(&user, &input).await?;
        if created {
            // After the address is stored: capabilities react to it (e.g. verification).
            let event =
                AuthEvent::new(AuthEventKind::Registered, self.sessions().now()).user(&user.id);
            self.inner.core.events.emit(event);
        }
        Ok(user)
    }

    /// Lets each capability handle its part of a provisioning (a workspace); a part no
    /// capability handles is a configuration error.
    async fn provision_capabilities(&self, user: &AuthUser, input: &ProvisionUser) -> Result<()> {
        let mut handled = false;
        for capability in &self.inner.capabilities {
            handled |= capability.provisioned(self.core(), user, input).await?;
        }
        if input.workspace.is_some() && !handled {
            return Err(SentriError::configuration(
                "provisioning a workspace needs ServerConfig::with(Workspaces::default())",
            ));
        }
        Ok(())
    }

    /// Stores the address of a provisioned user, keeping an existing verification of the
    /// same address and adding one when asked.
    async fn store_provisioned_address(
        &self,
        user_id: &str,
        address: &str,
        verify: bool,
    ) -> Result<()> {
        let db = &self.identity().db;
        let state = db.user_email(user_id).await?.unwrap_or_default();
        let same = state.email.as_deref() == Some(address);
        let kept = if same { state.verified_at } else { None };
        let verified_at = kept.or_else(|| verify.then(|| self.sessions().now()));
        if !same || verified_at != state.verified_at {
            db.set_user_email(user_id, address, verified_at).await?;
        }
        Ok(())
    }

    /// The existing user with `identifier` when it is exactly the target; `None` when
    /// there is none; `USER_ALREADY_EXISTS` when it differs.
    async fn existing_match(
        &self,
        identifier: &str,
        input: &ProvisionUser,
        roles: &[String],
        address: Option<&str>,
    ) -> Result<Option<AuthUser>> {
        let identity = self.identity();
        let Some(user) = identity.db.find_user_by_identifier(identifier).await? else {
            return Ok(None);
        };
        let mut have = user.roles.clone();
        let mut want = roles.to_vec();
        have.sort();
        want.sort();
        let state = identity.db.user_email(&user.id).await?.unwrap_or_default();
        let same_address =
            address.is_none() || state.email.is_none() || state.email.as_deref() == address;
        if have != want
            || !same_address
            || !identity
                .hasher
                .verify(&input.password, &user.password_hash)
                .await?
        {
            return Err(SentriError::user_already_exists());
        }
        Ok(Some(user.to_auth_user()))
    }

    async fn create_provisioned(
        &self,
        identifier: &str,
        password: &str,
        roles: &[String],
    ) -> Result<AuthUser> {
        let identity = self.identity();
        let hash = identity.hasher.hash(password).await?;
        let user = identity
            .db
            .create_user(&crate::identity::NewUser {
                identifier,
                password_hash: &hash,
                roles,
            })
            .await?
            .to_auth_user();
        Ok(user)
    }

    /// The user, fresh from the store, or `USER_NOT_FOUND`.
    pub async fn get_user(&self, user_id: &str) -> Result<AuthUser> {
        self.identity().get_user(user_id).await
    }

    /// Logs a user in: the same `INVALID_CREDENTIALS` (in the same time) for an unknown
    /// identifier and a wrong password; every capability's login step; then a session and
    /// a token pair.
    ///
    /// With throttling on, the attempt is counted per normalised identifier and per
    /// client address first, and refused with `429 TOO_MANY_ATTEMPTS` (before any
    /// password hashing) when over the limit.
    ///
    /// A login that a step challenges (a user with two-factor authentication) opens no
    /// session and fails here with `TWO_FACTOR_REQUIRED` (403); use
    /// [`login_or_challenge`](Self::login_or_challenge) to get the challenge itself.
    pub async fn login(&self, input: LoginInput, meta: SessionMeta) -> Result<AuthResult> {
        match self.login_or_challenge(input, meta).await? {
            SignIn::Session(res) => Ok(res),
            SignIn::Challenge(_) => Err(SentriError::new(
                crate::ErrorCode::TwoFactorRequired,
                "A second factor is required: use login_or_challenge",
            )),
        }
    }

    /// What `POST /login` runs: like [`login`](Self::login), but a login that a step
    /// challenges answers [`SignIn::Challenge`] (e.g. `{twoFactorRequired: true,
    /// twoFactorToken}`) instead of failing. No session exists until the challenge is met.
    pub async fn login_or_challenge(&self, input: LoginInput, meta: SessionMeta) -> Result<SignIn> {
        let span = crate::core::observe::op_span!("login");
        crate::core::observe::traced(
            span,
            self.login_or_challenge_once(input, meta),
            |s| match s {
                crate::capability::SignIn::Session(_) => "ok",
                crate::capability::SignIn::Challenge(_) => "challenge",
            },
        )
        .await
    }

    async fn login_or_challenge_once(
        &self,
        input: LoginInput,
        meta: SessionMeta,
    ) -> Result<SignIn> {
        let result = match self.login_attempt(&input, &meta).await {
            Ok(attempt) => {
                let result = self.login_inner(&input, meta.clone()).await;
                attempt.settle(&result).await;
                result
            }
            Err(refused) => Err(refused),
        };
        let now = self.sessions().now();
        let event = match &result {
            Ok(SignIn::Session(res)) => {
                let mut e = AuthEvent::new(AuthEventKind::LoginSucceeded, now)
                    .user(&res.user.id)
                    .session(&res.session_id);
                e.user = Some(res.user.clone());
                e
            }
            // Not a login yet: the step that challenged reports what happens next.
            Ok(SignIn::Challenge(_)) => return result,
            Err(err) => {
                let mut e = AuthEvent::new(AuthEventKind::LoginFailed, now);
                e.identifier = Some(input.identifier.clone());
                e.error = Some(err.clone());
                e
            }
        };
        self.inner.core.events.emit(event.meta(meta));
        result
    }

    /// Counts a public sign-up against its client address (or refuses it with 429
    /// before the password is hashed). Registrations trusted by the API key are not
    /// counted.
    pub(crate) async fn registration_attempt(
        &self,
        meta: &SessionMeta,
        trusted: bool,
    ) -> Result<crate::throttle::Attempt> {
        let throttle = self.core().throttle();
        let mut keys = Vec::with_capacity(1);
        if throttle.is_enabled() && !trusted {
            match &meta.ip {
                Some(ip) => keys.push(ThrottleKey::registration(ip)),
                None => warn_no_client_address(),
            }
        }
        throttle.attempt(&keys).await
    }

    /// Counts a login attempt against its identifier and address (or refuses it).
    async fn login_attempt(
        &self,
        input: &LoginInput,
        meta: &SessionMeta,
    ) -> Result<crate::throttle::Attempt> {
        let throttle = self.core().throttle();
        let mut keys = Vec::with_capacity(2);
        if throttle.is_enabled() {
            if let Ok(identifier) = self.identity().normalize(&input.identifier) {
                keys.push(ThrottleKey::subject("login", &identifier));
            }
            match &meta.ip {
                Some(ip) => keys.push(ThrottleKey::address(ip)),
                None => warn_no_client_address(),
            }
        }
        throttle.attempt(&keys).await
    }

    async fn login_inner(&self, input: &LoginInput, meta: SessionMeta) -> Result<SignIn> {
        let (user, verified_hash) = self.identity().check_credentials(input).await?;
        let factor = FirstFactor::Password;
        if let Some(challenge) = self.core().run_login_steps(&user, &meta, factor).await? {
            return Ok(SignIn::Challenge(challenge));
        }
        let res = self
            .sessions()
            .open_family(user, meta, &factor.assurance())
            .await?;
        // A password change that committed between our check and our insert revoked every
        // session before ours existed: do not let the old password keep a session.
        if self
            .identity()
            .hash_unchanged(&res.user.id, &verified_hash)
            .await?
        {
            return Ok(SignIn::Session(res));
        }
        self.sessions().revoke_session(&res.session_id).await?;
        Err(SentriError::invalid_credentials())
    }

    // ---- sessions ------------------------------------------------------------------

    /// `true` while session `sid` is live (not revoked, not expired). Answers from a
    /// short-lived in-process cache when it can (see `ServerConfig::session_cache_ttl`),
    /// else from the store.
    pub async fn is_session_active(&self, sid: &str) -> Result<bool> {
        self.sessions().is_session_active(sid).await
    }

    // ---- the database key store ---------------------------------------------------

    /// With a [signing key store](ServerConfig::signing_key_store): loads the shared keys
    /// (creating the first one on an empty store; of instances starting together exactly
    /// one creates it), installs them, and starts reloading them every refresh interval
    /// in the background. [`migrate`](Self::migrate) calls it; call it yourself on
    /// instances that do not migrate, before serving. A stored key that does not open
    /// with the configured key-encryption key fails with `CONFIGURATION_ERROR`. Without
    /// a key store it does nothing.
    pub async fn load_signing_keys(&self) -> Result<()> {
        let Some(store) = &self.inner.keystore else {
            return Ok(());
        };
        store.refresh().await?;
        crate::keystore::start_refresh(store);
        Ok(())
    }

    /// Reloads the shared keys now (and creates the next one when it is due), as the
    /// background refresh does. Without a key store it does nothing.
    pub async fn refresh_signing_keys(&self) -> Result<()> {
        match &self.inner.keystore {
            Some(store) => store.refresh().await,
            None => Ok(()),
        }
    }

    /// Manual rotation: creates a new key now, published at once and signing after
    /// `publish_ahead`; the current key keeps signing until then. Returns its kid.
    /// `CONFIGURATION_ERROR` without a key store.
    pub async fn rotate_signing_key(&self) -> Result<String> {
        self.keystore()?.rotate().await
    }

    /// Emergency revocation of the key `kid`: its tokens stop verifying at once in this
    /// instance and within the refresh interval in the others (client apps: when they
    /// refetch the JWKS). When it was the signing key, a new key signs from now on.
    /// `false` when `kid` is unknown or already revoked. `CONFIGURATION_ERROR` without a
    /// key store.
    pub async fn revoke_signing_key(&self, kid: &str) -> Result<bool> {
        self.keystore()?.revoke(kid).await
    }

    /// Every stored signing key, oldest first. `CONFIGURATION_ERROR` without a key store.
    pub async fn signing_keys(&self) -> Result<Vec<SigningKeyInfo>> {
        self.keystore()?.list().await
    }

    fn keystore(&self) -> Result<&KeyStore> {
        self.inner
            .keystore
            .as_deref()
            .ok_or_else(|| SentriError::configuration("no signing key store is configured"))
    }

    /// Verifies an access token; a token naming a kid this instance does not know makes
    /// the key store reload first (rate-limited), so a key another instance just
    /// created verifies here too.
    pub(crate) async fn verify_access_reloading(&self, token: &str) -> Result<AccessClaims> {
        match self.inner.tokens.verify_access(token) {
            Err(err) if self.reloaded_for(token, &err).await => {
                self.inner.tokens.verify_access(token)
            }
            other => other,
        }
    }

    /// [`verify_access_reloading`](Self::verify_access_reloading) for refresh tokens.
    pub(crate) async fn verify_refresh_reloading(&self, token: &str) -> Result<RefreshClaims> {
        match self.inner.tokens.verify_refresh(token) {
            Err(err) if self.reloaded_for(token, &err).await => {
                self.inner.tokens.verify_refresh(token)
            }
            other => other,
        }
    }

    /// `true` when `err` came from a kid this instance did not know and a reload made
    /// it known.
    async fn reloaded_for(&self, token: &str, err: &SentriError) -> bool {
        let Some(store) = &self.inner.keystore else {
            return false;
        };
        if !err.is(&crate::core::error::ErrorCode::TokenInvalid) {
            return false;
        }
        match crate::token::peek_kid(token) {
            Some(kid) if !self.inner.tokens.knows_kid(&kid) => store
                .refresh_for_unknown_kid(&kid)
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "sentri: reloading the signing keys failed");
                    false
                }),
            _ => false,
        }
    }

    /// Rotates a refresh token (see the session rules in `docs/SECURITY.md`): the
    /// presented token stops working and a new pair of the same session is returned; a
    /// replay within `refresh_grace` gets the same successor; any other reuse revokes the
    /// session.
    pub async fn refresh(&self, refresh_token: &str, meta: SessionMeta) -> Result<RefreshResult> {
        self.sessions().refresh(refresh_token, meta).await
    }

    /// What `POST /refresh` and protect()'s silent refresh run: the application's
    /// `is_token_revoked` check, then the `refresh` override or [`refresh`](Self::refresh).
    pub(crate) async fn refresh_request(
        &self,
        token: &str,
        meta: SessionMeta,
    ) -> Result<AuthResult> {
        let claims = self.verify_refresh_reloading(token).await?;
        self.check_app_revocation(&claims.sid).await?;
        let input = (token.to_owned(), meta);
        let res = self
            .inner
            .overrides
            .refresh
            .run(self.clone(), input, |auth, (t, m)| async move {
                auth.refresh(&t, m).await
            })
            .await?;
        if res.session_id != claims.sid {
            self.check_app_revocation(&res.session_id).await?;
        }
        Ok(res)
    }

    /// The application's `is_token_revoked(session_id)` hook, when configured.
    pub(crate) async fn check_app_revocation(&self, sid: &str) -> Result<()> {
        match &self.inner.is_token_revoked {
            Some(check) if check(sid.to_owned()).await => {
                Err(SentriError::token_invalid("Token has been revoked"))
            }
            _ => Ok(()),
        }
    }

    /// Ends the session of a refresh token (any token of the family, even a superseded
    /// one). Always succeeds for a missing, invalid or already-used token.
    pub async fn logout(&self, refresh_token: Option<&str>) -> Result<()> {
        self.sessions().logout(refresh_token).await
    }

    /// Ends the session `sid` (e.g. from an access token's `sid` claim).
    pub async fn revoke_session(&self, sid: &str) -> Result<()> {
        self.sessions().revoke_session(sid).await
    }

    /// Ends every credential of a user (every session, and what the capabilities issued:
    /// API keys, outstanding mailed tokens, …): when this returns, no refresh token of
    /// any of them works, whatever rotations were in flight.
    pub async fn logout_all(&self, user_id: &str) -> Result<()> {
        self.core()
            .end_every_credential(user_id, crate::capability::CredentialReset::LogoutAll)
            .await
    }

    /// Deletes expired sessions and ended families (revoked ones an hour after their
    /// revocation). Runs every `purge_interval` on its own; returns the rows deleted.
    pub async fn purge_expired_sessions(&self) -> Result<u64> {
        self.sessions().purge_expired_sessions().await
    }

    // ---- account (the account capability's service) --------------------------------

    /// Changes a password after checking the current one, then revokes every session.
    pub async fn change_password(&self, user_id: &str, current: &str, new: &str) -> Result<()> {
        self.account().change_password(user_id, current, new).await
    }

    /// Changes a user's identifier after checking the current password.
    pub async fn change_identifier(
        &self,
        user_id: &str,
        new_identifier: &str,
        current_password: &str,
    ) -> Result<AuthUser> {
        self.account()
            .change_identifier(user_id, new_identifier, current_password)
            .await
    }

    /// Adds roles to a user (merged with the existing ones, checked against
    /// `valid_roles`). Tokens already issued carry the old roles until they expire.
    pub async fn assign_roles(&self, user_id: &str, roles: &[String]) -> Result<AuthUser> {
        self.account().assign_roles(user_id, roles).await
    }

    // ---- HTTP ----------------------------------------------------------------------

    crate::http::guard::guard_methods!();

    /// A layer that admits a request into the workspace its `X-Workspace-Id` header
    /// names only when the access token is bound to that workspace (`wid`) and the
    /// caller is an active member of it; handlers may extract
    /// [`CurrentWorkspace`](crate::http::CurrentWorkspace). Refusals are 403 with
    /// `WORKSPACE_HEADER_REQUIRED`, `WORKSPACE_MISMATCH` or `WORKSPACE_ACCESS_DENIED`
    /// (see [`workspaces`](crate::capability::workspaces)). Authenticates by itself when
    /// no `protect()` ran before it.
    ///
    /// # Panics
    /// At start-up, when the workspaces capability is not enabled.
    pub fn tenant(&self) -> crate::http::GuardLayer {
        self.authorize_in_workspace(Vec::<String>::new())
    }

    /// [`tenant`](Self::tenant), and the caller must hold one of `roles` within the
    /// workspace (403 `FORBIDDEN` otherwise; an empty list: any member).
    ///
    /// # Panics
    /// At start-up, when the workspaces capability is not enabled or a role is not one
    /// of the workspace roles.
    pub fn authorize_in_workspace<R, S>(&self, roles: R) -> crate::http::GuardLayer
    where
        R: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let Some(members) = self.inner.membership.clone() else {
            panic!("sentri: tenant guards need ServerConfig::with(Workspaces::default())");
        };
        crate::http::GuardLayer::tenant(Arc::new(self.clone()), members, roles)
    }

    /// The idempotency layer with this server's `redis_url` (see
    /// [`IdempotencyOptions`](crate::idempotency::IdempotencyOptions)).
    pub fn idempotency(
        &self,
        mut options: crate::idempotency::IdempotencyOptions,
    ) -> Result<crate::idempotency::IdempotencyLayer> {
        if options.redis_url.is_none() {
            options.redis_url = self.inner.redis_url.clone();
        }
        crate::idempotency::IdempotencyLayer::new(options)
    }

    /// All of sentri's endpoints — the core routes and every enabled capability's — to
    /// nest under a prefix: `app.nest("/auth", auth.router())`.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        let mut router = routes::core_routes(self);
        for capability in &self.inner.capabilities {
            router = router.merge(capability.routes(self.core()));
        }
        let router = router
            .fallback(routes::not_found)
            .method_not_allowed_fallback(routes::method_not_allowed);
        match &self.inner.trusted_proxies {
            Some(proxies) => router.layer(axum::Extension(proxies.clone())),
            None => router,
        }
        .with_state(())
    }
}
