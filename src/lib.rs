#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(not(any(feature = "sqlite", feature = "postgres", feature = "mysql")))]
compile_error!(
    "sentri needs at least one storage feature: `sqlite` (default), `postgres` or `mysql`"
);

pub mod auth;
#[cfg(feature = "client")]
pub mod client;
pub mod clock;
pub mod config;
pub mod error;
pub mod http;
pub mod idempotency;
pub mod identifier;
pub mod layer;
pub mod password;
pub mod revocation;
#[cfg(feature = "postgres")]
mod server;
mod session;
pub mod store;
pub mod token;
pub mod user;

pub use auth::{
    AuthConfig, AuthResult, LoginInput, RefreshResult, RegisterInput, ServerAuth, SessionMeta,
    create_auth,
};
#[cfg(feature = "client")]
pub use client::{ClientAuth, ClientConfig};
pub use config::{AccessCookieConfig, CookieConfig, Handlers, Hooks, SameSite, ServerConfig, Ttl};
pub use error::{ApiResponse, ErrorCode, Result, SentriError};
pub use idempotency::{IdempotencyKey, IdempotencyLayer, IdempotencyOptions};
pub use layer::{CurrentUser, GuardLayer, PermitOptions};
#[cfg(feature = "postgres")]
pub use server::{CreateServerOptions, PostgresConfig, create_auth_server};
pub use user::AuthUser;
