//! The workspace service: who may do what in a workspace, the last-owner rule,
//! invitations, switching, the membership cache and its events.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderName;

use super::cache::MemberCache;
use super::store::{
    Change, InvitationRecord, MemberRecord, MemberState, MemberStatus, MyWorkspace, Scope, Store,
    WorkspaceRecord,
};
use crate::capability::Core;
use crate::core::BoxFuture;
use crate::core::crypto::{random_token, sha256_hex};
use crate::core::error::{ErrorCode, Result, SentriError};
use crate::core::events::{AuthEvent, AuthEventKind};
use crate::core::principal::{Assurance, AuthUser};
use crate::http::tenant::{MemberRoles, Membership};
use crate::mail::{MailQueue, Mailbox, Message};

/// Bus message prefixes: one membership changed / a whole workspace changed.
const MEMBER_CHANGED: &str = "wm:";
const WORKSPACE_CHANGED: &str = "wa:";
/// How many tries a membership change makes when a concurrent one moved the row.
const CHANGE_TRIES: usize = 5;

/// Mailing invitations.
#[derive(Clone)]
pub(super) struct InviteMail {
    pub(super) queue: MailQueue,
    pub(super) from: Mailbox,
    /// The accept link, with `{token}` where the token goes.
    pub(super) link: String,
}

/// The capability's settings, fixed when the server is built.
pub(super) struct Settings {
    pub(super) roles: Vec<String>,
    pub(super) owner: String,
    pub(super) managers: Vec<String>,
    pub(super) default_role: String,
    pub(super) header: HeaderName,
    pub(super) invitation_ttl: Duration,
    pub(super) mail: Option<InviteMail>,
    pub(super) cache_capacity: u64,
}

/// The workspace service of one server.
pub struct WorkspaceService {
    pub(super) core: Core,
    store: Store,
    cache: MemberCache,
    pub(super) settings: Settings,
}

impl std::fmt::Debug for WorkspaceService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkspaceService")
            .field("roles", &self.settings.roles)
            .finish_non_exhaustive()
    }
}

/// A checked new workspace name: 1 to 200 characters, no control characters.
pub(super) fn check_name(name: &str) -> Result<String> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > super::store::MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(SentriError::validation(format!(
            "name must be 1 to {} characters, without control characters",
            super::store::MAX_NAME_CHARS
        )));
    }
    Ok(name.to_owned())
}

/// A checked slug: 1 to 64 of `a-z`, `0-9`, `-`, not starting or ending with `-`.
pub(super) fn check_slug(slug: &str) -> Result<String> {
    let ok = !slug.is_empty()
        && slug.len() <= super::store::MAX_SLUG_BYTES
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-');
    if !ok {
        return Err(SentriError::validation(
            "slug must be 1 to 64 lowercase letters, digits and inner hyphens",
        ));
    }
    Ok(slug.to_owned())
}

/// A slug made from a name (`"Acme Corp."` → `"acme-corp"`) plus a random suffix.
fn slug_from(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= 40 {
            break;
        }
    }
    let suffix: String = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let base = slug.trim_end_matches('-');
    if base.is_empty() {
        suffix
    } else {
        format!("{base}-{suffix}")
    }
}

/// `true` for a string shaped like sentri's ids (a UUID): anything else is not looked
/// up at all.
pub(super) fn is_id(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::try_parse(s).is_ok()
}

fn dedupe(roles: Vec<String>) -> Vec<String> {
    crate::identity::dedupe(roles)
}

/// 404 `WORKSPACE_NOT_FOUND`: unknown, or not the caller's (the two look the same).
fn not_found() -> SentriError {
    SentriError::new(ErrorCode::WorkspaceNotFound, "Workspace not found")
}

fn member_not_found() -> SentriError {
    SentriError::new(ErrorCode::MemberNotFound, "Member not found")
}

impl WorkspaceService {
    /// Starts the service of `core`'s server and its listener for remote changes.
    pub(super) fn start(core: Core, settings: Settings) -> Arc<Self> {
        let svc = Arc::new(Self {
            store: Store {
                db: core.identity.db.clone(),
            },
            cache: MemberCache::new(core.sessions.cache.ttl(), settings.cache_capacity),
            core,
            settings,
        });
        listen(&svc);
        svc
    }

    fn now(&self) -> i64 {
        self.core.now_ms()
    }

    fn emit(&self, kind: AuthEventKind, workspace: &str, user: Option<&str>) -> AuthEvent {
        let mut event = AuthEvent::new(kind, self.now()).workspace(workspace);
        event.user_id = user.map(str::to_owned);
        event
    }

    /// Checked, deduplicated workspace roles (`INVALID_ROLE` otherwise; empty: the
    /// default role).
    pub(super) fn check_roles(&self, roles: Vec<String>) -> Result<Vec<String>> {
        // A fixed message: the refused role is the caller's input, never echoed.
        if roles.iter().any(|r| !self.settings.roles.contains(r)) {
            return Err(SentriError::new(
                ErrorCode::InvalidRole,
                "Unknown workspace role",
            ));
        }
        let roles = dedupe(roles);
        Ok(if roles.is_empty() {
            vec![self.settings.default_role.clone()]
        } else {
            roles
        })
    }

    fn owns(&self, roles: &[String]) -> bool {
        roles.contains(&self.settings.owner)
    }

    fn manages(&self, roles: &[String]) -> bool {
        roles.iter().any(|r| self.settings.managers.contains(r))
    }

    /// Granting a managing role (owner, admin) is a sensitive operation: it needs a
    /// recent authentication ([`Core::check_sensitive`]).
    pub(super) fn check_grant(
        &self,
        roles: &[String],
        assurance: Option<&Assurance>,
    ) -> Result<()> {
        if self.manages(roles) || self.owns(roles) {
            self.core.check_sensitive(assurance)?;
        }
        Ok(())
    }

    fn state<'a>(
        &self,
        user: &'a str,
        roles: &'a [String],
        status: MemberStatus,
    ) -> MemberState<'a> {
        MemberState {
            user_id: user,
            roles,
            owner: self.owns(roles),
            status,
        }
    }

    /// The caller's active membership of workspace `id` and the scope of its rows;
    /// `WORKSPACE_NOT_FOUND` when it is not a workspace the caller is an active member
    /// of (no query at all for a malformed id).
    pub(super) async fn access(&self, id: &str, user: &str) -> Result<(Scope, MemberRecord)> {
        if !is_id(id) {
            return Err(not_found());
        }
        let scope = Scope::of(id);
        match self.store.member(&scope, user).await? {
            Some(m) if m.status == MemberStatus::Active => match self.store.workspace(id).await? {
                Some(ws) if ws.status == "active" => Ok((scope, m)),
                _ => Err(not_found()),
            },
            _ => Err(not_found()),
        }
    }

    /// [`access`](Self::access) for a manager (owner or admin by default); 403 otherwise.
    async fn manage(&self, id: &str, user: &str) -> Result<(Scope, MemberRecord)> {
        let (scope, me) = self.access(id, user).await?;
        if !self.manages(&me.roles) {
            return Err(SentriError::forbidden(
                "Managing this workspace needs a manager role",
            ));
        }
        Ok((scope, me))
    }

    // ---- workspaces --------------------------------------------------------------------

    /// Creates a workspace; `user` becomes its owner.
    pub(super) async fn create(
        &self,
        user: &str,
        name: &str,
        slug: Option<&str>,
    ) -> Result<(WorkspaceRecord, Vec<String>)> {
        let name = check_name(name)?;
        let slug = match slug {
            Some(s) => check_slug(s)?,
            None => slug_from(&name),
        };
        let now = self.now();
        let ws = WorkspaceRecord {
            id: uuid::Uuid::now_v7().to_string(),
            name,
            slug,
            status: "active".to_owned(),
            created_at: now,
            updated_at: now,
        };
        let roles = vec![self.settings.owner.clone()];
        self.store
            .create(&ws, &self.state(user, &roles, MemberStatus::Active))
            .await?;
        self.changed(&ws.id, user).await;
        self.core
            .emit(self.emit(AuthEventKind::WorkspaceCreated, &ws.id, Some(user)));
        Ok((ws, roles))
    }

    /// The caller's workspaces by id after `after`.
    pub(super) async fn mine(
        &self,
        user: &str,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<MyWorkspace>> {
        self.store.workspaces_of(user, after, limit).await
    }

    /// One workspace of the caller's, with their roles.
    pub(super) async fn get(&self, id: &str, user: &str) -> Result<(WorkspaceRecord, Vec<String>)> {
        let (_, me) = self.access(id, user).await?;
        let ws = self.store.workspace(id).await?.ok_or_else(not_found)?;
        Ok((ws, me.roles))
    }

    /// Renames a workspace and/or changes its slug (managers).
    pub(super) async fn update(
        &self,
        id: &str,
        user: &str,
        name: Option<&str>,
        slug: Option<&str>,
    ) -> Result<WorkspaceRecord> {
        let name = name.map(check_name).transpose()?;
        let slug = slug.map(check_slug).transpose()?;
        let (scope, _) = self.manage(id, user).await?;
        let now = self.now();
        if !self
            .store
            .update_workspace(&scope, name.as_deref(), slug.as_deref(), now)
            .await?
        {
            return Err(not_found());
        }
        self.core
            .emit(self.emit(AuthEventKind::WorkspaceUpdated, id, Some(user)));
        self.store.workspace(id).await?.ok_or_else(not_found)
    }

    /// Deletes a workspace (owners only): its memberships and invitations go with it,
    /// its sessions become personal, and the tenant guard refuses it at once here and
    /// (Redis) in the other processes.
    pub(super) async fn delete(&self, id: &str, user: &str) -> Result<()> {
        let (scope, me) = self.access(id, user).await?;
        if !self.owns(&me.roles) {
            return Err(SentriError::forbidden(
                "Only an owner can delete a workspace",
            ));
        }
        if !self.store.delete_workspace(&scope).await? {
            return Err(not_found());
        }
        self.cache.clear();
        self.core
            .sessions
            .bus
            .publish_credential(&format!("{WORKSPACE_CHANGED}{id}"))
            .await;
        self.core.sessions.unbind_workspace(id, None).await?;
        self.core
            .emit(self.emit(AuthEventKind::WorkspaceDeleted, id, Some(user)));
        Ok(())
    }

    // ---- members -----------------------------------------------------------------------

    /// Members by user id after `after` (any active member may list them).
    pub(super) async fn members(
        &self,
        id: &str,
        user: &str,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<MemberRecord>> {
        let (scope, _) = self.access(id, user).await?;
        self.store.members(&scope, after, limit).await
    }

    /// "Adds" a member by identifier (managers; granting the owner role needs an
    /// owner): an invitation to that address, exactly as [`invite`](Self::invite). No
    /// account is looked up, so the answer is the same whether one exists, and no one
    /// joins without accepting with that address verified as theirs.
    pub(super) async fn add_member(
        &self,
        id: &str,
        caller: &str,
        identifier: &str,
        roles: Vec<String>,
    ) -> Result<(InvitationRecord, Option<String>)> {
        self.invite(id, caller, identifier, roles).await
    }

    /// Only an owner may grant or take away the owner role.
    fn check_owner_grant(&self, me: &MemberRecord, old: &[String], new: &[String]) -> Result<()> {
        if self.owns(old) != self.owns(new) && !self.owns(&me.roles) {
            return Err(SentriError::forbidden(
                "Only an owner can grant or remove the owner role",
            ));
        }
        Ok(())
    }

    /// Changes a member's roles and/or status (`active` / `suspended`) (managers; an
    /// owner's membership and the owner role need an owner). Never leaves the workspace
    /// without an active owner (`LAST_OWNER`).
    pub(super) async fn update_member(
        &self,
        id: &str,
        caller: &str,
        target: &str,
        roles: Option<Vec<String>>,
        status: Option<&str>,
    ) -> Result<MemberRecord> {
        let roles = roles.map(|r| self.check_roles(r)).transpose()?;
        let status = match status {
            None => None,
            Some("active") => Some(MemberStatus::Active),
            Some("suspended") => Some(MemberStatus::Suspended),
            Some(_) => {
                return Err(SentriError::validation(
                    "status must be \"active\" or \"suspended\"",
                ));
            }
        };
        let (scope, me) = self.manage(id, caller).await?;
        if !is_id(target) {
            return Err(member_not_found());
        }
        let (old, new) = self
            .change(&scope, target, |old| {
                if old.status == MemberStatus::Invited {
                    return Err(member_not_found());
                }
                let new_roles = roles.clone().unwrap_or_else(|| old.roles.clone());
                self.check_owner_grant(&me, &old.roles, &new_roles)?;
                if self.owns(&old.roles) && !self.owns(&me.roles) {
                    return Err(SentriError::forbidden("Only an owner can change an owner"));
                }
                Ok(Some((new_roles, status.unwrap_or(old.status))))
            })
            .await?;
        let new = new.ok_or_else(member_not_found)?;
        self.after_member_change(id, &old, Some(&new)).await?;
        Ok(new)
    }

    /// Removes a member (managers; an owner needs an owner) or, with `caller == target`,
    /// leaves. Never the last active owner (`LAST_OWNER`).
    pub(super) async fn remove_member(&self, id: &str, caller: &str, target: &str) -> Result<()> {
        let (scope, me) = if caller == target {
            self.access(id, caller).await?
        } else {
            self.manage(id, caller).await?
        };
        if !is_id(target) {
            return Err(member_not_found());
        }
        let addresses = self.addresses_of(target).await?;
        let (old, _) = self
            .change_voiding(&scope, target, &addresses, |old| {
                if caller != target && self.owns(&old.roles) && !self.owns(&me.roles) {
                    return Err(SentriError::forbidden("Only an owner can remove an owner"));
                }
                Ok(None)
            })
            .await?;
        self.after_member_change(id, &old, None).await
    }

    /// Reads membership `target`, lets `decide` choose its new roles and status (`None`:
    /// delete it) and applies that, again from a fresh read when a concurrent change
    /// moved the row.
    async fn change<F>(
        &self,
        scope: &Scope,
        target: &str,
        decide: F,
    ) -> Result<(MemberRecord, Option<MemberRecord>)>
    where
        F: Fn(&MemberRecord) -> Result<Option<(Vec<String>, MemberStatus)>>,
    {
        self.change_voiding(scope, target, &[], decide).await
    }

    /// The addresses a member could be invited by: the identifier and the stored
    /// address (each as stored), so that a removal voids their pending invitations.
    async fn addresses_of(&self, user: &str) -> Result<Vec<String>> {
        let db = &self.core.identity.db;
        let Some(u) = db.find_user_by_id(user).await? else {
            return Ok(Vec::new());
        };
        let email = db.user_email(user).await?.and_then(|s| s.email);
        Ok(dedupe(std::iter::once(u.identifier).chain(email).collect()))
    }

    /// [`change`](Self::change); a removal also revokes the workspace's pending
    /// invitations to `addresses` in the same transaction.
    async fn change_voiding<F>(
        &self,
        scope: &Scope,
        target: &str,
        addresses: &[String],
        decide: F,
    ) -> Result<(MemberRecord, Option<MemberRecord>)>
    where
        F: Fn(&MemberRecord) -> Result<Option<(Vec<String>, MemberStatus)>>,
    {
        for _ in 0..CHANGE_TRIES {
            let old = self
                .store
                .member(scope, target)
                .await?
                .ok_or_else(member_not_found)?;
            let decided = decide(&old)?;
            let new = decided
                .as_ref()
                .map(|(roles, status)| self.state(target, roles, *status));
            let now = self.now();
            match self
                .store
                .change_member(
                    scope,
                    &old,
                    new.as_ref(),
                    &self.settings.owner,
                    now,
                    addresses,
                )
                .await?
            {
                Change::Done => {
                    let after = match decided {
                        Some(_) => self.store.member(scope, target).await?,
                        None => None,
                    };
                    return Ok((old, after));
                }
                Change::NoWorkspace => return Err(not_found()),
                Change::LastOwner => {
                    return Err(SentriError::new(
                        ErrorCode::LastOwner,
                        "A workspace needs at least one active owner",
                    ));
                }
                Change::Moved => continue,
            }
        }
        Err(SentriError::new(
            ErrorCode::ServiceUnavailable,
            "The membership is changing; try again",
        ))
    }

    /// Cache, bindings and events after membership `old` became `new` (`None`: gone).
    async fn after_member_change(
        &self,
        id: &str,
        old: &MemberRecord,
        new: Option<&MemberRecord>,
    ) -> Result<()> {
        self.changed(id, &old.user_id).await;
        let user = Some(old.user_id.as_str());
        let Some(new) = new else {
            self.core.sessions.unbind_workspace(id, user).await?;
            self.core
                .emit(self.emit(AuthEventKind::MemberRemoved, id, user));
            return Ok(());
        };
        if new.status != old.status {
            let kind = if new.status == MemberStatus::Suspended {
                self.core.sessions.unbind_workspace(id, user).await?;
                AuthEventKind::MemberSuspended
            } else {
                AuthEventKind::MemberReinstated
            };
            self.core.emit(self.emit(kind, id, user));
        }
        if new.roles != old.roles {
            let event = self.emit(AuthEventKind::MemberRolesChanged, id, user);
            self.core.emit(event.role(new.roles.join(",")));
        }
        Ok(())
    }

    /// Drops a membership from the cache here and (Redis) in the other processes.
    async fn changed(&self, workspace: &str, user: &str) {
        self.cache.forget(workspace, user);
        self.core
            .sessions
            .bus
            .publish_credential(&format!("{MEMBER_CHANGED}{workspace}:{user}"))
            .await;
    }

    // ---- switching ---------------------------------------------------------------------

    /// A new access token of session `sid` bound to workspace `id`, for an active
    /// member (read from the store, never the cache). The session's later refreshes
    /// keep the binding.
    pub(super) async fn switch(&self, id: &str, user: &str, sid: &str) -> Result<String> {
        if sid.is_empty() {
            return Err(SentriError::forbidden(
                "Only a session can switch workspaces",
            ));
        }
        self.access(id, user).await?;
        let (token, _) = self
            .core
            .sessions
            .switch_workspace(sid, user, Some(id))
            .await?;
        let event = self.emit(AuthEventKind::WorkspaceSwitched, id, Some(user));
        self.core.emit(event.session(sid));
        Ok(token)
    }

    /// A new access token of session `sid` bound to no workspace.
    pub(super) async fn switch_personal(&self, user: &str, sid: &str) -> Result<String> {
        if sid.is_empty() {
            return Err(SentriError::forbidden(
                "Only a session can switch workspaces",
            ));
        }
        let (token, _) = self.core.sessions.switch_workspace(sid, user, None).await?;
        Ok(token)
    }

    // ---- invitations -------------------------------------------------------------------

    /// Invites `address` with `roles` (managers). The token is mailed when a mailer is
    /// set (and then not returned), else returned to the inviter.
    pub(super) async fn invite(
        &self,
        id: &str,
        caller: &str,
        address: &str,
        roles: Vec<String>,
    ) -> Result<(InvitationRecord, Option<String>)> {
        let roles = self.check_roles(roles)?;
        let (scope, me) = self.manage(id, caller).await?;
        // Compared as mail compares addresses (IDNA domain), and one that can be mailed.
        let address = self.core.identity.normalize(address)?;
        if address.len() > super::store::MAX_ADDRESS_BYTES {
            return Err(SentriError::validation("address is too long"));
        }
        crate::mail::validate_address(&address)?;
        self.check_owner_grant(&me, &[], &roles)?;
        let token = random_token(32);
        let now = self.now();
        let ttl = i64::try_from(self.settings.invitation_ttl.as_millis()).unwrap_or(i64::MAX);
        let inv = InvitationRecord {
            id: uuid::Uuid::now_v7().to_string(),
            workspace_id: id.to_owned(),
            token_hash: sha256_hex(&token),
            address: address.clone(),
            roles: roles.clone(),
            inviter_id: Some(caller.to_owned()),
            expires_at: now.saturating_add(ttl),
            created_at: now,
            accepted_at: None,
            revoked_at: None,
        };
        self.store.invite(&scope, &inv).await?;
        self.core
            .emit(self.emit(AuthEventKind::InvitationCreated, id, Some(caller)));
        match &self.settings.mail {
            Some(mail) => {
                self.mail_invitation(mail, &address, &token)?;
                Ok((inv, None))
            }
            None => Ok((inv, Some(token))),
        }
    }

    fn mail_invitation(&self, mail: &InviteMail, address: &str, token: &str) -> Result<()> {
        let link = mail.link.replace("{token}", token);
        let to = Mailbox::new(None, address)?;
        let text = format!(
            "You have been invited to a workspace.\n\nAccept the invitation (sign in with this address first):\n{link}\n"
        );
        let html = format!(
            "<p>You have been invited to a workspace.</p><p><a href=\"{link}\">Accept the invitation</a> (sign in with this address first).</p>"
        );
        let message = Message::new(
            mail.from.clone(),
            to,
            "You are invited to a workspace",
            text,
            html,
        )?;
        mail.queue.enqueue(message, None);
        Ok(())
    }

    /// The pending invitations (managers).
    pub(super) async fn invitations(
        &self,
        id: &str,
        caller: &str,
    ) -> Result<Vec<InvitationRecord>> {
        let (scope, _) = self.manage(id, caller).await?;
        self.store.invitations(&scope).await
    }

    /// Revokes a pending invitation (managers); idempotent.
    pub(super) async fn revoke_invitation(
        &self,
        id: &str,
        caller: &str,
        inv_id: &str,
    ) -> Result<()> {
        let (scope, _) = self.manage(id, caller).await?;
        let not_found = || SentriError::new(ErrorCode::NotFound, "Invitation not found");
        if !is_id(inv_id) {
            return Err(not_found());
        }
        let inv = self
            .store
            .invitation(&scope, inv_id)
            .await?
            .ok_or_else(not_found)?;
        let invited = self
            .core
            .identity
            .db
            .find_user_by_identifier(&inv.address)
            .await?;
        let invited = invited.map(|u| u.id);
        if self
            .store
            .revoke_invitation(&scope, &inv, invited.as_deref(), self.now())
            .await?
        {
            if let Some(user) = &invited {
                self.changed(id, user).await;
            }
            self.core
                .emit(self.emit(AuthEventKind::InvitationRevoked, id, Some(caller)));
        }
        Ok(())
    }

    /// Accepts an invitation as the signed-in `user`, whose **verified** address (the
    /// identifier when it is an address, else the stored one) must be the invited
    /// address. Once only: a used, revoked or expired token is `INVITATION_INVALID`;
    /// accepting revokes the workspace's other pending invitations to that address.
    pub(super) async fn accept(&self, user: &AuthUser, token: &str) -> Result<WorkspaceRecord> {
        let invalid = || {
            SentriError::new(
                ErrorCode::InvitationInvalid,
                "Invalid or expired invitation",
            )
        };
        if token.is_empty() || token.len() > 128 {
            return Err(invalid());
        }
        let now = self.now();
        let inv = self
            .store
            .invitation_by_hash(&sha256_hex(token))
            .await?
            .filter(|i| i.accepted_at.is_none() && i.revoked_at.is_none() && i.expires_at > now)
            .ok_or_else(invalid)?;
        // The stored address in today's form (an invitation stored before the IDNA
        // rule may hold a Unicode domain), and both forms for voiding its siblings.
        let address = self
            .core
            .identity
            .normalize(&inv.address)
            .unwrap_or_else(|_| inv.address.clone());
        if self.core.verified_address(&user.id).await?.as_deref() != Some(address.as_str()) {
            return Err(SentriError::new(
                ErrorCode::InvitationAddressMismatch,
                "This invitation is for another address, or yours is not verified",
            ));
        }
        let addresses = dedupe(vec![address, inv.address.clone()]);
        let scope = Scope::of(&inv.workspace_id);
        let existing = self.store.member(&scope, &user.id).await?;
        let promote = match existing.map(|m| m.status) {
            None => false,
            Some(MemberStatus::Invited) => true,
            Some(_) => {
                return Err(SentriError::new(
                    ErrorCode::AlreadyMember,
                    "Already a member of this workspace",
                ));
            }
        };
        let state = self.state(&user.id, &inv.roles, MemberStatus::Active);
        if !self
            .store
            .accept(&scope, &inv, &state, promote, now, &addresses)
            .await?
        {
            return Err(invalid());
        }
        self.changed(&inv.workspace_id, &user.id).await;
        self.core.emit(self.emit(
            AuthEventKind::InvitationAccepted,
            &inv.workspace_id,
            Some(&user.id),
        ));
        self.store
            .workspace(&inv.workspace_id)
            .await?
            .ok_or_else(not_found)
    }

    // ---- provisioning ------------------------------------------------------------------

    /// Trusted provisioning: `user` joins the workspace of `slug` with `roles`, creating
    /// it (with `user` as its owner) when there is none. Idempotent for the same target:
    /// an existing membership with these roles is kept as it is.
    pub(super) async fn provision(
        &self,
        user: &str,
        name: &str,
        slug: &str,
        roles: Vec<String>,
    ) -> Result<WorkspaceRecord> {
        let slug = check_slug(slug)?;
        if self.store.workspace_by_slug(&slug).await?.is_none() {
            match self.create(user, name, Some(&slug)).await {
                Ok((ws, _)) => return Ok(ws),
                Err(e) if e.is(&ErrorCode::WorkspaceSlugTaken) => {}
                Err(e) => return Err(e),
            }
        }
        let ws = self
            .store
            .workspace_by_slug(&slug)
            .await?
            .ok_or_else(not_found)?;
        let scope = Scope::of(&ws.id);
        let roles = if roles.is_empty() {
            vec![self.settings.owner.clone()]
        } else {
            self.check_roles(roles)?
        };
        match self.store.member(&scope, user).await? {
            Some(m) if m.status == MemberStatus::Active && m.roles == roles => Ok(ws),
            Some(_) => Err(SentriError::new(
                ErrorCode::AlreadyMember,
                "The user is a member of this workspace with other roles or another status",
            )),
            None => {
                let state = self.state(user, &roles, MemberStatus::Active);
                match self.store.add_member(&scope, &state, self.now()).await {
                    Ok(()) => {}
                    Err(e) if e.is(&ErrorCode::AlreadyMember) => {}
                    Err(e) => return Err(e),
                }
                self.changed(&ws.id, user).await;
                let event = self.emit(AuthEventKind::MemberAdded, &ws.id, Some(user));
                self.core.emit(event.role(roles.join(",")));
                Ok(ws)
            }
        }
    }

    // ---- the guard's view --------------------------------------------------------------

    async fn read_roles(&self, workspace: &str, user: &str) -> Result<Option<MemberRoles>> {
        if !is_id(workspace) {
            return Ok(None);
        }
        let epoch = self.cache.epoch();
        let roles = self.store.active_roles(&Scope::of(workspace), user).await?;
        self.cache.fill(workspace, user, roles.clone(), epoch);
        Ok(roles.map(Arc::from))
    }
}

impl Membership for WorkspaceService {
    fn header(&self) -> &HeaderName {
        &self.settings.header
    }

    fn workspace_roles(&self) -> &[String] {
        &self.settings.roles
    }

    fn cached(&self, workspace: &str, user: &str) -> Option<Option<MemberRoles>> {
        self.cache.get(workspace, user)
    }

    fn active_roles<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Option<MemberRoles>>> {
        Box::pin(self.read_roles(workspace, user))
    }
}

/// Drops memberships from the cache as changes arrive from the other processes (and
/// this one's own, already applied). A listener that fell behind drops everything.
fn listen(svc: &Arc<WorkspaceService>) {
    let on_message = |svc: Arc<WorkspaceService>, m: String| -> BoxFuture<'static, ()> {
        if let Some((ws, user)) = m
            .strip_prefix(MEMBER_CHANGED)
            .and_then(|r| r.split_once(':'))
        {
            svc.cache.forget(ws, user);
        } else if m.starts_with(WORKSPACE_CHANGED) {
            svc.cache.clear();
        }
        Box::pin(async {})
    };
    svc.core.sessions.bus.follow_credentials(
        svc,
        "workspaces",
        on_message,
        |svc: &WorkspaceService| svc.cache.clear(),
    );
}
