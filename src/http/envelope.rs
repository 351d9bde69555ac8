//! The JSON envelope: success bodies and the `IntoResponse` of [`SentriError`].

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::core::error::SentriError;

/// The JSON envelope every sentri endpoint answers with.
///
/// Success: `{"error": false, "statusCode": 200, "message": "...", "data": {...}}`;
/// error: `{"error": true, "statusCode": 401, "code": "TOKEN_INVALID", "message": "...", "data": null}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiResponse<'a, T: Serialize> {
    /// `true` for an error.
    pub error: bool,
    /// The HTTP status, repeated in the body.
    pub status_code: u16,
    /// The error code (errors only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'a str>,
    /// A human-readable message.
    pub message: &'a str,
    /// The payload (`null` for errors).
    pub data: Option<T>,
}

/// Renders a success envelope with `data`.
///
/// ```
/// use axum::http::StatusCode;
/// let res = sentri::http::success(StatusCode::CREATED, "Created", serde_json::json!({"id": 1}));
/// assert_eq!(res.status(), StatusCode::CREATED);
/// ```
pub fn success<T: Serialize>(status: StatusCode, message: &str, data: T) -> Response {
    json_response(
        status,
        &ApiResponse {
            error: false,
            status_code: status.as_u16(),
            code: None,
            message,
            data: Some(data),
        },
    )
}

pub(crate) fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(err) => {
            tracing::error!(error = %err, "failed to serialise a response body");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

impl IntoResponse for SentriError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Some(source) = self.source_error() {
            if status.is_server_error() {
                tracing::error!(code = %self.code(), error = %source, "request failed");
            } else {
                tracing::debug!(code = %self.code(), error = %source, "request rejected");
            }
        }
        let mut res = json_response(
            status,
            &ApiResponse::<()> {
                error: true,
                status_code: status.as_u16(),
                code: Some(self.code().as_str()),
                message: self.message(),
                data: None,
            },
        );
        if let Some(secs) = self.retry_after() {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}
