//! `create_auth_server`: sentri's `createAuthServer` convenience for PostgreSQL.

use std::fmt;
use std::time::Duration;

use super::{ServerAuth, ServerConfig};
use crate::core::create_auth;
use crate::core::error::{Result, SentriError};
use crate::core::seal::Sealer;
use crate::db::{Database, DatabaseOptions};
use crate::keystore::KeyStoreConfig;
use crate::token::{Algorithm, SigningKey};

/// How to reach PostgreSQL.
#[derive(Clone)]
pub enum PostgresConfig {
    /// A `postgres://user:password@host:port/database` URL.
    ConnectionString {
        /// The URL.
        connection_string: String,
        /// Pool size (default 10).
        max: Option<u32>,
    },
    /// Separate parameters.
    Params {
        /// Host (default `127.0.0.1`).
        host: Option<String>,
        /// Port (default 5432).
        port: Option<u16>,
        /// Database name.
        database: String,
        /// User.
        user: String,
        /// Password.
        password: String,
        /// Pool size (default 10).
        max: Option<u32>,
    },
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConnectionString {
                connection_string,
                max,
            } => f
                .debug_struct("ConnectionString")
                .field(
                    "connection_string",
                    &crate::core::crypto::redact_url(connection_string),
                )
                .field("max", max)
                .finish(),
            Self::Params {
                host,
                port,
                database,
                user,
                max,
                ..
            } => f
                .debug_struct("Params")
                .field("host", host)
                .field("port", port)
                .field("database", database)
                .field("user", user)
                .field("password", &"<redacted>")
                .field("max", max)
                .finish(),
        }
    }
}

/// Options of [`create_auth_server`]: the database and a function that finishes the
/// [`ServerConfig`] (roles are required; everything else keeps its default).
pub struct CreateServerOptions {
    /// Where PostgreSQL is.
    pub db: PostgresConfig,
    /// Every role a user may have.
    pub valid_roles: Vec<String>,
    /// A persisted signing key. `None` generates an RSA-2048 key at start-up.
    pub key: Option<SigningKey>,
    /// Adjusts the configuration (TTLs, cookies, hooks, …) before `create_auth`.
    pub configure: Option<Box<dyn FnOnce(ServerConfig) -> ServerConfig + Send>>,
}

impl fmt::Debug for CreateServerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateServerOptions")
            .field("db", &self.db)
            .field("valid_roles", &self.valid_roles)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// The key store `create_auth_server` uses when the environment (read through `var`)
/// holds a key-encryption key.
fn key_store_from(var: impl Fn(&str) -> Option<String>) -> Result<Option<KeyStoreConfig>> {
    let Some(kek) = var("SENTRI_KEK").filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let kid = var("SENTRI_KEK_ID")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "kek-1".into());
    let sealer = Sealer::from_base64(&kid, &kek)?;
    Ok(Some(
        KeyStoreConfig::new(sealer).algorithm(Algorithm::RS256),
    ))
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Connects to PostgreSQL, migrates, and builds a [`ServerAuth`].
///
/// Without `options.key`, the signing keys live in the database key store
/// ([`ServerConfig::signing_key_store`], RS256, rotated every 30 days) when the
/// environment holds a key-encryption key: `SENTRI_KEK` (base64, 32 bytes) and
/// optionally `SENTRI_KEK_ID` (default `kek-1`). Every process on the same database then
/// signs with the same keys and serves the same JWKS. Without `SENTRI_KEK` an RSA-2048
/// key is generated at start-up (on the blocking pool) so `/keys` is served. Such an
/// **ephemeral key** dies with the process: every token it signed becomes invalid on
/// restart, and two processes sign with different keys. Or load a persisted key:
/// `key: Some(SigningKey::from_pem(Algorithm::RS256, &std::fs::read_to_string("key.pem")?)?)`.
///
/// ```no_run
/// # async fn demo() -> Result<(), sentri::SentriError> {
/// use sentri::{create_auth_server, CreateServerOptions, PostgresConfig};
/// let auth = create_auth_server(CreateServerOptions {
///     db: PostgresConfig::ConnectionString {
///         connection_string: "postgres://postgres@127.0.0.1/test".into(),
///         max: Some(10),
///     },
///     valid_roles: vec!["user".into(), "admin".into()],
///     key: None,
///     configure: None,
/// })
/// .await?;
/// # Ok(()) }
/// ```
pub async fn create_auth_server(options: CreateServerOptions) -> Result<ServerAuth> {
    let (url, max) = match options.db {
        PostgresConfig::ConnectionString {
            connection_string,
            max,
        } => (connection_string, max),
        PostgresConfig::Params {
            host,
            port,
            database,
            user,
            password,
            max,
        } => (
            format!(
                "postgres://{}:{}@{}:{}/{}",
                encode(&user),
                encode(&password),
                host.as_deref().unwrap_or("127.0.0.1"),
                port.unwrap_or(5432),
                encode(&database)
            ),
            max,
        ),
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(SentriError::configuration(
            "create_auth_server needs a postgres:// connection string",
        ));
    }
    let db = Database::connect_with(
        &url,
        DatabaseOptions {
            max_connections: max.unwrap_or(10),
            acquire_timeout: Duration::from_secs(5),
            ..DatabaseOptions::default()
        },
    )
    .await?;
    let store = match options.key {
        Some(_) => None,
        None => key_store_from(|name| std::env::var(name).ok())?,
    };
    let key = match (options.key, &store) {
        (Some(key), _) => key,
        // Signs nothing: `migrate` below installs the stored keys.
        (None, Some(_)) => SigningKey::generate(Algorithm::ES256).await?,
        (None, None) => {
            tracing::warn!(
                "create_auth_server: neither a key nor SENTRI_KEK: generated an ephemeral RS256 key; tokens will not survive a restart"
            );
            SigningKey::generate(Algorithm::RS256).await?
        }
    };
    let mut config = ServerConfig::new(db, key, options.valid_roles);
    if let Some(store) = store {
        config = config.signing_key_store(store);
    }
    if let Some(f) = options.configure {
        config = f(config);
    }
    let auth = create_auth(config)?;
    auth.migrate().await?;
    Ok(auth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_store_is_used_when_the_environment_holds_a_kek() {
        assert!(key_store_from(|_| None).unwrap().is_none());
        let kek = "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=";
        let store = key_store_from(|n| (n == "SENTRI_KEK").then(|| kek.to_owned()))
            .unwrap()
            .expect("a key store");
        assert_eq!(store.algorithm, Algorithm::RS256);
        assert_eq!(store.sealer.current_kid(), "kek-1");
        let err = key_store_from(|n| (n == "SENTRI_KEK").then(|| "short".to_owned())).unwrap_err();
        assert_eq!(err.code(), &crate::ErrorCode::ConfigurationError);
    }
}
