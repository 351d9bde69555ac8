//! Server configuration: [`ServerConfig`], hooks and the overrides of the core services.
//!
//! Configuration is checked once, by [`create_auth`](crate::create_auth): an invalid
//! value is a `CONFIGURATION_ERROR` at start-up, never at request time.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;

use super::ServerAuth;
use crate::capability::Capability;
use crate::capability::account::Account;
use crate::core::clock::{Clock, SystemClock, Ttl};
use crate::core::crypto::redact_url;
use crate::core::error::{Result, SentriError};
use crate::core::events::{AuthEvent, AuthEventKind, EventSink};
use crate::core::principal::{AuthUser, SessionMeta};
use crate::core::{BoxFuture, Override, RevocationCheck};
use crate::db::Database;
use crate::http::TrustedProxies;
use crate::http::transport::{AccessCookieConfig, CookieConfig};
use crate::identity::{IdentifierCase, LoginInput, RegisterInput};
use crate::password::PasswordPolicy;
use crate::session::{AuthResult, RefreshResult};
use crate::throttle::Throttling;
use crate::token::SigningKey;

type HookFn<A> = Arc<dyn Fn(A) -> BoxFuture<'static, ()> + Send + Sync>;

/// Side-effect hooks. They run on their own task: a hook that fails, panics or sleeps
/// never fails or delays the request that fired it.
#[non_exhaustive]
#[derive(Clone, Default)]
pub struct Hooks {
    /// After a successful login.
    pub on_login: Option<HookFn<AuthUser>>,
    /// After a failed login, with the identifier as typed and the error.
    pub on_failed_login: Option<HookFn<(String, SentriError)>>,
    /// After a logout, with the user id.
    pub on_logout: Option<HookFn<String>>,
}

impl Hooks {
    /// Sets `on_login`.
    pub fn on_login<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(AuthUser) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_login = Some(Arc::new(move |u| Box::pin(f(u))));
        self
    }

    /// Sets `on_failed_login`.
    pub fn on_failed_login<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(String, SentriError) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_failed_login = Some(Arc::new(move |(i, e)| Box::pin(f(i, e))));
        self
    }

    /// Sets `on_logout`.
    pub fn on_logout<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_logout = Some(Arc::new(move |u| Box::pin(f(u))));
        self
    }
}

/// Hook tasks running at once; more are skipped with a warning.
const MAX_HOOK_TASKS: usize = 1024;

/// The three hooks of sentri 2.1 as an event sink: `on_login` on a successful login,
/// `on_failed_login` on a failed one, `on_logout` on logout, logout-all and reuse
/// detection. Each hook runs on its own task (at most 1 024 at once).
pub(crate) struct HooksSink {
    hooks: Hooks,
    tasks: Arc<tokio::sync::Semaphore>,
}

impl HooksSink {
    pub(crate) fn new(hooks: Hooks) -> Option<Self> {
        let any = hooks.on_login.is_some()
            || hooks.on_failed_login.is_some()
            || hooks.on_logout.is_some();
        any.then(|| Self {
            hooks,
            tasks: Arc::new(tokio::sync::Semaphore::new(MAX_HOOK_TASKS)),
        })
    }

    fn hook_future(&self, event: &AuthEvent) -> Option<(&'static str, BoxFuture<'static, ()>)> {
        match event.kind {
            AuthEventKind::LoginSucceeded => {
                let (hook, user) = (self.hooks.on_login.as_ref()?, event.user.clone()?);
                Some(("on_login", hook(user)))
            }
            AuthEventKind::LoginFailed => {
                let hook = self.hooks.on_failed_login.as_ref()?;
                let identifier = event.identifier.clone().unwrap_or_default();
                let err = event.error.clone()?;
                Some(("on_failed_login", hook((identifier, err))))
            }
            AuthEventKind::Logout | AuthEventKind::LogoutAll | AuthEventKind::ReuseDetected => {
                let (hook, user_id) = (self.hooks.on_logout.as_ref()?, event.user_id.clone()?);
                Some(("on_logout", hook(user_id)))
            }
            _ => None,
        }
    }
}

impl EventSink for HooksSink {
    fn handle(&self, event: Arc<AuthEvent>) -> BoxFuture<'static, ()> {
        if let Some((name, fut)) = self.hook_future(&event) {
            match self.tasks.clone().try_acquire_owned() {
                Ok(permit) => {
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
                Err(_) => tracing::warn!(
                    hook = name,
                    "sentri: too many hook tasks running; hook skipped"
                ),
            }
        }
        Box::pin(async {})
    }
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("on_login", &self.on_login.is_some())
            .field("on_failed_login", &self.on_failed_login.is_some())
            .field("on_logout", &self.on_logout.is_some())
            .finish()
    }
}

/// Optional overrides of the core services behind `auth.router()`.
///
/// The router still parses and validates input and formats output; only the service
/// call is replaced. An override receives the [`ServerAuth`] and may call the default
/// service on it (e.g. `auth.login(input, meta).await`) before or after its own logic.
/// Capabilities carry the overrides of their own routes (e.g.
/// [`Account::on_change_password`](crate::capability::account::Account::on_change_password)).
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct Overrides {
    pub(crate) register: Override<ServerAuth, RegisterInput, AuthUser>,
    pub(crate) login: Override<ServerAuth, (LoginInput, SessionMeta), AuthResult>,
    pub(crate) refresh: Override<ServerAuth, (String, SessionMeta), RefreshResult>,
    pub(crate) logout: Override<ServerAuth, Option<String>, ()>,
    pub(crate) logout_all: Override<ServerAuth, String, ()>,
}

impl Overrides {
    /// Overrides `POST /register`: `(auth, input)`.
    pub fn register<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(ServerAuth, RegisterInput) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<AuthUser>> + Send + 'static,
    {
        self.register = Override::new(f);
        self
    }

    /// Overrides `POST /login`: `(auth, input, meta)`.
    pub fn login<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(ServerAuth, LoginInput, SessionMeta) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<AuthResult>> + Send + 'static,
    {
        self.login = Override::new(move |a, (i, m)| f(a, i, m));
        self
    }

    /// Overrides the refresh of `POST /refresh` and of silent refresh: `(auth, token, meta)`.
    pub fn refresh<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(ServerAuth, String, SessionMeta) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<RefreshResult>> + Send + 'static,
    {
        self.refresh = Override::new(move |a, (t, m)| f(a, t, m));
        self
    }

    /// Overrides `POST /logout`: `(auth, refresh_token)`.
    pub fn logout<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(ServerAuth, Option<String>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.logout = Override::new(f);
        self
    }

    /// Overrides `POST /logout-all`: `(auth, user_id)`.
    pub fn logout_all<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(ServerAuth, String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.logout_all = Override::new(f);
        self
    }
}

impl fmt::Debug for Overrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Overrides")
            .field("register", &self.register)
            .field("login", &self.login)
            .field("refresh", &self.refresh)
            .field("logout", &self.logout)
            .field("logout_all", &self.logout_all)
            .finish()
    }
}

/// Server-mode configuration: sentri owns users and sessions in `database`.
///
/// ```no_run
/// # async fn demo() -> Result<(), sentri::SentriError> {
/// use sentri::{create_auth, ServerConfig, db::Database, token::SigningKey};
/// let db = Database::connect("sqlite::memory:").await?;
/// let key = SigningKey::hs256(b"a secret of at least thirty-two bytes!!")?;
/// let auth = create_auth(
///     ServerConfig::new(db, key, ["user", "admin"])
///         .access_expires_in("10m")
///         .bcrypt_cost(10),
/// )?;
/// auth.migrate().await?;
/// # Ok(()) }
/// ```
#[non_exhaustive]
#[derive(Clone)]
pub struct ServerConfig {
    /// Where users and sessions live.
    pub database: Database,
    /// Signing keys: the first signs, all verify (rotation: current + previous).
    pub keys: Vec<SigningKey>,
    /// Every role a user may have. Must not be empty.
    pub valid_roles: Vec<String>,
    /// Roles a public (no API key) registration may ask for, and whose first one a
    /// registration without roles gets. Default: the first valid role that is not
    /// `admin_role` (none when there is no such role). Listing `admin_role` here is
    /// allowed but logged as a warning at start-up.
    pub public_roles: Option<Vec<String>>,
    /// The role allowed to call `POST /users/{userId}/roles` (default `admin`).
    pub admin_role: String,
    /// Access-token lifetime (default 15 minutes, at most 1 day).
    pub access_expires_in: Ttl,
    /// Refresh-token lifetime: a session unused this long ends (default 7 days, at most
    /// 365 days). Each refresh slides it, up to `session_max_lifetime`.
    pub refresh_expires_in: Ttl,
    /// Absolute session lifetime from login, however often it slides (default 30 days,
    /// at most 365 days).
    pub session_max_lifetime: Ttl,
    /// bcrypt cost, 4..=31 (default 12).
    pub bcrypt_cost: u32,
    /// When set, new password hashes use Argon2id with these parameters instead of
    /// bcrypt (default `None`: bcrypt). Stored hashes of the other algorithm or of weaker
    /// parameters are re-hashed on the next successful login.
    #[cfg(feature = "argon2")]
    #[cfg_attr(docsrs, doc(cfg(feature = "argon2")))]
    pub argon2id: Option<crate::password::Argon2Params>,
    /// When set, signing keys live in the database (`sentri_signing_keys`), shared by
    /// every instance and rotated on a schedule; `keys` then only sign until
    /// [`ServerAuth::migrate`](crate::ServerAuth::migrate) (or `load_signing_keys`)
    /// has loaded them (default `None`: the configured `keys`).
    pub signing_key_store: Option<crate::keystore::KeyStoreConfig>,
    /// How many password hashes may wait for a core (default `None`: 64 per core). When
    /// the queue is full, login and registration answer 503 with `Retry-After` at once.
    pub hash_queue_limit: Option<usize>,
    /// When set, `POST /register` requires this value in `X-Api-Key`.
    pub api_key: Option<String>,
    /// Refresh-token cookie; `None` puts the refresh token in response bodies.
    pub cookie: Option<CookieConfig>,
    /// Access-token cookie; `None` sends the access token only in the body.
    pub access_cookie: Option<AccessCookieConfig>,
    /// Side-effect hooks.
    pub hooks: Hooks,
    /// Overrides of the core services behind the router.
    pub overrides: Overrides,
    /// The capabilities switched on (default: [`Account`]).
    pub capabilities: Vec<Arc<dyn Capability>>,
    /// Extra receivers of every security event (a [`TracingSink`](crate::core::events::TracingSink)
    /// is not added by default).
    pub event_sinks: Vec<Arc<dyn EventSink>>,
    /// Capacity of the event queue (default 4 096): when the sinks fall this far
    /// behind, further events are dropped and counted, never waited for.
    pub event_queue: usize,
    /// Extra revocation check run by `protect()` with the session id.
    pub is_token_revoked: Option<RevocationCheck>,
    /// `iss` put into and required on every token.
    pub issuer: Option<String>,
    /// `aud` put into and required on every token.
    pub audience: Option<String>,
    /// Clock leeway for `exp`/`nbf` (default 5 s, at most 60 s).
    pub leeway: Duration,
    /// Memory bound, in bytes, of the verified-access-token cache (default 16 MiB, 0:
    /// off): a token that verified skips its signature check when it comes again, until
    /// its `exp`. Only the exact token bytes hit; the session and revocation checks
    /// still run on every request.
    pub verified_token_cache_bytes: u64,
    /// How long an already-rotated refresh token still yields the successor token its
    /// rotation issued (several tabs refreshing at once, a retry after a lost response)
    /// before reuse counts as theft (default 10 s, at most 60 s; zero: never).
    pub refresh_grace: Duration,
    /// How long `protect()` trusts a live session without asking the store (default 5 s,
    /// at most 60 s): the bound on how long a session revoked on *another* process may
    /// still pass on this one when no Redis is configured.
    pub session_cache_ttl: Duration,
    /// How often ended sessions are purged from the store (default 1 hour, 1 minute to
    /// 1 day; `None`: never, call `ServerAuth::purge_expired_sessions` yourself).
    pub purge_interval: Option<Duration>,
    /// Origins (`scheme://host[:port]`) besides the request's own that may send
    /// cookie-authenticated unsafe requests (CSRF protection; default none).
    pub trusted_origins: Vec<String>,
    /// The clock of session expiry, grace and purge (default: the system clock).
    pub clock: Arc<dyn Clock>,
    /// How identifiers are compared (default case-insensitive).
    pub identifier_case: IdentifierCase,
    /// Redis URL: idempotency store and cross-process revocation broadcast.
    pub redis_url: Option<String>,
    /// Attempt limits of login, change-password and every capability that checks a
    /// secret (default `None`: off). See [`crate::throttle`].
    pub throttling: Option<Throttling>,
    /// Proxies whose `X-Forwarded-For` / `Forwarded` header names the client address
    /// (default none: the socket's peer address is the client).
    pub trusted_proxies: Option<TrustedProxies>,
    /// When `true`, sensitive account operations (change password; capabilities' own,
    /// e.g. removing a 2FA device) need a session signed in with a second factor
    /// (`TWO_FACTOR_REQUIRED`, 403, otherwise). Default `false`.
    pub sensitive_requires_2fa: bool,
    /// How recent an authentication sensitive operations need (change password or
    /// identifier, create an API key, link or unlink single sign-on, remove a second
    /// factor, regenerate backup codes, grant owner/admin in a workspace, delete a
    /// workspace, end other sessions): older than this, 403 `REAUTH_REQUIRED` until
    /// `POST /reauthenticate` (default 10 minutes; 1 minute to 1 day).
    pub reauth_window: Duration,
    /// When `true`, `auth.router()` serves its OpenAPI 3.1 document at `GET /openapi.json`
    /// (feature `openapi`; default `false`). See [`ServerAuth::openapi`](crate::ServerAuth::openapi).
    #[cfg(feature = "openapi")]
    pub serve_openapi: bool,
    /// The policy of every new password (register, change, reset, provisioning);
    /// default: 8 characters to 1024 bytes, no application check.
    pub password_policy: PasswordPolicy,
    /// Permission names the app uses (`require_permission` panics at start-up on any
    /// other; the admin routes refuse others with `INVALID_PERMISSION`). Every name in
    /// [`grants`](Self::grants) and `roles:manage` are declared too.
    pub permissions: Vec<String>,
    /// Permissions granted per role in code (`(role, permission)`), resolved together
    /// with those stored in the catalogue; the admin routes cannot remove them.
    pub grants: Vec<(String, String)>,
}

impl ServerConfig {
    /// A configuration with the three required values and every default.
    pub fn new<R, S>(database: Database, key: SigningKey, valid_roles: R) -> Self
    where
        R: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            database,
            keys: vec![key],
            valid_roles: valid_roles.into_iter().map(Into::into).collect(),
            public_roles: None,
            admin_role: "admin".into(),
            permissions: Vec::new(),
            grants: Vec::new(),
            access_expires_in: Ttl::Text("15m".into()),
            refresh_expires_in: Ttl::Text("7d".into()),
            session_max_lifetime: Ttl::Text("30d".into()),
            bcrypt_cost: 12,
            #[cfg(feature = "argon2")]
            argon2id: None,
            signing_key_store: None,
            hash_queue_limit: None,
            api_key: None,
            cookie: Some(CookieConfig::default()),
            access_cookie: Some(AccessCookieConfig::default()),
            hooks: Hooks::default(),
            overrides: Overrides::default(),
            capabilities: vec![Arc::new(Account::default())],
            event_sinks: Vec::new(),
            event_queue: crate::core::events::EVENT_QUEUE,
            is_token_revoked: None,
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(5),
            verified_token_cache_bytes: crate::token::DEFAULT_VERIFIED_CACHE_BYTES,
            refresh_grace: Duration::from_secs(10),
            session_cache_ttl: Duration::from_secs(5),
            purge_interval: Some(Duration::from_secs(3600)),
            trusted_origins: Vec::new(),
            clock: Arc::new(SystemClock),
            identifier_case: IdentifierCase::Insensitive,
            redis_url: None,
            throttling: None,
            trusted_proxies: None,
            sensitive_requires_2fa: false,
            reauth_window: crate::http::DEFAULT_REAUTH_WINDOW,
            #[cfg(feature = "openapi")]
            serve_openapi: false,
            password_policy: PasswordPolicy::default(),
        }
    }

    /// Sets the password policy of every new password (see [`PasswordPolicy`]).
    pub fn password_policy(mut self, policy: PasswordPolicy) -> Self {
        self.password_policy = policy;
        self
    }

    /// Adds a previous key that still verifies (key rotation). The first key signs.
    pub fn previous_key(mut self, key: SigningKey) -> Self {
        self.keys.push(key);
        self
    }

    /// Sets the access-token lifetime (`"15m"`, seconds, or a `Duration`).
    pub fn access_expires_in(mut self, ttl: impl Into<Ttl>) -> Self {
        self.access_expires_in = ttl.into();
        self
    }

    /// Sets the refresh-token lifetime.
    pub fn refresh_expires_in(mut self, ttl: impl Into<Ttl>) -> Self {
        self.refresh_expires_in = ttl.into();
        self
    }

    /// Sets the absolute session lifetime (`"30d"`, seconds, or a `Duration`).
    pub fn session_max_lifetime(mut self, ttl: impl Into<Ttl>) -> Self {
        self.session_max_lifetime = ttl.into();
        self
    }

    /// Sets how often ended sessions are purged (`None`: never).
    pub fn purge_interval(mut self, every: Option<Duration>) -> Self {
        self.purge_interval = every;
        self
    }

    /// Origins allowed to send cookie-authenticated unsafe requests besides the
    /// request's own (e.g. a front-end on another port or subdomain).
    pub fn trusted_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.trusted_origins = origins.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the clock (tests: [`ManualClock`](crate::core::clock::ManualClock)).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Sets how many password hashes may wait (see [`ServerConfig::hash_queue_limit`]).
    pub fn hash_queue_limit(mut self, waiting: usize) -> Self {
        self.hash_queue_limit = Some(waiting);
        self
    }

    /// Sets the bcrypt cost.
    pub fn bcrypt_cost(mut self, cost: u32) -> Self {
        self.bcrypt_cost = cost;
        self
    }

    /// New password hashes use Argon2id with `params` (e.g.
    /// `Argon2Params::default()`, OWASP's m=19 MiB, t=2, p=1); bcrypt hashes keep
    /// verifying and are re-hashed on the next successful login.
    #[cfg(feature = "argon2")]
    #[cfg_attr(docsrs, doc(cfg(feature = "argon2")))]
    pub fn argon2id(mut self, params: crate::password::Argon2Params) -> Self {
        self.argon2id = Some(params);
        self
    }

    /// Keeps the signing keys in the database, shared by every instance and rotated on
    /// a schedule (see [`crate::keystore`]).
    pub fn signing_key_store(mut self, store: crate::keystore::KeyStoreConfig) -> Self {
        self.signing_key_store = Some(store);
        self
    }

    /// The name sentri 2.1 gave [`bcrypt_cost`](Self::bcrypt_cost) (bcrypt has a cost,
    /// not rounds of salt); kept so ported configurations read the same.
    pub fn salt_rounds(self, cost: u32) -> Self {
        self.bcrypt_cost(cost)
    }

    /// Requires this API key on `POST /register`.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Roles a public registration may ask for.
    pub fn public_roles<R, S>(mut self, roles: R) -> Self
    where
        R: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.public_roles = Some(roles.into_iter().map(Into::into).collect());
        self
    }

    /// Sets (or with `None` turns off) the refresh-token cookie.
    pub fn cookie(mut self, cookie: Option<CookieConfig>) -> Self {
        self.cookie = cookie;
        self
    }

    /// Sets (or with `None` turns off) the access-token cookie.
    pub fn access_cookie(mut self, cookie: Option<AccessCookieConfig>) -> Self {
        self.access_cookie = cookie;
        self
    }

    /// Sets the hooks.
    pub fn hooks(mut self, hooks: Hooks) -> Self {
        self.hooks = hooks;
        self
    }

    /// Sets the overrides of the core services.
    pub fn overrides(mut self, overrides: Overrides) -> Self {
        self.overrides = overrides;
        self
    }

    /// Switches a capability on (replacing one of the same name).
    pub fn with(mut self, capability: impl Capability) -> Self {
        self.capabilities.retain(|c| c.name() != capability.name());
        self.capabilities.push(Arc::new(capability));
        self
    }

    /// Sets the capacity of the event queue.
    pub fn event_queue(mut self, capacity: usize) -> Self {
        self.event_queue = capacity;
        self
    }

    /// Adds a receiver of every security event.
    pub fn event_sink(mut self, sink: impl EventSink) -> Self {
        self.event_sinks.push(Arc::new(sink));
        self
    }

    /// Sets the `is_token_revoked(session_id)` check.
    pub fn is_token_revoked<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        self.is_token_revoked = Some(Arc::new(move |sid| Box::pin(f(sid))));
        self
    }

    /// Sets the issuer (`iss`), put into and required on every token.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Sets the audience (`aud`), put into and required on every token.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Sets the clock leeway for `exp`/`nbf` (at most 60 s).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Sets the memory bound of the verified-access-token cache (0 turns it off).
    pub fn verified_token_cache_bytes(mut self, bytes: u64) -> Self {
        self.verified_token_cache_bytes = bytes;
        self
    }

    /// Sets how identifiers are compared.
    pub fn identifier_case(mut self, case: IdentifierCase) -> Self {
        self.identifier_case = case;
        self
    }

    /// Sets the role allowed to call `POST /users/{userId}/roles`.
    pub fn admin_role(mut self, role: impl Into<String>) -> Self {
        self.admin_role = role.into();
        self
    }

    /// Grants `permissions` to `role` in code (the role must be one of `valid_roles` or
    /// the admin role; checked by `create_auth`). Declares the permission names.
    ///
    /// ```no_run
    /// # fn demo(config: sentri::ServerConfig) -> sentri::ServerConfig {
    /// config.grant("editor", ["posts:write", "posts:publish"])
    /// # }
    /// ```
    pub fn grant<P, S>(mut self, role: impl Into<String>, permissions: P) -> Self
    where
        P: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let role = role.into();
        for p in permissions {
            self.grants.push((role.clone(), p.into()));
        }
        self
    }

    /// Declares permission names without granting them in code (they are granted
    /// through the admin routes).
    pub fn permissions<P, S>(mut self, names: P) -> Self
    where
        P: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.permissions.extend(names.into_iter().map(Into::into));
        self
    }

    /// Sets the refresh-reuse grace window.
    pub fn refresh_grace(mut self, grace: Duration) -> Self {
        self.refresh_grace = grace;
        self
    }

    /// Sets the session-cache lifetime (the revocation bound without Redis).
    pub fn session_cache_ttl(mut self, ttl: Duration) -> Self {
        self.session_cache_ttl = ttl;
        self
    }

    /// Requires a second factor for sensitive operations (see
    /// [`ServerConfig::sensitive_requires_2fa`]).
    pub fn sensitive_requires_2fa(mut self, on: bool) -> Self {
        self.sensitive_requires_2fa = on;
        self
    }

    /// Sets how recent an authentication sensitive operations need (see
    /// [`ServerConfig::reauth_window`]).
    pub fn reauth_window(mut self, window: Duration) -> Self {
        self.reauth_window = window;
        self
    }

    /// Serves the OpenAPI document at `GET /openapi.json` under `auth.router()`
    /// ([`ServerConfig::serve_openapi`]).
    #[cfg(feature = "openapi")]
    #[cfg_attr(docsrs, doc(cfg(feature = "openapi")))]
    pub fn serve_openapi(mut self, on: bool) -> Self {
        self.serve_openapi = on;
        self
    }

    /// Sets the Redis URL.
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.redis_url = Some(url.into());
        self
    }

    /// Switches attempt throttling on with `policy` (shared through `redis_url` when one
    /// is configured and the `redis` feature is on).
    pub fn throttling(mut self, policy: Throttling) -> Self {
        self.throttling = Some(policy);
        self
    }

    /// Trusts these proxies' forwarding header for the client address.
    pub fn trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.trusted_proxies = Some(proxies);
        self
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ServerConfig");
        d.field("database", &self.database)
            .field("keys", &self.keys)
            .field("valid_roles", &self.valid_roles)
            .field("public_roles", &self.public_roles)
            .field("permissions", &self.permissions)
            .field("grants", &self.grants)
            .field("admin_role", &self.admin_role)
            .field("access_expires_in", &self.access_expires_in)
            .field("refresh_expires_in", &self.refresh_expires_in)
            .field("session_max_lifetime", &self.session_max_lifetime)
            .field("bcrypt_cost", &self.bcrypt_cost);
        #[cfg(feature = "argon2")]
        d.field("argon2id", &self.argon2id);
        d.field("signing_key_store", &self.signing_key_store)
            .field("hash_queue_limit", &self.hash_queue_limit)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("cookie", &self.cookie)
            .field("access_cookie", &self.access_cookie)
            .field("hooks", &self.hooks)
            .field("overrides", &self.overrides)
            .field(
                "capabilities",
                &self
                    .capabilities
                    .iter()
                    .map(|c| c.name())
                    .collect::<Vec<_>>(),
            )
            .field("event_sinks", &self.event_sinks.len())
            .field("event_queue", &self.event_queue)
            .field("is_token_revoked", &self.is_token_revoked.is_some())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .field(
                "verified_token_cache_bytes",
                &self.verified_token_cache_bytes,
            )
            .field("refresh_grace", &self.refresh_grace)
            .field("session_cache_ttl", &self.session_cache_ttl)
            .field("purge_interval", &self.purge_interval)
            .field("trusted_origins", &self.trusted_origins)
            .field("clock", &self.clock)
            .field("identifier_case", &self.identifier_case)
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("throttling", &self.throttling)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("sensitive_requires_2fa", &self.sensitive_requires_2fa)
            .field("reauth_window", &self.reauth_window)
            .field("password_policy", &self.password_policy)
            .finish()
    }
}
