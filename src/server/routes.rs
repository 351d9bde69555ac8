//! The core routes of `auth.router()`: register, login, refresh, logout, logout-all, me
//! and the JWKS. Each parses, calls the service (or the application's override) and
//! formats the envelope.

use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::ServerAuth;
use crate::capability::SignIn;
use crate::core::crypto::secrets_equal;
use crate::core::error::{ErrorCode, Result, SentriError};
use crate::http::{CurrentUser, JsonBody, request_meta, success};
use crate::identity::{LoginInput, RegisterInput};

pub(super) fn core_routes(auth: &ServerAuth) -> Router {
    let signed_in = Router::new()
        .route("/logout-all", post(logout_all))
        .route("/reauthenticate", post(reauthenticate))
        .route("/me", get(me))
        .route_layer(auth.protect());
    let router = Router::new()
        .route("/register", post(register))
        .route("/login", post(login))
        .route("/refresh", post(refresh))
        .route("/logout", post(logout))
        .route("/keys", get(keys))
        .merge(signed_in);
    #[cfg(feature = "openapi")]
    let router = if auth.inner.openapi.0 {
        router.route("/openapi.json", get(super::openapi::serve))
    } else {
        router
    };
    router.with_state(auth.clone())
}

/// The OpenAPI description of the core routes.
#[cfg(feature = "openapi")]
pub(super) fn openapi(
    auth: &ServerAuth,
    doc: &crate::http::openapi::ApiDoc,
) -> utoipa::openapi::OpenApi {
    use crate::http::openapi::{Method, any, object, of, user};
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    use utoipa::openapi::security::SecurityRequirement;
    let cookies = auth.inner.core.transport.cookie.is_some();
    let mut tokens = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("accessToken", of(Type::String))
        .property("user", user())
        .required("accessToken")
        .required("user");
    if !cookies {
        tokens = tokens
            .property("refreshToken", of(Type::String))
            .required("refreshToken");
    }
    let tokens: utoipa::openapi::RefOr<_> = tokens.into();
    let login_data = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "The token pair, or (a second factor is required) `twoFactorRequired` and \
             `twoFactorToken` for `POST /2fa/verify`",
        ))
        .property("accessToken", of(Type::String))
        .property("refreshToken", of(Type::String))
        .property("user", user())
        .property("twoFactorRequired", of(Type::Boolean))
        .property("twoFactorToken", of(Type::String));
    let throttled: &[ErrorCode] = if auth.throttle().is_enabled() {
        &[ErrorCode::TooManyAttempts]
    } else {
        &[]
    };
    let mut register = doc
        .op(Method::Post, "/register", "core", "Register a user")
        .describe(
            "Creates an account (no tokens). Without the server's API key only the \
             public roles may be asked for.",
        )
        .body::<RegisterBody>()
        .ok_data(201, "User registered", object([("user", user())]))
        .err(&[
            ErrorCode::UserAlreadyExists,
            ErrorCode::InvalidRole,
            ErrorCode::Forbidden,
        ])
        .err(throttled);
    if !auth.inner.signup_open {
        register = register.err(&[ErrorCode::NotFound]);
    }
    if auth.inner.api_key.is_some() {
        register = register
            .security_requirement(SecurityRequirement::default())
            .security(super::openapi::REGISTRATION_KEY)
            .err(&[ErrorCode::Unauthorized]);
    }
    let mut refresh = doc
        .op(Method::Post, "/refresh", "core", "Rotate the refresh token")
        .describe(
            "Reads the refresh cookie (cross-origin requests refused), else \
             `{\"refreshToken\"}`. Answers a new pair; a dead token clears the cookies.",
        )
        .optional_body::<RefreshBody>()
        .ok_data(200, "Token refreshed", tokens)
        .err(&[
            ErrorCode::TokenInvalid,
            ErrorCode::TokenExpired,
            ErrorCode::ValidationError,
            ErrorCode::PayloadTooLarge,
        ]);
    let mut logout = doc
        .op(
            Method::Post,
            "/logout",
            "core",
            "End the session of a refresh token",
        )
        .describe("Always 200 for a missing, invalid or used token; clears the cookies.")
        .optional_body::<RefreshBody>()
        .ok_data(200, "Logged out", of(Type::Null));
    if cookies {
        refresh = refresh
            .security_requirement(SecurityRequirement::default())
            .security(crate::http::openapi::REFRESH_COOKIE)
            .err(&[ErrorCode::Forbidden]);
        logout = logout
            .security_requirement(SecurityRequirement::default())
            .security(crate::http::openapi::REFRESH_COOKIE)
            .err(&[ErrorCode::Forbidden]);
    }
    let mut ops = vec![
        register,
        doc.op(Method::Post, "/login", "core", "Log in")
            .describe(
                "The same `INVALID_CREDENTIALS` for an unknown identifier and a wrong \
                 password. A user with a second factor gets a challenge instead of tokens.",
            )
            .body::<crate::identity::LoginInput>()
            .ok_data(
                200,
                "Login successful, or a second factor is required",
                login_data.into(),
            )
            .err(&[ErrorCode::InvalidCredentials, ErrorCode::EmailNotVerified])
            .err(throttled),
        refresh,
        logout,
        doc.op(
            Method::Post,
            "/logout-all",
            "core",
            "End every session of the caller",
        )
        .signed_in(doc)
        .ok_data(200, "Logged out of all sessions", of(Type::Null)),
        doc.op(
            Method::Post,
            "/reauthenticate",
            "core",
            "Prove the caller's factors again",
        )
        .describe(
            "Sensitive operations need an authentication within the re-authentication \
             window. This proves every factor the account has (`password`, and `code` \
             with a second factor) and answers a new access token (and access cookie) \
             whose `auth_time` is now; the session's refreshes carry it on.",
        )
        .signed_in(doc)
        .body::<ReauthBody>()
        .ok_data(
            200,
            "Re-authenticated",
            object([("accessToken", of(Type::String)), ("user", user())]),
        )
        .err(&[
            ErrorCode::InvalidCredentials,
            ErrorCode::TwoFactorRequired,
            ErrorCode::TwoFactorInvalid,
            ErrorCode::TwoFactorLocked,
            ErrorCode::ReauthRequired,
            ErrorCode::TooManyAttempts,
            ErrorCode::UserNotFound,
        ]),
        doc.op(Method::Get, "/me", "core", "The caller")
            .signed_in(doc)
            .ok_data(200, "Current user", object([("user", user())]))
            .err(&[ErrorCode::UserNotFound]),
        doc.op(Method::Get, "/keys", "core", "The JSON Web Key Set")
            .describe("The public keys that verify access tokens (404 with symmetric keys only).")
            .raw(
                "The JWKS",
                object([(
                    "keys",
                    utoipa::openapi::schema::ArrayBuilder::new()
                        .items(any())
                        .into(),
                )]),
            )
            .err(&[ErrorCode::NotFound]),
    ];
    if auth.inner.openapi.0 {
        ops.push(
            doc.op(Method::Get, "/openapi.json", "core", "This document")
                .raw("The OpenAPI 3.1 document", of(Type::Object)),
        );
    }
    doc.paths(ops)
}

/// `X-Api-Key` against the configured key (constant time): `Ok(true)` when it matches,
/// `Ok(false)` when no key is configured.
fn api_key_trusted(auth: &ServerAuth, req: &Request) -> Result<bool> {
    let Some(expected) = &auth.inner.api_key else {
        return Ok(false);
    };
    let given = req
        .headers()
        .get("x-api-key")
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    if !secrets_equal(given, expected.as_bytes()) {
        return Err(SentriError::unauthorized("A valid API key is required"));
    }
    Ok(true)
}

/// The body of `POST /register`: sentri 2.1's ([`RegisterInput`]), plus an optional
/// `email`. Spelled out (not `#[serde(flatten)]`, which would buffer ignored fields).
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(
        description = "A new account: `roles` only with the API key or among the public \
        roles; `email` (with a capability that mails accounts) the address of a username"
    )
)]
struct RegisterBody {
    identifier: String,
    password: String,
    #[serde(default)]
    roles: Option<Vec<String>>,
    #[serde(default)]
    email: Option<String>,
}

async fn register(State(auth): State<ServerAuth>, req: Request) -> Result<Response> {
    if !auth.inner.signup_open {
        return Err(not_found().await);
    }
    let trusted = api_key_trusted(&auth, &req)?;
    let meta = request_meta(req.headers(), req.extensions());
    let JsonBody(body): JsonBody<RegisterBody> = JsonBody::from_request(req, &()).await?;
    let RegisterBody {
        identifier,
        password,
        roles,
        email,
    } = body;
    let input = RegisterInput {
        identifier,
        password,
        roles,
    };
    auth.check_registration_roles(input.roles.as_deref(), trusted)?;
    // Without a capability that mails accounts, `email` is ignored like any unknown
    // field (the body of sentri 2.1).
    let email = email.filter(|_| auth.inner.register_email);
    let attempt = auth.registration_attempt(&meta, trusted).await?;
    let result = auth
        .inner
        .overrides
        .register
        .run(auth.clone(), input, |a, i| async move {
            a.register_with_email(i, email).await
        })
        .await;
    attempt.spent(&result).await;
    let user = result?;
    Ok(success(
        StatusCode::CREATED,
        "User registered",
        serde_json::json!({ "user": user }),
    ))
}

async fn login(State(auth): State<ServerAuth>, req: Request) -> Result<Response> {
    let meta = request_meta(req.headers(), req.extensions());
    let JsonBody(input): JsonBody<LoginInput> = JsonBody::from_request(req, &()).await?;
    let login = &auth.inner.overrides.login;
    let outcome = if login.is_set() {
        // An override answers with a session (its `auth.login()` fails for a login that
        // needs a second factor).
        let input = (input, meta);
        let res = login
            .run(auth.clone(), input, |a, (i, m)| async move {
                a.login(i, m).await
            })
            .await?;
        SignIn::Session(res)
    } else {
        auth.login_or_challenge(input, meta).await?
    };
    Ok(auth
        .inner
        .core
        .sign_in_response(&outcome, "Login successful"))
}

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
struct RefreshBody {
    #[serde(default)]
    refresh_token: Option<String>,
}

/// The refresh token of a request: the cookie (after the CSRF check), else
/// `{"refreshToken"}` in a JSON body.
async fn refresh_token_of(auth: &ServerAuth, req: Request) -> Result<Option<String>> {
    let transport = &auth.inner.core.transport;
    if let Some(v) = transport.refresh_cookie_value(req.headers()) {
        transport.check_cookie_request(req.headers(), req.method())?;
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
    let meta = request_meta(req.headers(), req.extensions());
    let Some(token) = refresh_token_of(&auth, req).await? else {
        return Err(SentriError::token_invalid("Refresh token required"));
    };
    let transport = &auth.inner.core.transport;
    match auth.refresh_request(&token, meta).await {
        Ok(res) => Ok(transport.token_response(StatusCode::OK, "Token refreshed", &res)),
        // A dead refresh token: clear the cookies so the client stops sending it.
        Err(err) if !err.status().is_server_error() => {
            Ok(transport.with_cleared_cookies(err.into_response()))
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
    auth.inner
        .overrides
        .logout
        .run(auth.clone(), token, |a, t| async move {
            a.logout(t.as_deref()).await
        })
        .await?;
    let res = success(StatusCode::OK, "Logged out", serde_json::Value::Null);
    Ok(auth.inner.core.transport.with_cleared_cookies(res))
}

async fn logout_all(State(auth): State<ServerAuth>, user: CurrentUser) -> Result<Response> {
    auth.inner
        .overrides
        .logout_all
        .run(auth.clone(), user.user.id, |a, u| async move {
            a.logout_all(&u).await
        })
        .await?;
    let res = success(
        StatusCode::OK,
        "Logged out of all sessions",
        serde_json::Value::Null,
    );
    Ok(auth.inner.core.transport.with_cleared_cookies(res))
}

/// The body of `POST /reauthenticate`: the factors the account has.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(
        description = "The account's factors: `password` when it has one, `code` (a TOTP \
        or backup code) when it has a second factor"
    )
)]
struct ReauthBody {
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

async fn reauthenticate(
    State(auth): State<ServerAuth>,
    user: CurrentUser,
    JsonBody(body): JsonBody<ReauthBody>,
) -> Result<Response> {
    let (token, _) = auth
        .core()
        .reauthenticate(
            &user.user.id,
            &user.session_id,
            body.password.as_deref(),
            body.code.as_deref(),
        )
        .await?;
    let transport = &auth.inner.core.transport;
    Ok(transport.access_response(
        "Re-authenticated",
        &token,
        serde_json::json!({ "user": user.user }),
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

async fn keys(State(auth): State<ServerAuth>) -> Response {
    if !auth.inner.tokens.has_public_keys() {
        return SentriError::new(ErrorCode::NotFound, "No public keys are published")
            .into_response();
    }
    let max_age = auth
        .inner
        .keystore
        .as_ref()
        .map_or(crate::keystore::MAX_JWKS_MAX_AGE, |store| {
            store.jwks_max_age()
        });
    let mut res = Json(auth.inner.tokens.jwks()).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("public, max-age={}", max_age.as_secs())) {
        res.headers_mut().insert(header::CACHE_CONTROL, value);
    }
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
