//! The role tables: names and the `identity-roles` migration.
//!
//! * `sentri_roles(name PK, description, builtin, created_at, updated_at)`: the catalogue.
//! * `sentri_role_permissions(role → sentri_roles ON DELETE CASCADE, permission)`.
//! * `sentri_user_roles(user_id → sentri_users ON DELETE CASCADE, role, seq)`: the one
//!   record of who holds which role (`seq` keeps the order roles were given in).
//! * `sentri_users.authz_version`: bumped by every change of the user's roles; access
//!   tokens carry it (`av`) and `protect()` refuses an older one.
//!
//! `user_roles.role` has no foreign key to the catalogue on purpose: users of the landed
//! schema may hold roles that are no longer configured, and the migration must keep
//! them; deleting a role in use is refused by the service instead.

use sea_query::{ColumnDef, ForeignKey, ForeignKeyAction, Index, Table};

use crate::db::{Dialect, Migration, Target};
use crate::identity::schema::{self as users, USERS};

pub(crate) const ROLES: &str = "sentri_roles";
pub(crate) const NAME: &str = "name";
pub(crate) const DESCRIPTION: &str = "description";
pub(crate) const BUILTIN: &str = "builtin";
pub(crate) const CREATED_AT: &str = "created_at";
pub(crate) const UPDATED_AT: &str = "updated_at";

pub(crate) const ROLE_PERMISSIONS: &str = "sentri_role_permissions";
pub(crate) const ROLE: &str = "role";
pub(crate) const PERMISSION: &str = "permission";

pub(crate) const USER_ROLES: &str = "sentri_user_roles";
pub(crate) const USER_ID: &str = "user_id";
pub(crate) const SEQ: &str = "seq";

/// `sentri_users.authz_version`.
pub(crate) const AUTHZ_VERSION: &str = "authz_version";

/// The longest role name (bytes).
pub(crate) const MAX_ROLE_BYTES: usize = 64;
/// The longest permission name (bytes).
pub(crate) const MAX_PERMISSION_BYTES: usize = 128;
/// The longest role description (bytes).
pub(crate) const MAX_DESCRIPTION_BYTES: usize = 512;

/// The migrations of the role tables (core: login and registration read user roles).
pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    component: "identity-roles",
    version: 1,
    up: role_tables,
}];

/// `identity-roles` 1: the catalogue, the join table, the version column; the landed
/// JSON `roles` column is copied into the join table (order kept, duplicates dropped)
/// and then dropped, so there is one record of a user's roles.
fn role_tables(target: Target) -> Vec<String> {
    let mut out = catalogue_tables(target);
    out.extend(user_roles_table(target));
    let version = Table::alter()
        .table(USERS)
        .add_column(
            ColumnDef::new(AUTHZ_VERSION)
                .big_integer()
                .not_null()
                .default(0),
        )
        .to_owned();
    out.push(target.ddl(&version));
    out.push(copy_json_roles(target.dialect()).to_owned());
    let drop = Table::alter()
        .table(USERS)
        .drop_column(users::ROLES)
        .to_owned();
    out.push(target.ddl(&drop));
    out
}

fn catalogue_tables(target: Target) -> Vec<String> {
    let mut roles = Table::create();
    roles
        .table(ROLES)
        .col(
            ColumnDef::new(NAME)
                .string_len(255)
                .not_null()
                .primary_key(),
        )
        .col(ColumnDef::new(DESCRIPTION).string_len(512).not_null())
        .col(ColumnDef::new(BUILTIN).small_integer().not_null())
        .col(ColumnDef::new(CREATED_AT).big_integer().not_null())
        .col(ColumnDef::new(UPDATED_AT).big_integer().not_null());
    let mut perms = Table::create();
    perms
        .table(ROLE_PERMISSIONS)
        .col(ColumnDef::new(ROLE).string_len(255).not_null())
        .col(ColumnDef::new(PERMISSION).string_len(128).not_null())
        .primary_key(Index::create().col(ROLE).col(PERMISSION))
        .foreign_key(
            ForeignKey::create()
                .name("fk_sentri_role_permissions_role")
                .from(ROLE_PERMISSIONS, ROLE)
                .to(ROLES, NAME)
                .on_delete(ForeignKeyAction::Cascade),
        );
    let mut out = target.create_table(roles.to_owned(), Vec::new());
    out.extend(target.create_table(perms.to_owned(), Vec::new()));
    out
}

fn user_roles_table(target: Target) -> Vec<String> {
    let mut table = Table::create();
    table
        .table(USER_ROLES)
        .col(ColumnDef::new(USER_ID).string_len(36).not_null())
        .col(ColumnDef::new(ROLE).string_len(255).not_null())
        .col(ColumnDef::new(SEQ).big_integer().not_null())
        .primary_key(Index::create().col(USER_ID).col(ROLE))
        .foreign_key(
            ForeignKey::create()
                .name("fk_sentri_user_roles_user")
                .from(USER_ROLES, USER_ID)
                .to(USERS, users::ID)
                .on_delete(ForeignKeyAction::Cascade),
        );
    target.create_table(table.to_owned(), vec![Target::index(USER_ROLES, ROLE)])
}

/// Copies every landed `sentri_users.roles` JSON array into `sentri_user_roles`, one
/// row per distinct role, `seq` = its first position. JSON table functions have no
/// sea-query form, so this one statement is written per dialect (idempotent: a rerun
/// after a partial migration inserts nothing twice).
fn copy_json_roles(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => {
            "INSERT INTO sentri_user_roles (user_id, role, seq) \
             SELECT u.id, r.value, MIN(r.ord) FROM sentri_users u \
             CROSS JOIN LATERAL json_array_elements_text(u.roles::json) WITH ORDINALITY AS r(value, ord) \
             GROUP BY u.id, r.value ON CONFLICT DO NOTHING"
        }
        Dialect::MySql => {
            "INSERT IGNORE INTO sentri_user_roles (user_id, role, seq) \
             SELECT u.id, MIN(j.role), MIN(j.ord) FROM sentri_users u, \
             JSON_TABLE(u.roles, '$[*]' COLUMNS (ord FOR ORDINALITY, role VARCHAR(255) PATH '$')) AS j \
             GROUP BY u.id, CAST(j.role AS BINARY)"
        }
        Dialect::Sqlite => {
            "INSERT OR IGNORE INTO sentri_user_roles (user_id, role, seq) \
             SELECT u.id, j.value, MIN(j.key) + 1 FROM sentri_users u, json_each(u.roles) AS j \
             GROUP BY u.id, j.value"
        }
    }
}

/// The roles of the user whose id is `sentri_users.id` in the enclosing query, as a
/// JSON array of strings in the order they were given (a correlated subquery; the
/// aggregate differs per dialect).
pub(crate) fn roles_json_sql(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => {
            "(SELECT COALESCE(json_agg(r.role ORDER BY r.seq, r.role), '[]'::json)::text \
             FROM sentri_user_roles r WHERE r.user_id = sentri_users.id)"
        }
        Dialect::MySql => {
            "(SELECT COALESCE(CONCAT('[', GROUP_CONCAT(JSON_QUOTE(r.role) ORDER BY r.seq, r.role SEPARATOR ','), ']'), '[]') \
             FROM sentri_user_roles r WHERE r.user_id = sentri_users.id)"
        }
        Dialect::Sqlite => {
            "(SELECT COALESCE(json_group_array(r.role ORDER BY r.seq, r.role), '[]') \
             FROM sentri_user_roles r WHERE r.user_id = sentri_users.id)"
        }
    }
}
