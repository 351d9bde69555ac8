//! Service-level helpers: the test configuration, its signing secret, and inputs.

use sentri::db::Database;
use sentri::token::SigningKey;
use sentri::{LoginInput, RegisterInput, ServerAuth, ServerConfig, create_auth};

/// The HS256 secret of every test configuration.
pub const SECRET: &[u8] = b"test-secret-test-secret-test-secret!!";

/// A server configuration on `db`: roles `user`, `admin`, `editor`; bcrypt cost 4.
pub fn config(db: Database) -> ServerConfig {
    ServerConfig::new(
        db,
        SigningKey::hs256(SECRET).unwrap(),
        ["user", "admin", "editor"],
    )
    .salt_rounds(4)
}

/// `create_auth(config(db))`.
pub fn auth(db: Database) -> ServerAuth {
    create_auth(config(db)).unwrap()
}

/// A registration input with the default roles.
pub fn reg(identifier: &str, password: &str) -> RegisterInput {
    RegisterInput {
        identifier: identifier.into(),
        password: password.into(),
        roles: None,
    }
}

/// A login input.
pub fn creds(identifier: &str, password: &str) -> LoginInput {
    LoginInput {
        identifier: identifier.into(),
        password: password.into(),
    }
}
