//! The `sentri_auth_events` table: names and the migration of the `audit` component.

use sea_query::{ColumnDef, Index, IndexCreateStatement, Table};

use crate::db::{Migration, Target};

pub(super) const EVENTS: &str = "sentri_auth_events";
pub(super) const ID: &str = "id";
pub(super) const TYPE: &str = "type";
pub(super) const USER_ID: &str = "user_id";
pub(super) const WORKSPACE_ID: &str = "workspace_id";
pub(super) const SESSION_ID: &str = "session_id";
pub(super) const IP: &str = "ip";
pub(super) const USER_AGENT: &str = "user_agent";
pub(super) const OUTCOME: &str = "outcome";
pub(super) const DETAILS: &str = "details";
pub(super) const AT_MS: &str = "at_ms";

/// The longest stored user agent and address (longer values are cut).
pub(super) const UA_LEN: u32 = 512;
pub(super) const IP_LEN: u32 = 64;

/// The migrations of the audit log.
pub(super) const MIGRATIONS: &[Migration] = &[Migration {
    component: "audit",
    version: 1,
    up: events_table,
}];

fn two_column(name: &str, first: &'static str) -> IndexCreateStatement {
    Index::create()
        .name(name)
        .table(EVENTS)
        .col(first)
        .col(AT_MS)
        .if_not_exists()
        .to_owned()
}

/// Version 1: one row per security event.
fn events_table(target: Target) -> Vec<String> {
    let mut table = Table::create();
    table
        .table(EVENTS)
        .col(ColumnDef::new(ID).string_len(36).not_null().primary_key())
        .col(ColumnDef::new(TYPE).string_len(64).not_null())
        .col(ColumnDef::new(USER_ID).string_len(36).null())
        .col(ColumnDef::new(WORKSPACE_ID).string_len(64).null())
        .col(ColumnDef::new(SESSION_ID).string_len(36).null())
        .col(ColumnDef::new(IP).string_len(IP_LEN).null())
        .col(ColumnDef::new(USER_AGENT).string_len(UA_LEN).null())
        .col(ColumnDef::new(OUTCOME).string_len(16).not_null())
        .col(ColumnDef::new(DETAILS).string_len(1024).null())
        .col(ColumnDef::new(AT_MS).big_integer().not_null());
    let indexes = vec![
        two_column("idx_sentri_auth_events_user_at", USER_ID),
        two_column("idx_sentri_auth_events_type_at", TYPE),
        Target::index(EVENTS, AT_MS),
    ];
    target.create_table(table.to_owned(), indexes)
}
