//! The SSO routes: parse, call the service, answer (redirects for the browser flow,
//! the envelope for everything else).

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};

use super::is_sso_code;
use super::service::{Callback, Completed, SsoService};
use crate::capability::Core;
use crate::core::error::{Result, SentriError};
use crate::http::cookies::read_cookie;
use crate::http::guard::CurrentUser;
use crate::http::{parts_meta, success};

type Svc = Arc<SsoService>;

pub(super) fn router(svc: Svc, core: &Core) -> Router {
    let signed_in = Router::new()
        .route(
            "/sso/{provider}/link",
            post(link_start).route_layer(core.sensitive()),
        )
        .route("/sso/links", get(links))
        .route(
            "/sso/links/{provider}",
            delete(unlink).route_layer(core.sensitive()),
        )
        .route_layer(core.protect());
    Router::new()
        .route("/sso/{provider}/start", get(start))
        .route("/sso/{provider}/callback", get(callback))
        .merge(signed_in)
        .with_state(svc)
}

/// The OpenAPI description of [`router`].
#[cfg(feature = "openapi")]
pub(super) fn openapi(doc: &crate::http::openapi::ApiDoc) -> utoipa::openapi::OpenApi {
    use crate::core::error::ErrorCode as E;
    use crate::http::openapi::{Method, any, object, of};
    use utoipa::openapi::schema::{ArrayBuilder, Type};
    let provider = "The identity provider's configured name";
    doc.paths([
        doc.op(
            Method::Get,
            "/sso/{provider}/start",
            "sso",
            "Start signing in with a provider",
        )
        .path_param("provider", provider)
        .query(
            "returnTo",
            Type::String,
            "Where to land afterwards (an allowed origin)",
        )
        .redirect(303, "To the identity provider")
        .err(&[E::NotFound, E::ValidationError, E::SsoProviderError]),
        doc.op(
            Method::Get,
            "/sso/{provider}/callback",
            "sso",
            "The provider's redirect back",
        )
        .path_param("provider", provider)
        .query("state", Type::String, "The state of the flow")
        .query("code", Type::String, "The authorization code")
        .query("error", Type::String, "The provider's refusal")
        .redirect(303, "Signed in (cookies set) or linked: to `returnTo`")
        .ok(
            200,
            "Signed in (the token pair, without cookies) or a second-factor challenge",
        )
        .err(&[
            E::NotFound,
            E::ValidationError,
            E::SsoStateInvalid,
            E::SsoProviderError,
            E::SsoRejected,
            E::SsoIdTokenInvalid,
            E::SsoNotAllowed,
            E::SsoLinkConflict,
            E::UserAlreadyExists,
        ]),
        doc.op(
            Method::Post,
            "/sso/{provider}/link",
            "sso",
            "Start linking a provider to the caller",
        )
        .signed_in(doc)
        .sensitive()
        .path_param("provider", provider)
        .query("returnTo", Type::String, "Where to land afterwards")
        .ok_data(
            200,
            "Continue at the identity provider",
            object([("url", of(Type::String))]),
        )
        .err(&[E::NotFound, E::ValidationError, E::SsoProviderError]),
        doc.op(
            Method::Get,
            "/sso/links",
            "sso",
            "The caller's linked providers",
        )
        .signed_in(doc)
        .ok_data(
            200,
            "Links",
            object([("links", ArrayBuilder::new().items(any()).into())]),
        ),
        doc.op(
            Method::Delete,
            "/sso/links/{provider}",
            "sso",
            "Unlink a provider",
        )
        .signed_in(doc)
        .sensitive()
        .path_param("provider", provider)
        .ok_data(200, "Unlinked", of(Type::Null))
        .err(&[E::NotFound, E::SsoLastSignInMethod]),
    ])
}

/// The query parameters of a request (the last value of each name wins).
fn query(raw: Option<String>) -> std::collections::HashMap<String, String> {
    form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn provider_name(path: std::result::Result<Path<String>, PathRejection>) -> Result<String> {
    path.map(|Path(p)| p)
        .map_err(|_| SentriError::new(crate::ErrorCode::NotFound, "Unknown identity provider"))
}

fn no_store(res: &mut Response) {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// `303 See Other` to `location` with these cookies.
fn see_other(location: &str, cookies: impl IntoIterator<Item = HeaderValue>) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    match HeaderValue::from_str(location) {
        Ok(v) => {
            res.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => {
            return SentriError::validation("returnTo is not a valid header value").into_response();
        }
    }
    for c in cookies {
        res.headers_mut().append(header::SET_COOKIE, c);
    }
    no_store(&mut res);
    res
}

async fn start(
    State(svc): State<Svc>,
    path: std::result::Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response> {
    let provider = provider_name(path)?;
    let q = query(raw);
    let started = svc
        .start(&provider, q.get("returnTo").map(String::as_str), None)
        .await?;
    Ok(see_other(&started.url, [started.cookie]))
}

async fn link_start(
    State(svc): State<Svc>,
    user: CurrentUser,
    path: std::result::Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response> {
    let provider = provider_name(path)?;
    let q = query(raw);
    let started = svc
        .start(
            &provider,
            q.get("returnTo").map(String::as_str),
            Some(&user.user.id),
        )
        .await?;
    let mut res = success(
        StatusCode::OK,
        "Continue at the identity provider",
        serde_json::json!({ "url": started.url }),
    );
    res.headers_mut().append(header::SET_COOKIE, started.cookie);
    no_store(&mut res);
    Ok(res)
}

async fn callback(
    State(svc): State<Svc>,
    path: std::result::Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
    req: axum::extract::Request,
) -> Response {
    let (parts, _) = req.into_parts();
    let meta = parts_meta(&parts);
    let result = match provider_name(path) {
        Ok(provider) => {
            let mut q = query(raw);
            let cb = Callback {
                state: q.remove("state"),
                code: q.remove("code"),
                error: q.remove("error"),
            };
            let binding = read_cookie(&parts.headers, svc.cookie_name());
            svc.callback(&provider, cb, binding, meta.clone()).await
        }
        Err(e) => Err(e),
    };
    let clear = svc.binding_cookie("");
    match result {
        Ok(Completed::SignedIn { res, return_to }) => signed_in(&svc, &res, &return_to, clear),
        Ok(Completed::Challenged(challenge)) => {
            // The second factor is asked for in the body (`POST /2fa/verify`), as after
            // a password login; no session exists yet.
            let outcome = crate::capability::SignIn::Challenge(challenge);
            let mut res = svc
                .core()
                .sign_in_response(&outcome, "Second factor required");
            res.headers_mut().append(header::SET_COOKIE, clear);
            res
        }
        Ok(Completed::Linked { return_to }) => see_other(&return_to, [clear]),
        Err(err) => {
            if is_sso_code(err.code()) {
                svc.failed(&err, meta);
            }
            let mut res = err.into_response();
            res.headers_mut().append(header::SET_COOKIE, clear);
            res
        }
    }
}

/// A browser (session cookies configured) is redirected to `returnTo` with its session
/// cookies; without cookies the token pair is answered in the body.
fn signed_in(
    svc: &SsoService,
    res: &crate::core::principal::AuthResult,
    return_to: &str,
    clear: HeaderValue,
) -> Response {
    let transport = &svc.core().transport;
    if transport.cookie.is_none() && transport.access_cookie.is_none() {
        let mut out = transport.token_response(StatusCode::OK, "Signed in", res);
        out.headers_mut().append(header::SET_COOKIE, clear);
        return out;
    }
    let cookies = transport.session_cookies(res);
    see_other(return_to, cookies.into_iter().chain([clear]))
}

async fn links(State(svc): State<Svc>, user: CurrentUser) -> Result<Response> {
    let links = svc.links(&user.user.id).await?;
    Ok(success(
        StatusCode::OK,
        "Links",
        serde_json::json!({ "links": links }),
    ))
}

async fn unlink(
    State(svc): State<Svc>,
    user: CurrentUser,
    path: std::result::Result<Path<String>, PathRejection>,
) -> Result<Response> {
    let provider = provider_name(path)?;
    svc.unlink(&user.user.id, &provider).await?;
    Ok(success(StatusCode::OK, "Unlinked", serde_json::Value::Null))
}
