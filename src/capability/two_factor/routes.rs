//! The two-factor routes: parse, call the service, answer.

use axum::Router;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{delete, get, post};
use serde::Deserialize;

use super::TwoFactorService;
use crate::capability::Core;
use crate::core::error::{ErrorCode, Result, SentriError};
use crate::core::principal::Assurance;
use crate::http::guard::CurrentUser;
use crate::http::{JsonBody, request_meta, success};

pub(super) fn router(service: TwoFactorService, core: &Core) -> Router {
    let signed_in = Router::new()
        .route("/2fa", get(status))
        .route("/2fa/totp/enroll", post(enroll))
        .route("/2fa/totp/confirm", post(confirm))
        .route(
            "/2fa/totp/{id}",
            delete(remove).route_layer(core.sensitive()),
        )
        .route(
            "/2fa/backup-codes",
            post(regenerate).route_layer(core.sensitive()),
        )
        .route_layer(core.protect());
    Router::new()
        .route("/2fa/verify", post(verify))
        .merge(signed_in)
        .with_state(service)
}

/// The OpenAPI description of [`router`].
#[cfg(feature = "openapi")]
pub(super) fn openapi(doc: &crate::http::openapi::ApiDoc) -> utoipa::openapi::OpenApi {
    use crate::core::error::ErrorCode as E;
    use crate::http::openapi::{Method, object, of, strings, user};
    use utoipa::openapi::schema::Type;
    let codes = || object([("backupCodes", strings())]);
    doc.paths([
        doc.op(Method::Get, "/2fa", "two-factor", "The caller's second factors")
            .signed_in(doc)
            .ok(200, "Two-factor status"),
        doc.op(Method::Post, "/2fa/totp/enroll", "two-factor", "Enrol a TOTP device")
            .describe("Needs the password; the device is active once confirmed with a code.")
            .signed_in(doc)
            .body::<EnrollBody>()
            .ok(201, "Confirm the device with a code")
            .err(&[E::InvalidCredentials, E::TwoFactorRequired, E::UserNotFound, E::UserAlreadyExists, E::TooManyAttempts]),
        doc.op(Method::Post, "/2fa/totp/confirm", "two-factor", "Confirm a TOTP device")
            .describe("Answers the backup codes, once.")
            .signed_in(doc)
            .body::<ConfirmBody>()
            .ok_data(200, "Two-factor device confirmed", codes())
            .err(&[E::TwoFactorInvalid, E::TwoFactorLocked, E::NotFound]),
        doc.op(Method::Delete, "/2fa/totp/{id}", "two-factor", "Remove a TOTP device")
            .signed_in(doc)
            .sensitive()
            .path_param("id", "The device id")
            .body::<BothFactors>()
            .ok_data(200, "Two-factor device removed", of(Type::Null))
            .err(&[E::InvalidCredentials, E::TwoFactorInvalid, E::TwoFactorLocked, E::TwoFactorRequired, E::NotFound, E::TooManyAttempts])
            .err_custom(405, "METHOD_NOT_ALLOWED"),
        doc.op(Method::Post, "/2fa/backup-codes", "two-factor", "Regenerate the backup codes")
            .signed_in(doc)
            .sensitive()
            .body::<BothFactors>()
            .ok_data(200, "Backup codes regenerated", codes())
            .err(&[E::InvalidCredentials, E::TwoFactorInvalid, E::TwoFactorLocked, E::NotFound, E::TooManyAttempts]),
        doc.op(Method::Post, "/2fa/verify", "two-factor", "Complete a login with a second factor")
            .describe("`twoFactorToken` from the login's challenge and a TOTP or backup code; answers like `POST /login`: the login steps registered after two-factor still run (e.g. `EMAIL_NOT_VERIFIED`).")
            .body::<VerifyBody>()
            .ok_data(200, "Login successful", object([("accessToken", of(Type::String)), ("user", user())]))
            .err(&[E::TwoFactorInvalid, E::TwoFactorLocked, E::TooManyAttempts, E::EmailNotVerified]),
    ])
}

async fn status(State(s): State<TwoFactorService>, user: CurrentUser) -> Result<Response> {
    let data = s.status(&user.user.id).await?;
    Ok(success(StatusCode::OK, "Two-factor status", data))
}

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
struct EnrollBody {
    password: String,
    #[serde(default)]
    name: Option<String>,
}

async fn enroll(
    State(s): State<TwoFactorService>,
    user: CurrentUser,
    assurance: Option<Assurance>,
    JsonBody(body): JsonBody<EnrollBody>,
) -> Result<Response> {
    let enrolment = s
        .enroll(&user.user, &body.password, body.name, assurance.as_ref())
        .await?;
    Ok(success(
        StatusCode::CREATED,
        "Confirm the device with a code",
        enrolment,
    ))
}

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
struct ConfirmBody {
    device_id: String,
    code: String,
}

async fn confirm(
    State(s): State<TwoFactorService>,
    user: CurrentUser,
    JsonBody(body): JsonBody<ConfirmBody>,
) -> Result<Response> {
    let codes = s
        .confirm(&user.user.id, &body.device_id, &body.code)
        .await?;
    Ok(success(
        StatusCode::OK,
        "Two-factor device confirmed",
        serde_json::json!({ "backupCodes": codes }),
    ))
}

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
struct BothFactors {
    password: String,
    code: String,
}

async fn remove(
    State(s): State<TwoFactorService>,
    user: CurrentUser,
    path: std::result::Result<Path<String>, axum::extract::rejection::PathRejection>,
    JsonBody(body): JsonBody<BothFactors>,
) -> Result<Response> {
    let Ok(Path(id)) = path else {
        return Err(SentriError::new(ErrorCode::NotFound, "No such device"));
    };
    s.remove_device(&user.user.id, &id, &body.password, &body.code)
        .await?;
    Ok(success(
        StatusCode::OK,
        "Two-factor device removed",
        serde_json::Value::Null,
    ))
}

async fn regenerate(
    State(s): State<TwoFactorService>,
    user: CurrentUser,
    JsonBody(body): JsonBody<BothFactors>,
) -> Result<Response> {
    let codes = s
        .regenerate_backup_codes(&user.user.id, &body.password, &body.code)
        .await?;
    Ok(success(
        StatusCode::OK,
        "Backup codes regenerated",
        serde_json::json!({ "backupCodes": codes }),
    ))
}

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
struct VerifyBody {
    two_factor_token: String,
    code: String,
}

async fn verify(State(s): State<TwoFactorService>, req: Request) -> Result<Response> {
    let meta = request_meta(req.headers(), req.extensions());
    let JsonBody(body) = JsonBody::<VerifyBody>::from_request(req, &()).await?;
    if body.two_factor_token.len() > 256 || body.code.len() > 64 {
        return Err(SentriError::validation(
            "twoFactorToken or code is too long",
        ));
    }
    let outcome = s
        .verify_login(&body.two_factor_token, &body.code, meta)
        .await?;
    Ok(s.core.sign_in_response(&outcome, "Login successful"))
}
