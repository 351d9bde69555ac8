//! The error-envelope layer: every error response of the app in sentri's envelope.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use tower_layer::Layer;
use tower_service::Service;

use crate::core::BoxFuture;
use crate::core::error::{ErrorCode, SentriError};

/// Called with the status of every unhandled 5xx (a panic, or a plain 500 from a
/// handler that did not use [`SentriError`]).
pub type UnhandledCallback = Arc<dyn Fn(StatusCode) + Send + Sync>;

/// Renders error responses that are not already JSON (axum's plain-text rejections,
/// 404, 405, 413, panics) as sentri envelopes. Responses that are already JSON pass
/// untouched, so a handler's own `SentriError` keeps its code.
///
/// ```
/// use axum::{Router, routing::get};
/// let app: Router = Router::new()
///     .route("/", get(|| async { "hi" }))
///     .layer(sentri::http::ErrorLayer::new());
/// ```
#[derive(Clone, Default)]
pub struct ErrorLayer {
    on_unhandled: Option<UnhandledCallback>,
}

impl fmt::Debug for ErrorLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorLayer")
            .field("on_unhandled", &self.on_unhandled.is_some())
            .finish()
    }
}

impl ErrorLayer {
    /// A layer without a callback.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the callback for unhandled 5xx responses.
    pub fn on_unhandled(mut self, f: impl Fn(StatusCode) + Send + Sync + 'static) -> Self {
        self.on_unhandled = Some(Arc::new(f));
        self
    }
}

impl<S> Layer<S> for ErrorLayer {
    type Service = ErrorService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ErrorService {
            inner,
            on_unhandled: self.on_unhandled.clone(),
        }
    }
}

/// The service of [`ErrorLayer`].
#[derive(Clone)]
pub struct ErrorService<S> {
    inner: S,
    on_unhandled: Option<UnhandledCallback>,
}

impl<S> fmt::Debug for ErrorService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorService").finish_non_exhaustive()
    }
}

fn is_json(res: &Response) -> bool {
    res.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

fn envelope_for(status: StatusCode) -> SentriError {
    let (code, message) = match status {
        StatusCode::BAD_REQUEST
        | StatusCode::UNSUPPORTED_MEDIA_TYPE
        | StatusCode::UNPROCESSABLE_ENTITY => (ErrorCode::ValidationError, "Invalid request"),
        StatusCode::UNAUTHORIZED => (ErrorCode::Unauthorized, "Authentication required"),
        StatusCode::FORBIDDEN => (ErrorCode::Forbidden, "Forbidden"),
        StatusCode::NOT_FOUND => (ErrorCode::NotFound, "Not found"),
        StatusCode::PAYLOAD_TOO_LARGE => (ErrorCode::PayloadTooLarge, "Request body is too large"),
        StatusCode::SERVICE_UNAVAILABLE => (
            ErrorCode::ServiceUnavailable,
            "Service temporarily unavailable",
        ),
        s if s.is_server_error() => (ErrorCode::InternalError, "Internal server error"),
        StatusCode::METHOD_NOT_ALLOWED => (
            ErrorCode::Custom("METHOD_NOT_ALLOWED".into()),
            "Method not allowed",
        ),
        _ => (ErrorCode::Custom("HTTP_ERROR".into()), "Request failed"),
    };
    SentriError::new(code, message).with_status(status)
}

impl<S> Service<Request> for ErrorService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let fut = self.inner.call(req);
        let on_unhandled = self.on_unhandled.clone();
        Box::pin(async move {
            let res = match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
                Ok(Ok(res)) => res,
                Ok(Err(never)) => match never {},
                Err(_) => {
                    tracing::error!("handler panicked");
                    if let Some(cb) = &on_unhandled {
                        cb(StatusCode::INTERNAL_SERVER_ERROR);
                    }
                    return Ok(envelope_for(StatusCode::INTERNAL_SERVER_ERROR).into_response());
                }
            };
            let status = res.status();
            if !(status.is_client_error() || status.is_server_error()) || is_json(&res) {
                return Ok(res);
            }
            if status.is_server_error()
                && let Some(cb) = &on_unhandled
            {
                cb(status);
            }
            let (parts, _) = res.into_parts();
            let mut out = envelope_for(status).into_response();
            for (name, value) in parts.headers.iter() {
                if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                    out.headers_mut().append(name.clone(), value.clone());
                }
            }
            Ok(out)
        })
    }
}
