//! The signing-keys table: names and migrations of the `signing_keys` component.

use sea_query::{ColumnDef, Table};

use crate::db::{Migration, Target};

pub(crate) const KEYS: &str = "sentri_signing_keys";
pub(crate) const KID: &str = "kid";
pub(crate) const GENERATION: &str = "generation";
pub(crate) const ALGORITHM: &str = "algorithm";
pub(crate) const PRIVATE_KEY: &str = "private_key";
pub(crate) const PUBLIC_JWK: &str = "public_jwk";
pub(crate) const CREATED_AT: &str = "created_at";
pub(crate) const PUBLISH_FROM: &str = "publish_from";
pub(crate) const SIGN_FROM: &str = "sign_from";
pub(crate) const RETIRE_AT: &str = "retire_at";
pub(crate) const REVOKED_AT: &str = "revoked_at";

/// The migrations of the key store.
pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    component: "signing_keys",
    version: 1,
    up: keys_table,
}];

/// One row per key. `generation` is unique: of several instances that decide at once
/// that a new key is due (an empty store at boot, a rotation), exactly one insert wins.
fn keys_table(target: Target) -> Vec<String> {
    let mut keys = Table::create();
    keys.table(KEYS)
        .col(ColumnDef::new(KID).string_len(64).not_null().primary_key())
        .col(
            ColumnDef::new(GENERATION)
                .big_integer()
                .not_null()
                .unique_key(),
        )
        .col(ColumnDef::new(ALGORITHM).string_len(16).not_null())
        .col(ColumnDef::new(PRIVATE_KEY).text().not_null())
        .col(ColumnDef::new(PUBLIC_JWK).text().not_null())
        .col(ColumnDef::new(CREATED_AT).big_integer().not_null())
        .col(ColumnDef::new(PUBLISH_FROM).big_integer().not_null())
        .col(ColumnDef::new(SIGN_FROM).big_integer().not_null())
        .col(ColumnDef::new(RETIRE_AT).big_integer().null())
        .col(ColumnDef::new(REVOKED_AT).big_integer().null());
    target.create_table(keys.to_owned(), Vec::new())
}
