#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod error;
pub mod idempotency;
pub mod password;
pub mod store;
pub mod token;
pub mod user;

pub use error::{ApiResponse, ErrorCode, Result, SentriError};
pub use idempotency::{IdempotencyKey, IdempotencyLayer, IdempotencyOptions};
pub use user::AuthUser;
