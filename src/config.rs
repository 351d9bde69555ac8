//! Configuration: [`ServerConfig`], cookie settings, hooks, handler overrides and
//! durations written as `"15m"`.
//!
//! Configuration is checked once, by [`create_auth`](crate::create_auth): an invalid
//! value is a `CONFIGURATION_ERROR` at start-up, never at request time.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{AuthResult, RefreshResult, RegisterInput, ServerAuth};
use crate::clock::{Clock, SystemClock};
use crate::error::{Result, SentriError};
use crate::store::Database;
use crate::token::SigningKey;
use crate::user::AuthUser;

/// A boxed, sendable future (what hooks and overrides return).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Parses a duration written as `"30s"`, `"15m"`, `"1h"`, `"7d"`, or plain seconds (`"900"`).
///
/// ```
/// use std::time::Duration;
/// assert_eq!(sentri::config::parse_duration("15m").unwrap(), Duration::from_secs(900));
/// assert_eq!(sentri::config::parse_duration("7d").unwrap(), Duration::from_secs(604_800));
/// assert_eq!(sentri::config::parse_duration("45").unwrap(), Duration::from_secs(45));
/// assert!(sentri::config::parse_duration("0s").is_err());
/// assert!(sentri::config::parse_duration("-5m").is_err());
/// assert!(sentri::config::parse_duration("soon").is_err());
/// ```
pub fn parse_duration(input: &str) -> Result<Duration> {
    let s = input.trim();
    let bad = || {
        SentriError::configuration(
            "invalid duration: use a positive number of seconds or a value like \"30s\", \"15m\", \"1h\", \"7d\"",
        )
    };
    if s.is_empty() || s.len() > 20 {
        return Err(bad());
    }
    let (digits, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        'w' => 604_800,
        _ => return Err(bad()),
    };
    let secs = n.checked_mul(mult).ok_or_else(bad)?;
    // Ten years is plenty for any token; larger values overflow timestamp arithmetic.
    if secs == 0 || secs > 10 * 365 * 86_400 {
        return Err(bad());
    }
    Ok(Duration::from_secs(secs))
}

/// A time-to-live as configured: a string like `"15m"`, seconds, or a [`Duration`].
/// Checked by `create_auth`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ttl {
    /// `"30s"`, `"15m"`, `"1h"`, `"7d"` or `"900"`.
    Text(String),
    /// Seconds (must be positive).
    Seconds(i64),
    /// An exact duration (must be non-zero).
    Exact(Duration),
}

impl Ttl {
    /// Resolves to a positive [`Duration`], or `CONFIGURATION_ERROR`.
    pub fn resolve(&self) -> Result<Duration> {
        match self {
            Ttl::Text(s) => parse_duration(s),
            Ttl::Seconds(n) if *n > 0 => parse_duration(&n.to_string()),
            Ttl::Seconds(_) => Err(SentriError::configuration("TTL must be positive")),
            Ttl::Exact(d) if !d.is_zero() => Ok(*d),
            Ttl::Exact(_) => Err(SentriError::configuration("TTL must be positive")),
        }
    }
}

impl From<&str> for Ttl {
    fn from(s: &str) -> Self {
        Ttl::Text(s.to_owned())
    }
}
impl From<String> for Ttl {
    fn from(s: String) -> Self {
        Ttl::Text(s)
    }
}
impl From<i64> for Ttl {
    fn from(n: i64) -> Self {
        Ttl::Seconds(n)
    }
}
impl From<Duration> for Ttl {
    fn from(d: Duration) -> Self {
        Ttl::Exact(d)
    }
}

/// The cookie `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// `SameSite=Strict` (the default).
    Strict,
    /// `SameSite=Lax`.
    Lax,
    /// `SameSite=None`: requires `secure`.
    None,
}

/// The refresh-token cookie (`httpOnly` by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieConfig {
    /// Cookie name (default `refresh_token`).
    pub name: String,
    /// `HttpOnly` (default `true`).
    pub http_only: bool,
    /// `Secure` (default `true`). Browsers accept `Secure` cookies from
    /// `http://localhost` and `http://127.0.0.1` (loopback is a secure context), so the
    /// default works in local development too.
    pub secure: bool,
    /// `SameSite` (default `Strict`).
    pub same_site: SameSite,
    /// `Path` (default `/`).
    pub path: String,
    /// `Domain` (default none: host-only).
    pub domain: Option<String>,
}

impl Default for CookieConfig {
    fn default() -> Self {
        Self {
            name: "refresh_token".into(),
            http_only: true,
            secure: true,
            same_site: SameSite::Strict,
            path: "/".into(),
            domain: None,
        }
    }
}

/// The `__Host-` name prefix: browsers accept such a cookie only when it is `Secure`,
/// has `Path=/` and no `Domain`, so no sibling subdomain can set or shadow it.
pub const HOST_PREFIX: &str = "__Host-";

impl CookieConfig {
    /// The recommended production form: `__Host-` + the name, `Secure`, `Path=/`, no
    /// `Domain` (see [`HOST_PREFIX`]).
    ///
    /// ```
    /// let c = sentri::CookieConfig::default().host_prefixed();
    /// assert_eq!(c.name, "__Host-refresh_token");
    /// assert!(c.secure && c.path == "/" && c.domain.is_none());
    /// ```
    pub fn host_prefixed(mut self) -> Self {
        if !self.name.starts_with(HOST_PREFIX) {
            self.name = format!("{HOST_PREFIX}{}", self.name);
        }
        self.secure = true;
        self.path = "/".into();
        self.domain = None;
        self
    }
}

impl AccessCookieConfig {
    /// `__Host-` + the name, `Secure`, `Path=/`, no `Domain` (see
    /// [`CookieConfig::host_prefixed`]).
    pub fn host_prefixed(mut self) -> Self {
        if !self.name.starts_with(HOST_PREFIX) {
            self.name = format!("{HOST_PREFIX}{}", self.name);
        }
        self.secure = true;
        self.path = "/".into();
        self.domain = None;
        self
    }
}

/// The access-token cookie (readable by scripts, `Max-Age` = access TTL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessCookieConfig {
    /// Cookie name (default `access_token`).
    pub name: String,
    /// `Secure` (default `true`, see [`CookieConfig::secure`]).
    pub secure: bool,
    /// `SameSite` (default `Strict`).
    pub same_site: SameSite,
    /// `Path` (default `/`).
    pub path: String,
    /// `Domain` (default none).
    pub domain: Option<String>,
}

impl Default for AccessCookieConfig {
    fn default() -> Self {
        Self {
            name: "access_token".into(),
            secure: true,
            same_site: SameSite::Strict,
            path: "/".into(),
            domain: None,
        }
    }
}

/// How identifiers are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdentifierCase {
    /// NFKC_Casefold (default): `Bob@Example.com` and `bob@example.com` are one user
    /// (see [`crate::identifier`]).
    #[default]
    Insensitive,
    /// Kept as typed (after trim + NFKC).
    Sensitive,
}

type HookFn<A> = Arc<dyn Fn(A) -> BoxFuture<'static, ()> + Send + Sync>;

/// Side-effect hooks. They run on their own task: a hook that fails, panics or sleeps
/// never fails or delays the request that fired it.
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

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("on_login", &self.on_login.is_some())
            .field("on_failed_login", &self.on_failed_login.is_some())
            .field("on_logout", &self.on_logout.is_some())
            .finish()
    }
}

macro_rules! handler_type {
    ($(#[$doc:meta])* $name:ident, ($($arg:ty),*), $out:ty) => {
        $(#[$doc])*
        pub type $name = Arc<dyn Fn(ServerAuth, $($arg),*) -> BoxFuture<'static, Result<$out>> + Send + Sync>;
    };
}

handler_type!(
    /// Override for registration.
    RegisterHandler, (RegisterInput), AuthUser);
handler_type!(
    /// Override for login: `(auth, identifier, password, meta)`.
    LoginHandler, (crate::auth::LoginInput, crate::auth::SessionMeta), AuthResult);
handler_type!(
    /// Override for refresh: `(auth, refresh_token, meta)`.
    RefreshHandler, (String, crate::auth::SessionMeta), RefreshResult);
handler_type!(
    /// Override for logout: `(auth, refresh_token)`.
    LogoutHandler, (Option<String>), ());
handler_type!(
    /// Override for logout-all: `(auth, user_id)`.
    LogoutAllHandler, (String), ());
handler_type!(
    /// Override for role assignment: `(auth, user_id, roles)`.
    AssignRolesHandler, (String, Vec<String>), AuthUser);
handler_type!(
    /// Override for identifier change: `(auth, user_id, new_identifier, current_password)`.
    ChangeIdentifierHandler, (String, String, String), AuthUser);
handler_type!(
    /// Override for password change: `(auth, user_id, current, new)`.
    ChangePasswordHandler, (String, String, String), ());

/// Optional overrides of the services behind `auth.router()`.
///
/// The router still parses and validates input and formats output; only the service
/// call is replaced. An override receives the [`ServerAuth`] and may call the default
/// service on it (e.g. `auth.login(input, meta).await`) before or after its own logic.
#[derive(Clone, Default)]
pub struct Handlers {
    /// `POST /register`.
    pub register: Option<RegisterHandler>,
    /// `POST /login`.
    pub login: Option<LoginHandler>,
    /// `POST /refresh`.
    pub refresh: Option<RefreshHandler>,
    /// `POST /logout`.
    pub logout: Option<LogoutHandler>,
    /// `POST /logout-all`.
    pub logout_all: Option<LogoutAllHandler>,
    /// `POST /users/{userId}/roles`.
    pub assign_roles: Option<AssignRolesHandler>,
    /// `POST /change-identifier`.
    pub change_identifier: Option<ChangeIdentifierHandler>,
    /// `POST /change-password`.
    pub change_password: Option<ChangePasswordHandler>,
}

macro_rules! handler_setter {
    ($(#[$doc:meta])* $name:ident, ($($arg:ident: $ty:ty),*), $out:ty) => {
        $(#[$doc])*
        pub fn $name<F, Fut>(mut self, f: F) -> Self
        where
            F: Fn(ServerAuth, $($ty),*) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = Result<$out>> + Send + 'static,
        {
            self.$name = Some(Arc::new(move |auth, $($arg),*| Box::pin(f(auth, $($arg),*))));
            self
        }
    };
}

impl Handlers {
    handler_setter!(
        /// Overrides registration.
        register, (input: RegisterInput), AuthUser);
    handler_setter!(
        /// Overrides login.
        login, (input: crate::auth::LoginInput, meta: crate::auth::SessionMeta), AuthResult);
    handler_setter!(
        /// Overrides refresh.
        refresh, (token: String, meta: crate::auth::SessionMeta), RefreshResult);
    handler_setter!(
        /// Overrides logout.
        logout, (token: Option<String>), ());
    handler_setter!(
        /// Overrides logout-all.
        logout_all, (user_id: String), ());
    handler_setter!(
        /// Overrides role assignment.
        assign_roles, (user_id: String, roles: Vec<String>), AuthUser);
    handler_setter!(
        /// Overrides identifier change.
        change_identifier, (user_id: String, identifier: String, current_password: String), AuthUser);
    handler_setter!(
        /// Overrides password change.
        change_password, (user_id: String, current: String, new: String), ());
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handlers")
            .field("register", &self.register.is_some())
            .field("login", &self.login.is_some())
            .field("refresh", &self.refresh.is_some())
            .field("logout", &self.logout.is_some())
            .field("logout_all", &self.logout_all.is_some())
            .field("assign_roles", &self.assign_roles.is_some())
            .field("change_identifier", &self.change_identifier.is_some())
            .field("change_password", &self.change_password.is_some())
            .finish()
    }
}

/// The `is_token_revoked(session_id)` hook: `true` refuses the request.
pub type RevocationCheck = Arc<dyn Fn(String) -> BoxFuture<'static, bool> + Send + Sync>;

/// Server-mode configuration: sentri owns users and sessions in `database`.
///
/// ```no_run
/// # async fn demo() -> Result<(), sentri::SentriError> {
/// use sentri::{create_auth, ServerConfig, store::Database, token::SigningKey};
/// let db = Database::connect("sqlite::memory:").await?;
/// let key = SigningKey::hs256(b"a secret of at least thirty-two bytes!!")?;
/// let auth = create_auth(
///     ServerConfig::new(db, key, ["user", "admin"])
///         .access_expires_in("10m")
///         .salt_rounds(10),
/// )?;
/// auth.migrate().await?;
/// # Ok(()) }
/// ```
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
    pub salt_rounds: u32,
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
    /// Service overrides for the router.
    pub handlers: Handlers,
    /// Extra revocation check run by `protect()` with the session id.
    pub is_token_revoked: Option<RevocationCheck>,
    /// `iss` put into and required on every token.
    pub issuer: Option<String>,
    /// `aud` put into and required on every token.
    pub audience: Option<String>,
    /// Clock leeway for `exp`/`nbf` (default 5 s, at most 60 s).
    pub leeway: Duration,
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
            access_expires_in: Ttl::Text("15m".into()),
            refresh_expires_in: Ttl::Text("7d".into()),
            session_max_lifetime: Ttl::Text("30d".into()),
            salt_rounds: 12,
            hash_queue_limit: None,
            api_key: None,
            cookie: Some(CookieConfig::default()),
            access_cookie: Some(AccessCookieConfig::default()),
            hooks: Hooks::default(),
            handlers: Handlers::default(),
            is_token_revoked: None,
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(5),
            refresh_grace: Duration::from_secs(10),
            session_cache_ttl: Duration::from_secs(5),
            purge_interval: Some(Duration::from_secs(3600)),
            trusted_origins: Vec::new(),
            clock: Arc::new(SystemClock),
            identifier_case: IdentifierCase::Insensitive,
            redis_url: None,
        }
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

    /// Sets the clock (tests: [`ManualClock`](crate::clock::ManualClock)).
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
    pub fn salt_rounds(mut self, cost: u32) -> Self {
        self.salt_rounds = cost;
        self
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

    /// Sets the service overrides.
    pub fn handlers(mut self, handlers: Handlers) -> Self {
        self.handlers = handlers;
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

    /// Sets the Redis URL.
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.redis_url = Some(url.into());
        self
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("database", &self.database)
            .field("keys", &self.keys)
            .field("valid_roles", &self.valid_roles)
            .field("public_roles", &self.public_roles)
            .field("admin_role", &self.admin_role)
            .field("access_expires_in", &self.access_expires_in)
            .field("refresh_expires_in", &self.refresh_expires_in)
            .field("session_max_lifetime", &self.session_max_lifetime)
            .field("salt_rounds", &self.salt_rounds)
            .field("hash_queue_limit", &self.hash_queue_limit)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("cookie", &self.cookie)
            .field("access_cookie", &self.access_cookie)
            .field("hooks", &self.hooks)
            .field("handlers", &self.handlers)
            .field("is_token_revoked", &self.is_token_revoked.is_some())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .field("refresh_grace", &self.refresh_grace)
            .field("session_cache_ttl", &self.session_cache_ttl)
            .field("purge_interval", &self.purge_interval)
            .field("trusted_origins", &self.trusted_origins)
            .field("clock", &self.clock)
            .field("identifier_case", &self.identifier_case)
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .finish()
    }
}

/// Replaces the userinfo of a URL (`redis://:secret@host`) with `<redacted>`.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://<redacted>@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_reject() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("1.5h").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(Ttl::Seconds(0).resolve().is_err());
        assert!(Ttl::Seconds(-1).resolve().is_err());
        assert!(Ttl::Exact(Duration::ZERO).resolve().is_err());
    }

    #[test]
    fn redacts_userinfo() {
        assert_eq!(
            redact_url("redis://:pw@h:6379/0"),
            "redis://<redacted>@h:6379/0"
        );
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
    }
}
