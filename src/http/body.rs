//! `JsonBody`: sentri's JSON body rules.

use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

use crate::core::error::{ErrorCode, Result, SentriError};

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
