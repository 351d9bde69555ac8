//! The lifecycle routes. A flow that is switched off has no route (the router's
//! fallback answers 404 `NOT_FOUND`). Requests that could reveal whether an account
//! exists answer at once with one constant reply and do their work off the request
//! path.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use axum::routing::{MethodRouter, post};
use serde::Deserialize;

use super::{Lifecycle, LifecycleService, VerificationMode};
use crate::core::error::{Result, SentriError};
use crate::http::{JsonBody, parts_meta, success};

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
        router = router.route("/verify-email", post(verify_email)).route(
            "/verify-email/resend",
            mail_route("resend verification", |svc, id, now| async move {
                svc.resend_verification(&id, now).await
            }),
        );
    }
    if config.reset_password {
        router = router
            .route(
                "/forgot-password",
                mail_route("password reset request", |svc, id, now| async move {
                    svc.request_reset(&id, now).await
                }),
            )
            .route("/reset-password", post(reset_password));
    }
    if config.magic_link {
        router = router
            .route(
                "/magic-link/request",
                mail_route("sign-in link request", |svc, id, now| async move {
                    svc.request_magic_link(&id, now).await
                }),
            )
            .route("/magic-link/consume", post(magic_consume));
    }
    router.with_state(state)
}

/// The OpenAPI description of [`router`]: the flows that are switched on.
#[cfg(feature = "openapi")]
pub(super) fn openapi(
    config: &Lifecycle,
    doc: &crate::http::openapi::ApiDoc,
) -> utoipa::openapi::OpenApi {
    use crate::core::error::ErrorCode as E;
    use crate::http::openapi::{Method, any, of};
    use utoipa::openapi::schema::Type;
    let mail = |path, summary| {
        doc.op(Method::Post, path, "lifecycle", summary)
            .describe("The same 202 whether or not the account exists; the mail is sent off the request path.")
            .body::<IdentifierBody>()
            .ok_data(202, "If the account exists, a message is on its way", of(Type::Null))
            .err(&[E::TooManyAttempts])
    };
    let mut ops = Vec::new();
    if config.email_verification {
        ops.push(
            doc.op(
                Method::Post,
                "/verify-email",
                "lifecycle",
                "Verify an email address",
            )
            .describe("`{token}` (link mode) or `{identifier, code}` (code mode).")
            .body::<VerifyBody>()
            .ok_data(200, "Email verified", of(Type::Null))
            .err(&[E::TokenInvalid, E::TooManyAttempts]),
        );
        ops.push(mail(
            "/verify-email/resend",
            "Send the verification message again",
        ));
    }
    if config.reset_password {
        ops.push(mail("/forgot-password", "Ask for a password-reset message"));
        ops.push(
            doc.op(
                Method::Post,
                "/reset-password",
                "lifecycle",
                "Set a new password with a reset token",
            )
            .describe("Ends every session of the user and clears the cookies.")
            .body::<ResetBody>()
            .ok_data(200, "Password reset", of(Type::Null))
            .err(&[E::TokenInvalid, E::TooManyAttempts]),
        );
    }
    if config.magic_link {
        ops.push(mail("/magic-link/request", "Ask for a sign-in link"));
        ops.push(
            doc.op(
                Method::Post,
                "/magic-link/consume",
                "lifecycle",
                "Sign in with a link's token",
            )
            .describe("Answers like `POST /login` (tokens, or a second-factor challenge).")
            .body::<TokenBody>()
            .ok_data(200, "Login successful", any())
            .err(&[
                E::TokenInvalid,
                E::TooManyAttempts,
                E::EmailNotVerified,
                E::UserAlreadyExists,
            ]),
        );
    }
    doc.paths(ops)
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
struct IdentifierBody {
    identifier: String,
}

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
struct TokenBody {
    token: String,
}

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
struct VerifyBody {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    identifier: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
struct ResetBody {
    token: String,
    new_password: String,
}

/// Runs `check` of a secret presented by itself (a code, a token) as one attempt of the
/// client address (`Throttle::attempt_from`): 429 once the address is over its limit,
/// before any lookup; a wrong secret keeps the attempt counted.
async fn counted<T>(
    s: &State_,
    parts: &Parts,
    check: impl Future<Output = Result<T>>,
) -> Result<T> {
    let meta = parts_meta(parts);
    let throttle = s.service.core().throttle();
    let attempt = throttle.attempt_from(meta.ip.as_deref()).await?;
    let result = check.await;
    attempt.settle(&result).await;
    result
}

/// Counts a request that sends mail on the client address whatever its outcome, so
/// one client cannot flood addresses with messages (429 over the limit).
async fn mail_request(s: &State_, parts: &Parts) -> Result<()> {
    let meta = parts_meta(parts);
    let throttle = s.service.core().throttle();
    throttle
        .attempt_from(meta.ip.as_deref())
        .await?
        .spent(&Ok(()))
        .await;
    Ok(())
}

async fn verify_email(
    State(s): State<State_>,
    parts: Parts,
    JsonBody(body): JsonBody<VerifyBody>,
) -> Result<Response> {
    counted(&s, &parts, verify(&s, body)).await?;
    Ok(success(
        StatusCode::OK,
        "Email verified",
        serde_json::Value::Null,
    ))
}

async fn verify(s: &State_, body: VerifyBody) -> Result<()> {
    match (s.mode, body) {
        (
            VerificationMode::Link,
            VerifyBody {
                token: Some(token), ..
            },
        ) => s.service.verify_link(&token).await,
        (
            VerificationMode::Code,
            VerifyBody {
                identifier: Some(identifier),
                code: Some(code),
                ..
            },
        ) => s.service.verify_code(&identifier, &code).await,
        (VerificationMode::Link, _) => Err(SentriError::validation("token is required")),
        _ => Err(SentriError::validation("identifier and code are required")),
    }
}

/// The route of a request that sends mail (`{identifier}` → 202, whether or not the
/// account exists): checks the identifier, counts the request on the client address,
/// then runs `work` for it off the request path, with the request's time. `what` names
/// the work in logs.
fn mail_route<F, Fut>(what: &'static str, work: F) -> MethodRouter<State_>
where
    F: Fn(LifecycleService, String, i64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    post(
        move |State(s): State<State_>, parts: Parts, JsonBody(body): JsonBody<IdentifierBody>| async move {
            let identifier = s.service.check_identifier(&body.identifier)?;
            mail_request(&s, &parts).await?;
            let now = s.service.now();
            s.service
                .background(what, work(s.service.clone(), identifier, now));
            Ok::<_, SentriError>(accepted())
        },
    )
}

async fn reset_password(
    State(s): State<State_>,
    parts: Parts,
    JsonBody(body): JsonBody<ResetBody>,
) -> Result<Response> {
    let reset = s.service.reset_password(&body.token, &body.new_password);
    counted(&s, &parts, reset).await?;
    let res = success(StatusCode::OK, "Password reset", serde_json::Value::Null);
    Ok(s.service.core().transport.with_cleared_cookies(res))
}

async fn magic_consume(
    State(s): State<State_>,
    parts: Parts,
    JsonBody(body): JsonBody<TokenBody>,
) -> Result<Response> {
    let consume = s
        .service
        .consume_magic_link(&body.token, parts_meta(&parts));
    let outcome = counted(&s, &parts, consume).await?;
    Ok(s.service
        .core()
        .sign_in_response(&outcome, "Login successful"))
}
