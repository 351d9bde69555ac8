#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(all(
    feature = "server",
    not(any(feature = "sqlite", feature = "postgres", feature = "mysql"))
))]
compile_error!(
    "sentri's server mode needs a storage feature: `sqlite` (default), `postgres` or `mysql`"
);
#[cfg(not(any(feature = "server", feature = "client")))]
compile_error!(
    "sentri needs `sqlite` (default), `postgres` or `mysql` (server mode), or `client` (client mode)"
);

#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod capability;
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod client;
pub mod core;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod db;
pub mod http;
pub mod idempotency;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod identity;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod keystore;
pub mod mail;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod password;
#[cfg(feature = "redis")]
mod redis_conn;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod server;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod session;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod throttle;
pub mod token;

pub use crate::core::clock;
pub use crate::core::clock::Ttl;
pub use crate::core::error::{ErrorCode, Result, SentriError};
pub use crate::core::events::{AuthEvent, AuthEventKind, EventSink};
pub use crate::core::principal::{Assurance, AuthResult, AuthUser, RefreshResult, SessionMeta};
pub use crate::core::{AuthConfig, create_auth};
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub use client::{ClientAuth, ClientConfig};
#[cfg(feature = "server")]
pub use http::transport::{AccessCookieConfig, CookieConfig, SameSite};
pub use http::{ApiResponse, CurrentUser, GuardLayer, PermitOptions};
pub use idempotency::{IdempotencyKey, IdempotencyLayer, IdempotencyOptions};
#[cfg(feature = "server")]
pub use identity::{IdentifierCase, LoginInput, ProvisionUser, ProvisionWorkspace, RegisterInput};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use server::{CreateServerOptions, PostgresConfig, create_auth_server};
#[cfg(feature = "server")]
pub use server::{Hooks, Overrides, ServerAuth, ServerConfig};
