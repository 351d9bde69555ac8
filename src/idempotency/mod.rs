//! Idempotency keys for unsafe requests (the `Idempotency-Key` IETF draft, with
//! Stripe's semantics), as a [`tower::Layer`] for axum.
//!
//! A client that may retry a `POST` (a payment, an order) sends a unique key in the
//! `x-idempotency-key` header ([`IdempotencyOptions::header`]). The layer guarantees that
//! the handler runs **at most once** per key and caller while the key is remembered
//! ([`IdempotencyOptions::ttl`]), and that a stored response is only ever replayed to the
//! caller that produced it (see [Scope of a key](#scope-of-a-key)):
//!
//! | Situation | Answer |
//! |---|---|
//! | first request with the key | the handler runs; a 2xx response is stored |
//! | same key, same request, first one finished with 2xx | the stored response, with `X-Idempotent-Replayed: true`; the handler does not run |
//! | same key, same request, first one still running | 409 `IDEMPOTENCY_IN_PROGRESS` with `Retry-After` |
//! | same key, different request (method, path + query or body) | 422 `IDEMPOTENCY_KEY_MISMATCH` |
//! | the client went away while the handler runs | the handler still runs to the end and its outcome is recorded as if the client had waited (retries get 409, then the replay) |
//! | first one answered non-2xx or panicked | the key is released: a retry runs the handler again |
//! | 2xx response larger than [`IdempotencyOptions::max_body`] (or with trailers, or a body that failed mid-way) | sent through uncached; the key is recorded as completed but not replayable: a retry gets 409 `IDEMPOTENCY_NOT_REPLAYABLE` and the handler does not run again |
//! | key empty, longer than 255 bytes, or not visible ASCII (`0x21..=0x7E`) | 400 `VALIDATION_ERROR` |
//! | no key header, or a method not in [`IdempotencyOptions::methods`] | passed through untouched |
//! | no authenticated user and no credentials (anonymous) | passed through untouched, without idempotency (logged at `debug`) |
//! | request body over 1 MiB (with a key) | 413 `PAYLOAD_TOO_LARGE` (the body is buffered to fingerprint it) |
//! | store unreachable (Redis down), or the memory store full of in-flight requests | per [`BackendErrorPolicy`]: 503 `SERVICE_UNAVAILABLE` (default) or run without idempotency |
//!
//! Every response to a request with a valid key that the layer handles carries the key
//! back as `X-Request-Id`, and handlers can read it with the [`IdempotencyKey`] extractor.
//!
//! Once a key is claimed the handler runs on its own task ([`tokio::spawn`]), so a client
//! disconnect (or a dropped service future) never cancels it half-way nor frees the key
//! for a second run. A handler panic is re-raised to the caller after the key is released.
//! A handler that runs longer than `ttl` loses its in-flight marker: keep `ttl` above the
//! slowest handler.
//!
//! # Scope of a key
//!
//! A stored response is bound to whoever sent the request, never to the key alone:
//!
//! * **After authentication** (the auth layer put an [`AuthUser`] into the request
//!   extensions, i.e. this layer is applied *inside* the auth layer — the recommended
//!   placement): a key is scoped to the user id. User B sending user A's key never sees
//!   A's response; the same user reusing a key on another route gets 422
//!   `IDEMPOTENCY_KEY_MISMATCH`.
//! * **Without an authenticated user** (the layer sits outside authentication, or the
//!   app authenticates by itself): a key is scoped to a SHA-256 hash of the request's
//!   credentials, the headers in [`IdempotencyOptions::credential_headers`]
//!   (`Authorization`, `Cookie` and `x-api-key` by default). Another token, cookie or API
//!   key is another scope; raw credentials are never stored or logged. A retry must send
//!   the same credentials to be recognised (a refreshed token or a changed cookie starts
//!   a new scope and runs the handler again), which is why placing the layer inside the
//!   auth layer is better.
//! * **Neither a user nor any credential**: the layer does not store anything and passes
//!   the request through (the handler runs on every retry). A scope shared by all
//!   anonymous callers would replay one caller's response to another.
//!
//! The fingerprint that detects a reused key is SHA-256 over the method, the path and
//! query, and the request body bytes.
//!
//! # Stored responses
//!
//! Only the status, the body, `content-type` and the headers listed in
//! [`IdempotencyOptions::replay_headers`] are stored and replayed (never cookies unless
//! listed). A 2xx response is read up to `max_body + 1` bytes before it is forwarded;
//! bigger ones are streamed through uncached and recorded as not replayable.
//!
//! If storing the outcome fails (Redis went away after the handler ran), the in-flight
//! marker is kept until it expires: retries get 409 rather than running the handler twice.
//!
//! # Backends
//!
//! * in-process (default): bounded by bytes ([`IdempotencyOptions::max_memory_bytes`],
//!   default 64 MiB, counting keys, bodies, headers and a fixed per-record overhead).
//!   When space is needed, completed records are evicted oldest first; an evicted key is
//!   forgotten (a retry runs again), so size the budget for the keys you expect per
//!   `ttl`. In-flight markers are never evicted: when they alone fill the budget, a new
//!   key is refused per [`BackendErrorPolicy`]. One process only.
//! * Redis (feature `redis`, [`IdempotencyOptions::redis_url`]): shared by every process
//!   using the same Redis; keys live under `sentri:idem:`. The connection is opened on
//!   first use and re-established automatically. Run that Redis with
//!   `maxmemory-policy noeviction`: an evicting policy could drop in-flight markers.

mod body;
#[cfg(feature = "redis")]
mod redis_store;
mod store;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::fmt::Write as _;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use aws_lc_rs::digest;
use axum::BoxError;
use axum::body::{Body, HttpBody};
use axum::extract::{FromRequestParts, OptionalFromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, header};
use axum::response::IntoResponse;
use bytes::{Bytes, BytesMut};
use http_body::Frame;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tower_layer::Layer;
use tower_service::Service;

use crate::core::BoxFuture;
use crate::core::crypto::redact_url;
use crate::core::error::{ErrorCode, SentriError};
use crate::core::principal::AuthUser;
use store::{
    Begin, Completion, Fingerprint, MemoryStore, Store, StoreError, StoredResponse, Ticket,
};
use tracing::Instrument as _;

/// Largest request body the layer buffers to fingerprint (1 MiB); bigger → 413.
pub const MAX_REQUEST_BODY: usize = 1024 * 1024;

/// Longest accepted idempotency key, in bytes.
pub const MAX_KEY_LEN: usize = 255;

/// Smallest accepted [`IdempotencyOptions::max_memory_bytes`] (4 KiB).
pub const MIN_MEMORY_BYTES: u64 = 4096;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("x-idempotent-replayed");

/// What to do when the store (Redis) cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendErrorPolicy {
    /// Answer 503 `SERVICE_UNAVAILABLE` without running the handler (safe default).
    #[default]
    FailClosed,
    /// Run the handler without idempotency protection (logged at `warn`).
    FailOpen,
}

/// Configuration of [`IdempotencyLayer`].
///
/// ```
/// use std::time::Duration;
/// use sentri::IdempotencyOptions;
///
/// let opts = IdempotencyOptions {
///     ttl: Duration::from_secs(24 * 3600),
///     redis_url: Some("redis://:secret@127.0.0.1:6379".into()),
///     ..Default::default()
/// };
/// assert!(!format!("{opts:?}").contains("secret"));
/// ```
#[derive(Clone)]
pub struct IdempotencyOptions {
    /// How long a completed response (and an in-flight marker) is kept. Default 5 min.
    pub ttl: Duration,
    /// The request header carrying the key. Default `x-idempotency-key`.
    pub header: HeaderName,
    /// Methods the layer applies to; others pass through. Default `POST`, `PUT`, `PATCH`.
    pub methods: Vec<Method>,
    /// In-memory store budget in bytes (completed records evicted oldest first, in-flight
    /// markers never). At least [`MIN_MEMORY_BYTES`]. Default 64 MiB.
    pub max_memory_bytes: u64,
    /// Headers whose values scope a key when no [`AuthUser`] is present (hashed with
    /// SHA-256, never stored). Requests with none of them and no user are passed through
    /// without idempotency. Default `authorization`, `cookie`, `x-api-key`.
    pub credential_headers: Vec<HeaderName>,
    /// A Redis URL to share keys between processes (feature `redis`). Default `None`.
    pub redis_url: Option<String>,
    /// Largest response body stored for replay, in bytes. Default 1 MiB.
    pub max_body: usize,
    /// Response headers stored and replayed besides `content-type` (always kept).
    pub replay_headers: Vec<HeaderName>,
    /// Behaviour when the store is unreachable. Default [`BackendErrorPolicy::FailClosed`].
    pub on_backend_error: BackendErrorPolicy,
    /// `Retry-After` seconds on the 409 for a request still in progress. Default 1.
    pub in_progress_retry_after: u64,
}

impl Default for IdempotencyOptions {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(5 * 60),
            header: HeaderName::from_static("x-idempotency-key"),
            methods: vec![Method::POST, Method::PUT, Method::PATCH],
            max_memory_bytes: 64 * 1024 * 1024,
            credential_headers: vec![
                header::AUTHORIZATION,
                header::COOKIE,
                HeaderName::from_static("x-api-key"),
            ],
            redis_url: None,
            max_body: 1024 * 1024,
            replay_headers: Vec::new(),
            on_backend_error: BackendErrorPolicy::FailClosed,
            in_progress_retry_after: 1,
        }
    }
}

impl fmt::Debug for IdempotencyOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyOptions")
            .field("ttl", &self.ttl)
            .field("header", &self.header)
            .field("methods", &self.methods)
            .field("max_memory_bytes", &self.max_memory_bytes)
            .field("credential_headers", &self.credential_headers)
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("max_body", &self.max_body)
            .field("replay_headers", &self.replay_headers)
            .field("on_backend_error", &self.on_backend_error)
            .field("in_progress_retry_after", &self.in_progress_retry_after)
            .finish()
    }
}

/// The idempotency key of the current request, for handlers.
///
/// As a plain extractor it rejects requests without a (valid) key with 400
/// `VALIDATION_ERROR` — a way to make the key mandatory on an endpoint;
/// `Option<IdempotencyKey>` never rejects. Only set when the request went through an
/// [`IdempotencyLayer`].
///
/// ```
/// use sentri::IdempotencyKey;
///
/// async fn pay(IdempotencyKey(key): IdempotencyKey) -> String {
///     format!("payment {key}")
/// }
/// # let _ = axum::Router::<()>::new().route("/pay", axum::routing::post(pay));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = SentriError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<IdempotencyKey>()
            .cloned()
            .ok_or_else(|| SentriError::validation("An idempotency key is required"))
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for IdempotencyKey {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<IdempotencyKey>().cloned())
    }
}

// ---- backends ----------------------------------------------------------------------------

enum Backend {
    Memory(MemoryStore),
    #[cfg(feature = "redis")]
    Redis(redis_store::RedisStore),
}

impl Store for Backend {
    async fn try_begin(&self, key: &str, fingerprint: &Fingerprint) -> Result<Begin, StoreError> {
        match self {
            Self::Memory(s) => s.try_begin(key, fingerprint).await,
            #[cfg(feature = "redis")]
            Self::Redis(s) => s.try_begin(key, fingerprint).await,
        }
    }

    async fn complete(
        &self,
        key: &str,
        ticket: Ticket,
        completion: Completion,
    ) -> Result<(), StoreError> {
        match self {
            Self::Memory(s) => s.complete(key, ticket, completion).await,
            #[cfg(feature = "redis")]
            Self::Redis(s) => s.complete(key, ticket, completion).await,
        }
    }

    async fn release(&self, key: &str, ticket: Ticket) -> Result<(), StoreError> {
        match self {
            Self::Memory(s) => s.release(key, ticket).await,
            #[cfg(feature = "redis")]
            Self::Redis(s) => s.release(key, ticket).await,
        }
    }
}

struct Shared {
    store: Backend,
    header: HeaderName,
    methods: Vec<Method>,
    max_body: usize,
    /// `content-type` first, then the configured ones (deduplicated).
    replay_headers: Vec<HeaderName>,
    policy: BackendErrorPolicy,
    retry_after: u64,
    credential_headers: Vec<HeaderName>,
    options: IdempotencyOptions,
}

// ---- the layer ---------------------------------------------------------------------------

/// A [`tower::Layer`] that makes unsafe requests carrying an idempotency key run at
/// most once. See the [module docs](crate::idempotency) for the exact behaviour.
///
/// Clones share the same store.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use axum::{Router, routing::post, body::Body, http::{Request, StatusCode}};
/// use sentri::{IdempotencyLayer, IdempotencyOptions};
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let runs = Arc::new(AtomicUsize::new(0));
/// let counter = runs.clone();
/// let app = Router::new()
///     .route("/pay", post(move || {
///         let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
///         async move { (StatusCode::CREATED, format!("payment #{n}")) }
///     }))
///     .route_layer(IdempotencyLayer::new(IdempotencyOptions::default())?);
///
/// // Outside authentication the key is bound to the caller's credentials (here a bearer
/// // token); a request with no user and no credentials is not made idempotent.
/// let pay = || {
///     Request::post("/pay")
///         .header("authorization", "Bearer token-of-alice")
///         .header("x-idempotency-key", "order-42")
///         .body(Body::from("{}"))
/// };
/// let first = app.clone().oneshot(pay()?).await?;
/// let again = app.clone().oneshot(pay()?).await?;
/// assert_eq!(first.status(), StatusCode::CREATED);
/// assert_eq!(again.headers()["x-idempotent-replayed"], "true");
/// assert_eq!(runs.load(Ordering::SeqCst), 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct IdempotencyLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for IdempotencyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backend = match self.shared.store {
            Backend::Memory(_) => "memory",
            #[cfg(feature = "redis")]
            Backend::Redis(_) => "redis",
        };
        f.debug_struct("IdempotencyLayer")
            .field("backend", &backend)
            .field("options", &self.shared.options)
            .finish()
    }
}

impl IdempotencyLayer {
    /// Builds the layer. No I/O: a Redis connection is opened on first use, so this can
    /// run while building the router.
    ///
    /// # Errors
    ///
    /// `CONFIGURATION_ERROR` for a zero `ttl`, a `max_memory_bytes` below
    /// [`MIN_MEMORY_BYTES`], an invalid `redis_url`, or a `redis_url` when sentri was built
    /// without the `redis` feature.
    pub fn new(options: IdempotencyOptions) -> Result<Self, SentriError> {
        if options.ttl.is_zero() {
            return Err(SentriError::configuration(
                "idempotency ttl must be greater than zero",
            ));
        }
        if options.max_memory_bytes < MIN_MEMORY_BYTES {
            return Err(SentriError::configuration(
                "idempotency max_memory_bytes must be at least 4096",
            ));
        }
        let store = match &options.redis_url {
            None => Backend::Memory(MemoryStore::new(options.max_memory_bytes, options.ttl)),
            #[cfg(feature = "redis")]
            Some(url) => {
                Backend::Redis(redis_store::RedisStore::new(url, options.ttl).map_err(|e| {
                    SentriError::configuration("invalid idempotency redis_url").with_source(e)
                })?)
            }
            #[cfg(not(feature = "redis"))]
            Some(_) => {
                return Err(SentriError::configuration(
                    "idempotency redis_url needs sentri's `redis` feature",
                ));
            }
        };
        let mut replay_headers = vec![header::CONTENT_TYPE];
        for name in &options.replay_headers {
            if !replay_headers.contains(name) {
                replay_headers.push(name.clone());
            }
        }
        Ok(Self {
            shared: Arc::new(Shared {
                store,
                header: options.header.clone(),
                methods: options.methods.clone(),
                max_body: options.max_body,
                replay_headers,
                policy: options.on_backend_error,
                retry_after: options.in_progress_retry_after,
                credential_headers: options.credential_headers.clone(),
                options,
            }),
        })
    }

    /// Bytes held by the in-process store (never more than
    /// [`IdempotencyOptions::max_memory_bytes`]); `None` with Redis.
    ///
    /// ```
    /// use sentri::{IdempotencyLayer, IdempotencyOptions};
    ///
    /// let layer = IdempotencyLayer::new(IdempotencyOptions::default())?;
    /// assert_eq!(layer.stored_bytes(), Some(0));
    /// # Ok::<(), sentri::SentriError>(())
    /// ```
    pub fn stored_bytes(&self) -> Option<u64> {
        match &self.shared.store {
            Backend::Memory(store) => Some(store.bytes()),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => None,
        }
    }
}

impl<S> Layer<S> for IdempotencyLayer {
    type Service = IdempotencyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IdempotencyService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The [`Service`] produced by [`IdempotencyLayer`].
#[derive(Clone)]
pub struct IdempotencyService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> fmt::Debug for IdempotencyService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyService").finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<Body>> for IdempotencyService<S>
where
    S: Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // The readied service is the one in `self`; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);

        let applies = self.shared.methods.contains(req.method())
            && req.headers().contains_key(&self.shared.header);
        if !applies {
            let fut = inner.call(req);
            return Box::pin(async move { Ok(fut.await?.map(Body::new)) });
        }
        Box::pin(handle(self.shared.clone(), inner, req))
    }
}

fn valid_key(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_KEY_LEN
        && bytes.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// The request's single, valid key header, or the 400 to answer.
fn request_key(headers: &HeaderMap, name: &HeaderName) -> Result<HeaderValue, SentriError> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(v), None) if valid_key(v) => Ok(v.clone()),
        _ => Err(SentriError::validation(
            "The idempotency key must be 1 to 255 visible ASCII characters, sent once",
        )),
    }
}

/// The storage key: the user when authenticated, else a hash of the credentials;
/// `None` for an anonymous request (nothing to bind a stored response to).
/// Prefixes and length prefixes keep the scopes from producing the same string.
fn storage_key(parts: &Parts, credential_headers: &[HeaderName], key: &str) -> Option<String> {
    let mut out;
    if let Some(user) = parts.extensions.get::<AuthUser>() {
        out = String::with_capacity(16 + user.id.len() + key.len());
        let _ = write!(out, "u:{}:{}:{key}", user.id.len(), user.id);
    } else {
        let hash = credentials_hash(&parts.headers, credential_headers)?;
        out = String::with_capacity(4 + 2 * hash.len() + key.len());
        out.push_str("c:");
        for byte in hash {
            let _ = write!(out, "{byte:02x}");
        }
        out.push(':');
        out.push_str(key);
    }
    Some(out)
}

/// SHA-256 over the non-empty values of `names` (name, length, value each), or `None`
/// when the request carries none of them.
fn credentials_hash(headers: &HeaderMap, names: &[HeaderName]) -> Option<[u8; 32]> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"sentri idempotency credentials v1\n");
    let mut any = false;
    for name in names {
        for value in headers.get_all(name).iter().filter(|v| !v.is_empty()) {
            any = true;
            ctx.update(name.as_str().as_bytes());
            ctx.update(b"\0");
            ctx.update(&(value.len() as u64).to_be_bytes());
            ctx.update(value.as_bytes());
        }
    }
    any.then(|| {
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    })
}

fn fingerprint(method: &Method, path_and_query: &str, body: &[u8]) -> Fingerprint {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(method.as_str().as_bytes());
    ctx.update(b" ");
    ctx.update(path_and_query.as_bytes());
    ctx.update(b"\n");
    ctx.update(body);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn with_request_id(mut res: Response<Body>, key: &HeaderValue) -> Response<Body> {
    res.headers_mut().insert(X_REQUEST_ID.clone(), key.clone());
    res
}

/// Buffers the request body (at most [`MAX_REQUEST_BODY`]) to fingerprint it, or the
/// 413 / 400 to answer.
async fn read_request_body(parts: &Parts, body: Body) -> Result<Bytes, SentriError> {
    let too_large = || {
        SentriError::new(
            ErrorCode::PayloadTooLarge,
            "Request body too large for an idempotent request",
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_REQUEST_BODY as u64) {
        return Err(too_large());
    }
    match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<LengthLimitError>() => Err(too_large()),
        Err(err) => {
            tracing::debug!(error = %err, "idempotency: could not read the request body");
            Err(SentriError::validation("Could not read the request body"))
        }
    }
}

/// Holds an in-flight marker; releases it (in a spawned task) if dropped while armed,
/// i.e. when the handler panicked or the runtime shut down under it.
struct InFlight {
    shared: Arc<Shared>,
    key: String,
    ticket: Ticket,
    armed: bool,
}

impl InFlight {
    /// Frees the key: the handler answered non-2xx (or failed), a retry may run it again.
    async fn release(mut self) {
        if let Err(err) = self.shared.store.release(&self.key, self.ticket).await {
            tracing::warn!(error = %err, "idempotency: failed to release a key");
        }
        self.armed = false;
    }

    /// Records the outcome. Disarmed first: if this is interrupted, the marker stays
    /// until its ttl rather than being released after the handler ran.
    async fn finish(mut self, completion: Completion) {
        self.armed = false;
        if let Err(err) = self
            .shared
            .store
            .complete(&self.key, self.ticket, completion)
            .await
        {
            // Keep the marker: a retry gets 409 until ttl rather than a second execution.
            tracing::error!(error = %err, "idempotency: could not store the outcome; the key stays locked until its ttl");
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                "idempotency: no runtime to release an abandoned key; it expires with its ttl"
            );
            return;
        };
        let shared = self.shared.clone();
        let key = std::mem::take(&mut self.key);
        let ticket = self.ticket;
        tracing::debug!("idempotency: handler did not finish, releasing its key");
        rt.spawn(async move {
            if let Err(err) = shared.store.release(&key, ticket).await {
                tracing::warn!(error = %err, "idempotency: failed to release an abandoned key");
            }
        });
    }
}

/// The request to run with its key in the extensions, and its fingerprint (method,
/// original path and query, body).
fn keyed_request(mut parts: Parts, body: Bytes, key: &str) -> (Request<Body>, Fingerprint) {
    let uri = parts
        .extensions
        .get::<OriginalUri>()
        .map_or(&parts.uri, |o| &o.0);
    let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let fp = fingerprint(&parts.method, path_and_query, &body);
    parts.extensions.insert(IdempotencyKey(key.to_owned()));
    (Request::from_parts(parts, Body::from(body)), fp)
}

async fn handle<S, B>(
    shared: Arc<Shared>,
    mut inner: S,
    req: Request<Body>,
) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<Body>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let key_value = match request_key(req.headers(), &shared.header) {
        Ok(value) => value,
        Err(err) => return Ok(err.into_response()),
    };
    // Visible ASCII only, checked above.
    let key = key_value.to_str().unwrap_or_default();
    let (parts, body) = req.into_parts();
    let Some(skey) = storage_key(&parts, &shared.credential_headers, key) else {
        tracing::debug!(
            "idempotency: no authenticated user and no credentials; passed through without idempotency"
        );
        let res = inner.call(Request::from_parts(parts, body)).await?;
        return Ok(res.map(Body::new));
    };
    let body = match read_request_body(&parts, body).await {
        Ok(body) => body,
        Err(err) => return Ok(with_request_id(err.into_response(), &key_value)),
    };
    let (req, fp) = keyed_request(parts, body, key);
    let ticket = match shared.store.try_begin(&skey, &fp).await {
        Ok(Begin::Started(ticket)) => ticket,
        Ok(found) => return Ok(answer_existing(found, &shared, &key_value)),
        Err(err) if shared.policy == BackendErrorPolicy::FailOpen => {
            tracing::warn!(error = %err, "idempotency: store unavailable, running the request without idempotency (fail-open)");
            let res = inner.call(req).await?;
            return Ok(with_request_id(res.map(Body::new), &key_value));
        }
        Err(err) => {
            let res = SentriError::unavailable(err).into_response();
            return Ok(with_request_id(res, &key_value));
        }
    };
    crate::core::observe::count(
        crate::core::observe::IDEMPOTENCY,
        Some(("outcome", "executed")),
    );
    let guard = InFlight {
        shared: shared.clone(),
        key: skey,
        ticket,
        armed: true,
    };
    let res = run_detached(run_once(shared, inner, req, guard, fp)).await?;
    Ok(with_request_id(res, &key_value))
}

/// The answer when the key was already taken (anything but [`Begin::Started`]).
fn answer_existing(found: Begin, shared: &Shared, key: &HeaderValue) -> Response<Body> {
    use crate::core::observe::{IDEMPOTENCY, count};
    let outcome = match &found {
        Begin::Completed(_) => "replayed",
        Begin::InProgress | Begin::Started(_) => "in_progress",
        Begin::NotReplayable => "not_replayable",
        Begin::Mismatch => "mismatch",
    };
    count(IDEMPOTENCY, Some(("outcome", outcome)));
    let err = match found {
        Begin::Completed(stored) => return replay(&stored, key),
        Begin::InProgress | Begin::Started(_) => SentriError::new(
            ErrorCode::IdempotencyInProgress,
            "A request with this idempotency key is still being processed",
        )
        .with_retry_after(shared.retry_after),
        Begin::NotReplayable => SentriError::new(
            ErrorCode::IdempotencyNotReplayable,
            "A request with this idempotency key already completed, but its response was not stored; it is not run again",
        ),
        Begin::Mismatch => SentriError::new(
            ErrorCode::IdempotencyKeyMismatch,
            "This idempotency key was already used with a different request",
        ),
    };
    with_request_id(err.into_response(), key)
}

/// Runs a claimed request on its own task, so that a caller going away (a client
/// disconnect drops this future) never cancels the handler or frees its key: the
/// outcome is recorded either way. A handler panic is re-raised here, as without the
/// layer. Without a tokio runtime the job runs in place.
async fn run_detached<E, F>(job: F) -> Result<Response<Body>, E>
where
    F: Future<Output = Result<Response<Body>, E>> + Send + 'static,
    E: Send + 'static,
{
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return job.await;
    };
    match rt.spawn(job.instrument(tracing::Span::current())).await {
        Ok(out) => out,
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(err) => Ok(SentriError::unavailable(err).into_response()),
    }
}

/// Calls the handler and records its outcome under the claimed key.
async fn run_once<S, B>(
    shared: Arc<Shared>,
    mut inner: S,
    req: Request<Body>,
    guard: InFlight,
    fp: Fingerprint,
) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<Body>, Response = Response<B>>,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let res = match inner.call(req).await {
        Ok(res) => res,
        Err(err) => {
            guard.release().await;
            return Err(err);
        }
    };
    let (parts, body) = res.into_parts();
    let body = Body::new(body);
    if !parts.status.is_success() {
        guard.release().await;
        return Ok(Response::from_parts(parts, body));
    }
    let (completion, body) = match read_capped(body, shared.max_body).await {
        Capped::Whole(bytes) => {
            let stored = stored_response(&shared, &parts, fp, &bytes);
            (Completion::Replay(stored), Body::from(bytes))
        }
        Capped::Partial(resumed) => {
            tracing::debug!(
                "idempotency: 2xx response not replayable (over max_body, trailers or a body error); recorded as completed"
            );
            (Completion::NotReplayable(fp), Body::new(resumed))
        }
    };
    guard.finish(completion).await;
    Ok(Response::from_parts(parts, body))
}

/// A response body read up to a cap: whole, or what was read followed by the rest.
enum Capped {
    Whole(Bytes),
    Partial(body::Resumed),
}

/// Reads at most `max + 1` bytes of `body` before deciding whether it can be stored.
async fn read_capped(mut body: Body, max: usize) -> Capped {
    if body.size_hint().lower() > max as u64 {
        let rest = Some(body);
        return Capped::Partial(body::Resumed {
            read: VecDeque::new(),
            error: None,
            rest,
        });
    }
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    loop {
        let (extra, error) = match body.frame().await {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    total += data.len();
                    chunks.push(data);
                    if total <= max {
                        continue;
                    }
                    (None, None)
                }
                // Trailers: not replayable, forward as is.
                Err(frame) => (Some(frame), None),
            },
            Some(Err(err)) => (None, Some(err)),
        };
        let mut read: VecDeque<Frame<Bytes>> = chunks.into_iter().map(Frame::data).collect();
        read.extend(extra);
        let rest = error.is_none().then_some(body);
        return Capped::Partial(body::Resumed { read, error, rest });
    }
    Capped::Whole(concat(chunks, total))
}

fn concat(mut chunks: Vec<Bytes>, total: usize) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut buf = BytesMut::with_capacity(total);
            for chunk in &chunks {
                buf.extend_from_slice(chunk);
            }
            buf.freeze()
        }
    }
}

fn stored_response(
    shared: &Shared,
    parts: &axum::http::response::Parts,
    fingerprint: Fingerprint,
    body: &Bytes,
) -> StoredResponse {
    let mut headers = Vec::with_capacity(shared.replay_headers.len());
    for name in &shared.replay_headers {
        for value in parts.headers.get_all(name) {
            headers.push((name.clone(), value.clone()));
        }
    }
    StoredResponse {
        fingerprint,
        status: parts.status,
        headers,
        // An exact-size copy: a handler's body usually sits in a Vec grown by doubling
        // (serde_json, format!), and keeping a slice of it would keep the whole spare
        // capacity alive for the ttl (~2 KiB held per 1 KiB response in the bench).
        body: Bytes::copy_from_slice(body),
    }
}

fn replay(stored: &StoredResponse, key: &HeaderValue) -> Response<Body> {
    let mut res = Response::new(Body::from(stored.body.clone()));
    *res.status_mut() = stored.status;
    let headers = res.headers_mut();
    for (name, value) in &stored.headers {
        headers.append(name.clone(), value.clone());
    }
    headers.insert(
        X_IDEMPOTENT_REPLAYED.clone(),
        HeaderValue::from_static("true"),
    );
    headers.insert(X_REQUEST_ID.clone(), key.clone());
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts_with(headers: &[(&'static str, &'static str)], user: Option<&str>) -> Parts {
        let mut b = Request::post("/pay");
        for (name, value) in headers {
            b = b.header(*name, *value);
        }
        let (mut parts, ()) = b.body(()).unwrap_or_default().into_parts();
        if let Some(id) = user {
            parts.extensions.insert(AuthUser {
                id: id.to_owned(),
                identifier: format!("{id}@example.com"),
                roles: vec![],
            });
        }
        parts
    }

    #[test]
    fn keys_are_scoped_to_the_user_or_a_hash_of_the_credentials() {
        let names = IdempotencyOptions::default().credential_headers;
        let key = |headers: &[(&'static str, &'static str)], user: Option<&str>| {
            storage_key(&parts_with(headers, user), &names, "k1")
        };
        let alice = key(&[("authorization", "Bearer secret-a")], None);
        let bob = key(&[("authorization", "Bearer secret-b")], None);
        let cookie = key(&[("cookie", "Bearer secret-a")], None);
        assert!(alice.is_some() && alice != bob && alice != cookie);
        assert_eq!(alice, key(&[("authorization", "Bearer secret-a")], None));
        assert!(alice.iter().all(|k| !k.contains("secret")), "{alice:?}");
        assert_eq!(key(&[], None), None, "anonymous: not stored");
        assert_eq!(key(&[("authorization", "")], None), None);
        assert_eq!(key(&[("x-other", "1")], None), None);
        let user = key(&[("authorization", "Bearer secret-a")], Some("u1"));
        assert_eq!(user.as_deref(), Some("u:2:u1:k1"), "the user wins");
    }

    #[test]
    fn key_validation() {
        assert!(valid_key(&HeaderValue::from_static("abc-123_~")));
        assert!(!valid_key(&HeaderValue::from_static("")));
        assert!(!valid_key(&HeaderValue::from_static("a b")));
        let long = "a".repeat(256);
        assert!(!valid_key(
            &HeaderValue::from_str(&long).unwrap_or(HeaderValue::from_static(""))
        ));
    }
}
