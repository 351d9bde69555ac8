//! The relying-party side of OpenID Connect: discovery, the authorization URL (state,
//! nonce, PKCE S256), the code exchange and ID-token verification. Written on the
//! `reqwest` already used by client mode; ID tokens go through sentri's [`Verifier`]
//! and the shared JWKS cache ([`RemoteJwks`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::SsoProvider;
use crate::core::crypto::{redact_url, secrets_equal, sha256_b64};
use crate::core::error::{ErrorCode, Result, SentriError};
use crate::token::remote::{
    JwksSource, KeyFetchError, RemoteJwks, describe, get_json, read_limited,
};
use crate::token::{Algorithm, MAX_TOKEN_BYTES, TokenOptions};

/// The algorithms accepted for ID tokens: asymmetric only. HMAC-signed ID tokens
/// (keyed with the client secret) are refused, as the spec allows.
const ID_TOKEN_ALGORITHMS: [Algorithm; 5] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::ES256,
    Algorithm::EdDSA,
];
/// Clock skew tolerated on `exp`, `nbf` and `iat` of ID tokens.
const LEEWAY: Duration = Duration::from_secs(30);
/// How long a failed discovery is remembered before the provider is asked again.
const DISCOVERY_RETRY: Duration = Duration::from_secs(5);
/// Largest token-endpoint response read.
const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;

/// Checks a provider URL: absolute, with a host, `https` (or `http` with the opt-in).
pub(super) fn check_url(url: &str, allow_http: bool) -> std::result::Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|_| "is not a valid URL".to_owned())?;
    match parsed.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => return Err("must be https (or set allow_insecure_http)".to_owned()),
        _ => return Err("must be an https URL".to_owned()),
    }
    if !parsed.has_host() || parsed.fragment().is_some() {
        return Err("must have a host and no fragment".to_owned());
    }
    Ok(parsed)
}

pub(super) fn provider_error(what: impl Into<std::borrow::Cow<'static, str>>) -> SentriError {
    SentriError::new(ErrorCode::SsoProviderError, what)
}

fn id_token_invalid() -> SentriError {
    SentriError::new(
        ErrorCode::SsoIdTokenInvalid,
        "The identity provider's ID token was rejected",
    )
}

/// What discovery found.
struct Discovered {
    authorization_endpoint: reqwest::Url,
    token_endpoint: reqwest::Url,
    jwks: RemoteJwks,
    /// `client_secret_post` when the provider supports only that; else HTTP Basic.
    secret_in_body: bool,
}

#[derive(Deserialize)]
struct DiscoveryDoc {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    code_challenge_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

#[derive(Default)]
struct DiscoveryState {
    found: Option<Arc<Discovered>>,
    failed_at: Option<(Instant, String)>,
}

/// One provider at run time: its configuration, HTTP client and discovered metadata.
pub(super) struct Provider {
    pub(super) config: SsoProvider,
    http: Option<reqwest::Client>,
    state: tokio::sync::Mutex<DiscoveryState>,
}

/// The claims sentri reads from an ID token.
#[derive(Deserialize)]
pub(super) struct IdClaims {
    pub(super) sub: String,
    #[serde(default)]
    aud: serde_json::Value,
    #[serde(default)]
    azp: Option<String>,
    iat: i64,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    pub(super) email: Option<String>,
    #[serde(default)]
    email_verified: Option<serde_json::Value>,
}

impl IdClaims {
    /// The e-mail, only when the provider says it is verified (`true`, or the string
    /// `"true"` some providers send).
    pub(super) fn verified_email(&self) -> Option<&str> {
        let verified = match &self.email_verified {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::String(s)) => s == "true",
            _ => false,
        };
        self.email.as_deref().filter(|e| verified && !e.is_empty())
    }
}

/// The PKCE pair of a flow: the verifier is derived from the browser-binding secret, so
/// only the browser that started the flow (and never the database) can complete it.
pub(super) fn pkce_verifier(binding: &str) -> String {
    sha256_b64(b"sentri-sso-pkce-v1\0", &[binding.as_bytes()])
}

fn pkce_challenge(verifier: &str) -> String {
    sha256_b64(b"", &[verifier.as_bytes()])
}

impl Provider {
    pub(super) fn new(config: SsoProvider, http: Option<reqwest::Client>) -> Self {
        Self {
            config,
            http,
            state: tokio::sync::Mutex::new(DiscoveryState::default()),
        }
    }

    fn http(&self) -> Result<&reqwest::Client> {
        self.http
            .as_ref()
            .ok_or_else(|| provider_error("No HTTP client for the identity provider"))
    }

    /// The provider's metadata: discovered once (single flight), a failure remembered
    /// for a few seconds so a down provider is not hammered.
    async fn discovered(&self) -> Result<Arc<Discovered>> {
        let mut st = self.state.lock().await;
        if let Some(found) = &st.found {
            return Ok(found.clone());
        }
        if let Some((at, why)) = &st.failed_at
            && at.elapsed() < DISCOVERY_RETRY
        {
            return Err(provider_error(format!(
                "The identity provider {} is not available ({why})",
                self.config.name
            )));
        }
        match self.discover().await {
            Ok(found) => {
                let found = Arc::new(found);
                st.found = Some(found.clone());
                st.failed_at = None;
                Ok(found)
            }
            Err(why) => {
                tracing::warn!(provider = %self.config.name, issuer = %redact_url(&self.config.issuer), error = %why, "sentri: sso discovery failed");
                st.failed_at = Some((Instant::now(), why.clone()));
                Err(provider_error(format!(
                    "The identity provider {} is not available ({why})",
                    self.config.name
                )))
            }
        }
    }

    /// One discovery: the document, its `issuer` (exactly the configured one), its
    /// endpoints (https unless allowed) and PKCE S256 support.
    async fn discover(&self) -> std::result::Result<Discovered, String> {
        let c = &self.config;
        let url = format!(
            "{}/.well-known/openid-configuration",
            c.issuer.trim_end_matches('/')
        );
        let (json, _) = get_json(self.http().map_err(|e| e.to_string())?, &url)
            .await
            .map_err(|KeyFetchError(e)| format!("discovery: {e}"))?;
        let doc: DiscoveryDoc = serde_json::from_value(json)
            .map_err(|_| "discovery: not an OpenID provider configuration".to_owned())?;
        if doc.issuer != c.issuer {
            return Err("discovery: the issuer does not match the configured one".into());
        }
        let endpoint = |u: &str, what: &str| {
            check_url(u, c.allow_insecure_http).map_err(|m| format!("discovery: {what} {m}"))
        };
        let authorization_endpoint =
            endpoint(&doc.authorization_endpoint, "authorization_endpoint")?;
        let token_endpoint = endpoint(&doc.token_endpoint, "token_endpoint")?;
        let jwks_uri = endpoint(&doc.jwks_uri, "jwks_uri")?;
        if let Some(methods) = &doc.code_challenge_methods_supported
            && !methods.iter().any(|m| m == "S256")
        {
            return Err("discovery: the provider does not support PKCE S256".into());
        }
        let secret_in_body = doc.token_endpoint_auth_methods_supported.is_some_and(|m| {
            m.iter().any(|x| x == "client_secret_post")
                && !m.iter().any(|x| x == "client_secret_basic")
        });
        let jwks = RemoteJwks::new(JwksSource {
            display_uri: redact_url(jwks_uri.as_str()).into_owned(),
            uri: jwks_uri.to_string(),
            algorithms: ID_TOKEN_ALGORITHMS.to_vec(),
            token_options: TokenOptions {
                issuer: Some(c.issuer.clone()),
                audience: Some(c.client_id.clone()),
                leeway: LEEWAY,
                // ID tokens are verified once each: nothing to cache.
                verified_cache_bytes: 0,
                ..TokenOptions::default()
            },
            cache_ttl: Duration::from_secs(10 * 60),
            refetch_cooldown: Duration::from_secs(30),
            http: self.http().map_err(|e| e.to_string())?.clone(),
            infer_alg: true,
        });
        Ok(Discovered {
            authorization_endpoint,
            token_endpoint,
            jwks,
            secret_in_body,
        })
    }

    /// The URL the browser is sent to.
    pub(super) async fn authorization_url(
        &self,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        binding: &str,
    ) -> Result<String> {
        let d = self.discovered().await?;
        let mut url = d.authorization_endpoint.clone();
        let mut scopes: Vec<&str> = vec!["openid"];
        scopes.extend(
            self.config
                .scopes
                .iter()
                .map(String::as_str)
                .filter(|s| *s != "openid"),
        );
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &scopes.join(" "))
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", &pkce_challenge(&pkce_verifier(binding)))
            .append_pair("code_challenge_method", "S256");
        Ok(url.to_string())
    }

    /// Exchanges the code and verifies the ID token it yields.
    pub(super) async fn exchange(
        &self,
        code: &str,
        redirect_uri: &str,
        binding: &str,
        nonce: &str,
    ) -> Result<IdClaims> {
        let d = self.discovered().await?;
        let id_token = self.token_request(&d, code, redirect_uri, binding).await?;
        self.verify_id_token(&d, &id_token, nonce).await
    }

    async fn token_request(
        &self,
        d: &Discovered,
        code: &str,
        redirect_uri: &str,
        binding: &str,
    ) -> Result<String> {
        let c = &self.config;
        let (body, basic) = token_form(c, code, redirect_uri, binding, d.secret_in_body);
        let mut req = self.http()?.post(d.token_endpoint.clone());
        if let Some((user, pass)) = basic {
            req = req.basic_auth(user, Some(pass));
        }
        let res = req
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(http::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(provider = %c.name, error = %describe(e), "sentri: sso token request failed");
                provider_error("The identity provider's token endpoint is not available")
            })?;
        let status = res.status();
        let body = read_limited(res, MAX_TOKEN_RESPONSE_BYTES).await.map_err(|e| {
            tracing::warn!(provider = %c.name, error = %e, "sentri: sso token response unreadable");
            provider_error("The identity provider's token endpoint answered garbage")
        })?;
        let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        if status.is_client_error()
            && let Some(err) = json
                .as_ref()
                .and_then(|j| j.get("error"))
                .and_then(|e| e.as_str())
        {
            return Err(SentriError::new(
                ErrorCode::SsoRejected,
                format!(
                    "The identity provider rejected the authorization code ({})",
                    sanitize_code(err)
                ),
            ));
        }
        if !status.is_success() {
            tracing::warn!(provider = %c.name, %status, "sentri: sso token endpoint failed");
            return Err(provider_error(format!(
                "The identity provider's token endpoint failed (HTTP {})",
                status.as_u16()
            )));
        }
        json.as_ref()
            .and_then(|j| j.get("id_token"))
            .and_then(|t| t.as_str())
            .map(str::to_owned)
            .ok_or_else(|| provider_error("The identity provider's token response has no ID token"))
    }

    /// Signature (provider JWKS, asymmetric only), `iss`, `aud`, `exp`, `nbf` through the
    /// verifier; then `azp`, `iat` and `nonce` here.
    async fn verify_id_token(&self, d: &Discovered, token: &str, nonce: &str) -> Result<IdClaims> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(id_token_invalid());
        }
        let verifier = d.jwks.verifier().await.map_err(|e| {
            if e.is(&ErrorCode::ServiceUnavailable) {
                provider_error("The identity provider's keys are not available")
            } else {
                e
            }
        })?;
        let verifier = d.jwks.knowing_kid_of(verifier, token).await;
        let claims: IdClaims = verifier.verify_id_token(token).map_err(|e| {
            tracing::info!(provider = %self.config.name, reason = %e.message(), "sentri: sso ID token rejected");
            id_token_invalid()
        })?;
        let reject = |why: &'static str| {
            tracing::info!(provider = %self.config.name, reason = why, "sentri: sso ID token rejected");
            Err(id_token_invalid())
        };
        let client_id = self.config.client_id.as_str();
        let multi_aud = claims.aud.as_array().is_some_and(|a| a.len() > 1);
        match claims.azp.as_deref() {
            Some(azp) if azp != client_id => return reject("azp is not this client"),
            None if multi_aud => return reject("several audiences and no azp"),
            _ => {}
        }
        let now = crate::core::clock::system_now_ms() / 1000;
        let leeway = LEEWAY.as_secs() as i64;
        if claims.iat > now + leeway {
            return reject("iat is in the future");
        }
        if claims.sub.is_empty() || claims.sub.len() > 255 {
            return reject("sub is empty or too long");
        }
        match claims.nonce.as_deref() {
            Some(n) if secrets_equal(n.as_bytes(), nonce.as_bytes()) => Ok(claims),
            _ => reject("nonce does not match"),
        }
    }
}

/// The token request's form body, and the HTTP Basic credentials when the client
/// secret goes there (RFC 6749 §2.3.1: both parts form-encoded first).
fn token_form(
    c: &SsoProvider,
    code: &str,
    redirect_uri: &str,
    binding: &str,
    secret_in_body: bool,
) -> (String, Option<(String, String)>) {
    let verifier = pkce_verifier(binding);
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "authorization_code")
        .append_pair("code", code)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("code_verifier", &verifier);
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let basic = match c.client_secret.as_deref() {
        Some(secret) if !secret_in_body => Some((enc(&c.client_id), enc(secret))),
        Some(secret) => {
            form.append_pair("client_id", &c.client_id)
                .append_pair("client_secret", secret);
            None
        }
        None => {
            form.append_pair("client_id", &c.client_id);
            None
        }
    };
    (form.finish(), basic)
}

/// An OAuth error code as it may appear in a message: `[a-z_]`, at most 40 characters.
pub(super) fn sanitize_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_lowercase() || *c == '_')
        .take(40)
        .collect()
}
