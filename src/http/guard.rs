//! `protect()`, `authorize(roles)` and `permit(check)`: one tower layer, three rules.
//!
//! The layer authenticates the request (unless an outer sentri layer already did),
//! puts [`CurrentUser`] and [`AuthUser`] into the request extensions, then applies its
//! rule. `authorize` and `permit` authenticate by themselves, so using one without
//! `protect` can never let an anonymous request through: layer order can only deny.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{FromRequestParts, OptionalFromRequestParts, Request};
use axum::http::HeaderValue;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::tenant::{Admission, TenantRule};
use super::with_cookies;
use crate::core::BoxFuture;
use crate::core::error::{Result, SentriError};
use crate::core::principal::{Assurance, AuthUser, Permissions};
use crate::token::AccessClaims;

/// The authenticated caller, available to handlers behind `protect()`.
///
/// As an extractor on a route without a sentri layer it rejects with 401 UNAUTHORIZED
/// (never a panic or a 500). `Option<CurrentUser>` never rejects.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    /// The user as carried by the access token (or refreshed from the store).
    pub user: AuthUser,
    /// The session id (`sid` claim); empty when the caller authenticated with a
    /// [`credential`](Self::credential) instead of a session.
    pub session_id: String,
    /// How the caller authenticated when it was not a session's access token (e.g. an
    /// API key): its kind, id and scopes. `None` for a session.
    pub credential: Option<Arc<CredentialInfo>>,
    /// The workspace the access token is bound to (`wid` claim); `None` for a personal
    /// token or a credential. Only a tenant guard proves membership: see
    /// [`CurrentWorkspace`](super::tenant::CurrentWorkspace).
    pub workspace_id: Option<String>,
}

/// A non-session credential a request was authenticated with (see
/// [`CurrentUser::credential`]). Never carries secret material.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CredentialInfo {
    /// The credential kind, e.g. `"api_key"`.
    pub kind: &'static str,
    /// The credential's id (for an API key: its id, never the secret).
    pub id: String,
    /// The scopes it grants; `require_scopes` checks them.
    pub scopes: Vec<String>,
}

impl CredentialInfo {
    /// A credential description of `kind` with this id and these scopes.
    pub fn new(kind: &'static str, id: impl Into<String>, scopes: Vec<String>) -> Self {
        Self {
            kind,
            id: id.into(),
            scopes,
        }
    }

    /// `true` when it grants every one of `required`.
    pub fn has_scopes(&self, required: &[String]) -> bool {
        required.iter().all(|r| self.scopes.contains(r))
    }
}

/// The credential kinds a guard admits besides sessions (a login's access token, by
/// bearer or cookie, which every guard admits).
///
/// A guard built by `protect()`, `authorize(..)`, `require_permission(..)`,
/// `require_2fa()`, `permit(..)` or `tenant()` admits sessions only; `require_scopes(..)`
/// admits every scoped credential kind; [`GuardLayer::admit`] and
/// [`GuardLayer::admit_credentials`] widen any guard. A request that presents a kind the
/// guard does not admit is refused with 403 `CREDENTIAL_NOT_ADMITTED` before the
/// credential is looked up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admits(AdmitKinds);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum AdmitKinds {
    /// Sessions only.
    #[default]
    Sessions,
    /// Sessions and every credential kind.
    Any,
    /// Sessions and these credential kinds.
    Only(Arc<[&'static str]>),
}

impl Admits {
    /// Sessions only (the default of every guard).
    pub fn sessions_only() -> Self {
        Self(AdmitKinds::Sessions)
    }

    /// Sessions and every credential kind a capability adds.
    pub fn any_credential() -> Self {
        Self(AdmitKinds::Any)
    }

    /// These, and credentials of `kind` too.
    pub fn and(self, kind: &'static str) -> Self {
        match self.0 {
            AdmitKinds::Any => self,
            AdmitKinds::Sessions => Self(AdmitKinds::Only(Arc::from([kind]))),
            AdmitKinds::Only(kinds) if kinds.contains(&kind) => Self(AdmitKinds::Only(kinds)),
            AdmitKinds::Only(kinds) => {
                let mut all = kinds.to_vec();
                all.push(kind);
                Self(AdmitKinds::Only(all.into()))
            }
        }
    }

    /// `true` when a credential of `kind` (not a session) is admitted.
    pub fn admits_kind(&self, kind: &str) -> bool {
        match &self.0 {
            AdmitKinds::Sessions => false,
            AdmitKinds::Any => true,
            AdmitKinds::Only(kinds) => kinds.contains(&kind),
        }
    }

    /// `true` when `user` authenticated with an admitted kind (a session always is).
    pub fn admits(&self, user: &CurrentUser) -> bool {
        user.credential
            .as_ref()
            .is_none_or(|c| self.admits_kind(c.kind))
    }
}

/// 403 `CREDENTIAL_NOT_ADMITTED`: the route does not admit the presented credential
/// kind.
pub fn not_admitted() -> SentriError {
    SentriError::new(
        crate::core::error::ErrorCode::CredentialNotAdmitted,
        "This route does not accept this kind of credential",
    )
}

impl From<AccessClaims> for CurrentUser {
    fn from(claims: AccessClaims) -> Self {
        CurrentUser {
            user: AuthUser {
                id: claims.sub,
                identifier: claims.identifier,
                roles: claims.roles,
            },
            session_id: claims.sid,
            credential: None,
            workspace_id: claims.wid,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CurrentUser {
    type Rejection = SentriError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self> {
        parts
            .extensions
            .get::<CurrentUser>()
            .cloned()
            .ok_or_else(|| SentriError::unauthorized("Authentication required"))
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for CurrentUser {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> std::result::Result<Option<Self>, Infallible> {
        Ok(parts.extensions.get::<CurrentUser>().cloned())
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Assurance {
    type Rejection = Infallible;

    /// How the caller of a guarded route authenticated (`None`: no sentri layer ran, or
    /// the token carries no `aal` claim, e.g. one issued before assurance was recorded).
    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> std::result::Result<Option<Self>, Infallible> {
        Ok(parts.extensions.get::<Assurance>().cloned())
    }
}

/// The outcome of authenticating one request.
pub struct Authenticated {
    /// Who the caller is.
    pub user: CurrentUser,
    /// How the caller authenticated, when the credential says (the access token's `amr`
    /// and `aal` claims). Put into the request extensions as [`Assurance`].
    pub assurance: Option<Assurance>,
    /// `Set-Cookie` values to add to the response (silent refresh).
    pub set_cookies: Vec<HeaderValue>,
}

/// Something that can authenticate a request: `ServerAuth` (tokens + live sessions)
/// and `ClientAuth` (tokens from a remote JWKS) both implement it, so routes written
/// for one compile against the other.
pub trait Authenticate: Send + Sync + 'static {
    /// Authenticates from the request head, for a guard that admits `admits`: a
    /// presented credential of a kind it does not admit is refused with
    /// [`not_admitted`] before any lookup.
    fn authenticate<'a>(
        &'a self,
        parts: &'a Parts,
        admits: &'a Admits,
    ) -> BoxFuture<'a, Result<Authenticated>>;

    /// Decides whether a sensitive operation may run for a caller of this `assurance`
    /// (see [`GuardLayer::sensitive`]): the authentication must be recent (`auth_time`
    /// within the re-authentication window, else 403 `REAUTH_REQUIRED`). The default,
    /// for verifiers that know no configuration (client mode), uses
    /// [`DEFAULT_REAUTH_WINDOW`] and the system clock.
    fn check_sensitive(&self, assurance: Option<&Assurance>) -> Result<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        check_fresh(assurance, now, DEFAULT_REAUTH_WINDOW)
    }

    /// The roles a user can have, when known: guard layers check the roles they are
    /// built with against them and panic at start-up on one that can never match (a typo
    /// must not silently deny everyone).
    fn valid_roles(&self) -> Option<&[String]>;

    /// The permissions `user` holds through their roles. The default holds none: in
    /// client mode a permission guard denies (tokens carry roles, not permissions).
    fn permissions<'a>(&'a self, user: &'a CurrentUser) -> BoxFuture<'a, Result<Permissions>> {
        let _ = user;
        Box::pin(async { Ok(Permissions::default()) })
    }

    /// The permissions of `user` when they are at hand without waiting (a warm cache);
    /// `None`: ask [`permissions`](Self::permissions).
    fn cached_permissions(&self, user: &CurrentUser) -> Option<Permissions> {
        let _ = user;
        None
    }

    /// Every declared permission name, when known: permission guards panic at start-up
    /// on any other.
    fn known_permissions(&self) -> Option<Vec<String>> {
        None
    }
}

/// The default re-authentication window: a sensitive operation needs an
/// authentication at most this old.
pub const DEFAULT_REAUTH_WINDOW: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// The freshness rule of sensitive operations, in one place: `assurance` says the
/// caller authenticated (`auth_time`) at most `window` before `now` (unix seconds), else
/// 403 `REAUTH_REQUIRED`. A caller without an `auth_time` (an API key, a session from
/// before it was recorded) is never fresh.
pub fn check_fresh(
    assurance: Option<&Assurance>,
    now: i64,
    window: std::time::Duration,
) -> Result<()> {
    let window = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
    let fresh = assurance
        .and_then(|a| a.auth_time)
        .is_some_and(|t| t <= now.saturating_add(5) && now.saturating_sub(t) <= window);
    if fresh {
        Ok(())
    } else {
        Err(SentriError::new(
            crate::core::error::ErrorCode::ReauthRequired,
            "This operation requires a recent authentication",
        ))
    }
}

/// Panics with a clear message on a permission `auth` does not declare.
fn check_permission_names(auth: &dyn Authenticate, permissions: &[String]) {
    assert!(
        !permissions.is_empty(),
        "sentri: a permission guard needs at least one permission"
    );
    let Some(known) = auth.known_permissions() else {
        return;
    };
    for permission in permissions {
        assert!(
            known.contains(permission),
            "sentri: permission {permission:?} is not declared (ServerConfig::grant or ::permissions); declared: {known:?}"
        );
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Permissions {
    type Rejection = SentriError;

    /// The permissions a `require_permission` layer resolved. 401 without a sentri
    /// layer; 500 on a route guarded only by `protect()` (an app bug: add a
    /// permission layer).
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self> {
        if let Some(p) = parts.extensions.get::<Permissions>() {
            return Ok(p.clone());
        }
        if parts.extensions.get::<CurrentUser>().is_none() {
            return Err(SentriError::unauthorized("Authentication required"));
        }
        tracing::error!(
            "sentri: the Permissions extractor needs a require_permission layer on its route"
        );
        Err(SentriError::new(
            crate::core::error::ErrorCode::InternalError,
            "Internal error",
        ))
    }
}

/// Panics with a clear message on a role that is not one of `auth`'s valid roles.
fn check_role_names(auth: &dyn Authenticate, roles: &[String]) {
    let Some(valid) = auth.valid_roles() else {
        return;
    };
    for role in roles {
        assert!(
            valid.contains(role),
            "sentri: role {role:?} is not one of valid_roles {valid:?}"
        );
    }
}

/// The guard methods of `ServerAuth` and `ClientAuth`, written once: `protect`,
/// `authorize`, `permit` and `error_handler` as inherent methods (no trait to import).
/// `Self` must be `Authenticate + Clone`.
macro_rules! guard_methods {
    () => {
        /// A layer that requires a valid access token (of a live session, in server mode).
        ///
        /// ```no_run
        /// # fn demo(auth: sentri::ServerAuth) {
        /// use axum::{Router, routing::get};
        /// use sentri::CurrentUser;
        /// let app: Router = Router::new()
        ///     .route("/me", get(|u: CurrentUser| async move { u.user.identifier }))
        ///     .route_layer(auth.protect());
        /// # }
        /// ```
        pub fn protect(&self) -> $crate::http::GuardLayer {
            $crate::http::GuardLayer::protect(::std::sync::Arc::new(self.clone()))
        }

        /// A layer that requires at least one of `roles` (and authenticates by itself when
        /// no `protect()` ran before it). Panics at start-up on a role not in
        /// `valid_roles`.
        pub fn authorize<R, S>(&self, roles: R) -> $crate::http::GuardLayer
        where
            R: IntoIterator<Item = S>,
            S: Into<String>,
        {
            $crate::http::GuardLayer::authorize(::std::sync::Arc::new(self.clone()), roles)
        }

        /// A layer that requires `permission`, held through one of the caller's roles
        /// (server mode: granted in code or stored in the role catalogue, resolved
        /// through a bounded cache; client mode: denied). Authenticates by itself when
        /// no `protect()` ran before it; handlers may extract
        /// [`Permissions`](crate::core::principal::Permissions). Panics at start-up on
        /// a permission that is not declared.
        pub fn require_permission(
            &self,
            permission: impl Into<String>,
        ) -> $crate::http::GuardLayer {
            $crate::http::GuardLayer::require_permissions(
                ::std::sync::Arc::new(self.clone()),
                [permission.into()],
                false,
            )
        }

        /// Like [`require_permission`](Self::require_permission): at least one of
        /// `permissions`.
        pub fn require_any_permission<R, S>(&self, permissions: R) -> $crate::http::GuardLayer
        where
            R: IntoIterator<Item = S>,
            S: Into<String>,
        {
            $crate::http::GuardLayer::require_permissions(
                ::std::sync::Arc::new(self.clone()),
                permissions,
                false,
            )
        }

        /// Like [`require_permission`](Self::require_permission): every one of
        /// `permissions`.
        pub fn require_all_permissions<R, S>(&self, permissions: R) -> $crate::http::GuardLayer
        where
            R: IntoIterator<Item = S>,
            S: Into<String>,
        {
            $crate::http::GuardLayer::require_permissions(
                ::std::sync::Arc::new(self.clone()),
                permissions,
                true,
            )
        }

        /// A layer that requires a session signed in with a second factor (assurance
        /// level 2, see [`Assurance`](crate::core::principal::Assurance)): 403
        /// `TWO_FACTOR_REQUIRED` otherwise. Authenticates by itself when no `protect()`
        /// ran before it.
        pub fn require_2fa(&self) -> $crate::http::GuardLayer {
            $crate::http::GuardLayer::require_2fa(::std::sync::Arc::new(self.clone()))
        }

        /// A layer for sensitive operations: a session whose authentication is recent
        /// (its `auth_time` within the re-authentication window, server mode:
        /// `ServerConfig::reauth_window`, default 10 minutes; with
        /// `sensitive_requires_2fa`, also a second factor). 403 `REAUTH_REQUIRED`
        /// otherwise: the client re-authenticates (`POST /reauthenticate`) and retries.
        /// Authenticates by itself when no `protect()` ran before it.
        pub fn require_recent_auth(&self) -> $crate::http::GuardLayer {
            $crate::http::GuardLayer::sensitive(::std::sync::Arc::new(self.clone()))
        }

        /// A layer that runs an async permission check; `options.roles` bypass it.
        pub fn permit(&self, options: $crate::http::PermitOptions) -> $crate::http::GuardLayer {
            $crate::http::GuardLayer::permit(::std::sync::Arc::new(self.clone()), options)
        }

        /// A layer that requires every one of `scopes` from a caller authenticated by a
        /// scoped credential (an API key): 403 `INSUFFICIENT_SCOPE` when one is missing.
        /// Sessions are not scoped: a signed-in user passes. This guard admits every
        /// credential kind (it is how an app opts a route in to API keys); every other
        /// guard admits sessions only unless widened with
        /// [`GuardLayer::admit`](crate::http::GuardLayer::admit). Authenticates by
        /// itself when no `protect()` ran before it.
        pub fn require_scopes<R, S>(&self, scopes: R) -> $crate::http::GuardLayer
        where
            R: IntoIterator<Item = S>,
            S: Into<String>,
        {
            $crate::http::GuardLayer::require_scopes(::std::sync::Arc::new(self.clone()), scopes)
        }

        /// A layer that renders every error response of the app in sentri's envelope
        /// (axum's plain-text rejections, 404/405, panics), with an optional callback for
        /// unhandled 500s.
        pub fn error_layer(&self) -> $crate::http::ErrorLayer {
            $crate::http::ErrorLayer::new()
        }

        /// The name sentri 2.1 gave [`error_layer`](Self::error_layer) (it returns a
        /// layer, not a handler); kept so ported apps read the same.
        pub fn error_handler(&self) -> $crate::http::ErrorLayer {
            self.error_layer()
        }
    };
}
pub(crate) use guard_methods;

/// An async permission check over the request head and the user.
pub type PermitCheck =
    Arc<dyn Fn(&Parts, &AuthUser) -> BoxFuture<'static, bool> + Send + Sync + 'static>;

/// Options of `permit`: listed `roles` bypass the `check`.
#[derive(Clone)]
pub struct PermitOptions {
    /// Roles that pass without running the check (e.g. `admin`).
    pub roles: Vec<String>,
    /// The check; `false` → 403 FORBIDDEN.
    pub check: PermitCheck,
}

impl PermitOptions {
    /// Builds options from a check closure and bypass roles.
    ///
    /// The closure gets the request head and the user and returns a future of `bool`;
    /// copy what it needs out of the head before the `async` block.
    pub fn new<F, Fut, R, S>(roles: R, check: F) -> Self
    where
        F: Fn(&Parts, &AuthUser) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
        R: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            roles: roles.into_iter().map(Into::into).collect(),
            check: Arc::new(move |p, u| Box::pin(check(p, u))),
        }
    }
}

impl fmt::Debug for PermitOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PermitOptions")
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
enum Rule {
    Authenticated,
    AnyRole(Arc<[String]>),
    // In an `Arc`: the layer is cloned for every request.
    Permit(Arc<PermitOptions>),
    Scopes(Arc<[String]>),
    SecondFactor,
    Permissions(Arc<PermissionRule>),
    Tenant(Arc<TenantRule>),
    Sensitive,
}

/// The rule of a permission guard.
struct PermissionRule {
    permissions: Vec<String>,
    /// `true`: every one; `false`: at least one.
    all: bool,
    /// Roles that pass without the permission (sentri's own admin routes).
    roles: Vec<String>,
}

impl PermissionRule {
    fn allows(&self, user: &AuthUser, held: Option<&Permissions>) -> bool {
        user.has_any_role(&self.roles)
            || held.is_some_and(|p| {
                if self.all {
                    p.has_all(&self.permissions)
                } else {
                    p.has_any(&self.permissions)
                }
            })
    }
}

/// The layer returned by `protect()`, `authorize(..)` and `permit(..)`.
#[derive(Clone)]
pub struct GuardLayer {
    auth: Arc<dyn Authenticate>,
    rule: Rule,
    admits: Admits,
}

impl fmt::Debug for GuardLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rule = match &self.rule {
            Rule::Authenticated => "protect".to_owned(),
            Rule::AnyRole(r) => format!("authorize({r:?})"),
            Rule::Permit(p) => format!("permit({:?})", p.roles),
            Rule::Scopes(s) => format!("require_scopes({s:?})"),
            Rule::SecondFactor => "require_2fa".to_owned(),
            Rule::Permissions(p) => format!("require_permissions({:?})", p.permissions),
            Rule::Tenant(t) => format!("tenant({:?})", t.roles),
            Rule::Sensitive => "require_recent_auth".to_owned(),
        };
        f.debug_struct("GuardLayer")
            .field("rule", &rule)
            .field("admits", &self.admits)
            .finish()
    }
}

impl GuardLayer {
    fn with_rule(auth: Arc<dyn Authenticate>, rule: Rule) -> Self {
        Self {
            auth,
            rule,
            admits: Admits::sessions_only(),
        }
    }

    /// This guard also admits credentials of `kind` (e.g. `"api_key"`), which it would
    /// otherwise refuse with 403 `CREDENTIAL_NOT_ADMITTED`.
    pub fn admit(mut self, kind: &'static str) -> Self {
        self.admits = self.admits.and(kind);
        self
    }

    /// This guard also admits every credential kind a capability adds (API keys, …).
    pub fn admit_credentials(mut self) -> Self {
        self.admits = Admits::any_credential();
        self
    }

    /// The credential kinds this guard admits.
    pub fn admits(&self) -> &Admits {
        &self.admits
    }

    /// Requires a session whose authentication is recent (see
    /// [`Authenticate::check_sensitive`]).
    pub fn sensitive(auth: Arc<dyn Authenticate>) -> Self {
        Self::with_rule(auth, Rule::Sensitive)
    }

    /// Requires an authenticated caller.
    pub fn protect(auth: Arc<dyn Authenticate>) -> Self {
        Self::with_rule(auth, Rule::Authenticated)
    }

    /// Requires at least one of `roles`. Panics at build time on an unknown role name.
    pub fn authorize<R, S>(auth: Arc<dyn Authenticate>, roles: R) -> Self
    where
        R: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let roles: Vec<String> = roles.into_iter().map(Into::into).collect();
        assert!(
            !roles.is_empty(),
            "sentri: authorize() needs at least one role"
        );
        check_role_names(auth.as_ref(), &roles);
        Self::with_rule(auth, Rule::AnyRole(roles.into()))
    }

    /// Like `authorize`, without the build-time role-name check (for sentri's own
    /// admin route, whose role may legitimately be absent from `valid_roles`).
    #[cfg(feature = "server")]
    pub(crate) fn any_role_unchecked(auth: Arc<dyn Authenticate>, roles: Vec<String>) -> Self {
        Self::with_rule(auth, Rule::AnyRole(roles.into()))
    }

    /// Requires a session of assurance level 2 (a second factor).
    pub fn require_2fa(auth: Arc<dyn Authenticate>) -> Self {
        Self::with_rule(auth, Rule::SecondFactor)
    }

    /// Runs a permission check; listed roles bypass it.
    pub fn permit(auth: Arc<dyn Authenticate>, options: PermitOptions) -> Self {
        check_role_names(auth.as_ref(), &options.roles);
        Self::with_rule(auth, Rule::Permit(Arc::new(options)))
    }
}

impl GuardLayer {
    /// Requires one (`all == false`) or every one of `permissions`. Panics at build
    /// time when `permissions` is empty or names an undeclared permission.
    pub fn require_permissions<R, S>(auth: Arc<dyn Authenticate>, permissions: R, all: bool) -> Self
    where
        R: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let permissions: Vec<String> = permissions.into_iter().map(Into::into).collect();
        check_permission_names(auth.as_ref(), &permissions);
        let rule = PermissionRule {
            permissions,
            all,
            roles: Vec::new(),
        };
        Self::with_rule(auth, Rule::Permissions(Arc::new(rule)))
    }

    /// One of `roles`, or else `permission` (sentri's own admin routes), without the
    /// build-time name checks.
    #[cfg(feature = "server")]
    pub(crate) fn role_or_permission(
        auth: Arc<dyn Authenticate>,
        roles: Vec<String>,
        permission: &str,
    ) -> Self {
        let rule = PermissionRule {
            permissions: vec![permission.to_owned()],
            all: false,
            roles,
        };
        Self::with_rule(auth, Rule::Permissions(Arc::new(rule)))
    }

    /// Requires every one of `scopes` from a scoped credential (sessions pass). Panics
    /// at build time when `scopes` is empty.
    pub fn require_scopes<R, S>(auth: Arc<dyn Authenticate>, scopes: R) -> Self
    where
        R: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let scopes: Vec<String> = scopes.into_iter().map(Into::into).collect();
        assert!(
            !scopes.is_empty(),
            "sentri: require_scopes() needs at least one scope"
        );
        Self::with_rule(auth, Rule::Scopes(scopes.into())).admit_credentials()
    }
}

impl GuardLayer {
    /// Requires the request's workspace header to name the workspace its token is bound
    /// to, the caller to be an active member, and (when `roles` is not empty) to hold
    /// one of `roles` within it. Panics at build time on a role no member can hold.
    pub fn tenant<R, S>(
        auth: Arc<dyn Authenticate>,
        members: Arc<dyn super::Membership>,
        roles: R,
    ) -> Self
    where
        R: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let roles = roles.into_iter().map(Into::into).collect();
        Self::with_rule(
            auth,
            Rule::Tenant(Arc::new(TenantRule::new(members, roles))),
        )
    }
}

/// 403 `INSUFFICIENT_SCOPE`: the credential lacks a scope the route requires.
fn insufficient_scope() -> SentriError {
    SentriError::new(
        crate::core::error::ErrorCode::InsufficientScope,
        "The credential lacks a required scope",
    )
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;
    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`GuardLayer`].
#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    layer: GuardLayer,
}

impl<S> fmt::Debug for Guard<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.layer.fmt(f)
    }
}

impl<S> Service<Request> for Guard<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, std::result::Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let mut set_cookies = Vec::new();
            if parts.extensions.get::<CurrentUser>().is_none() {
                match layer.auth.authenticate(&parts, &layer.admits).await {
                    Ok(done) => {
                        set_cookies = done.set_cookies;
                        // One copy for `Extension<AuthUser>` users; the rule below reads
                        // the `CurrentUser` in place (no per-request clone for it).
                        parts.extensions.insert(done.user.user.clone());
                        parts.extensions.insert(done.user);
                        if let Some(assurance) = done.assurance {
                            parts.extensions.insert(assurance);
                        }
                    }
                    Err(err) => return Ok(err.into_response()),
                }
            }
            // Every guard decides admission, even when an outer one authenticated.
            if let Some(current) = parts.extensions.get::<CurrentUser>()
                && !layer.admits.admits(current)
            {
                return Ok(with_cookies(not_admitted().into_response(), set_cookies));
            }
            if let Rule::Sensitive = &layer.rule
                && let Err(err) = layer
                    .auth
                    .check_sensitive(parts.extensions.get::<Assurance>())
            {
                return Ok(with_cookies(err.into_response(), set_cookies));
            }
            if let Rule::Permissions(_) = &layer.rule
                && let Some(current) = parts.extensions.get::<CurrentUser>()
            {
                let held = match layer.auth.cached_permissions(current) {
                    Some(held) => Ok(held),
                    None => layer.auth.permissions(current).await,
                };
                match held {
                    Ok(held) => {
                        parts.extensions.insert(held);
                    }
                    Err(err) => return Ok(err.into_response()),
                }
            }
            let admitted = match (&layer.rule, parts.extensions.get::<CurrentUser>()) {
                (Rule::Tenant(rule), Some(current)) => Some(match rule.admit(&parts, current) {
                    Ok(Admission::Ready(workspace)) => Ok(workspace),
                    Ok(Admission::Pending(read)) => read.await,
                    Err(err) => Err(err),
                }),
                _ => None,
            };
            match admitted {
                Some(Ok(workspace)) => {
                    parts.extensions.insert(workspace);
                }
                Some(Err(err)) => return Ok(with_cookies(err.into_response(), set_cookies)),
                None => {}
            }
            let allowed = match (&layer.rule, parts.extensions.get::<CurrentUser>()) {
                (Rule::Authenticated | Rule::Tenant(_) | Rule::Sensitive, Some(_)) => true,
                (Rule::AnyRole(roles), Some(current)) => current.user.has_any_role(roles),
                (Rule::Permit(opts), Some(current)) => {
                    current.user.has_any_role(&opts.roles)
                        || (opts.check)(&parts, &current.user).await
                }
                // Sessions are not scoped; a scoped credential needs every scope.
                (Rule::Scopes(scopes), Some(current)) => current
                    .credential
                    .as_ref()
                    .is_none_or(|c| c.has_scopes(scopes)),
                (Rule::SecondFactor, Some(_)) => parts
                    .extensions
                    .get::<Assurance>()
                    .is_some_and(Assurance::has_second_factor),
                (Rule::Permissions(rule), Some(current)) => {
                    rule.allows(&current.user, parts.extensions.get::<Permissions>())
                }
                // Inserted just above when missing: unreachable, but never let it through.
                (_, None) => false,
            };
            let res = if allowed {
                inner.call(Request::from_parts(parts, body)).await?
            } else if matches!(layer.rule, Rule::Scopes(_)) {
                insufficient_scope().into_response()
            } else if matches!(layer.rule, Rule::SecondFactor) {
                SentriError::new(
                    crate::core::error::ErrorCode::TwoFactorRequired,
                    "This route requires signing in with a second factor",
                )
                .into_response()
            } else {
                SentriError::forbidden("Insufficient permissions").into_response()
            };
            Ok(with_cookies(res, set_cookies))
        })
    }
}
