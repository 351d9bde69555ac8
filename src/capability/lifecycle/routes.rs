//! The lifecycle routes. A flow that is switched off has no route (the router's
//! fallback answers 404 `NOT_FOUND`). Requests that could reveal whether an account
//! exists answer at once with one constant reply and do their work off the request
//! path.

use axum::Router;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use serde::Deserialize;

use super::{Lifecycle, LifecycleService, VerificationMode};
use crate::core::error::{Result, SentriError};
use crate::http::{JsonBody, request_meta, success};

#[derive(Clone)]
struct State_ {
    service: LifecycleService,
    mode: VerificationMode,
}

pub(super) fn router(config: &Lifecycle, service: LifecycleService) -> Router {
    let state = State_ {
        service,
        mode: config.verification,
    };
    let mut router = Router::new();
    if config.email_verification {
        router = router
            .route("/verify-email", post(verify_email))
            .route("/verify-email/resend", post(resend));
    }
    if config.reset_password {
        router = router
            .route("/forgot-password", post(forgot_password))
            .route("/reset-password", post(reset_password));
    }
    if config.magic_link {
        router = router
            .route("/magic-link/request", post(magic_request))
            .route("/magic-link/consume", post(magic_consume));
    }
    router.with_state(state)
}

/// The one answer of every request that must not tell whether the account exists.
fn accepted() -> Response {
    success(
        StatusCode::ACCEPTED,
        "If the account exists, a message is on its way",
        serde_json::Value::Null,
    )
}

#[derive(Deserialize)]
struct IdentifierBody {
    identifier: String,
}

#[derive(Deserialize)]
struct TokenBody {
    token: String,
}

#[derive(Deserialize)]
struct VerifyBody {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    identifier: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResetBody {
    token: String,
    new_password: String,
}

async fn verify_email(
    State(s): State<State_>,
    JsonBody(body): JsonBody<VerifyBody>,
) -> Result<Response> {
    match (s.mode, body) {
        (
            VerificationMode::Link,
            VerifyBody {
                token: Some(token), ..
            },
        ) => {
            s.service.verify_link(&token).await?;
        }
        (
            VerificationMode::Code,
            VerifyBody {
                identifier: Some(identifier),
                code: Some(code),
                ..
            },
        ) => s.service.verify_code(&identifier, &code).await?,
        (VerificationMode::Link, _) => return Err(SentriError::validation("token is required")),
        _ => return Err(SentriError::validation("identifier and code are required")),
    }
    Ok(success(
        StatusCode::OK,
        "Email verified",
        serde_json::Value::Null,
    ))
}

/// Checks the identifier, then runs `work` for it off the request path, with the
/// request's time.
fn in_background<F, Fut>(
    s: &State_,
    what: &'static str,
    identifier: &str,
    work: F,
) -> Result<Response>
where
    F: FnOnce(LifecycleService, String, i64) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let identifier = s.service.check_identifier(identifier)?;
    let now = s.service.now();
    s.service
        .background(what, work(s.service.clone(), identifier, now));
    Ok(accepted())
}

async fn resend(
    State(s): State<State_>,
    JsonBody(body): JsonBody<IdentifierBody>,
) -> Result<Response> {
    in_background(
        &s,
        "resend verification",
        &body.identifier,
        |svc, id, now| async move { svc.resend_verification(&id, now).await },
    )
}

async fn forgot_password(
    State(s): State<State_>,
    JsonBody(body): JsonBody<IdentifierBody>,
) -> Result<Response> {
    in_background(
        &s,
        "password reset request",
        &body.identifier,
        |svc, id, now| async move { svc.request_reset(&id, now).await },
    )
}

async fn reset_password(
    State(s): State<State_>,
    JsonBody(body): JsonBody<ResetBody>,
) -> Result<Response> {
    s.service
        .reset_password(&body.token, &body.new_password)
        .await?;
    let res = success(StatusCode::OK, "Password reset", serde_json::Value::Null);
    Ok(s.service.core().transport.with_cleared_cookies(res))
}

async fn magic_request(
    State(s): State<State_>,
    JsonBody(body): JsonBody<IdentifierBody>,
) -> Result<Response> {
    in_background(
        &s,
        "sign-in link request",
        &body.identifier,
        |svc, id, now| async move { svc.request_magic_link(&id, now).await },
    )
}

async fn magic_consume(State(s): State<State_>, req: Request) -> Result<Response> {
    let meta = request_meta(req.headers(), req.extensions());
    let JsonBody(body): JsonBody<TokenBody> = JsonBody::from_request(req, &()).await?;
    let outcome = s.service.consume_magic_link(&body.token, meta).await?;
    Ok(s.service
        .core()
        .sign_in_response(&outcome, "Login successful"))
}
