//! The HTTP building blocks shared by the server, its capabilities and client mode: the
//! JSON envelope, `JsonBody`, cookies and bearer parsing, CSRF checks, the guard layers
//! (`protect`, `authorize`, `permit`) and the error layer. It knows no capability.

mod body;
mod client_addr;
pub mod cookies;
#[cfg(feature = "server")]
pub(crate) mod csrf;
mod envelope;
mod errors;
pub mod guard;
#[cfg(feature = "openapi")]
#[cfg_attr(docsrs, doc(cfg(feature = "openapi")))]
pub mod openapi;
pub mod tenant;
#[cfg(feature = "server")]
pub mod transport;

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::HeaderValue;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::Response;

pub use body::{JsonBody, MAX_BODY_BYTES};
pub use client_addr::{ForwardedHeader, TrustedProxies};
pub use envelope::{ApiResponse, success};
pub use errors::{ErrorLayer, UnhandledCallback};
pub use guard::{
    Admits, Authenticate, Authenticated, CredentialInfo, CurrentUser, DEFAULT_REAUTH_WINDOW,
    GuardLayer, PermitOptions,
};
pub use tenant::{CurrentWorkspace, Membership};

use crate::core::principal::SessionMeta;

/// Where a request came from: its `User-Agent` and, when the app was served with
/// `into_make_service_with_connect_info`, the client address: the peer address, or,
/// when the peer is one of the [`TrustedProxies`] the server was configured with (an
/// extension `auth.router()` adds), the address its forwarding header names.
/// Forwarding headers from anyone else are ignored.
pub fn request_meta(headers: &HeaderMap, extensions: &axum::http::Extensions) -> SessionMeta {
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let ip = match (peer, extensions.get::<std::sync::Arc<TrustedProxies>>()) {
        (Some(peer), Some(proxies)) => Some(proxies.client(headers, peer)),
        (peer, _) => peer,
    };
    SessionMeta {
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        ip: ip.map(|ip| ip.to_string()),
    }
}

/// [`request_meta`] of a request head.
pub fn parts_meta(parts: &Parts) -> SessionMeta {
    request_meta(&parts.headers, &parts.extensions)
}

/// `Cache-Control: no-store` and `Pragma: no-cache` on a response carrying tokens
/// (RFC 6749 §5.1).
#[cfg(feature = "server")]
pub(crate) fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// Appends `Set-Cookie` values to a response.
pub(crate) fn with_cookies(mut res: Response, cookies: Vec<HeaderValue>) -> Response {
    for c in cookies {
        res.headers_mut().append(header::SET_COOKIE, c);
    }
    res
}
