//! The SSO service: starting a flow, completing it (state, code, ID token, the user),
//! links.

use std::collections::HashMap;

use axum::http::HeaderValue;
use serde::Serialize;

use super::oidc::{IdClaims, Provider, sanitize_code};
use super::store::{Flow, Unlink};
use super::{Sso, SsoProvider};
use crate::capability::{Challenge, Core, FirstFactor, SignIn};
use crate::core::crypto::{random_token, secrets_equal, sha256_hex};
use crate::core::error::{ErrorCode, Result, SentriError};
use crate::core::events::{AuthEvent, AuthEventKind};
use crate::core::principal::{AuthResult, AuthUser, SessionMeta};
use crate::identity::{NewUser, unusable_password_hash};

/// One link of the signed-in user (`GET /sso/links`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct SsoLink {
    /// The provider's name.
    pub provider: String,
    /// The e-mail the provider reported when the link was made, if any.
    pub email: Option<String>,
    /// When the link was made, unix epoch milliseconds.
    pub created_at: i64,
}

/// A started flow: where to send the browser, and the cookie that binds it.
pub(super) struct Started {
    pub(super) url: String,
    pub(super) cookie: HeaderValue,
}

/// How a callback ended.
pub(super) enum Completed {
    SignedIn {
        res: AuthResult,
        return_to: String,
    },
    /// A login step (a second factor) must be met first: no session yet.
    Challenged(Challenge),
    Linked {
        return_to: String,
    },
}

/// The parameters of a callback.
#[derive(Default)]
pub(super) struct Callback {
    pub(super) state: Option<String>,
    pub(super) code: Option<String>,
    pub(super) error: Option<String>,
}

pub(super) fn state_invalid() -> SentriError {
    SentriError::new(
        ErrorCode::SsoStateInvalid,
        "The sign-in attempt is unknown, expired, already used or was started in another browser",
    )
}

fn not_allowed(msg: &'static str) -> SentriError {
    SentriError::new(ErrorCode::SsoNotAllowed, msg)
}

fn link_conflict(msg: &'static str) -> SentriError {
    SentriError::new(ErrorCode::SsoLinkConflict, msg)
}

fn not_found() -> SentriError {
    SentriError::new(ErrorCode::NotFound, "Unknown identity provider")
}

/// The origin (`scheme://host[:port]`) of an http(s) URL.
fn origin_of(url: &str) -> Option<String> {
    let u = reqwest::Url::parse(url).ok()?;
    matches!(u.scheme(), "http" | "https").then(|| u.origin().ascii_serialization())
}

/// A `returnTo` is a path on this server (`/…`, never `//…` or with a backslash) or an
/// absolute http(s) URL on one of `origins`; anything else is a `VALIDATION_ERROR`.
pub(super) fn check_return_to(target: &str, origins: &[String]) -> Result<String> {
    let bad = || SentriError::validation("returnTo is not an allowed redirect target");
    if target.is_empty()
        || target.len() > 2048
        || target
            .chars()
            .any(|c| c.is_control() || c == '\\' || c.is_whitespace())
    {
        return Err(bad());
    }
    if let Some(rest) = target.strip_prefix('/') {
        return if rest.starts_with('/') {
            Err(bad())
        } else {
            Ok(target.to_owned())
        };
    }
    match origin_of(target) {
        Some(origin) if origins.contains(&origin) => Ok(target.to_owned()),
        _ => Err(bad()),
    }
}

/// The normalised origins of the configuration (invalid entries fail `Sso::check`).
pub(super) fn normalized_origins(list: &[String]) -> std::result::Result<Vec<String>, String> {
    list.iter()
        .map(|o| {
            let origin = origin_of(o).ok_or_else(|| format!("{o:?} is not an http(s) origin"))?;
            if origin != o.trim_end_matches('/') {
                return Err(format!("{o:?} must be an origin (scheme://host[:port])"));
            }
            Ok(origin)
        })
        .collect()
}

/// The single sign-on service. One per `auth.router()`.
pub(super) struct SsoService {
    core: Core,
    providers: HashMap<String, Provider>,
    base_url: String,
    origins: Vec<String>,
    default_return_to: String,
    flow_ttl_ms: i64,
    cookie_name: String,
    cookie_secure: bool,
}

impl SsoService {
    pub(super) fn new(cfg: &Sso, core: Core) -> Self {
        // `Sso::check` built the same client when the auth was created.
        let http = crate::token::remote::http_client(cfg.http_timeout).ok();
        let providers = cfg
            .providers
            .iter()
            .map(|p: &SsoProvider| (p.name.clone(), Provider::new(p.clone(), http.clone())))
            .collect();
        Self {
            core,
            providers,
            base_url: cfg.base_url.clone(),
            origins: normalized_origins(&cfg.return_to_origins).unwrap_or_default(),
            default_return_to: cfg.default_return_to.clone(),
            flow_ttl_ms: i64::try_from(cfg.flow_ttl.as_millis()).unwrap_or(i64::MAX),
            cookie_name: cfg.cookie_name.clone(),
            cookie_secure: cfg.cookie_secure,
        }
    }

    pub(super) fn core(&self) -> &Core {
        &self.core
    }

    fn provider(&self, name: &str) -> Result<&Provider> {
        self.providers.get(name).ok_or_else(not_found)
    }

    fn redirect_uri(&self, provider: &str) -> String {
        format!("{}/sso/{provider}/callback", self.base_url)
    }

    /// The browser-binding cookie with `value` (empty and expired: cleared).
    pub(super) fn binding_cookie(&self, value: &str) -> HeaderValue {
        let max_age = if value.is_empty() {
            0
        } else {
            self.flow_ttl_ms / 1000
        };
        let c = cookie::Cookie::build((self.cookie_name.as_str(), value))
            .http_only(true)
            .secure(self.cookie_secure)
            .same_site(cookie::SameSite::Lax)
            .path("/")
            .max_age(cookie::time::Duration::seconds(max_age))
            .build();
        HeaderValue::from_str(&c.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    pub(super) fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    /// Starts a flow: a stored row (state and browser secret hashed), the provider URL
    /// and the cookie that binds the flow to this browser.
    pub(super) async fn start(
        &self,
        provider: &str,
        return_to: Option<&str>,
        link_user: Option<&str>,
    ) -> Result<Started> {
        let p = self.provider(provider)?;
        let return_to = match return_to {
            Some(t) if !t.is_empty() => check_return_to(t, &self.origins)?,
            _ => self.default_return_to.clone(),
        };
        let (state, nonce, binding) = (random_token(32), random_token(32), random_token(32));
        let url = p
            .authorization_url(&self.redirect_uri(provider), &state, &nonce, &binding)
            .await?;
        let now = self.core.now_ms();
        let db = &self.core.identity.db;
        if let Err(err) = db.sso_purge_flows(now).await {
            tracing::debug!(error = %err, "sentri: could not purge expired sso flows");
        }
        let flow = Flow {
            id: sha256_hex(&state),
            provider: provider.to_owned(),
            binding_hash: sha256_hex(&binding),
            nonce,
            return_to,
            link_user_id: link_user.map(str::to_owned),
            expires_at: now.saturating_add(self.flow_ttl_ms),
        };
        db.sso_insert_flow(&flow, now).await?;
        Ok(Started {
            url,
            cookie: self.binding_cookie(&binding),
        })
    }

    /// Takes the flow of a callback: known, of this provider, from this browser, used
    /// once, not expired. Anything else is `SSO_STATE_INVALID`.
    async fn take_flow(
        &self,
        provider: &str,
        state: Option<&str>,
        binding: Option<&str>,
    ) -> Result<Flow> {
        let (Some(state), Some(binding)) = (state, binding) else {
            return Err(state_invalid());
        };
        if state.len() > 128 || binding.len() > 128 {
            return Err(state_invalid());
        }
        let db = &self.core.identity.db;
        let flow = db
            .sso_find_flow(&sha256_hex(state))
            .await?
            .ok_or_else(state_invalid)?;
        let same_browser =
            secrets_equal(sha256_hex(binding).as_bytes(), flow.binding_hash.as_bytes());
        if flow.provider != provider || !same_browser {
            return Err(state_invalid());
        }
        if !db.sso_consume_flow(&flow.id).await? || flow.expires_at <= self.core.now_ms() {
            return Err(state_invalid());
        }
        Ok(flow)
    }

    /// Completes a flow (see the module docs for the order of the checks).
    pub(super) async fn callback(
        &self,
        provider: &str,
        cb: Callback,
        binding: Option<&str>,
        meta: SessionMeta,
    ) -> Result<Completed> {
        let p = self.provider(provider)?;
        let flow = self
            .take_flow(provider, cb.state.as_deref(), binding)
            .await?;
        // A fixed message: the callback's `error` is in the query string, which anyone
        // can forge a link with; it is logged (sanitised), never echoed.
        if let Some(err) = cb.error.as_deref() {
            tracing::info!(
                target: "sentri::sso",
                provider,
                error = %sanitize_code(err),
                "sentri: the identity provider refused the sign-in"
            );
            return Err(SentriError::new(
                ErrorCode::SsoRejected,
                "The identity provider refused the sign-in",
            ));
        }
        let code = cb
            .code
            .filter(|c| !c.is_empty() && c.len() <= 2048)
            .ok_or_else(|| SentriError::validation("code is missing"))?;
        let binding = binding.unwrap_or_default();
        let claims = p
            .exchange(&code, &self.redirect_uri(provider), binding, &flow.nonce)
            .await?;
        check_domain(&p.config, &claims)?;
        match flow.link_user_id {
            Some(user_id) => {
                self.link(&p.config, &claims, &user_id).await?;
                Ok(Completed::Linked {
                    return_to: flow.return_to,
                })
            }
            None => {
                let user = self.resolve_user(&p.config, &claims).await?;
                match self.open_session(user, meta).await? {
                    SignIn::Session(res) => Ok(Completed::SignedIn {
                        res,
                        return_to: flow.return_to,
                    }),
                    SignIn::Challenge(challenge) => Ok(Completed::Challenged(challenge)),
                }
            }
        }
    }

    /// The one call site of the login pipeline: login steps (e.g. a second factor), a
    /// new session, `login_succeeded`; then `sso_signed_in`. A challenged login (a user
    /// with a second factor) opens no session and emits nothing yet.
    async fn open_session(&self, user: AuthUser, meta: SessionMeta) -> Result<SignIn> {
        let outcome = self
            .core
            .sign_in(user, meta.clone(), FirstFactor::External)
            .await?;
        let SignIn::Session(res) = &outcome else {
            return Ok(outcome);
        };
        let event = AuthEvent::new(AuthEventKind::SsoSignedIn, self.core.now_ms())
            .user(&res.user.id)
            .session(&res.session_id)
            .meta(meta);
        self.core.emit(event);
        Ok(outcome)
    }

    fn emit(&self, kind: AuthEventKind, user_id: &str) {
        self.core
            .emit(AuthEvent::new(kind, self.core.now_ms()).user(user_id));
    }

    /// Emits `sso_failed` for an error of a flow.
    pub(super) fn failed(&self, err: &SentriError, meta: SessionMeta) {
        let mut event = AuthEvent::new(AuthEventKind::SsoFailed, self.core.now_ms()).meta(meta);
        event.error = Some(err.clone());
        self.core.emit(event);
    }

    /// By link; else by verified e-mail (when the provider may link, and only to an
    /// account whose own address is verified); else a new account (when the provider
    /// may create one, with its verified e-mail as identifier, verified).
    ///
    /// Signing in by link with the provider's verified e-mail equal to the account's
    /// unverified address is the first proof of that address
    /// ([`Core::address_proven`](crate::capability::Core)): what was set up before it
    /// ends, and the session opened next is the only one.
    async fn resolve_user(&self, p: &SsoProvider, claims: &IdClaims) -> Result<AuthUser> {
        let identity = &self.core.identity;
        let db = &identity.db;
        // The provider's verified e-mail, compared as addresses are (IDNA domain).
        let email = claims
            .verified_email()
            .map(|e| identity.normalize(e))
            .transpose()?;
        if let Some(user_id) = db.sso_find_link(&p.name, &claims.sub).await? {
            if let Some(email) = &email {
                self.core.address_proven(&user_id, email).await?;
            }
            return identity.get_user(&user_id).await;
        }
        let now = self.core.now_ms();
        if p.link_verified_email
            && let Some(email) = email.as_deref()
            && let Some(user) = db.find_user_by_identifier(email).await?
        {
            // Only a verified address is trusted: an account registered with this
            // address but never proven may be someone else's (pre-hijacking).
            if self.core.verified_address(&user.id).await?.as_deref() != Some(email) {
                return Err(link_conflict(
                    "An account with this e-mail already exists: sign in to it, then link this provider",
                ));
            }
            return match db
                .sso_insert_link(&user.id, &p.name, &claims.sub, claims.email.as_deref(), now)
                .await
            {
                Ok(()) => {
                    self.emit(AuthEventKind::SsoLinked, &user.id);
                    Ok(user.to_auth_user())
                }
                Err(e) if e.is(&ErrorCode::SsoLinkConflict) => {
                    self.linked_meanwhile(p, claims).await
                }
                Err(e) => Err(e),
            };
        }
        if !p.create_users {
            return Err(not_allowed("No account is linked to this identity"));
        }
        let Some(identifier) = email else {
            return Err(not_allowed(
                "The identity provider did not vouch for an e-mail address: no account can be created",
            ));
        };
        let email = claims.verified_email();
        let roles = identity.default_roles();
        let hash = unusable_password_hash();
        let new = NewUser {
            identifier: &identifier,
            password_hash: &hash,
            roles: &roles,
        };
        match db
            .sso_create_linked_user(&new, &p.name, &claims.sub, email, now)
            .await
        {
            Ok(user) => {
                self.emit(AuthEventKind::SsoAccountCreated, &user.id);
                Ok(user.to_auth_user())
            }
            Err(e) if e.is(&ErrorCode::SsoLinkConflict) => self.linked_meanwhile(p, claims).await,
            Err(e) => Err(e),
        }
    }

    /// After a conflict: the identity was linked by a racing sign-in (use that user), or
    /// the account's identifier is taken by an account this identity may not claim.
    async fn linked_meanwhile(&self, p: &SsoProvider, claims: &IdClaims) -> Result<AuthUser> {
        match self
            .core
            .identity
            .db
            .sso_find_link(&p.name, &claims.sub)
            .await?
        {
            Some(user_id) => self.core.identity.get_user(&user_id).await,
            None => Err(link_conflict(
                "An account with this e-mail already exists: sign in to it, then link this provider",
            )),
        }
    }

    /// Links the identity to the signed-in user who started the flow.
    async fn link(&self, p: &SsoProvider, claims: &IdClaims, user_id: &str) -> Result<()> {
        let identity = &self.core.identity;
        identity.get_user(user_id).await?;
        match identity.db.sso_find_link(&p.name, &claims.sub).await? {
            Some(owner) if owner == user_id => return Ok(()),
            Some(_) => return Err(link_conflict("This identity is linked to another account")),
            None => {}
        }
        identity
            .db
            .sso_insert_link(
                user_id,
                &p.name,
                &claims.sub,
                claims.email.as_deref(),
                self.core.now_ms(),
            )
            .await
            .map_err(|e| {
                if e.is(&ErrorCode::SsoLinkConflict) {
                    link_conflict("This account already has a link to this provider")
                } else {
                    e
                }
            })?;
        self.emit(AuthEventKind::SsoLinked, user_id);
        Ok(())
    }

    /// The user's links.
    pub(super) async fn links(&self, user_id: &str) -> Result<Vec<SsoLink>> {
        let rows = self.core.identity.db.sso_links_of(user_id).await?;
        Ok(rows
            .into_iter()
            .map(|r| SsoLink {
                provider: r.provider,
                email: r.email,
                created_at: r.created_at,
            })
            .collect())
    }

    /// Unlinks `provider`, never the last way to sign in.
    pub(super) async fn unlink(&self, user_id: &str, provider: &str) -> Result<()> {
        match self.core.identity.db.sso_unlink(user_id, provider).await? {
            Unlink::Done => {
                self.emit(AuthEventKind::SsoUnlinked, user_id);
                Ok(())
            }
            Unlink::NotLinked => Err(SentriError::new(
                ErrorCode::NotFound,
                "No link to this provider",
            )),
            Unlink::LastMethod => Err(SentriError::new(
                ErrorCode::SsoLastSignInMethod,
                "This link is the account's only way to sign in",
            )),
        }
    }
}

/// The provider's e-mail domain allowlist: a verified e-mail in one of the domains.
fn check_domain(p: &SsoProvider, claims: &IdClaims) -> Result<()> {
    if p.allowed_domains.is_empty() {
        return Ok(());
    }
    // Domains compare in their IDNA ASCII form (`bücher.test` is `xn--bcher-kva.test`).
    let ascii = |d: &str| crate::identity::normalize_address_domain(d).ok();
    let allowed = claims
        .verified_email()
        .and_then(|e| e.rsplit_once('@'))
        .and_then(|(_, domain)| ascii(domain))
        .is_some_and(|domain| {
            p.allowed_domains
                .iter()
                .any(|a| ascii(a).as_deref() == Some(domain.as_str()))
        });
    if allowed {
        Ok(())
    } else {
        Err(not_allowed(
            "This identity's e-mail domain may not sign in here",
        ))
    }
}
