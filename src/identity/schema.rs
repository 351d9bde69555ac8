//! The users table: names and migrations of the `identity` component.

use sea_query::{ColumnDef, Table};

use crate::db::{Migration, Target};

pub(crate) const USERS: &str = "sentri_users";
pub(crate) const ID: &str = "id";
pub(crate) const IDENTIFIER: &str = "identifier";
pub(crate) const PASSWORD_HASH: &str = "password_hash";
pub(crate) const ROLES: &str = "roles";
pub(crate) const CREATED_AT: &str = "created_at";
pub(crate) const UPDATED_AT: &str = "updated_at";
/// The account's proven (or provisioned) email address; see [`EMAIL_VERIFIED_AT`].
pub(crate) const EMAIL: &str = "email";
/// When [`EMAIL`] was proven to belong to the user (unix ms), or `NULL`.
pub(crate) const EMAIL_VERIFIED_AT: &str = "email_verified_at";

/// The data migration that moves stored identifiers to the current normal form (run by
/// `ServerAuth::migrate`, recorded under this component). Version 1: NFKC_Casefold;
/// version 2: the domain of an address through IDNA to its ASCII form (a database that
/// ran version 1 runs the rewrite once more).
pub(crate) const IDENTIFIER_FORM: (&str, i64) = ("identity-form", 2);

/// The migrations of the users table.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        component: "identity",
        version: 1,
        up: users_table,
    },
    Migration {
        component: "identity-email",
        version: 1,
        up: email_columns,
    },
];

/// `identity-email` 1: the account's email address and when it was verified.
fn email_columns(target: Target) -> Vec<String> {
    let email = Table::alter()
        .table(USERS)
        .add_column(ColumnDef::new(EMAIL).string_len(320).null())
        .to_owned();
    let verified = Table::alter()
        .table(USERS)
        .add_column(ColumnDef::new(EMAIL_VERIFIED_AT).big_integer().null())
        .to_owned();
    vec![target.ddl(&email), target.ddl(&verified)]
}

fn users_table(target: Target) -> Vec<String> {
    let mut users = Table::create();
    users
        .table(USERS)
        .col(ColumnDef::new(ID).string_len(36).not_null().primary_key())
        .col(
            ColumnDef::new(IDENTIFIER)
                .string_len(320)
                .not_null()
                .unique_key(),
        )
        .col(ColumnDef::new(PASSWORD_HASH).string_len(255).not_null())
        .col(ColumnDef::new(ROLES).text().not_null())
        .col(ColumnDef::new(CREATED_AT).big_integer().not_null())
        .col(ColumnDef::new(UPDATED_AT).big_integer().not_null());
    target.create_table(users.to_owned(), Vec::new())
}
