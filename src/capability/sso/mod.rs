//! Single sign-on: users sign in with any OpenID Connect provider (Google, Okta, a
//! company IdP…) and link several providers to one account. Feature `sso`.
//!
//! Routes (under `auth.router()`):
//!
//! - `GET /sso/{provider}/start?returnTo=…`: redirects (303) to the provider with
//!   `state`, `nonce` and PKCE (S256); the flow is stored server-side and bound to the
//!   browser by a short-lived HttpOnly cookie.
//! - `GET /sso/{provider}/callback`: checks `state` (once, same browser, not expired),
//!   exchanges the code, verifies the ID token, finds or creates the user, opens a
//!   session through the login pipeline (login steps such as a second factor apply),
//!   sets the session cookies and redirects (303) to `returnTo`.
//! - `POST /sso/{provider}/link?returnTo=…` (signed in): starts the same flow bound to
//!   the current user; answers `{ "url": … }` to navigate to.
//! - `GET /sso/links` (signed in): the user's links.
//! - `DELETE /sso/links/{provider}` (signed in): unlinks, never the last way to sign in.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sentri::SentriError> {
//! use sentri::capability::sso::{Sso, SsoProvider};
//! use sentri::{ServerConfig, db::Database, token::SigningKey};
//! let db = Database::connect("sqlite::memory:").await?;
//! let key = SigningKey::hs256(b"a secret of at least thirty-two bytes!!")?;
//! let sso = Sso::new("https://app.example.com/auth")
//!     .provider(
//!         SsoProvider::new("google", "https://accounts.google.com", "client-id")
//!             .client_secret("client-secret")
//!             .link_verified_email(true),
//!     )
//!     .allow_return_to("https://app.example.com");
//! let config = ServerConfig::new(db, key, ["user", "admin"]).with(sso);
//! # Ok(()) }
//! ```

mod oidc;
mod routes;
mod service;
mod store;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;

pub use service::SsoLink;

use super::{Capability, Core, CredentialReset};
use crate::core::error::{ErrorCode, Result, SentriError};
use crate::db::Migration;

/// One OpenID Connect provider.
///
/// Defaults: scopes `openid email profile`; any e-mail domain; first sign-in creates an
/// account (`create_users = true`); a verified provider e-mail does **not** link to an
/// existing account (`link_verified_email = false`); `https` issuers only.
#[derive(Clone)]
#[non_exhaustive]
pub struct SsoProvider {
    /// The name in the routes (`/sso/{name}/start`): 1–32 of `a-z`, `0-9`, `-`, `_`.
    pub name: String,
    /// The issuer URL; discovery reads `{issuer}/.well-known/openid-configuration`, and
    /// ID tokens must carry exactly this `iss`.
    pub issuer: String,
    /// The client id registered at the provider (the ID token's `aud`).
    pub client_id: String,
    client_secret: Option<String>,
    /// Scopes requested (default `openid email profile`; `openid` is always sent).
    pub scopes: Vec<String>,
    /// When not empty, only identities with a verified e-mail in one of these domains
    /// may sign in or link (default: empty, any domain).
    pub allowed_domains: Vec<String>,
    /// Whether a first sign-in with an unknown identity creates an account (default
    /// `true`; the account's identifier is the verified e-mail, and it has no password).
    pub create_users: bool,
    /// Whether a verified provider e-mail (`email_verified: true`) links to the existing
    /// account with that identifier on first sign-in (default `false`). Only enable it
    /// for providers that own the e-mail domains they vouch for.
    pub link_verified_email: bool,
    /// Accept a plain `http` issuer and endpoints (default `false`). For tests and
    /// private networks only: anyone on the path can forge identities.
    pub allow_insecure_http: bool,
}

impl fmt::Debug for SsoProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SsoProvider")
            .field("name", &self.name)
            .field("issuer", &crate::core::crypto::redact_url(&self.issuer))
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("scopes", &self.scopes)
            .field("allowed_domains", &self.allowed_domains)
            .field("create_users", &self.create_users)
            .field("link_verified_email", &self.link_verified_email)
            .field("allow_insecure_http", &self.allow_insecure_http)
            .finish()
    }
}

impl SsoProvider {
    /// A provider with the defaults above.
    pub fn new(
        name: impl Into<String>,
        issuer: impl Into<String>,
        client_id: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            issuer: issuer.into(),
            client_id: client_id.into(),
            client_secret: None,
            scopes: vec!["openid".into(), "email".into(), "profile".into()],
            allowed_domains: Vec::new(),
            create_users: true,
            link_verified_email: false,
            allow_insecure_http: false,
        }
    }

    /// Sets the client secret (confidential clients; public clients rely on PKCE alone).
    /// Never shown by `Debug`, logs or events.
    pub fn client_secret(mut self, secret: impl Into<String>) -> Self {
        self.client_secret = Some(secret.into());
        self
    }

    /// Sets the scopes (`openid` is added when missing).
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Restricts sign-in to verified e-mails of these domains.
    pub fn allowed_domains<I, S>(mut self, domains: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed_domains = domains
            .into_iter()
            .map(|d| d.into().trim().to_ascii_lowercase())
            .collect();
        self
    }

    /// Sets whether a first sign-in creates an account.
    pub fn create_users(mut self, create: bool) -> Self {
        self.create_users = create;
        self
    }

    /// Sets whether a verified provider e-mail links to an existing account (only to
    /// one whose own address is verified and equal to it; otherwise the sign-in is 409
    /// `SSO_LINK_CONFLICT`).
    pub fn link_verified_email(mut self, link: bool) -> Self {
        self.link_verified_email = link;
        self
    }

    /// Accepts a plain `http` issuer (tests, private networks).
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self
    }
}

/// The single sign-on capability: its providers and the flow settings.
///
/// Defaults: `returnTo` may be any path on this server and the origins added with
/// [`allow_return_to`](Self::allow_return_to) (none by default); a flow lasts 10
/// minutes; the browser-binding cookie is `sentri_sso`, `Secure`; provider requests time
/// out after 5 s.
#[derive(Clone)]
#[non_exhaustive]
pub struct Sso {
    /// The public URL `auth.router()` is served at (e.g. `https://app.example.com/auth`);
    /// the redirect URI registered at each provider is `{base}/sso/{provider}/callback`.
    pub base_url: String,
    /// The providers.
    pub providers: Vec<SsoProvider>,
    /// Origins (`scheme://host[:port]`) an absolute `returnTo` may point to.
    pub return_to_origins: Vec<String>,
    /// Where to go when the request names no `returnTo` (default `/`).
    pub default_return_to: String,
    /// How long a started flow may take (default 10 minutes).
    pub flow_ttl: Duration,
    /// The browser-binding cookie's name (default `sentri_sso`).
    pub cookie_name: String,
    /// Whether the browser-binding cookie is `Secure` (default `true`).
    pub cookie_secure: bool,
    /// Timeout of each request to a provider (default 5 s).
    pub http_timeout: Duration,
}

impl fmt::Debug for Sso {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sso")
            .field("base_url", &self.base_url)
            .field("providers", &self.providers)
            .field("return_to_origins", &self.return_to_origins)
            .field("default_return_to", &self.default_return_to)
            .field("flow_ttl", &self.flow_ttl)
            .field("cookie_name", &self.cookie_name)
            .field("cookie_secure", &self.cookie_secure)
            .field("http_timeout", &self.http_timeout)
            .finish()
    }
}

impl Sso {
    /// Single sign-on for `auth.router()` served at `base_url`, with no provider yet.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            providers: Vec::new(),
            return_to_origins: Vec::new(),
            default_return_to: "/".into(),
            flow_ttl: Duration::from_secs(10 * 60),
            cookie_name: "sentri_sso".into(),
            cookie_secure: true,
            http_timeout: Duration::from_secs(5),
        }
    }

    /// Adds a provider.
    pub fn provider(mut self, provider: SsoProvider) -> Self {
        self.providers.push(provider);
        self
    }

    /// Allows absolute `returnTo` URLs on this origin (`scheme://host[:port]`).
    pub fn allow_return_to(mut self, origin: impl Into<String>) -> Self {
        self.return_to_origins
            .push(origin.into().trim_end_matches('/').to_owned());
        self
    }

    /// Sets where to go when the request names no `returnTo`.
    pub fn default_return_to(mut self, target: impl Into<String>) -> Self {
        self.default_return_to = target.into();
        self
    }

    /// Sets how long a started flow may take.
    pub fn flow_ttl(mut self, ttl: Duration) -> Self {
        self.flow_ttl = ttl;
        self
    }

    /// Sets whether the browser-binding cookie is `Secure` (only `false` for plain-http
    /// development).
    pub fn cookie_secure(mut self, secure: bool) -> Self {
        self.cookie_secure = secure;
        self
    }

    /// Sets the timeout of each request to a provider.
    pub fn http_timeout(mut self, timeout: Duration) -> Self {
        self.http_timeout = timeout;
        self
    }

    /// Checks the configuration (`CONFIGURATION_ERROR`).
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(SentriError::configuration(m));
        let base = reqwest::Url::parse(&self.base_url);
        if !base.is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host()) {
            return bad("sso: base_url must be an absolute http(s) URL".into());
        }
        let mut names = std::collections::HashSet::new();
        for p in &self.providers {
            let valid = !p.name.is_empty()
                && p.name.len() <= 32
                && p.name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !valid {
                return bad(format!("sso: invalid provider name {:?}", p.name));
            }
            if !names.insert(p.name.as_str()) {
                return bad(format!("sso: provider {} is configured twice", p.name));
            }
            if p.client_id.is_empty() {
                return bad(format!("sso: provider {}: client_id is empty", p.name));
            }
            oidc::check_url(&p.issuer, p.allow_insecure_http).map_err(|m| {
                SentriError::configuration(format!("sso: provider {}: issuer {m}", p.name))
            })?;
        }
        if self.flow_ttl.is_zero() || self.flow_ttl > Duration::from_secs(3600) {
            return bad("sso: flow_ttl must be between 1 s and 1 hour".into());
        }
        if self.http_timeout.is_zero() {
            return bad("sso: http_timeout must be positive".into());
        }
        let origins = service::normalized_origins(&self.return_to_origins)
            .map_err(|m| SentriError::configuration(format!("sso: return_to origin {m}")))?;
        service::check_return_to(&self.default_return_to, &origins).map_err(|_| {
            SentriError::configuration("sso: default_return_to must be a path or an allowed origin")
        })?;
        crate::token::remote::http_client(self.http_timeout)?;
        Ok(())
    }
}

const ERROR_CODES: &[(&str, StatusCode)] = &[
    ("SSO_STATE_INVALID", StatusCode::BAD_REQUEST),
    ("SSO_PROVIDER_ERROR", StatusCode::BAD_GATEWAY),
    ("SSO_REJECTED", StatusCode::UNAUTHORIZED),
    ("SSO_ID_TOKEN_INVALID", StatusCode::UNAUTHORIZED),
    ("SSO_NOT_ALLOWED", StatusCode::FORBIDDEN),
    ("SSO_LINK_CONFLICT", StatusCode::CONFLICT),
    ("SSO_LAST_SIGN_IN_METHOD", StatusCode::CONFLICT),
    ("NOT_FOUND", StatusCode::NOT_FOUND),
    ("VALIDATION_ERROR", StatusCode::BAD_REQUEST),
];

impl Capability for Sso {
    fn name(&self) -> &'static str {
        "sso"
    }

    fn migrations(&self) -> &'static [Migration] {
        store::MIGRATIONS
    }

    fn error_codes(&self) -> &'static [(&'static str, StatusCode)] {
        ERROR_CODES
    }

    fn check(&self) -> Result<()> {
        self.validate()
    }

    fn routes(&self, core: &Core) -> Router {
        routes::router(Arc::new(service::SsoService::new(self, core.clone())), core)
    }

    #[cfg(feature = "openapi")]
    fn openapi(&self, doc: &crate::http::openapi::ApiDoc) -> utoipa::openapi::OpenApi {
        routes::openapi(doc)
    }

    /// Deletes the user's in-flight link flows: a link started by a session that just
    /// ended (an intruder's, say) cannot complete and attach its external identity.
    fn end_credentials<'a>(
        &'a self,
        core: &'a Core,
        user_id: &'a str,
        _reset: CredentialReset,
    ) -> crate::core::BoxFuture<'a, Result<()>> {
        Box::pin(async move { core.identity.db.sso_end_link_flows(user_id).await })
    }
}

/// `true` for the error codes of this capability (for the failure event).
fn is_sso_code(code: &ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::SsoStateInvalid
            | ErrorCode::SsoProviderError
            | ErrorCode::SsoRejected
            | ErrorCode::SsoIdTokenInvalid
            | ErrorCode::SsoNotAllowed
            | ErrorCode::SsoLinkConflict
    )
}
