//! Idempotency keys for unsafe requests (the `Idempotency-Key` IETF draft, with
//! Stripe's semantics), as a [`tower::Layer`] for axum.
//!
//! A client that may retry a `POST` (a payment, an order) sends a unique key in the
//! `x-idempotency-key` header ([`IdempotencyOptions::header`]). The layer guarantees that
//! the handler runs **at most once** per key while the key is remembered
//! ([`IdempotencyOptions::ttl`]):
//!
//! | Situation | Answer |
//! |---|---|
//! | first request with the key | the handler runs; a 2xx response is stored |
//! | same key, same request, first one finished with 2xx | the stored response, with `X-Idempotent-Replayed: true`; the handler does not run |
//! | same key, same request, first one still running | 409 `IDEMPOTENCY_IN_PROGRESS` with `Retry-After` |
//! | same key, different request (method, path + query or body) | 422 `IDEMPOTENCY_KEY_MISMATCH` |
//! | first one answered non-2xx, panicked, or the client went away | the key is released: a retry runs the handler again |
//! | 2xx response larger than [`IdempotencyOptions::max_body`] | sent through uncached; the key is released |
//! | key empty, longer than 255 bytes, or not visible ASCII (`0x21..=0x7E`) | 400 `VALIDATION_ERROR` |
//! | no key header, or a method not in [`IdempotencyOptions::methods`] | passed through untouched |
//! | request body over 1 MiB (with a key) | 413 `PAYLOAD_TOO_LARGE` (the body is buffered to fingerprint it) |
//! | store unreachable (Redis down) | per [`BackendErrorPolicy`]: 503 `SERVICE_UNAVAILABLE` (default) or run without idempotency |
//!
//! Every response to a request with a valid key carries the key back as `X-Request-Id`,
//! and handlers can read it with the [`IdempotencyKey`] extractor.
//!
//! # Scope of a key
//!
//! * **After authentication** (the auth layer put an [`AuthUser`] into the request
//!   extensions, i.e. this layer is applied *inside* the auth layer): a key is scoped to
//!   the user id. User B sending user A's key never sees A's response; the same user
//!   reusing a key on another route gets 422 `IDEMPOTENCY_KEY_MISMATCH`.
//! * **Without an authenticated user**: a key is scoped to the method and path
//!   (the same key on another path is simply another key).
//!
//! The fingerprint that detects a reused key is SHA-256 over the method, the path and
//! query, and the request body bytes.
//!
//! # Stored responses
//!
//! Only the status, the body, `content-type` and the headers listed in
//! [`IdempotencyOptions::replay_headers`] are stored and replayed (never cookies unless
//! listed). A 2xx response is read up to `max_body + 1` bytes before it is forwarded;
//! bigger ones are streamed through uncached.
//!
//! If storing the response fails (Redis went away after the handler ran), the in-flight
//! marker is kept until it expires: retries get 409 rather than running the handler twice.
//!
//! # Backends
//!
//! * in-process (default): a bounded moka cache ([`IdempotencyOptions::max_size`]
//!   entries, least recently used evicted first). One process only; an evicted key is
//!   forgotten, so size it above the keys you expect per `ttl`.
//! * Redis (feature `redis`, [`IdempotencyOptions::redis_url`]): shared by every process
//!   using the same Redis; keys live under `sentri:idem:`. The connection is opened on
//!   first use and re-established automatically.

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
use axum::http::{HeaderName, HeaderValue, Method, Request, Response, header};
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
use store::{Begin, Fingerprint, MemoryStore, Store, StoreError, StoredResponse, Ticket};

/// Largest request body the layer buffers to fingerprint (1 MiB); bigger → 413.
pub const MAX_REQUEST_BODY: usize = 1024 * 1024;

/// Longest accepted idempotency key, in bytes.
pub const MAX_KEY_LEN: usize = 255;

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
    /// In-memory store capacity in entries (least recently used evicted first). Default 10 000.
    pub max_size: u64,
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
            max_size: 10_000,
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
            .field("max_size", &self.max_size)
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
        response: StoredResponse,
    ) -> Result<(), StoreError> {
        match self {
            Self::Memory(s) => s.complete(key, ticket, response).await,
            #[cfg(feature = "redis")]
            Self::Redis(s) => s.complete(key, ticket, response).await,
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
/// let pay = || Request::post("/pay").header("x-idempotency-key", "order-42").body(Body::from("{}"));
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
    /// `CONFIGURATION_ERROR` for a zero `ttl` or `max_size`, an invalid `redis_url`, or a
    /// `redis_url` when sentri was built without the `redis` feature.
    pub fn new(options: IdempotencyOptions) -> Result<Self, SentriError> {
        if options.ttl.is_zero() {
            return Err(SentriError::configuration(
                "idempotency ttl must be greater than zero",
            ));
        }
        if options.max_size == 0 {
            return Err(SentriError::configuration(
                "idempotency max_size must be greater than zero",
            ));
        }
        let store = match &options.redis_url {
            None => Backend::Memory(MemoryStore::new(options.max_size, options.ttl)),
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
                options,
            }),
        })
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

/// The storage key: user scope when authenticated, method + path otherwise.
/// Lengths are prefixed so that no two scopes can produce the same string.
fn storage_key(parts: &Parts, path: &str, key: &str) -> String {
    let mut out;
    if let Some(user) = parts.extensions.get::<AuthUser>() {
        out = String::with_capacity(16 + user.id.len() + key.len());
        let _ = write!(out, "u:{}:{}:{key}", user.id.len(), user.id);
    } else {
        let method = parts.method.as_str();
        out = String::with_capacity(24 + method.len() + path.len() + key.len());
        let _ = write!(out, "a:{method}:{}:{path}:{key}", path.len());
    }
    out
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

/// Holds an in-flight marker; releases it (in a spawned task) if dropped while armed,
/// e.g. when the handler panics or the client disconnects.
struct InFlight {
    shared: Arc<Shared>,
    key: String,
    ticket: Ticket,
    armed: bool,
}

impl InFlight {
    async fn release(mut self) {
        if let Err(err) = self.shared.store.release(&self.key, self.ticket).await {
            tracing::warn!(error = %err, "idempotency: failed to release a key");
        }
        self.armed = false;
    }

    fn disarm(mut self) {
        self.armed = false;
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
        tracing::debug!("idempotency: request abandoned, releasing its key");
        rt.spawn(async move {
            if let Err(err) = shared.store.release(&key, ticket).await {
                tracing::warn!(error = %err, "idempotency: failed to release an abandoned key");
            }
        });
    }
}

async fn handle<S, B>(
    shared: Arc<Shared>,
    mut inner: S,
    req: Request<Body>,
) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<Body>, Response = Response<B>>,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut values = req.headers().get_all(&shared.header).iter();
    let key_value = match (values.next(), values.next()) {
        (Some(v), None) if valid_key(v) => v.clone(),
        _ => {
            return Ok(SentriError::validation(
                "The idempotency key must be 1 to 255 visible ASCII characters, sent once",
            )
            .into_response());
        }
    };
    // Visible ASCII only, checked above.
    let key = key_value.to_str().unwrap_or_default();

    let (mut parts, body) = req.into_parts();
    let too_large = || {
        SentriError::new(
            ErrorCode::PayloadTooLarge,
            "Request body too large for an idempotent request",
        )
        .into_response()
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_REQUEST_BODY as u64) {
        return Ok(with_request_id(too_large(), &key_value));
    }
    let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<LengthLimitError>() => {
            return Ok(with_request_id(too_large(), &key_value));
        }
        Err(err) => {
            tracing::debug!(error = %err, "idempotency: could not read the request body");
            return Ok(with_request_id(
                SentriError::validation("Could not read the request body").into_response(),
                &key_value,
            ));
        }
    };

    let uri = parts
        .extensions
        .get::<OriginalUri>()
        .map_or(&parts.uri, |o| &o.0);
    let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let fp = fingerprint(&parts.method, path_and_query, &body);
    let skey = storage_key(&parts, uri.path(), key);
    parts.extensions.insert(IdempotencyKey(key.to_owned()));
    let req = Request::from_parts(parts, Body::from(body));

    let ticket = match shared.store.try_begin(&skey, &fp).await {
        Ok(Begin::Started(ticket)) => ticket,
        Ok(Begin::Completed(stored)) => return Ok(replay(&stored, &key_value)),
        Ok(Begin::InProgress) => {
            let err = SentriError::new(
                ErrorCode::IdempotencyInProgress,
                "A request with this idempotency key is still being processed",
            )
            .with_retry_after(shared.retry_after);
            return Ok(with_request_id(err.into_response(), &key_value));
        }
        Ok(Begin::Mismatch) => {
            let err = SentriError::new(
                ErrorCode::IdempotencyKeyMismatch,
                "This idempotency key was already used with a different request",
            );
            return Ok(with_request_id(err.into_response(), &key_value));
        }
        Err(err) => match shared.policy {
            BackendErrorPolicy::FailClosed => {
                return Ok(with_request_id(
                    SentriError::unavailable(err).into_response(),
                    &key_value,
                ));
            }
            BackendErrorPolicy::FailOpen => {
                tracing::warn!(error = %err, "idempotency: store unavailable, running the request without idempotency (fail-open)");
                let res = inner.call(req).await?;
                return Ok(with_request_id(res.map(Body::new), &key_value));
            }
        },
    };

    let guard = InFlight {
        shared: shared.clone(),
        key: skey,
        ticket,
        armed: true,
    };
    let res = match inner.call(req).await {
        Ok(res) => res,
        Err(err) => {
            guard.release().await;
            return Err(err);
        }
    };
    let (parts, body) = res.into_parts();
    let mut body = Body::new(body);
    if !parts.status.is_success() || body.size_hint().lower() > shared.max_body as u64 {
        guard.release().await;
        return Ok(with_request_id(
            Response::from_parts(parts, body),
            &key_value,
        ));
    }

    // Read at most max_body + 1 bytes before deciding.
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    loop {
        let (extra, error) = match body.frame().await {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    total += data.len();
                    chunks.push(data);
                    if total <= shared.max_body {
                        continue;
                    }
                    (None, None)
                }
                // Trailers: not replayable, forward as is.
                Err(frame) => (Some(frame), None),
            },
            Some(Err(err)) => (None, Some(err)),
        };
        guard.release().await;
        let mut read: VecDeque<Frame<Bytes>> = chunks.into_iter().map(Frame::data).collect();
        read.extend(extra);
        let rest = error.is_none().then_some(body);
        let resumed = body::Resumed { read, error, rest };
        return Ok(with_request_id(
            Response::from_parts(parts, Body::new(resumed)),
            &key_value,
        ));
    }

    let body = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut buf = BytesMut::with_capacity(total);
            for chunk in &chunks {
                buf.extend_from_slice(chunk);
            }
            buf.freeze()
        }
    };
    let mut headers = Vec::with_capacity(shared.replay_headers.len());
    for name in &shared.replay_headers {
        for value in parts.headers.get_all(name) {
            headers.push((name.clone(), value.clone()));
        }
    }
    let stored = StoredResponse {
        fingerprint: fp,
        status: parts.status,
        headers,
        // An exact-size copy: a handler's body usually sits in a Vec grown by doubling
        // (serde_json, format!), and keeping a slice of it would keep the whole spare
        // capacity alive for the ttl (~2 KiB held per 1 KiB response in the bench).
        body: Bytes::copy_from_slice(&body),
    };
    if let Err(err) = shared.store.complete(&guard.key, ticket, stored).await {
        // Keep the marker: a retry gets 409 until ttl rather than a second execution.
        tracing::error!(error = %err, "idempotency: could not store the response; the key stays locked until its ttl");
    }
    guard.disarm();
    Ok(with_request_id(
        Response::from_parts(parts, Body::from(body)),
        &key_value,
    ))
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
