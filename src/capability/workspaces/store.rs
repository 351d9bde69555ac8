//! The workspace tables and their statements (sea-query, three dialects).
//!
//! * `sentri_workspaces(id PK, name, slug UNIQUE, status, created_at, updated_at)`
//! * `sentri_workspace_members(workspace_id → workspaces, user_id → users, roles, owner,
//!   status, created_at, updated_at, PK(workspace_id, user_id))`
//! * `sentri_workspace_invitations(id PK, workspace_id → workspaces, token_hash UNIQUE,
//!   address, roles, inviter_id → users, expires_at, created_at, accepted_at, revoked_at)`
//!
//! Foreign keys cascade: deleting a user or a workspace deletes its memberships and
//! invitations. **Tenant isolation lives here**: every statement over members or
//! invitations takes a [`Scope`] and always carries `workspace_id = <scope>`; no method
//! reads or changes a tenant-owned row without it.

use sea_query::{
    ColumnDef, Expr, ExprTrait, ForeignKey, ForeignKeyAction, Index, Order, Query, SelectStatement,
    Table,
};

use crate::core::error::{ErrorCode, Result, SentriError};
use crate::db::{Columns, Database, FromRow, Migration, Step, StepsOutcome, Target, db_err};
use crate::identity::schema::USERS;

pub(super) const WORKSPACES: &str = "sentri_workspaces";
pub(super) const MEMBERS: &str = "sentri_workspace_members";
pub(super) const INVITATIONS: &str = "sentri_workspace_invitations";

const ID: &str = "id";
const NAME: &str = "name";
const SLUG: &str = "slug";
const STATUS: &str = "status";
const CREATED_AT: &str = "created_at";
const UPDATED_AT: &str = "updated_at";
const WORKSPACE_ID: &str = "workspace_id";
const USER_ID: &str = "user_id";
const ROLES: &str = "roles";
const OWNER: &str = "owner";
const TOKEN_HASH: &str = "token_hash";
const ADDRESS: &str = "address";
const INVITER_ID: &str = "inviter_id";
const EXPIRES_AT: &str = "expires_at";
const ACCEPTED_AT: &str = "accepted_at";
const REVOKED_AT: &str = "revoked_at";

/// The columns of a workspace row, in [`WorkspaceRecord`] order.
const WORKSPACE_COLUMNS: [&str; 6] = [ID, NAME, SLUG, STATUS, CREATED_AT, UPDATED_AT];

/// The longest workspace name (characters).
pub(super) const MAX_NAME_CHARS: usize = 200;
/// The longest slug (bytes).
pub(super) const MAX_SLUG_BYTES: usize = 64;
/// The longest invited address (bytes).
pub(super) const MAX_ADDRESS_BYTES: usize = 320;

/// The migrations of the `workspaces` component.
pub(super) const MIGRATIONS: &[Migration] = &[Migration {
    component: "workspaces",
    version: 1,
    up: tables,
}];

/// Version 1: workspaces, memberships, invitations.
fn tables(target: Target) -> Vec<String> {
    let mut ws = Table::create();
    ws.table(WORKSPACES)
        .col(ColumnDef::new(ID).string_len(36).not_null().primary_key())
        .col(ColumnDef::new(NAME).string_len(800).not_null())
        .col(
            ColumnDef::new(SLUG)
                .string_len(MAX_SLUG_BYTES as u32)
                .not_null()
                .unique_key(),
        )
        .col(ColumnDef::new(STATUS).string_len(16).not_null())
        .col(ColumnDef::new(CREATED_AT).big_integer().not_null())
        .col(ColumnDef::new(UPDATED_AT).big_integer().not_null());
    let mut members = Table::create();
    members
        .table(MEMBERS)
        .col(ColumnDef::new(WORKSPACE_ID).string_len(36).not_null())
        .col(ColumnDef::new(USER_ID).string_len(36).not_null())
        .col(ColumnDef::new(ROLES).text().not_null())
        .col(ColumnDef::new(OWNER).small_integer().not_null())
        .col(ColumnDef::new(STATUS).string_len(16).not_null())
        .col(ColumnDef::new(CREATED_AT).big_integer().not_null())
        .col(ColumnDef::new(UPDATED_AT).big_integer().not_null())
        .primary_key(Index::create().col(WORKSPACE_ID).col(USER_ID))
        .foreign_key(
            ForeignKey::create()
                .name("fk_sentri_ws_members_ws")
                .from(MEMBERS, WORKSPACE_ID)
                .to(WORKSPACES, ID)
                .on_delete(ForeignKeyAction::Cascade),
        )
        .foreign_key(
            ForeignKey::create()
                .name("fk_sentri_ws_members_user")
                .from(MEMBERS, USER_ID)
                .to(USERS, ID)
                .on_delete(ForeignKeyAction::Cascade),
        );
    let mut invitations = Table::create();
    invitations
        .table(INVITATIONS)
        .col(ColumnDef::new(ID).string_len(36).not_null().primary_key())
        .col(ColumnDef::new(WORKSPACE_ID).string_len(36).not_null())
        .col(
            ColumnDef::new(TOKEN_HASH)
                .string_len(64)
                .not_null()
                .unique_key(),
        )
        .col(
            ColumnDef::new(ADDRESS)
                .string_len(MAX_ADDRESS_BYTES as u32)
                .not_null(),
        )
        .col(ColumnDef::new(ROLES).text().not_null())
        .col(ColumnDef::new(INVITER_ID).string_len(36).null())
        .col(ColumnDef::new(EXPIRES_AT).big_integer().not_null())
        .col(ColumnDef::new(CREATED_AT).big_integer().not_null())
        .col(ColumnDef::new(ACCEPTED_AT).big_integer().null())
        .col(ColumnDef::new(REVOKED_AT).big_integer().null())
        .foreign_key(
            ForeignKey::create()
                .name("fk_sentri_ws_invitations_ws")
                .from(INVITATIONS, WORKSPACE_ID)
                .to(WORKSPACES, ID)
                .on_delete(ForeignKeyAction::Cascade),
        )
        .foreign_key(
            ForeignKey::create()
                .name("fk_sentri_ws_invitations_inviter")
                .from(INVITATIONS, INVITER_ID)
                .to(USERS, ID)
                .on_delete(ForeignKeyAction::SetNull),
        );
    let mut out = target.create_table(ws.to_owned(), Vec::new());
    out.extend(target.create_table(members.to_owned(), vec![Target::index(MEMBERS, USER_ID)]));
    out.extend(target.create_table(
        invitations.to_owned(),
        vec![Target::index(INVITATIONS, WORKSPACE_ID)],
    ));
    out
}

/// A membership's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MemberStatus {
    /// A member: the tenant guard admits them.
    Active,
    /// Invited by address and not yet accepted: not admitted.
    Invited,
    /// Suspended by a manager: not admitted until reinstated.
    Suspended,
}

impl MemberStatus {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Invited => "invited",
            Self::Suspended => "suspended",
        }
    }

    pub(super) fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "invited" => Some(Self::Invited),
            "suspended" => Some(Self::Suspended),
            _ => None,
        }
    }
}

/// The one workspace every tenant-owned statement is confined to. Made by the service
/// only after it checked the caller's membership (or for trusted server-side code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Scope(String);

impl Scope {
    pub(super) fn of(workspace_id: &str) -> Self {
        Self(workspace_id.to_owned())
    }

    pub(super) fn id(&self) -> &str {
        &self.0
    }
}

/// A stored workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WorkspaceRecord {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) slug: String,
    pub(super) status: String,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
}

impl FromRow for WorkspaceRecord {
    fn from_row(row: &impl Columns) -> Result<Self> {
        Ok(Self {
            id: row.col(ID)?,
            name: row.col(NAME)?,
            slug: row.col(SLUG)?,
            status: row.col(STATUS)?,
            created_at: row.col(CREATED_AT)?,
            updated_at: row.col(UPDATED_AT)?,
        })
    }
}

/// A stored membership (with the member's identifier when listed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MemberRecord {
    pub(super) workspace_id: String,
    pub(super) user_id: String,
    pub(super) identifier: Option<String>,
    pub(super) roles: Vec<String>,
    pub(super) status: MemberStatus,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
}

impl MemberRecord {
    /// `true` for an active member holding `owner`.
    pub(super) fn is_active_owner(&self, owner: &str) -> bool {
        self.status == MemberStatus::Active && self.roles.iter().any(|r| r == owner)
    }
}

fn parse_roles(text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(SentriError::internal)
}

fn roles_text(roles: &[String]) -> Result<String> {
    serde_json::to_string(roles).map_err(SentriError::internal)
}

impl FromRow for MemberRecord {
    fn from_row(row: &impl Columns) -> Result<Self> {
        let roles: String = row.col(ROLES)?;
        let status: String = row.col(STATUS)?;
        Ok(Self {
            workspace_id: row.col(WORKSPACE_ID)?,
            user_id: row.col(USER_ID)?,
            identifier: row.col("u_identifier")?,
            roles: parse_roles(&roles)?,
            status: MemberStatus::parse(&status)
                .ok_or_else(|| SentriError::internal(std::io::Error::other("bad member status")))?,
            created_at: row.col(CREATED_AT)?,
            updated_at: row.col(UPDATED_AT)?,
        })
    }
}

/// A workspace as one of the caller's memberships (`GET /workspaces`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MyWorkspace {
    pub(super) workspace: WorkspaceRecord,
    pub(super) roles: Vec<String>,
    pub(super) status: MemberStatus,
}

impl FromRow for MyWorkspace {
    fn from_row(row: &impl Columns) -> Result<Self> {
        let roles: String = row.col("m_roles")?;
        let status: String = row.col("m_status")?;
        Ok(Self {
            workspace: WorkspaceRecord::from_row(row)?,
            roles: parse_roles(&roles)?,
            status: MemberStatus::parse(&status).unwrap_or(MemberStatus::Suspended),
        })
    }
}

/// A stored invitation (never the token: only its hash, which is not shown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct InvitationRecord {
    pub(super) id: String,
    pub(super) workspace_id: String,
    pub(super) token_hash: String,
    pub(super) address: String,
    pub(super) roles: Vec<String>,
    pub(super) inviter_id: Option<String>,
    pub(super) expires_at: i64,
    pub(super) created_at: i64,
    pub(super) accepted_at: Option<i64>,
    pub(super) revoked_at: Option<i64>,
}

impl FromRow for InvitationRecord {
    fn from_row(row: &impl Columns) -> Result<Self> {
        let roles: String = row.col(ROLES)?;
        Ok(Self {
            id: row.col(ID)?,
            workspace_id: row.col(WORKSPACE_ID)?,
            token_hash: row.col(TOKEN_HASH)?,
            address: row.col(ADDRESS)?,
            roles: parse_roles(&roles)?,
            inviter_id: row.col(INVITER_ID)?,
            expires_at: row.col(EXPIRES_AT)?,
            created_at: row.col(CREATED_AT)?,
            accepted_at: row.col(ACCEPTED_AT)?,
            revoked_at: row.col(REVOKED_AT)?,
        })
    }
}

/// How a change of one membership ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    Done,
    /// The workspace is gone.
    NoWorkspace,
    /// It would leave the workspace without an active owner.
    LastOwner,
    /// The membership is gone or changed meanwhile.
    Moved,
}

/// A new membership, or the new state of one.
#[derive(Debug, Clone)]
pub(super) struct MemberState<'a> {
    pub(super) user_id: &'a str,
    pub(super) roles: &'a [String],
    pub(super) owner: bool,
    pub(super) status: MemberStatus,
}

fn conflict(err: sqlx::Error, code: ErrorCode, message: &'static str) -> SentriError {
    if crate::db::is_unique_violation(&err) {
        return SentriError::new(code, message);
    }
    match &err {
        sqlx::Error::Database(e) if e.is_foreign_key_violation() => SentriError::user_not_found(),
        _ => db_err(err),
    }
}

/// One page of `stmt` over the members table: ordered by `col`, the rows after `after`.
fn keyset<'a>(
    stmt: &'a mut SelectStatement,
    col: &'static str,
    after: Option<&str>,
    limit: u64,
) -> &'a SelectStatement {
    stmt.order_by((MEMBERS, col), Order::Asc).limit(limit);
    if let Some(after) = after {
        stmt.and_where(Expr::col((MEMBERS, col)).gt(after));
    }
    stmt
}

/// The workspace statements over one database.
#[derive(Clone)]
pub(super) struct Store {
    pub(super) db: Database,
}

impl Store {
    fn members_select() -> SelectStatement {
        Query::select()
            .columns(
                [WORKSPACE_ID, USER_ID, ROLES, STATUS, CREATED_AT, UPDATED_AT]
                    .map(|c| (MEMBERS, c)),
            )
            .expr_as(Expr::col((USERS, "identifier")), "u_identifier")
            .from(MEMBERS)
            .left_join(USERS, Expr::col((USERS, ID)).equals((MEMBERS, USER_ID)))
            .to_owned()
    }

    fn insert_member_stmt(&self, scope: &Scope, m: &MemberState<'_>, now: i64) -> Result<Step> {
        let stmt = Query::insert()
            .into_table(MEMBERS)
            .columns([
                WORKSPACE_ID,
                USER_ID,
                ROLES,
                OWNER,
                STATUS,
                CREATED_AT,
                UPDATED_AT,
            ])
            .values([
                Expr::val(scope.id()),
                Expr::val(m.user_id),
                Expr::val(roles_text(m.roles)?),
                Expr::val(i16::from(m.owner)),
                Expr::val(m.status.as_str()),
                Expr::val(now),
                Expr::val(now),
            ])
            .map_err(SentriError::internal)?
            .to_owned();
        Ok(Step {
            built: self.db.build(&stmt),
            must_affect: true,
        })
    }

    /// Creates a workspace with its first member (an owner), in one transaction.
    pub(super) async fn create(&self, ws: &WorkspaceRecord, owner: &MemberState<'_>) -> Result<()> {
        let insert = Query::insert()
            .into_table(WORKSPACES)
            .columns(WORKSPACE_COLUMNS)
            .values([
                Expr::val(ws.id.as_str()),
                Expr::val(ws.name.as_str()),
                Expr::val(ws.slug.as_str()),
                Expr::val(ws.status.as_str()),
                Expr::val(ws.created_at),
                Expr::val(ws.updated_at),
            ])
            .map_err(SentriError::internal)?
            .to_owned();
        let steps = [
            Step {
                built: self.db.build(&insert),
                must_affect: true,
            },
            self.insert_member_stmt(&Scope::of(&ws.id), owner, ws.created_at)?,
        ];
        self.db
            .steps(&steps, |e| {
                conflict(e, ErrorCode::WorkspaceSlugTaken, "This slug is taken")
            })
            .await?;
        Ok(())
    }

    /// The workspace `id`, if any.
    pub(super) async fn workspace(&self, id: &str) -> Result<Option<WorkspaceRecord>> {
        self.workspace_where(ID, id).await
    }

    /// The workspace with this slug, if any.
    pub(super) async fn workspace_by_slug(&self, slug: &str) -> Result<Option<WorkspaceRecord>> {
        self.workspace_where(SLUG, slug).await
    }

    /// The workspace whose unique column `col` is `value`, if any.
    async fn workspace_where(
        &self,
        col: &'static str,
        value: &str,
    ) -> Result<Option<WorkspaceRecord>> {
        let stmt = Query::select()
            .columns(WORKSPACE_COLUMNS)
            .from(WORKSPACES)
            .and_where(Expr::col(col).eq(value))
            .to_owned();
        self.db.fetch_first(&stmt).await
    }

    /// The workspaces `user` belongs to (any status), by id after `after`.
    pub(super) async fn workspaces_of(
        &self,
        user: &str,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<MyWorkspace>> {
        let mut stmt = Query::select()
            .columns(WORKSPACE_COLUMNS.map(|c| (WORKSPACES, c)))
            .expr_as(Expr::col((MEMBERS, ROLES)), "m_roles")
            .expr_as(Expr::col((MEMBERS, STATUS)), "m_status")
            .from(MEMBERS)
            .inner_join(
                WORKSPACES,
                Expr::col((WORKSPACES, ID)).equals((MEMBERS, WORKSPACE_ID)),
            )
            .and_where(Expr::col((MEMBERS, USER_ID)).eq(user))
            .to_owned();
        self.db
            .fetch_all(keyset(&mut stmt, WORKSPACE_ID, after, limit))
            .await
    }

    /// Renames a workspace and/or changes its slug.
    pub(super) async fn update_workspace(
        &self,
        scope: &Scope,
        name: Option<&str>,
        slug: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let mut values = vec![(UPDATED_AT, Expr::val(now))];
        if let Some(name) = name {
            values.push((NAME, Expr::val(name)));
        }
        if let Some(slug) = slug {
            values.push((SLUG, Expr::val(slug)));
        }
        let stmt = Query::update()
            .table(WORKSPACES)
            .values(values)
            .and_where(Expr::col(ID).eq(scope.id()))
            .to_owned();
        let n = self
            .db
            .exec_with(self.db.build(&stmt), |e| {
                conflict(e, ErrorCode::WorkspaceSlugTaken, "This slug is taken")
            })
            .await?;
        Ok(n > 0)
    }

    /// Deletes a workspace (memberships and invitations cascade).
    pub(super) async fn delete_workspace(&self, scope: &Scope) -> Result<bool> {
        // Explicitly too: SQLite pools may run with foreign keys off.
        let members = Query::delete()
            .from_table(MEMBERS)
            .and_where(Expr::col(WORKSPACE_ID).eq(scope.id()))
            .to_owned();
        let invitations = Query::delete()
            .from_table(INVITATIONS)
            .and_where(Expr::col(WORKSPACE_ID).eq(scope.id()))
            .to_owned();
        let ws = Query::delete()
            .from_table(WORKSPACES)
            .and_where(Expr::col(ID).eq(scope.id()))
            .to_owned();
        let step = |built, must_affect| Step { built, must_affect };
        let steps = [
            step(self.db.build(&members), false),
            step(self.db.build(&invitations), false),
            step(self.db.build(&ws), true),
        ];
        Ok(self.db.steps(&steps, db_err).await? == StepsOutcome::Committed)
    }

    /// The membership of `user`, if any.
    pub(super) async fn member(&self, scope: &Scope, user: &str) -> Result<Option<MemberRecord>> {
        let stmt = Self::members_select()
            .and_where(Expr::col((MEMBERS, WORKSPACE_ID)).eq(scope.id()))
            .and_where(Expr::col((MEMBERS, USER_ID)).eq(user))
            .to_owned();
        self.db.fetch_first(&stmt).await
    }

    /// `user`'s roles while they are an active member of the active workspace.
    pub(super) async fn active_roles(
        &self,
        scope: &Scope,
        user: &str,
    ) -> Result<Option<Vec<String>>> {
        let stmt = Self::members_select()
            .inner_join(
                WORKSPACES,
                Expr::col((WORKSPACES, ID)).equals((MEMBERS, WORKSPACE_ID)),
            )
            .and_where(Expr::col((MEMBERS, WORKSPACE_ID)).eq(scope.id()))
            .and_where(Expr::col((MEMBERS, USER_ID)).eq(user))
            .and_where(Expr::col((MEMBERS, STATUS)).eq(MemberStatus::Active.as_str()))
            .and_where(Expr::col((WORKSPACES, STATUS)).eq("active"))
            .to_owned();
        let member: Option<MemberRecord> = self.db.fetch_first(&stmt).await?;
        Ok(member.map(|m| m.roles))
    }

    /// Members by user id after `after`.
    pub(super) async fn members(
        &self,
        scope: &Scope,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<MemberRecord>> {
        let mut stmt = Self::members_select()
            .and_where(Expr::col((MEMBERS, WORKSPACE_ID)).eq(scope.id()))
            .to_owned();
        self.db
            .fetch_all(keyset(&mut stmt, USER_ID, after, limit))
            .await
    }

    /// Adds a membership (`ALREADY_MEMBER` when there is one, `USER_NOT_FOUND` for an
    /// unknown user).
    pub(super) async fn add_member(
        &self,
        scope: &Scope,
        m: &MemberState<'_>,
        now: i64,
    ) -> Result<()> {
        let step = self.insert_member_stmt(scope, m, now)?;
        self.db
            .steps(&[step], |e| {
                conflict(
                    e,
                    ErrorCode::AlreadyMember,
                    "Already a member of this workspace",
                )
            })
            .await?;
        Ok(())
    }

    /// `UPDATE sentri_workspaces SET updated_at` of the workspace: the lock every change
    /// of its owners takes first, so concurrent changes of one workspace's owners run one
    /// after the other and each sees the last.
    fn lock_workspace(&self, scope: &Scope, now: i64) -> Step {
        let stmt = Query::update()
            .table(WORKSPACES)
            .value(UPDATED_AT, now)
            .and_where(Expr::col(ID).eq(scope.id()))
            .to_owned();
        Step {
            built: self.db.build(&stmt),
            must_affect: true,
        }
    }

    /// Touches the workspace row again only while another active owner than `user`
    /// exists (after the lock: it sees every committed change of the owners).
    fn another_owner(&self, scope: &Scope, user: &str, now: i64) -> Step {
        let others = Query::select()
            .expr(Expr::val(1))
            .from(MEMBERS)
            .and_where(Expr::col(WORKSPACE_ID).eq(scope.id()))
            .and_where(Expr::col(USER_ID).ne(user))
            .and_where(Expr::col(OWNER).eq(1))
            .and_where(Expr::col(STATUS).eq(MemberStatus::Active.as_str()))
            .to_owned();
        let stmt = Query::update()
            .table(WORKSPACES)
            .value(UPDATED_AT, now)
            .and_where(Expr::col(ID).eq(scope.id()))
            .and_where(Expr::exists(others))
            .to_owned();
        Step {
            built: self.db.build(&stmt),
            must_affect: true,
        }
    }

    /// `WHERE` of the membership `old`, exactly as it was read (so a change decided on
    /// it applies only if nothing changed it meanwhile).
    fn same_member(scope: &Scope, old: &MemberRecord, owner: &str) -> sea_query::Condition {
        sea_query::Condition::all()
            .add(Expr::col(WORKSPACE_ID).eq(scope.id()))
            .add(Expr::col(USER_ID).eq(old.user_id.as_str()))
            .add(Expr::col(STATUS).eq(old.status.as_str()))
            .add(Expr::col(OWNER).eq(i16::from(old.roles.iter().any(|r| r == owner))))
            .add(Expr::col(UPDATED_AT).eq(old.updated_at))
    }

    /// Changes membership `old` to `new` (`None`: deletes it), refusing to leave the
    /// workspace without an active owner: the workspace row is locked first, and when
    /// `old` is an active owner that `new` is not, another active owner must exist.
    ///
    /// A removal (`new` is `None`) also revokes, in the same transaction, every pending
    /// invitation of the workspace to one of `addresses` (the removed member's).
    pub(super) async fn change_member(
        &self,
        scope: &Scope,
        old: &MemberRecord,
        new: Option<&MemberState<'_>>,
        owner: &str,
        now: i64,
        addresses: &[String],
    ) -> Result<Change> {
        let loses_owner = old.is_active_owner(owner)
            && !new.is_some_and(|n| n.owner && n.status == MemberStatus::Active);
        let target = Self::same_member(scope, old, owner);
        let write = match new {
            Some(n) => self.db.build(
                &Query::update()
                    .table(MEMBERS)
                    .values([
                        (ROLES, Expr::val(roles_text(n.roles)?)),
                        (OWNER, Expr::val(i16::from(n.owner))),
                        (STATUS, Expr::val(n.status.as_str())),
                        (
                            UPDATED_AT,
                            Expr::val(std::cmp::max(now, old.updated_at + 1)),
                        ),
                    ])
                    .cond_where(target)
                    .to_owned(),
            ),
            None => self.db.build(
                &Query::delete()
                    .from_table(MEMBERS)
                    .cond_where(target)
                    .to_owned(),
            ),
        };
        let mut steps = vec![self.lock_workspace(scope, now)];
        if loses_owner {
            steps.push(self.another_owner(scope, &old.user_id, now));
        }
        let write_at = steps.len();
        steps.push(Step {
            built: write,
            must_affect: true,
        });
        if new.is_none() && !addresses.is_empty() {
            steps.push(self.void_invitations(scope, addresses, now));
        }
        Ok(match self.db.steps(&steps, db_err).await? {
            StepsOutcome::Committed => Change::Done,
            StepsOutcome::StoppedAt(0) => Change::NoWorkspace,
            StepsOutcome::StoppedAt(n) if n == write_at => Change::Moved,
            StepsOutcome::StoppedAt(_) => Change::LastOwner,
        })
    }

    // ---- invitations ---------------------------------------------------------------

    fn invitations_select() -> SelectStatement {
        Query::select()
            .columns([
                ID,
                WORKSPACE_ID,
                TOKEN_HASH,
                ADDRESS,
                ROLES,
                INVITER_ID,
                EXPIRES_AT,
                CREATED_AT,
                ACCEPTED_AT,
                REVOKED_AT,
            ])
            .from(INVITATIONS)
            .to_owned()
    }

    /// Stores an invitation. No membership row is made before it is accepted (an
    /// `invited` row would tell who holds the address, verified or not).
    pub(super) async fn invite(&self, scope: &Scope, inv: &InvitationRecord) -> Result<()> {
        let insert = Query::insert()
            .into_table(INVITATIONS)
            .columns([
                ID,
                WORKSPACE_ID,
                TOKEN_HASH,
                ADDRESS,
                ROLES,
                INVITER_ID,
                EXPIRES_AT,
                CREATED_AT,
            ])
            .values([
                Expr::val(inv.id.as_str()),
                Expr::val(scope.id()),
                Expr::val(inv.token_hash.as_str()),
                Expr::val(inv.address.as_str()),
                Expr::val(roles_text(&inv.roles)?),
                Expr::val(inv.inviter_id.clone()),
                Expr::val(inv.expires_at),
                Expr::val(inv.created_at),
            ])
            .map_err(SentriError::internal)?
            .to_owned();
        self.db.exec_with(self.db.build(&insert), db_err).await?;
        Ok(())
    }

    /// The pending (neither accepted nor revoked) invitations, newest first.
    pub(super) async fn invitations(&self, scope: &Scope) -> Result<Vec<InvitationRecord>> {
        let stmt = Self::invitations_select()
            .and_where(Expr::col(WORKSPACE_ID).eq(scope.id()))
            .and_where(Expr::col(ACCEPTED_AT).is_null())
            .and_where(Expr::col(REVOKED_AT).is_null())
            .order_by(CREATED_AT, Order::Desc)
            .order_by(ID, Order::Desc)
            .limit(1000)
            .to_owned();
        self.db.fetch_all(&stmt).await
    }

    /// The invitation `id` of the workspace, if any.
    pub(super) async fn invitation(
        &self,
        scope: &Scope,
        id: &str,
    ) -> Result<Option<InvitationRecord>> {
        let stmt = Self::invitations_select()
            .and_where(Expr::col(WORKSPACE_ID).eq(scope.id()))
            .and_where(Expr::col(ID).eq(id))
            .to_owned();
        self.db.fetch_first(&stmt).await
    }

    /// The invitation whose token hashes to `hash` (any workspace: the token is the
    /// proof), if any.
    pub(super) async fn invitation_by_hash(&self, hash: &str) -> Result<Option<InvitationRecord>> {
        let stmt = Self::invitations_select()
            .and_where(Expr::col(TOKEN_HASH).eq(hash))
            .to_owned();
        self.db.fetch_first(&stmt).await
    }

    /// Revokes every pending invitation of the workspace to one of `addresses` (may
    /// affect none): the step that voids the siblings of an accepted invitation, and
    /// the invitations of a removed member.
    fn void_invitations(&self, scope: &Scope, addresses: &[String], now: i64) -> Step {
        let stmt = Query::update()
            .table(INVITATIONS)
            .value(REVOKED_AT, now)
            .and_where(Expr::col(WORKSPACE_ID).eq(scope.id()))
            .and_where(Expr::col(ADDRESS).is_in(addresses.iter().map(String::as_str)))
            .and_where(Expr::col(ACCEPTED_AT).is_null())
            .and_where(Expr::col(REVOKED_AT).is_null())
            .to_owned();
        Step {
            built: self.db.build(&stmt),
            must_affect: false,
        }
    }

    /// Revokes a pending invitation and deletes the `invited` membership it made.
    pub(super) async fn revoke_invitation(
        &self,
        scope: &Scope,
        inv: &InvitationRecord,
        invited_user: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let revoke = Query::update()
            .table(INVITATIONS)
            .value(REVOKED_AT, now)
            .and_where(Expr::col(WORKSPACE_ID).eq(scope.id()))
            .and_where(Expr::col(ID).eq(inv.id.as_str()))
            .and_where(Expr::col(ACCEPTED_AT).is_null())
            .and_where(Expr::col(REVOKED_AT).is_null())
            .to_owned();
        let mut steps = vec![Step {
            built: self.db.build(&revoke),
            must_affect: true,
        }];
        if let Some(user) = invited_user {
            let drop = Query::delete()
                .from_table(MEMBERS)
                .and_where(Expr::col(WORKSPACE_ID).eq(scope.id()))
                .and_where(Expr::col(USER_ID).eq(user))
                .and_where(Expr::col(STATUS).eq(MemberStatus::Invited.as_str()))
                .to_owned();
            steps.push(Step {
                built: self.db.build(&drop),
                must_affect: false,
            });
        }
        Ok(self.db.steps(&steps, db_err).await? == StepsOutcome::Committed)
    }

    /// Accepts invitation `inv` for `member`, once: the invitation is marked used only
    /// while pending and unexpired, in the same transaction that makes the membership
    /// active (an `invited` row is promoted, else one is inserted). `false`: it was used,
    /// revoked or expired meanwhile.
    ///
    /// Every other pending invitation of the workspace to one of `addresses` (the
    /// invitation's address, in each stored form) is revoked in that transaction: one
    /// address joins once, and a sibling invitation cannot bring a member back after a
    /// removal.
    pub(super) async fn accept(
        &self,
        scope: &Scope,
        inv: &InvitationRecord,
        member: &MemberState<'_>,
        promote: bool,
        now: i64,
        addresses: &[String],
    ) -> Result<bool> {
        let consume = Query::update()
            .table(INVITATIONS)
            .value(ACCEPTED_AT, now)
            .and_where(Expr::col(WORKSPACE_ID).eq(scope.id()))
            .and_where(Expr::col(ID).eq(inv.id.as_str()))
            .and_where(Expr::col(ACCEPTED_AT).is_null())
            .and_where(Expr::col(REVOKED_AT).is_null())
            .and_where(Expr::col(EXPIRES_AT).gt(now))
            .to_owned();
        let join = if promote {
            Step {
                built: self.db.build(
                    &Query::update()
                        .table(MEMBERS)
                        .values([
                            (ROLES, Expr::val(roles_text(member.roles)?)),
                            (OWNER, Expr::val(i16::from(member.owner))),
                            (STATUS, Expr::val(MemberStatus::Active.as_str())),
                            (UPDATED_AT, Expr::val(now)),
                        ])
                        .and_where(Expr::col(WORKSPACE_ID).eq(scope.id()))
                        .and_where(Expr::col(USER_ID).eq(member.user_id))
                        .and_where(Expr::col(STATUS).eq(MemberStatus::Invited.as_str()))
                        .to_owned(),
                ),
                must_affect: true,
            }
        } else {
            self.insert_member_stmt(scope, member, now)?
        };
        let steps = [
            Step {
                built: self.db.build(&consume),
                must_affect: true,
            },
            join,
            self.void_invitations(scope, addresses, now),
        ];
        let outcome = self
            .db
            .steps(&steps, |e| {
                conflict(
                    e,
                    ErrorCode::AlreadyMember,
                    "Already a member of this workspace",
                )
            })
            .await?;
        Ok(outcome == StepsOutcome::Committed)
    }
}
