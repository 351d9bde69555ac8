//! The sessions and session-families tables: names and migrations of the `session`
//! component.

use sea_query::{
    ColumnDef, Expr, ForeignKey, ForeignKeyAction, ForeignKeyCreateStatement, Func, Query, Table,
};

use crate::db::{Migration, Target};
use crate::identity::schema::USERS;

pub(crate) const SESSIONS: &str = "sentri_sessions";
pub(crate) const FAMILIES: &str = "sentri_session_families";

pub(crate) const ID: &str = "id";
pub(crate) const USER_ID: &str = "user_id";
pub(crate) const FAMILY_ID: &str = "family_id";
pub(crate) const REFRESH_HASH: &str = "refresh_hash";
pub(crate) const PREVIOUS_HASH: &str = "previous_hash";
pub(crate) const ROTATED_FROM: &str = "rotated_from";
pub(crate) const EXPIRES_AT: &str = "expires_at";
pub(crate) const CREATED_AT: &str = "created_at";
pub(crate) const LAST_USED_AT: &str = "last_used_at";
pub(crate) const USER_AGENT: &str = "user_agent";
pub(crate) const IP: &str = "ip";
pub(crate) const MAX_EXPIRES_AT: &str = "max_expires_at";
pub(crate) const REVOKED_AT: &str = "revoked_at";
pub(crate) const REVOCATION: &str = "revocation";
pub(crate) const ASSURANCE: &str = "assurance";
pub(crate) const WORKSPACE_ID: &str = "workspace_id";

/// The migrations of the session tables (after the users table).
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        component: "session",
        version: 1,
        up: sessions_table,
    },
    Migration {
        component: "session",
        version: 2,
        up: families_table,
    },
    Migration {
        component: "session-assurance",
        version: 1,
        up: family_assurance,
    },
    Migration {
        component: "session-workspace",
        version: 1,
        up: family_workspace,
    },
];

/// `session-workspace` version 1: the workspace a family is bound to (`NULL`: a
/// personal session). Every access token of the family carries it as `wid`; the
/// workspaces capability sets it (switch) and clears it (removal, deletion). No foreign
/// key: the session tables know no capability.
fn family_workspace(target: Target) -> Vec<String> {
    let alter = sea_query::Table::alter()
        .table(FAMILIES)
        .add_column(ColumnDef::new(WORKSPACE_ID).string_len(36).null())
        .to_owned();
    let index = sea_query::Index::create()
        .name("idx_sentri_session_families_workspace_id")
        .table(FAMILIES)
        .col(WORKSPACE_ID)
        .to_owned();
    vec![target.ddl(&alter), target.ddl(&index)]
}

/// `session-assurance` version 1: how each family's login was authenticated
/// (`Assurance::to_column`; `NULL` for families opened before, whose tokens carry no
/// `amr`/`aal`).
fn family_assurance(target: Target) -> Vec<String> {
    let alter = sea_query::Table::alter()
        .table(FAMILIES)
        .add_column(ColumnDef::new(ASSURANCE).string_len(64).null())
        .to_owned();
    vec![target.ddl(&alter)]
}

fn user_fk(name: &str, table: &'static str) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(table, USER_ID)
        .to(USERS, "id")
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

/// Version 1: one row per live refresh token.
fn sessions_table(target: Target) -> Vec<String> {
    let mut sessions = Table::create();
    sessions
        .table(SESSIONS)
        .col(ColumnDef::new(ID).string_len(36).not_null().primary_key())
        .col(ColumnDef::new(USER_ID).string_len(36).not_null())
        .col(ColumnDef::new(FAMILY_ID).string_len(36).not_null())
        .col(
            ColumnDef::new(REFRESH_HASH)
                .string_len(64)
                .not_null()
                .unique_key(),
        )
        .col(ColumnDef::new(PREVIOUS_HASH).string_len(64).null())
        .col(ColumnDef::new(ROTATED_FROM).string_len(36).null())
        .col(ColumnDef::new(EXPIRES_AT).big_integer().not_null())
        .col(ColumnDef::new(CREATED_AT).big_integer().not_null())
        .col(ColumnDef::new(LAST_USED_AT).big_integer().not_null())
        .col(ColumnDef::new(USER_AGENT).string_len(512).null())
        .col(ColumnDef::new(IP).string_len(64).null())
        .foreign_key(&mut user_fk("fk_sentri_sessions_user", SESSIONS));
    let indexes = [USER_ID, FAMILY_ID, EXPIRES_AT, PREVIOUS_HASH]
        .map(|col| Target::index(SESSIONS, col))
        .to_vec();
    target.create_table(sessions.to_owned(), indexes)
}

/// Version 2: session families, the row every rotation and revocation of a login locks
/// (see `session::families`). Existing sessions get a family each, ending when their
/// newest refresh token does (their absolute end is not known).
fn families_table(target: Target) -> Vec<String> {
    let mut families = Table::create();
    families
        .table(FAMILIES)
        .col(ColumnDef::new(ID).string_len(36).not_null().primary_key())
        .col(ColumnDef::new(USER_ID).string_len(36).not_null())
        .col(ColumnDef::new(CREATED_AT).big_integer().not_null())
        .col(ColumnDef::new(EXPIRES_AT).big_integer().not_null())
        .col(ColumnDef::new(MAX_EXPIRES_AT).big_integer().not_null())
        .col(ColumnDef::new(REVOKED_AT).big_integer().null())
        .col(ColumnDef::new(REVOCATION).string_len(36).null())
        .foreign_key(&mut user_fk("fk_sentri_session_families_user", FAMILIES));
    let indexes = [USER_ID, EXPIRES_AT]
        .map(|col| Target::index(FAMILIES, col))
        .to_vec();
    let mut out = target.create_table(families.to_owned(), indexes);
    out.push(backfill_families(target));
    out
}

/// One family row per family id found in `sentri_sessions`.
fn backfill_families(target: Target) -> String {
    let select = Query::select()
        .column(FAMILY_ID)
        .expr(Func::max(Expr::col(USER_ID)))
        .expr(Func::min(Expr::col(CREATED_AT)))
        .expr(Func::max(Expr::col(EXPIRES_AT)))
        .expr(Func::max(Expr::col(EXPIRES_AT)))
        .from(SESSIONS)
        .group_by_col(FAMILY_ID)
        .to_owned();
    let mut insert = Query::insert();
    insert
        .into_table(FAMILIES)
        .columns([ID, USER_ID, CREATED_AT, EXPIRES_AT, MAX_EXPIRES_AT]);
    match insert.select_from(select) {
        Ok(_) => target.query(&insert),
        Err(_) => String::new(),
    }
}
