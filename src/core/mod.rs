//! The core every other module stands on, with no HTTP framework and no SQL driver:
//! errors and their codes, the clock, the principal, crypto and redaction helpers, and
//! security events.

pub mod clock;
pub mod crypto;
pub mod error;
pub mod events;
#[cfg_attr(
    not(feature = "server"),
    allow(dead_code, unused_macros, unused_imports)
)]
pub mod observe;
pub mod principal;
pub mod seal;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed, sendable future (what hooks, overrides and sinks return).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The `is_token_revoked(session_id)` hook: `true` refuses the request.
pub type RevocationCheck = Arc<dyn Fn(String) -> BoxFuture<'static, bool> + Send + Sync>;

/// The one override mechanism: an optional replacement for a service call that
/// receives the service handle `S` (so it may call the default) and the input `I`.
pub struct Override<S, I, O> {
    f: Option<Arc<OverrideFn<S, I, O>>>,
}

type OverrideFn<S, I, O> =
    dyn Fn(S, I) -> BoxFuture<'static, error::Result<O>> + Send + Sync + 'static;

impl<S, I, O> Clone for Override<S, I, O> {
    fn clone(&self) -> Self {
        Self { f: self.f.clone() }
    }
}

impl<S, I, O> Default for Override<S, I, O> {
    fn default() -> Self {
        Self { f: None }
    }
}

impl<S, I, O> std::fmt::Debug for Override<S, I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.f.is_some() { "set" } else { "default" })
    }
}

impl<S, I, O> Override<S, I, O> {
    /// An override running `f`.
    pub fn new<F, Fut>(f: F) -> Self
    where
        F: Fn(S, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = error::Result<O>> + Send + 'static,
    {
        Self {
            f: Some(Arc::new(move |s, i| Box::pin(f(s, i)))),
        }
    }

    /// `true` when an override is set.
    pub fn is_set(&self) -> bool {
        self.f.is_some()
    }

    /// Runs the override, or `default` when none is set.
    #[cfg(feature = "server")]
    pub(crate) async fn run<F, Fut>(&self, service: S, input: I, default: F) -> error::Result<O>
    where
        F: FnOnce(S, I) -> Fut,
        Fut: Future<Output = error::Result<O>>,
    {
        match &self.f {
            Some(f) => f(service, input).await,
            None => default(service, input).await,
        }
    }
}

/// What a configuration builds: a `ServerConfig` gives a `ServerAuth`, a
/// `ClientConfig` a `ClientAuth`. The Rust form of sentri's `createAuth` overloads.
pub trait AuthConfig {
    /// The auth value this configuration builds.
    type Auth;
    /// Checks the configuration and builds the auth value.
    fn build(self) -> error::Result<Self::Auth>;
}

/// Builds sentri from a configuration. Invalid configuration is a
/// `CONFIGURATION_ERROR` here, never at request time.
///
/// ```no_run
/// # async fn demo() -> Result<(), sentri::SentriError> {
/// use sentri::{create_auth, ServerConfig, db::Database, token::SigningKey};
/// let db = Database::connect("sqlite::memory:").await?;
/// let auth = create_auth(ServerConfig::new(
///     db,
///     SigningKey::hs256(b"0123456789abcdef0123456789abcdef")?,
///     ["user", "admin"],
/// ))?;
/// auth.migrate().await?;
/// # Ok(()) }
/// ```
pub fn create_auth<C: AuthConfig>(config: C) -> error::Result<C::Auth> {
    config.build()
}
