//! The HTTP surface of server mode: `auth.router()`, the guard layers, the JSON body
//! rules and the error-envelope layer.

pub mod cookies;
pub(crate) mod csrf;
mod errors;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

pub use errors::{ErrorLayer, UnhandledCallback};

use crate::auth::{AuthResult, LoginInput, RegisterInput, ServerAuth, SessionMeta};
use crate::config::BoxFuture;
use crate::error::{ErrorCode, Result, SentriError, success};
use crate::layer::{Authenticate, Authenticated, CurrentUser, GuardLayer, PermitOptions};
use crate::user::AuthUser;

/// Largest JSON body the router reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON body with sentri's rules: `content-type: application/json`, at most 64 KiB,
/// well-formed, the right fields with the right types. Every failure is a 400
/// `VALIDATION_ERROR` (413 `PAYLOAD_TOO_LARGE` for size) in the envelope; the message
/// never echoes the submitted values.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = SentriError;

    async fn from_request(req: Request, _state: &S) -> Result<Self> {
        let bytes = read_json_bytes(req).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

async fn read_json_bytes(req: Request) -> Result<bytes::Bytes> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            let m = m.trim();
            m.eq_ignore_ascii_case("application/json")
                || (m.len() > 5 && m[m.len() - 5..].eq_ignore_ascii_case("+json"))
        });
    if !is_json {
        return Err(SentriError::validation(
            "Content-Type must be application/json",
        ));
    }
    axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            SentriError::new(
                ErrorCode::PayloadTooLarge,
                "Request body is too large (max 64 KiB)",
            )
        })
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    // Every body sentri reads is an object: an array must not fill the fields in order.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(SentriError::validation(
            "Request body must be a JSON object",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => SentriError::validation(
                "Request body has missing, duplicate or wrongly typed fields",
            ),
            Category::Syntax | Category::Eof | Category::Io => {
                SentriError::validation("Request body is not valid JSON")
            }
        }
    })
}

/// Compares secrets in constant time (over their SHA-256 digests, so the length of the
/// expected value does not leak either).
pub(crate) fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    let da = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, a);
    let db = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b);
    bool::from(da.as_ref().ct_eq(db.as_ref()))
}

fn session_meta(parts_headers: &HeaderMap, addr: Option<SocketAddr>) -> SessionMeta {
    SessionMeta {
        user_agent: parts_headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        ip: addr.map(|a| a.ip().to_string()),
    }
}

fn connect_addr(parts: &Parts) -> Option<SocketAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

impl ServerAuth {
    /// The access token of a request: `Authorization: Bearer` first, else the access
    /// cookie. `None` when there is none (or the bearer header is malformed).
    pub fn get_current_access_token<'a>(&self, parts: &'a Parts) -> Option<&'a str> {
        self.access_token_of(parts).ok().flatten().map(|(t, _)| t)
    }

    /// Bearer header first, else the access cookie (`true`: from the cookie); `Err` for
    /// a malformed bearer header.
    fn access_token_of<'a>(&self, parts: &'a Parts) -> Result<Option<(&'a str, bool)>> {
        match cookies::bearer_token(&parts.headers) {
            Ok(Some(t)) => Ok(Some((t, false))),
            Ok(None) => Ok(self
                .inner
                .access_cookie
                .as_ref()
                .and_then(|c| cookies::read_cookie(&parts.headers, &c.name))
                .map(|t| (t, true))),
            Err(()) => Err(SentriError::token_invalid("Malformed Authorization header")),
        }
    }

    /// CSRF protection for a request authenticated by a cookie (see [`csrf`]).
    fn check_cookie_request(&self, headers: &HeaderMap, method: &axum::http::Method) -> Result<()> {
        csrf::check(headers, method, &self.inner.trusted_origins)
    }

    fn auth_arc(&self) -> Arc<dyn Authenticate> {
        Arc::new(self.clone())
    }

    /// A layer that requires a valid access token of a live session.
    ///
    /// ```no_run
    /// # async fn demo(auth: sentri::ServerAuth) {
    /// use axum::{Router, routing::get};
    /// use sentri::CurrentUser;
    /// let app: Router = Router::new()
    ///     .route("/me", get(|u: CurrentUser| async move { u.user.identifier }))
    ///     .route_layer(auth.protect());
    /// # }
    /// ```
    pub fn protect(&self) -> GuardLayer {
        GuardLayer::protect(self.auth_arc())
    }

    /// A layer that requires at least one of `roles` (and authenticates by itself when
    /// no `protect()` ran before it). Panics at start-up on a role not in `valid_roles`.
    pub fn authorize<R, S>(&self, roles: R) -> GuardLayer
    where
        R: IntoIterator<Item = S>,
        S: Into<String>,
    {
        GuardLayer::authorize(self.auth_arc(), roles)
    }

    /// A layer that runs an async permission check; `options.roles` bypass it.
    pub fn permit(&self, options: PermitOptions) -> GuardLayer {
        GuardLayer::permit(self.auth_arc(), options)
    }

    /// A layer that renders every error response of the app in sentri's envelope
    /// (axum's plain-text rejections, 404/405, panics), with an optional callback for
    /// unhandled 500s.
    pub fn error_handler(&self) -> ErrorLayer {
        ErrorLayer::new()
    }

    /// The idempotency layer with this server's `redis_url` (see
    /// [`IdempotencyOptions`](crate::idempotency::IdempotencyOptions)).
    pub fn idempotency(
        &self,
        mut options: crate::idempotency::IdempotencyOptions,
    ) -> Result<crate::idempotency::IdempotencyLayer> {
        if options.redis_url.is_none() {
            options.redis_url = self.inner.redis_url.clone();
        }
        crate::idempotency::IdempotencyLayer::new(options)
    }

    /// All of sentri's endpoints, to nest under a prefix: `app.nest("/auth", auth.router())`.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        let protected = Router::new()
            .route("/logout-all", post(logout_all))
            .route("/me", get(me))
            .route("/change-password", post(change_password))
            .route("/change-identifier", post(change_identifier))
            .route_layer(self.protect());
        let admin = Router::new()
            .route("/users/{user_id}/roles", post(assign_roles))
            .route_layer(GuardLayer::any_role_unchecked(
                self.auth_arc(),
                vec![self.inner.admin_role.clone()],
            ));
        Router::new()
            .route("/register", post(register))
            .route("/login", post(login))
            .route("/refresh", post(refresh))
            .route("/logout", post(logout))
            .route("/keys", get(keys))
            .merge(protected)
            .merge(admin)
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(self.clone())
    }

    // ---- cookies -------------------------------------------------------------------

    fn session_cookies(&self, res: &AuthResult) -> Vec<HeaderValue> {
        let mut out = Vec::with_capacity(2);
        if let Some(c) = &self.inner.cookie
            && let Some(v) = cookies::refresh_cookie(c, &res.refresh_token, self.inner.refresh_ttl)
        {
            out.push(v);
        }
        if let Some(c) = &self.inner.access_cookie
            && let Some(v) = cookies::access_cookie(c, &res.access_token, self.inner.access_ttl)
        {
            out.push(v);
        }
        out
    }

    fn clear_cookies(&self) -> Vec<HeaderValue> {
        let mut out = Vec::with_capacity(2);
        if let Some(v) = self.inner.cookie.as_ref().and_then(cookies::clear_refresh) {
            out.push(v);
        }
        if let Some(v) = self
            .inner
            .access_cookie
            .as_ref()
            .and_then(cookies::clear_access)
        {
            out.push(v);
        }
        out
    }

    fn refresh_cookie_value<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        self.inner
            .cookie
            .as_ref()
            .and_then(|c| cookies::read_cookie(headers, &c.name))
    }

    /// The token-pair response of login and refresh.
    fn token_response(&self, status: StatusCode, message: &str, res: &AuthResult) -> Response {
        let mut data = serde_json::json!({
            "accessToken": res.access_token,
            "user": res.user,
        });
        if self.inner.cookie.is_none() {
            data["refreshToken"] = serde_json::Value::String(res.refresh_token.clone());
        }
        let mut res = with_cookies(success(status, message, data), self.session_cookies(res));
        no_store(res.headers_mut());
        res
    }

    async fn authenticate_request(&self, parts: &Parts) -> Result<Authenticated> {
        let token = self.access_token_of(parts)?;
        if let Some((_, true)) = token {
            self.check_cookie_request(&parts.headers, &parts.method)?;
        }
        let claims = match token {
            Some((token, _)) => match self.inner.tokens.verify_access(token) {
                Ok(claims) => claims,
                Err(err) if err.is(&ErrorCode::TokenExpired) => {
                    return self.silent_refresh(parts, true).await;
                }
                Err(err) => return Err(err),
            },
            None => return self.silent_refresh(parts, false).await,
        };
        if !self.is_session_active(&claims.sid).await? {
            return Err(SentriError::token_invalid("Session has been revoked"));
        }
        self.check_app_revocation(&claims.sid).await?;
        Ok(Authenticated {
            user: CurrentUser {
                user: AuthUser {
                    id: claims.sub,
                    identifier: claims.identifier,
                    roles: claims.roles,
                },
                session_id: claims.sid,
            },
            set_cookies: Vec::new(),
        })
    }

    /// No access token, or an expired one: try a silent refresh from the refresh cookie.
    ///
    /// Boxed on purpose: the refresh future is large, and keeping it out of
    /// `authenticate_request` keeps the per-request future (allocated and moved on every
    /// protected request) small.
    fn silent_refresh<'a>(
        &'a self,
        parts: &'a Parts,
        expired: bool,
    ) -> BoxFuture<'a, Result<Authenticated>> {
        Box::pin(async move {
            match self.refresh_cookie_value(&parts.headers) {
                Some(refresh) => {
                    self.check_cookie_request(&parts.headers, &parts.method)?;
                    let res = self
                        .refresh_request(refresh, session_meta(&parts.headers, connect_addr(parts)))
                        .await
                        .map_err(|e| {
                            if e.status().is_server_error() {
                                e
                            } else if expired {
                                SentriError::token_expired()
                            } else {
                                SentriError::unauthorized("Authentication required")
                            }
                        })?;
                    let set_cookies = self.session_cookies(&res);
                    Ok(Authenticated {
                        user: CurrentUser {
                            user: res.user,
                            session_id: res.session_id,
                        },
                        set_cookies,
                    })
                }
                None if expired => Err(SentriError::token_expired()),
                None => Err(SentriError::unauthorized("Authentication required")),
            }
        })
    }
}

impl Authenticate for ServerAuth {
    fn authenticate<'a>(&'a self, parts: &'a Parts) -> BoxFuture<'a, Result<Authenticated>> {
        Box::pin(self.authenticate_request(parts))
    }

    fn check_role_names(&self, roles: &[String]) {
        for role in roles {
            assert!(
                self.inner.valid_roles.contains(role),
                "sentri: role {role:?} is not one of valid_roles {:?}",
                self.inner.valid_roles
            );
        }
    }
}

/// `Cache-Control: no-store` and `Pragma: no-cache` on a response carrying tokens
/// (RFC 6749 §5.1).
fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

fn with_cookies(mut res: Response, cookies: Vec<HeaderValue>) -> Response {
    for c in cookies {
        res.headers_mut().append(header::SET_COOKIE, c);
    }
    res
}

// ---- handlers ------------------------------------------------------------------------

async fn register(State(auth): State<ServerAuth>, req: Request) -> Result<Response> {
    let trusted = match &auth.inner.api_key {
        Some(expected) => {
            let given = req
                .headers()
                .get("x-api-key")
                .map(HeaderValue::as_bytes)
                .unwrap_or_default();
            if !secrets_equal(given, expected.as_bytes()) {
                return Err(SentriError::unauthorized("A valid API key is required"));
            }
            true
        }
        None => false,
    };
    let JsonBody(input): JsonBody<RegisterInput> = JsonBody::from_request(req, &()).await?;
    auth.check_registration_roles(input.roles.as_deref(), trusted)?;
    let user = match &auth.inner.handlers.register {
        Some(h) => h(auth.clone(), input).await?,
        None => auth.register(input).await?,
    };
    Ok(success(
        StatusCode::CREATED,
        "User registered",
        serde_json::json!({ "user": user }),
    ))
}

async fn login(State(auth): State<ServerAuth>, req: Request) -> Result<Response> {
    let meta = session_meta(
        req.headers(),
        req.extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0),
    );
    let JsonBody(input): JsonBody<LoginInput> = JsonBody::from_request(req, &()).await?;
    let res = match &auth.inner.handlers.login {
        Some(h) => h(auth.clone(), input, meta).await?,
        None => auth.login(input, meta).await?,
    };
    Ok(auth.token_response(StatusCode::OK, "Login successful", &res))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefreshBody {
    #[serde(default)]
    refresh_token: Option<String>,
}

/// The refresh token of a request: the cookie (after the CSRF check), else
/// `{"refreshToken"}` in a JSON body.
async fn refresh_token_of(auth: &ServerAuth, req: Request) -> Result<Option<String>> {
    if let Some(v) = auth.refresh_cookie_value(req.headers()) {
        auth.check_cookie_request(req.headers(), req.method())?;
        return Ok(Some(v.to_owned()));
    }
    let has_body = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_none_or(|v| v.as_bytes() != b"0");
    if !has_body || req.headers().get(header::CONTENT_TYPE).is_none() {
        return Ok(None);
    }
    let JsonBody(body): JsonBody<RefreshBody> = JsonBody::from_request(req, &()).await?;
    Ok(body.refresh_token)
}

async fn refresh(State(auth): State<ServerAuth>, req: Request) -> Result<Response> {
    let meta = session_meta(
        req.headers(),
        req.extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0),
    );
    let Some(token) = refresh_token_of(&auth, req).await? else {
        return Err(SentriError::token_invalid("Refresh token required"));
    };
    match auth.refresh_request(&token, meta).await {
        Ok(res) => Ok(auth.token_response(StatusCode::OK, "Token refreshed", &res)),
        Err(err) if !err.status().is_server_error() => {
            // A dead refresh token: clear the cookies so the client stops sending it.
            Ok(with_cookies(err.into_response(), auth.clear_cookies()))
        }
        Err(err) => Err(err),
    }
}

async fn logout(State(auth): State<ServerAuth>, req: Request) -> Result<Response> {
    // A malformed body must not make logout fail (it is 200), a cross-origin one must.
    let token = match refresh_token_of(&auth, req).await {
        Ok(token) => token,
        Err(err) if err.is(&ErrorCode::Forbidden) => return Err(err),
        Err(_) => None,
    };
    match &auth.inner.handlers.logout {
        Some(h) => h(auth.clone(), token).await?,
        None => auth.logout(token.as_deref()).await?,
    }
    Ok(with_cookies(
        success(StatusCode::OK, "Logged out", serde_json::Value::Null),
        auth.clear_cookies(),
    ))
}

async fn logout_all(State(auth): State<ServerAuth>, user: CurrentUser) -> Result<Response> {
    match &auth.inner.handlers.logout_all {
        Some(h) => h(auth.clone(), user.user.id).await?,
        None => auth.logout_all(&user.user.id).await?,
    }
    Ok(with_cookies(
        success(
            StatusCode::OK,
            "Logged out of all sessions",
            serde_json::Value::Null,
        ),
        auth.clear_cookies(),
    ))
}

async fn me(State(auth): State<ServerAuth>, user: CurrentUser) -> Result<Response> {
    let user = auth.get_user(&user.user.id).await?;
    Ok(success(
        StatusCode::OK,
        "Current user",
        serde_json::json!({ "user": user }),
    ))
}

#[derive(Deserialize)]
struct RolesBody {
    roles: Vec<String>,
}

async fn assign_roles(
    State(auth): State<ServerAuth>,
    path: std::result::Result<Path<String>, axum::extract::rejection::PathRejection>,
    JsonBody(body): JsonBody<RolesBody>,
) -> Result<Response> {
    let Ok(Path(user_id)) = path else {
        return Err(SentriError::user_not_found());
    };
    let user = match &auth.inner.handlers.assign_roles {
        Some(h) => h(auth.clone(), user_id, body.roles).await?,
        None => auth.assign_roles(&user_id, &body.roles).await?,
    };
    Ok(success(
        StatusCode::OK,
        "Roles assigned",
        serde_json::json!({ "user": user }),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChangePasswordBody {
    current_password: String,
    new_password: String,
}

async fn change_password(
    State(auth): State<ServerAuth>,
    user: CurrentUser,
    JsonBody(body): JsonBody<ChangePasswordBody>,
) -> Result<Response> {
    match &auth.inner.handlers.change_password {
        Some(h) => {
            h(
                auth.clone(),
                user.user.id,
                body.current_password,
                body.new_password,
            )
            .await?
        }
        None => {
            auth.change_password(&user.user.id, &body.current_password, &body.new_password)
                .await?
        }
    }
    Ok(with_cookies(
        success(StatusCode::OK, "Password changed", serde_json::Value::Null),
        auth.clear_cookies(),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChangeIdentifierBody {
    identifier: String,
    current_password: String,
}

async fn change_identifier(
    State(auth): State<ServerAuth>,
    user: CurrentUser,
    JsonBody(body): JsonBody<ChangeIdentifierBody>,
) -> Result<Response> {
    let updated = match &auth.inner.handlers.change_identifier {
        Some(h) => {
            h(
                auth.clone(),
                user.user.id,
                body.identifier,
                body.current_password,
            )
            .await?
        }
        None => {
            auth.change_identifier(&user.user.id, &body.identifier, &body.current_password)
                .await?
        }
    };
    Ok(success(
        StatusCode::OK,
        "Identifier changed",
        serde_json::json!({ "user": updated }),
    ))
}

async fn keys(State(auth): State<ServerAuth>) -> Response {
    if !auth.inner.tokens.has_public_keys() {
        return SentriError::new(ErrorCode::NotFound, "No public keys are published")
            .into_response();
    }
    let mut res = Json(auth.inner.tokens.jwks()).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    res
}

pub(crate) async fn not_found() -> SentriError {
    SentriError::new(ErrorCode::NotFound, "Not found")
}

pub(crate) async fn method_not_allowed() -> SentriError {
    SentriError::custom(
        "METHOD_NOT_ALLOWED",
        "Method not allowed",
        StatusCode::METHOD_NOT_ALLOWED,
    )
}
