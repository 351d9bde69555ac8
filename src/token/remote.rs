//! A remote JWKS, fetched over HTTP and cached: the key fetching shared by client mode
//! (an auth server's keys) and single sign-on (an identity provider's keys).
//!
//! - Keys are fetched lazily on first use (or by [`RemoteJwks::prefetch`]); concurrent
//!   first requests share one fetch.
//! - A token whose `kid` is not cached triggers a refetch, at most once per
//!   `refetch_cooldown`, so key rotation is picked up while a flood of made-up `kid`s
//!   cannot make sentri hammer the key server.
//! - Keys are refetched in the background once older than the cache lifetime (the
//!   response's `Cache-Control: max-age`, else `cache_ttl`).
//! - A failed fetch keeps the keys already held (logged; retried later).
//! - A fetch follows at most 5 redirects, only to the same host and port and never from
//!   https to http.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use http::header;

use super::{Algorithm, TokenOptions, Verifier, peek_kid};
use crate::core::error::{Result, SentriError};

/// Largest JWKS (or other JSON document) response read, in bytes.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Upper bound on a cache lifetime taken from `Cache-Control: max-age`.
const MAX_CACHE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest wait before retrying after a failed fetch.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);
/// Most redirects followed by one fetch.
const MAX_REDIRECTS: usize = 5;

/// Why a fetch failed (no key material, no token).
#[derive(Debug, thiserror::Error)]
#[error("fetching {0}")]
pub(crate) struct KeyFetchError(pub(crate) String);

/// Why a redirect of a fetch was not followed.
#[derive(Debug, thiserror::Error)]
#[error("redirect refused: {0}")]
pub(crate) struct RedirectRefused(pub(crate) &'static str);

/// Whether a fetch may follow a redirect to `next`, given the URLs requested so far
/// (`previous[0]` is the first): at most [`MAX_REDIRECTS`], to the same host and port
/// only, never from https to http.
pub(crate) fn redirect_verdict(
    previous: &[reqwest::Url],
    next: &reqwest::Url,
) -> Result<(), RedirectRefused> {
    let (Some(origin), Some(last)) = (previous.first(), previous.last()) else {
        return Err(RedirectRefused("no request to redirect from"));
    };
    if previous.len() > MAX_REDIRECTS {
        return Err(RedirectRefused("more than 5 redirects"));
    }
    if last.scheme() == "https" && next.scheme() != "https" {
        return Err(RedirectRefused("from https to http"));
    }
    if next.host_str() != origin.host_str()
        || next.port_or_known_default() != origin.port_or_known_default()
    {
        return Err(RedirectRefused("to another host or port"));
    }
    Ok(())
}

/// The redirect policy of every fetch: [`redirect_verdict`].
pub(crate) fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        match redirect_verdict(attempt.previous(), attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(refused) => attempt.error(refused),
        }
    })
}

/// An HTTP client for key and metadata fetches: timeouts, the redirect policy, no idle
/// connections (fetches are rare, so every one sees the server as it is now).
pub(crate) fn http_client(timeout: Duration) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_max_idle_per_host(0)
        .redirect(redirect_policy())
        .user_agent(concat!("sentri/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| SentriError::configuration("cannot build the HTTP client").with_source(e))
}

/// `true` for `localhost` and loopback IP addresses.
pub(crate) fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host_str() {
        Some(h) if h.eq_ignore_ascii_case("localhost") => true,
        Some(h) => h
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// `max-age` of a `Cache-Control` header, if any.
pub(crate) fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|d| {
            let (k, v) = d.trim().split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("max-age")
                .then(|| v.trim().trim_matches('"').parse::<u64>().ok())
                .flatten()
        })
        .map(Duration::from_secs)
}

/// reqwest's own message is terse ("error sending request"): adds the causes, never the
/// URL (it may carry credentials).
pub(crate) fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cause = c.source();
    }
    msg
}

/// Reads a response body of at most `limit` bytes.
pub(crate) async fn read_limited(
    mut res: reqwest::Response,
    limit: usize,
) -> std::result::Result<Vec<u8>, KeyFetchError> {
    let too_large = || KeyFetchError(format!("response is larger than {limit} bytes"));
    if res.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(|e| KeyFetchError(describe(e)))? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// One GET of a JSON document: success status, size cap, JSON. Also returns the headers.
pub(crate) async fn get_json(
    http: &reqwest::Client,
    url: &str,
) -> std::result::Result<(serde_json::Value, http::HeaderMap), KeyFetchError> {
    let res = http
        .get(url)
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| KeyFetchError(describe(e)))?;
    let status = res.status();
    if !status.is_success() {
        return Err(KeyFetchError(format!("HTTP status {status}")));
    }
    let headers = res.headers().clone();
    let body = read_limited(res, MAX_JWKS_BYTES).await?;
    let json =
        serde_json::from_slice(&body).map_err(|_| KeyFetchError("response is not JSON".into()))?;
    Ok((json, headers))
}

/// What triggered a fetch; decides whether it may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// No keys yet.
    Initial,
    /// A token named a `kid` that is not cached.
    UnknownKid,
    /// The cache lifetime has passed.
    Expired,
    /// `prefetch()`: always fetches.
    Forced,
}

#[derive(Default)]
struct FetchState {
    /// Start of the last fetch attempt (successful or not).
    last_attempt: Option<Instant>,
    /// When the current keys should be refetched.
    expires_at: Option<Instant>,
}

/// Where the keys are and how they are cached.
pub(crate) struct JwksSource {
    /// The JWKS URL (already checked by the caller).
    pub(crate) uri: String,
    /// The URL as logs show it (no credentials).
    pub(crate) display_uri: String,
    /// Accepted algorithms (never HMAC: [`Verifier::from_jwks`] refuses it anyway).
    pub(crate) algorithms: Vec<Algorithm>,
    /// `iss` / `aud` / leeway every verified token must meet.
    pub(crate) token_options: TokenOptions,
    /// Cache lifetime when the response has no `max-age`.
    pub(crate) cache_ttl: Duration,
    /// Minimum time between fetches caused by unknown `kid`s.
    pub(crate) refetch_cooldown: Duration,
    /// The HTTP client (see [`http_client`]).
    pub(crate) http: reqwest::Client,
    /// Pin keys without `alg` to the algorithm their type implies (identity providers).
    pub(crate) infer_alg: bool,
}

struct Inner {
    source: JwksSource,
    retry_delay: Duration,
    /// The current keys; read on every verification (a short read lock, an `Arc` clone).
    keys: RwLock<Option<Verifier>>,
    /// Serialises fetches (single flight).
    fetch_lock: tokio::sync::Mutex<()>,
    /// Bumped after every fetch attempt, so waiters know one finished meanwhile.
    generation: AtomicU64,
    state: Mutex<FetchState>,
    /// A background refresh is scheduled or running.
    refreshing: AtomicBool,
}

/// A cached remote JWKS. Cheap to clone.
#[derive(Clone)]
pub(crate) struct RemoteJwks {
    inner: Arc<Inner>,
}

impl RemoteJwks {
    pub(crate) fn new(source: JwksSource) -> Self {
        let retry_delay = source.refetch_cooldown.min(MAX_RETRY_DELAY);
        Self {
            inner: Arc::new(Inner {
                source,
                retry_delay,
                keys: RwLock::new(None),
                fetch_lock: tokio::sync::Mutex::new(()),
                generation: AtomicU64::new(0),
                state: Mutex::new(FetchState::default()),
                refreshing: AtomicBool::new(false),
            }),
        }
    }

    /// The keys held now, if any.
    pub(crate) fn current(&self) -> Option<Verifier> {
        self.inner.current()
    }

    /// The URL as logs show it.
    pub(crate) fn display_uri(&self) -> &str {
        &self.inner.source.display_uri
    }

    /// Fetches the keys now, whatever the cache state (the old keys are kept on failure).
    pub(crate) async fn prefetch(&self) -> std::result::Result<(), KeyFetchError> {
        self.inner.refresh(Trigger::Forced).await
    }

    /// The keys held now: fetched on first use (`SERVICE_UNAVAILABLE` when that fails),
    /// refreshed in the background once expired.
    pub(crate) async fn verifier(&self) -> Result<Verifier> {
        self.inner.verifier().await
    }

    /// `verifier`, or the keys refetched (within the cooldown) when `token` names a
    /// `kid` it does not know.
    pub(crate) async fn knowing_kid_of(&self, verifier: Verifier, token: &str) -> Verifier {
        match peek_kid(token) {
            Some(kid) if !verifier.has_kid(&kid) => {
                tracing::debug!("sentri: token names an unknown key id");
                // A failure is logged inside; the old keys stay in use.
                let _ = self.inner.refresh(Trigger::UnknownKid).await;
                self.inner.current().unwrap_or(verifier)
            }
            _ => verifier,
        }
    }
}

impl Inner {
    fn current(&self) -> Option<Verifier> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FetchState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The keys to verify with: fetched on first use (503 when that fails), refreshed in
    /// the background once expired.
    async fn verifier(self: &Arc<Self>) -> Result<Verifier> {
        if let Some(v) = self.current() {
            self.maybe_refresh_in_background();
            return Ok(v);
        }
        let outcome = self.refresh(Trigger::Initial).await;
        match self.current() {
            Some(v) => Ok(v),
            None => Err(match outcome {
                Err(e) => SentriError::unavailable(e),
                Ok(()) => {
                    SentriError::unavailable(KeyFetchError("no keys yet; retrying shortly".into()))
                }
            }),
        }
    }

    fn maybe_refresh_in_background(self: &Arc<Self>) {
        let due = {
            let st = self.state();
            let now = Instant::now();
            st.expires_at.is_some_and(|e| now >= e)
                && st
                    .last_attempt
                    .is_none_or(|t| now.duration_since(t) >= self.retry_delay)
        };
        if !due {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self
            .refreshing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let this = Arc::clone(self);
        handle.spawn(async move {
            // Cleared even if the task is cancelled, so refreshes are never stuck off.
            struct Done(Arc<Inner>);
            impl Drop for Done {
                fn drop(&mut self) {
                    self.0.refreshing.store(false, Ordering::Release);
                }
            }
            let done = Done(this);
            let _ = done.0.refresh(Trigger::Expired).await;
        });
    }

    /// Single-flight fetch. `Ok(())` when the fetch succeeded, was not due, or another
    /// caller's fetch finished while this one waited; `Err` only when this call fetched
    /// and failed (the old keys are kept).
    async fn refresh(&self, trigger: Trigger) -> std::result::Result<(), KeyFetchError> {
        let seen = self.generation.load(Ordering::Acquire);
        let _flight = self.fetch_lock.lock().await;
        let started = Instant::now();
        {
            let mut st = self.state();
            if trigger != Trigger::Forced && self.generation.load(Ordering::Acquire) != seen {
                return Ok(());
            }
            let since_last = st.last_attempt.map(|t| started.duration_since(t));
            let allowed = match trigger {
                Trigger::Forced => true,
                Trigger::Initial => {
                    self.current().is_none() && since_last.is_none_or(|d| d >= self.retry_delay)
                }
                Trigger::UnknownKid => since_last.is_none_or(|d| d >= self.source.refetch_cooldown),
                Trigger::Expired => {
                    st.expires_at.is_none_or(|e| started >= e)
                        && since_last.is_none_or(|d| d >= self.retry_delay)
                }
            };
            if !allowed {
                return Ok(());
            }
            st.last_attempt = Some(started);
        }
        let outcome = match self.fetch().await {
            Ok((verifier, ttl)) => {
                tracing::debug!(key_uri = %self.source.display_uri, ?trigger, keys = ?verifier, "sentri: fetched JWKS");
                *self
                    .keys
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(verifier);
                self.state().expires_at = Some(Instant::now() + ttl);
                Ok(())
            }
            Err(e) => {
                let has_keys = self.current().is_some();
                tracing::warn!(
                    key_uri = %self.source.display_uri,
                    ?trigger,
                    error = %e,
                    keeping_old_keys = has_keys,
                    "sentri: could not refresh the JWKS; will retry"
                );
                Err(e)
            }
        };
        self.generation.fetch_add(1, Ordering::AcqRel);
        outcome
    }

    /// One GET of the JWKS: status, size cap, JSON, usable keys; the cache lifetime.
    async fn fetch(&self) -> std::result::Result<(Verifier, Duration), KeyFetchError> {
        let src = &self.source;
        let (json, headers) = get_json(&src.http, &src.uri)
            .await
            .map_err(|e| KeyFetchError(format!("the JWKS failed: {}", e.0)))?;
        let ttl = match max_age(&headers) {
            Some(age) => age.max(src.refetch_cooldown).min(MAX_CACHE_TTL),
            None => src.cache_ttl,
        };
        let (verifier, warnings) =
            Verifier::from_jwks_with(&json, &src.algorithms, &src.token_options, src.infer_alg);
        for w in &warnings {
            tracing::warn!(key_uri = %src.display_uri, "sentri: JWKS: {w}");
        }
        if verifier.is_empty() {
            return Err(KeyFetchError(
                "the JWKS failed: it has no usable key".into(),
            ));
        }
        Ok((verifier, ttl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_max_age() {
        let mut h = http::HeaderMap::new();
        assert_eq!(max_age(&h), None);
        h.insert(
            header::CACHE_CONTROL,
            http::HeaderValue::from_static("public, max-age=300"),
        );
        assert_eq!(max_age(&h), Some(Duration::from_secs(300)));
        h.insert(
            header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store, max-age=x"),
        );
        assert_eq!(max_age(&h), None);
    }

    fn urls(list: &[&str]) -> Vec<reqwest::Url> {
        list.iter()
            .map(|u| reqwest::Url::parse(u).unwrap())
            .collect()
    }

    #[test]
    fn redirects_stay_on_the_same_host_port_and_scheme() {
        let verdict = |previous: &[&str], next: &str| {
            redirect_verdict(&urls(previous), &urls(&[next])[0]).map_err(|e| e.0)
        };
        let origin = "https://auth.example.com/keys";
        assert!(verdict(&[origin], "https://auth.example.com/v2/keys").is_ok());
        assert!(verdict(&[origin], "https://AUTH.example.com:443/keys").is_ok());
        let other_host = Err("to another host or port");
        assert_eq!(verdict(&[origin], "https://evil.example/keys"), other_host);
        assert_eq!(verdict(&[origin], "https://example.com/keys"), other_host);
        assert_eq!(
            verdict(&[origin], "https://auth.example.com:8443/keys"),
            other_host
        );
        assert_eq!(
            verdict(&[origin], "http://auth.example.com/keys"),
            Err("from https to http")
        );
        assert_eq!(
            verdict(&["http://127.0.0.1:8080/a"], "http://localhost:8080/keys"),
            other_host
        );
        let chain = [origin; 5];
        assert!(verdict(&chain, origin).is_ok());
        assert_eq!(verdict(&[origin; 6], origin), Err("more than 5 redirects"));
        assert_eq!(verdict(&[], origin), Err("no request to redirect from"));
    }

    #[test]
    fn loopback_hosts() {
        for u in [
            "http://localhost/k",
            "http://LOCALHOST:1/k",
            "http://127.0.0.1/k",
            "http://127.9.8.7:80/k",
            "http://[::1]:8080/k",
        ] {
            assert!(is_loopback(&urls(&[u])[0]), "{u}");
        }
        for u in [
            "http://localhost.example.com/k",
            "http://10.0.0.1/k",
            "http://[::2]/k",
            "http://0.0.0.0/k",
            "http://128.0.0.1/k",
        ] {
            assert!(!is_loopback(&urls(&[u])[0]), "{u}");
        }
    }
}
