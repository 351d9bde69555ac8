//! Errors as values with a code, a message and an HTTP status.
//!
//! Every failure sentri reports is a [`SentriError`]. It renders the documented JSON
//! envelope (`{"error": true, "statusCode", "code", "message", "data": null}`) through
//! its `IntoResponse` impl (in `http`), so handlers can return `Result<_, SentriError>`
//! directly.
//!
//! Internal failures (a database that is down, a thread pool that went away) are
//! reported as `SERVICE_UNAVAILABLE` (503) or `INTERNAL_ERROR` (500) with a generic
//! message; the underlying error is kept as the `source` and logged with `tracing`,
//! never sent to the client.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::StatusCode;

/// A machine-readable error code.
///
/// The built-in codes map to fixed HTTP statuses ([`ErrorCode::status`]); an
/// application's own codes are [`ErrorCode::Custom`] and carry their status in the
/// [`SentriError`] (default 500).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Unknown identifier or wrong password (401). Both give the same error.
    InvalidCredentials,
    /// No user with that id (404).
    UserNotFound,
    /// The identifier is taken (409).
    UserAlreadyExists,
    /// The token's `exp` has passed (401).
    TokenExpired,
    /// The token is malformed, forged, of the wrong type or revoked (401).
    TokenInvalid,
    /// Authenticated, but not allowed (403).
    Forbidden,
    /// No credentials at all, or a wrong API key (401).
    Unauthorized,
    /// A role that is not in `valid_roles` (400).
    InvalidRole,
    /// Bad input: malformed JSON, missing or wrongly typed fields, values out of range (400).
    ValidationError,
    /// The configuration is invalid (500). Returned by `create_auth`, never at request time.
    ConfigurationError,
    /// A backend (database, Redis, key server) is unreachable or failed (503).
    ServiceUnavailable,
    /// An unexpected internal failure (500). The message never carries details.
    InternalError,
    /// No such route (404).
    NotFound,
    /// The request body is larger than allowed (413).
    PayloadTooLarge,
    /// A request with the same idempotency key is still running (409).
    IdempotencyInProgress,
    /// The idempotency key was used before with a different request (422).
    IdempotencyKeyMismatch,
    /// The request with this idempotency key already ran, but its response could not be
    /// stored for replay (larger than `max_body`); it is not run again (409).
    IdempotencyNotReplayable,
    /// Too many attempts at a secret (password, code) from this identifier or address;
    /// `Retry-After` says when to try again (429).
    TooManyAttempts,
    /// An API key that is malformed, fails its checksum, is unknown, revoked or whose
    /// owner was deleted (401).
    ApiKeyInvalid,
    /// An API key past its expiry (401).
    ApiKeyExpired,
    /// No API key with that id among the caller's keys (404).
    ApiKeyNotFound,
    /// The credential lacks a scope the route requires (403).
    InsufficientScope,
    /// A scope that is not in the configured list (400).
    InvalidScope,
    /// The route needs a session signed in with a second factor (403).
    TwoFactorRequired,
    /// The route does not admit the kind of credential the request presented (e.g. an
    /// API key on a route for sessions only) (403). Decided before any lookup.
    CredentialNotAdmitted,
    /// A sensitive operation needs an authentication newer than the re-authentication
    /// window (`POST /reauthenticate`, or sign in again) (403).
    ReauthRequired,
    /// A wrong, expired or already-used second-factor code or 2FA token (401).
    TwoFactorInvalid,
    /// Too many wrong second-factor codes for this user: wait (429, `Retry-After`).
    TwoFactorLocked,
    /// The password was right but the account's email address is not verified yet, and
    /// the app requires it (403).
    EmailNotVerified,
    /// Single sign-on: the `state` of a callback is missing, unknown, expired, already
    /// used or was started in another browser (400).
    SsoStateInvalid,
    /// Single sign-on: the identity provider is unreachable or answered something that is
    /// not usable (discovery, keys, token endpoint) (502).
    SsoProviderError,
    /// Single sign-on: the identity provider refused the sign-in or the authorization
    /// code (401).
    SsoRejected,
    /// Single sign-on: the provider's ID token failed verification (signature,
    /// `iss`, `aud`, `azp`, `exp`, `iat`, `nonce`) (401).
    SsoIdTokenInvalid,
    /// Single sign-on: this identity may not sign in here (e-mail domain not allowed,
    /// no verified e-mail, no account and sign-up off) (403).
    SsoNotAllowed,
    /// Single sign-on: the identity is linked to another account, or the account
    /// already has a link to this provider (409).
    SsoLinkConflict,
    /// Single sign-on: unlinking would leave the account without a way to sign in (409).
    SsoLastSignInMethod,
    /// No role of that name in the role catalogue (404).
    RoleNotFound,
    /// A role of that name is already in the catalogue (409).
    RoleAlreadyExists,
    /// The role is held by users: delete it with `reassign` or `strip` (409).
    RoleInUse,
    /// The change would leave no user holding the admin role (409).
    LastAdmin,
    /// A permission name that is not declared in the configuration (400).
    InvalidPermission,
    /// A tenant route was called without the workspace header (403).
    WorkspaceHeaderRequired,
    /// The workspace header is not the workspace the access token is bound to (a personal token, or a token of another workspace) (403).
    WorkspaceMismatch,
    /// The caller is not an active member of the workspace (removed, suspended, only invited, or the workspace is gone) (403).
    WorkspaceAccessDenied,
    /// No such workspace, or the caller is not a member of it (404).
    WorkspaceNotFound,
    /// Another workspace has this slug (409).
    WorkspaceSlugTaken,
    /// The change would leave the workspace without an active owner (409).
    LastOwner,
    /// The user is already a member of the workspace (409).
    AlreadyMember,
    /// No such member in the workspace (404).
    MemberNotFound,
    /// The invitation is unknown, expired, revoked or already used (400): one code for all, so a token reveals nothing.
    InvitationInvalid,
    /// The invitation is for another address than the signed-in account's (403).
    InvitationAddressMismatch,
    /// An application's own code (the Rust form of subclassing `SentriError`).
    Custom(Cow<'static, str>),
}

impl ErrorCode {
    /// The code as it appears on the wire, e.g. `"TOKEN_INVALID"`.
    pub fn as_str(&self) -> &str {
        match self {
            Self::InvalidCredentials => "INVALID_CREDENTIALS",
            Self::UserNotFound => "USER_NOT_FOUND",
            Self::UserAlreadyExists => "USER_ALREADY_EXISTS",
            Self::TokenExpired => "TOKEN_EXPIRED",
            Self::TokenInvalid => "TOKEN_INVALID",
            Self::Forbidden => "FORBIDDEN",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::InvalidRole => "INVALID_ROLE",
            Self::ValidationError => "VALIDATION_ERROR",
            Self::ConfigurationError => "CONFIGURATION_ERROR",
            Self::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            Self::InternalError => "INTERNAL_ERROR",
            Self::NotFound => "NOT_FOUND",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::IdempotencyInProgress => "IDEMPOTENCY_IN_PROGRESS",
            Self::IdempotencyKeyMismatch => "IDEMPOTENCY_KEY_MISMATCH",
            Self::IdempotencyNotReplayable => "IDEMPOTENCY_NOT_REPLAYABLE",
            Self::TooManyAttempts => "TOO_MANY_ATTEMPTS",
            Self::ApiKeyInvalid => "API_KEY_INVALID",
            Self::ApiKeyExpired => "API_KEY_EXPIRED",
            Self::ApiKeyNotFound => "API_KEY_NOT_FOUND",
            Self::InsufficientScope => "INSUFFICIENT_SCOPE",
            Self::InvalidScope => "INVALID_SCOPE",
            Self::TwoFactorRequired => "TWO_FACTOR_REQUIRED",
            Self::CredentialNotAdmitted => "CREDENTIAL_NOT_ADMITTED",
            Self::ReauthRequired => "REAUTH_REQUIRED",
            Self::TwoFactorInvalid => "TWO_FACTOR_INVALID",
            Self::TwoFactorLocked => "TWO_FACTOR_LOCKED",
            Self::EmailNotVerified => "EMAIL_NOT_VERIFIED",
            Self::SsoStateInvalid => "SSO_STATE_INVALID",
            Self::SsoProviderError => "SSO_PROVIDER_ERROR",
            Self::SsoRejected => "SSO_REJECTED",
            Self::SsoIdTokenInvalid => "SSO_ID_TOKEN_INVALID",
            Self::SsoNotAllowed => "SSO_NOT_ALLOWED",
            Self::SsoLinkConflict => "SSO_LINK_CONFLICT",
            Self::SsoLastSignInMethod => "SSO_LAST_SIGN_IN_METHOD",
            Self::RoleNotFound => "ROLE_NOT_FOUND",
            Self::RoleAlreadyExists => "ROLE_ALREADY_EXISTS",
            Self::RoleInUse => "ROLE_IN_USE",
            Self::LastAdmin => "LAST_ADMIN",
            Self::InvalidPermission => "INVALID_PERMISSION",
            Self::WorkspaceHeaderRequired => "WORKSPACE_HEADER_REQUIRED",
            Self::WorkspaceMismatch => "WORKSPACE_MISMATCH",
            Self::WorkspaceAccessDenied => "WORKSPACE_ACCESS_DENIED",
            Self::WorkspaceNotFound => "WORKSPACE_NOT_FOUND",
            Self::WorkspaceSlugTaken => "WORKSPACE_SLUG_TAKEN",
            Self::LastOwner => "LAST_OWNER",
            Self::AlreadyMember => "ALREADY_MEMBER",
            Self::MemberNotFound => "MEMBER_NOT_FOUND",
            Self::InvitationInvalid => "INVITATION_INVALID",
            Self::InvitationAddressMismatch => "INVITATION_ADDRESS_MISMATCH",
            Self::Custom(code) => code,
        }
    }

    /// The HTTP status for a built-in code; custom codes default to 500.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidCredentials
            | Self::TokenExpired
            | Self::TokenInvalid
            | Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::UserNotFound | Self::NotFound => StatusCode::NOT_FOUND,
            Self::UserAlreadyExists
            | Self::IdempotencyInProgress
            | Self::IdempotencyNotReplayable => StatusCode::CONFLICT,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::EmailNotVerified => StatusCode::FORBIDDEN,
            Self::InvalidRole | Self::ValidationError => StatusCode::BAD_REQUEST,
            Self::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::IdempotencyKeyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyAttempts => StatusCode::TOO_MANY_REQUESTS,
            Self::TwoFactorRequired | Self::CredentialNotAdmitted | Self::ReauthRequired => {
                StatusCode::FORBIDDEN
            }
            Self::TwoFactorInvalid => StatusCode::UNAUTHORIZED,
            Self::TwoFactorLocked => StatusCode::TOO_MANY_REQUESTS,
            Self::SsoStateInvalid => StatusCode::BAD_REQUEST,
            Self::SsoProviderError => StatusCode::BAD_GATEWAY,
            Self::SsoRejected | Self::SsoIdTokenInvalid => StatusCode::UNAUTHORIZED,
            Self::SsoNotAllowed => StatusCode::FORBIDDEN,
            Self::SsoLinkConflict | Self::SsoLastSignInMethod => StatusCode::CONFLICT,
            Self::ConfigurationError | Self::InternalError | Self::Custom(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::ApiKeyInvalid | Self::ApiKeyExpired => StatusCode::UNAUTHORIZED,
            Self::ApiKeyNotFound => StatusCode::NOT_FOUND,
            Self::InsufficientScope => StatusCode::FORBIDDEN,
            Self::InvalidScope => StatusCode::BAD_REQUEST,
            Self::RoleNotFound => StatusCode::NOT_FOUND,
            Self::RoleAlreadyExists | Self::RoleInUse | Self::LastAdmin => StatusCode::CONFLICT,
            Self::InvalidPermission => StatusCode::BAD_REQUEST,
            Self::WorkspaceHeaderRequired
            | Self::WorkspaceMismatch
            | Self::WorkspaceAccessDenied
            | Self::InvitationAddressMismatch => StatusCode::FORBIDDEN,
            Self::WorkspaceNotFound | Self::MemberNotFound => StatusCode::NOT_FOUND,
            Self::WorkspaceSlugTaken | Self::LastOwner | Self::AlreadyMember => {
                StatusCode::CONFLICT
            }
            Self::InvitationInvalid => StatusCode::BAD_REQUEST,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// sentri's error: a code, a human-readable message and an HTTP status.
///
/// ```
/// use sentri::{ErrorCode, SentriError};
/// use axum::http::StatusCode;
///
/// // A built-in code takes its status from the code.
/// let err = SentriError::new(ErrorCode::TokenExpired, "token expired");
/// assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
///
/// // An application's own error, with an explicit status.
/// let err = SentriError::custom("PAYMENT_FAILED", "Card declined", StatusCode::PAYMENT_REQUIRED);
/// assert_eq!(err.code().as_str(), "PAYMENT_FAILED");
/// assert_eq!(err.status().as_u16(), 402);
/// ```
#[derive(Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct SentriError {
    code: ErrorCode,
    message: Cow<'static, str>,
    status: StatusCode,
    retry_after: Option<u64>,
    #[source]
    source: Option<Source>,
}

impl fmt::Debug for SentriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentriError")
            .field("code", &self.code.as_str())
            .field("status", &self.status.as_u16())
            .field("message", &self.message)
            .field("source", &self.source.as_ref().map(|s| s.to_string()))
            .finish()
    }
}

impl SentriError {
    /// An error with a built-in (or custom) code; the status follows from the code.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        let status = code.status();
        Self {
            code,
            message: message.into(),
            status,
            retry_after: None,
            source: None,
        }
    }

    /// An application's own error code with an explicit HTTP status.
    pub fn custom(
        code: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
        status: StatusCode,
    ) -> Self {
        Self {
            code: ErrorCode::Custom(code.into()),
            message: message.into(),
            status,
            retry_after: None,
            source: None,
        }
    }

    /// Overrides the HTTP status.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Adds a `Retry-After` (seconds) to the rendered response.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Attaches the underlying cause (logged, never rendered).
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// The underlying error itself (not the `Arc` around it), for downcasting.
    pub(crate) fn source_error(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }

    /// The error code.
    pub fn code(&self) -> &ErrorCode {
        &self.code
    }

    /// The human-readable message sent to the client.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// `Retry-After` seconds, if any.
    pub fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }

    /// `true` when the code is `code`.
    pub fn is(&self, code: &ErrorCode) -> bool {
        &self.code == code
    }

    // ---- constructors for the common cases -------------------------------------------

    /// `INVALID_CREDENTIALS`: the one error for unknown identifier and wrong password.
    pub fn invalid_credentials() -> Self {
        Self::new(ErrorCode::InvalidCredentials, "Invalid credentials")
    }

    /// `TOKEN_INVALID` with a message.
    pub fn token_invalid(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::TokenInvalid, message)
    }

    /// `TOKEN_EXPIRED`.
    pub fn token_expired() -> Self {
        Self::new(ErrorCode::TokenExpired, "Token expired")
    }

    /// `UNAUTHORIZED`: no credentials.
    pub fn unauthorized(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    /// `FORBIDDEN`.
    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// `VALIDATION_ERROR`.
    pub fn validation(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::ValidationError, message)
    }

    /// `INVALID_ROLE`.
    pub fn invalid_role(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidRole, message)
    }

    /// `CONFIGURATION_ERROR`.
    pub fn configuration(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::ConfigurationError, message)
    }

    /// `USER_NOT_FOUND`.
    pub fn user_not_found() -> Self {
        Self::new(ErrorCode::UserNotFound, "User not found")
    }

    /// `USER_ALREADY_EXISTS`.
    pub fn user_already_exists() -> Self {
        Self::new(ErrorCode::UserAlreadyExists, "User already exists")
    }

    /// `SERVICE_UNAVAILABLE` caused by `source` (a backend failure). The message is generic.
    pub fn unavailable(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::new(
            ErrorCode::ServiceUnavailable,
            "Service temporarily unavailable",
        )
        .with_retry_after(1)
        .with_source(source)
    }

    /// `INTERNAL_ERROR` caused by `source`. The message is generic.
    pub fn internal(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::new(ErrorCode::InternalError, "Internal server error").with_source(source)
    }
}

/// `Result` with [`SentriError`].
pub type Result<T, E = SentriError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_codes_map_to_their_statuses() {
        let cases = [
            (ErrorCode::InvalidCredentials, 401),
            (ErrorCode::UserNotFound, 404),
            (ErrorCode::UserAlreadyExists, 409),
            (ErrorCode::TokenExpired, 401),
            (ErrorCode::TokenInvalid, 401),
            (ErrorCode::Forbidden, 403),
            (ErrorCode::Unauthorized, 401),
            (ErrorCode::InvalidRole, 400),
            (ErrorCode::ValidationError, 400),
            (ErrorCode::ConfigurationError, 500),
            (ErrorCode::ServiceUnavailable, 503),
            (ErrorCode::IdempotencyInProgress, 409),
            (ErrorCode::IdempotencyKeyMismatch, 422),
            (ErrorCode::IdempotencyNotReplayable, 409),
            (ErrorCode::TooManyAttempts, 429),
            (ErrorCode::TwoFactorRequired, 403),
            (ErrorCode::CredentialNotAdmitted, 403),
            (ErrorCode::ReauthRequired, 403),
            (ErrorCode::TwoFactorInvalid, 401),
            (ErrorCode::TwoFactorLocked, 429),
            (ErrorCode::EmailNotVerified, 403),
            (ErrorCode::SsoStateInvalid, 400),
            (ErrorCode::SsoProviderError, 502),
            (ErrorCode::SsoRejected, 401),
            (ErrorCode::SsoIdTokenInvalid, 401),
            (ErrorCode::SsoNotAllowed, 403),
            (ErrorCode::SsoLinkConflict, 409),
            (ErrorCode::SsoLastSignInMethod, 409),
            (ErrorCode::Custom("WHATEVER".into()), 500),
            (ErrorCode::ApiKeyInvalid, 401),
            (ErrorCode::ApiKeyExpired, 401),
            (ErrorCode::ApiKeyNotFound, 404),
            (ErrorCode::InsufficientScope, 403),
            (ErrorCode::InvalidScope, 400),
        ];
        for (code, status) in cases {
            assert_eq!(
                SentriError::new(code.clone(), "x").status().as_u16(),
                status,
                "{code}"
            );
        }
    }

    #[test]
    fn internal_errors_do_not_leak_their_source() {
        let err = SentriError::unavailable(std::io::Error::other("password=hunter2 at db:5432"));
        assert_eq!(err.message(), "Service temporarily unavailable");
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
