//! Sessions: opening a family at login, rotating refresh tokens, the grace window,
//! reuse detection, revocation, the live-session cache and the purge of ended sessions.
//!
//! The invariants (see `docs/SECURITY.md`):
//!
//! * **Revocation is final.** Every rotation is conditional on its family row being live,
//!   inside the transaction that locks that row (`session::families`); revocation updates
//!   the same row. When a revocation returns, no refresh token of the family works.
//! * **A family never forks.** A rotation's successor token id is derived from the
//!   presented one (`successor_jti`). A racing replay of a just-rotated token inside
//!   `refresh_grace` gets the *same* successor token the winner got, never a second
//!   live refresh token; after the window (or once the successor itself was rotated)
//!   presenting a superseded token revokes the family.
//! * **Sessions end.** A family ends `session_max_lifetime` after its login however often
//!   it slides.
//! * **The cache never outlives a revocation on the revoking process.** See
//!   `SessionCache`.

mod authz;
pub(crate) mod bus;
mod cache;
mod devices;
mod families;
pub(crate) mod schema;
mod store;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use subtle::ConstantTimeEq;

pub use bus::{AUTHZ_CHANNEL, REVOCATION_CHANNEL};
pub(crate) use cache::SessionCache;
pub use devices::{DeviceSession, MAX_DEVICE_SESSIONS};
pub use families::{FamilyRecord, NewFamily, Rotation};
pub(crate) use store::FamilyBinding;
pub use store::{NewSession, SessionRecord};

use crate::core::BoxFuture;
use crate::core::clock::{Clock, duration_ms};
use crate::core::crypto::{clip, sha256_b64, sha256_hex};
use crate::core::error::{Result, SentriError};
use crate::core::events::{AuthEvent, AuthEventKind, EventBus};
use crate::core::observe;
use crate::core::principal::{Assurance, AuthUser, SessionMeta};
pub use crate::core::principal::{AuthResult, RefreshResult};
use crate::db::Database;
use crate::token::{AccessClaims, AccessGrant, RefreshClaims, TokenService};

/// The session service: families, rotation, revocation, the live cache and the purge.
pub(crate) struct Sessions {
    pub(crate) db: Database,
    pub(crate) tokens: TokenService,
    pub(crate) cache: Arc<SessionCache>,
    pub(crate) bus: bus::Revocations,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) events: Arc<EventBus>,
    pub(crate) refresh_ttl: Duration,
    pub(crate) max_lifetime: Duration,
    pub(crate) grace: Duration,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("refresh_ttl", &self.refresh_ttl)
            .field("max_lifetime", &self.max_lifetime)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

/// How long a revoked family row is kept before the purge deletes it.
const REVOKED_RETENTION: Duration = Duration::from_secs(3600);

/// The token id of the refresh token that replaces the one with id `jti`.
///
/// Deriving it (rather than drawing it at random) lets a racing replay within the grace
/// window receive the successor the winner received, so a family has one chain only.
/// Knowing a `jti` gives nothing without the signing key, and the store keeps only hashes.
pub(crate) fn successor_jti(jti: &str) -> String {
    sha256_b64(b"sentri-refresh-successor-v1\0", &[jti.as_bytes()])
}

/// `true` while a rotation made at `rotated_at` is less than `grace` old. A zero grace
/// never matches (every reuse is theft).
fn within_grace(now: i64, rotated_at: i64, grace: Duration) -> bool {
    !grace.is_zero() && now.saturating_sub(rotated_at).max(0) < duration_ms(grace)
}

impl Sessions {
    /// The current time of the configured clock, unix epoch milliseconds.
    pub(crate) fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// `true` while session `sid` is live (not revoked, not expired). Answers from a
    /// short-lived in-process cache when it can (see `ServerConfig::session_cache_ttl`),
    /// else from the store.
    pub async fn is_session_active(&self, sid: &str) -> Result<bool> {
        if self.cache.contains(sid) {
            observe::count(observe::SESSION_CACHE, Some(("result", "hit")));
            return Ok(true);
        }
        observe::count(observe::SESSION_CACHE, Some(("result", "miss")));
        Ok(self.session_version_in_store(sid, None).await?.is_some())
    }

    /// The authorization version of `user` while session `sid` is live (`None`:
    /// revoked or ended), from the same cache as [`is_session_active`](Self::is_session_active)
    /// and, on a miss, the same one-row read (joined with the user row).
    pub(crate) async fn session_version(&self, sid: &str, user: &str) -> Result<Option<i64>> {
        if let Some(version) = self.cache.version(sid, user) {
            observe::count(observe::SESSION_CACHE, Some(("result", "hit")));
            return Ok(Some(version));
        }
        observe::count(observe::SESSION_CACHE, Some(("result", "miss")));
        self.session_version_in_store(sid, Some(user)).await
    }

    /// The cache miss of [`session_version`](Self::session_version). Boxed so that the
    /// (large) store future is not part of every protected request's future.
    fn session_version_in_store<'a>(
        &'a self,
        sid: &'a str,
        user: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<i64>>> {
        Box::pin(async move {
            let Some(version) = self.db.family_authz(sid, self.now()).await? else {
                return Ok(None);
            };
            self.cache.remember(sid, version);
            Ok(Some(match user {
                Some(user) => self.cache.floor(user, version),
                None => version,
            }))
        })
    }

    /// Records a change of `user`'s roles (now at `version`) here and tells other
    /// processes (Redis): their tokens of older versions are stale at once.
    pub(crate) async fn roles_changed(&self, user: &str, version: i64) {
        self.cache.raise(user, version);
        self.bus.publish_authz(user, version).await;
    }

    /// Drops a session from this process's cache and tells other processes (Redis).
    pub(crate) async fn forget_session(&self, sid: &str) {
        self.cache.forget(sid);
        self.bus.publish(sid).await;
    }

    /// Opens a new family for `user` and signs its first token pair.
    pub(crate) async fn open_family(
        &self,
        user: AuthUser,
        meta: SessionMeta,
        assurance: &Assurance,
    ) -> Result<AuthResult> {
        let now = self.now();
        let family = NewFamily {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: user.id.clone(),
            expires_at: now.saturating_add(duration_ms(self.refresh_ttl)),
            max_expires_at: now.saturating_add(duration_ms(self.max_lifetime)),
        };
        let jti = TokenService::new_refresh_jti();
        let row = self.new_session_row(&family, &jti, None, meta);
        // A login is an authentication now: the family records when (`auth_time`).
        let assurance = &assurance.clone().at(now.div_euclid(1000));
        let column = assurance.to_column();
        self.db
            .open_family_with(&family, &row, now, Some(&column))
            .await?;
        // The roles and their version read together, after the family exists: a role
        // change racing the login makes this token stale, never wrongly fresh.
        let (user, av) = self
            .db
            .stamped_user(&user.id)
            .await?
            .ok_or_else(SentriError::user_not_found)?;
        let grant = AccessGrant {
            assurance: Some(assurance.clone()),
            av,
            workspace: None,
        };
        self.finish_session(user, family.id, &jti, &grant).await
    }

    fn new_session_row(
        &self,
        family: &NewFamily,
        jti: &str,
        replaces: Option<&SessionRecord>,
        meta: SessionMeta,
    ) -> NewSession {
        NewSession {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: family.user_id.clone(),
            family_id: family.id.clone(),
            refresh_hash: sha256_hex(jti),
            previous_hash: replaces.map(|r| r.refresh_hash.clone()),
            rotated_from: replaces.map(|r| r.id.clone()),
            expires_at: std::cmp::min(family.expires_at, family.max_expires_at),
            user_agent: meta.user_agent.map(|s| clip(&s, 512)),
            ip: meta.ip.map(|s| clip(&s, 64)),
        }
    }

    async fn finish_session(
        &self,
        user: AuthUser,
        family: String,
        jti: &str,
        grant: &AccessGrant,
    ) -> Result<AuthResult> {
        let (access_token, _) = self.tokens.sign_access_granted(&user, &family, grant)?;
        let refresh_token = self.tokens.sign_refresh(&user.id, &family, jti)?;
        self.cache.remember(&family, grant.av);
        Ok(AuthResult {
            access_token,
            refresh_token,
            user,
            session_id: family,
            workspace_id: grant.workspace.clone(),
        })
    }

    /// Binds the live session `sid` of `user` to `workspace` (`None`: personal again)
    /// and signs an access token of the session that carries it (`wid`); the session's
    /// refresh tokens go on issuing tokens of that workspace. The caller checked the
    /// membership; the tenant guard checks it again on every request.
    pub(crate) async fn switch_workspace(
        &self,
        sid: &str,
        user: &str,
        workspace: Option<&str>,
    ) -> Result<(String, AccessClaims)> {
        if !self
            .db
            .bind_family_workspace(sid, user, workspace, self.now())
            .await?
        {
            return Err(SentriError::token_invalid("Session has been revoked"));
        }
        // The workspace asked for, even if a removal unbound the family meanwhile: the
        // tenant guard refuses such a token (membership), it never widens anything.
        let workspace = workspace.map(str::to_owned);
        self.sign_for_family(sid, user, |grant| AccessGrant { workspace, ..grant })
            .await
    }

    /// Records a re-authentication of the live session `sid` of `user`: the family's
    /// assurance becomes `assurance` proven now (its `auth_time`), and an access token
    /// of the session carrying it is signed. Later refreshes carry it over.
    /// `TOKEN_INVALID` when the session is not live or not the user's.
    pub(crate) async fn reauthenticated(
        &self,
        sid: &str,
        user: &str,
        assurance: &Assurance,
    ) -> Result<(String, AccessClaims)> {
        let now = self.now();
        let assurance = assurance.clone().at(now.div_euclid(1000));
        if !self
            .db
            .set_family_assurance(sid, user, &assurance.to_column(), now)
            .await?
        {
            return Err(SentriError::token_invalid("Session has been revoked"));
        }
        self.sign_for_family(sid, user, |grant| AccessGrant {
            assurance: Some(assurance),
            ..grant
        })
        .await
    }

    /// Signs an access token of family `sid` for `user` (its roles and authorization
    /// version read now) with what the family grants, as `adjust` changes it.
    async fn sign_for_family(
        &self,
        sid: &str,
        user: &str,
        adjust: impl FnOnce(AccessGrant) -> AccessGrant,
    ) -> Result<(String, AccessClaims)> {
        let (user, av) = self
            .db
            .stamped_user(user)
            .await?
            .ok_or_else(SentriError::user_not_found)?;
        let binding = self.db.family_binding(sid).await?;
        let grant = adjust(grant_of(binding, av));
        self.tokens.sign_access_granted(&user, sid, &grant)
    }

    /// Makes the sessions bound to `workspace` (of `user` only, when given) personal
    /// again: their next tokens carry no `wid`.
    pub(crate) async fn unbind_workspace(&self, workspace: &str, user: Option<&str>) -> Result<()> {
        self.db.unbind_workspace(workspace, user).await.map(|_| ())
    }

    /// Rotates a refresh token: the presented token stops working and a new pair of the
    /// same session is returned.
    ///
    /// Presenting a token again within `refresh_grace` of its rotation (a second tab, a
    /// retry after a lost response) returns the same successor refresh token the first
    /// rotation issued, with a fresh access token. Presenting a superseded token in any
    /// other case revokes the whole session (RFC 9700 §4.14.2). A revoked or ended
    /// session never rotates, whatever is in flight.
    pub async fn refresh(&self, refresh_token: &str, meta: SessionMeta) -> Result<RefreshResult> {
        let span = observe::op_span!("refresh");
        let res = observe::traced(span, self.refresh_once(refresh_token, meta), |_| "ok").await;
        observe::refresh(&res);
        res
    }

    async fn refresh_once(&self, refresh_token: &str, meta: SessionMeta) -> Result<RefreshResult> {
        let claims = self.tokens.verify_refresh(refresh_token)?;
        let hash = sha256_hex(&claims.jti);
        let now = self.now();
        if let Some((row, user, binding, av)) =
            self.db.find_session_with_stamped_user(&hash).await?
            && let Some(res) = self
                .rotate(&claims, (row, user, av), binding, meta, now)
                .await?
        {
            return Ok(res);
        }
        if let Some(res) = self.grace_replay(&claims, &hash, now).await? {
            return Ok(res);
        }
        if self.revoke_family(&claims.sid).await? {
            tracing::warn!(session = %claims.sid, "refresh token reuse detected: session revoked");
            self.emit(AuthEventKind::ReuseDetected, &claims.sub, &claims.sid);
        }
        Err(SentriError::token_invalid("Invalid refresh token"))
    }

    /// Rotates the current row of a family; `None` when another request rotated it first.
    async fn rotate(
        &self,
        claims: &RefreshClaims,
        (row, user, av): (SessionRecord, AuthUser, i64),
        binding: FamilyBinding,
        meta: SessionMeta,
        now: i64,
    ) -> Result<Option<AuthResult>> {
        if row.family_id != claims.sid || row.user_id != claims.sub {
            return Err(SentriError::token_invalid("Invalid refresh token"));
        }
        if row.expires_at <= now {
            self.revoke_family(&row.family_id).await?;
            return Err(SentriError::token_expired());
        }
        let family = NewFamily {
            id: row.family_id.clone(),
            user_id: user.id.clone(),
            expires_at: now.saturating_add(duration_ms(self.refresh_ttl)),
            max_expires_at: i64::MAX,
        };
        let next_jti = successor_jti(&claims.jti);
        let next = self.new_session_row(&family, &next_jti, Some(&row), meta);
        match self.db.rotate_session(&row, &next, now).await? {
            Rotation::Rotated(_) => {
                self.emit(AuthEventKind::Refreshed, &user.id, &family.id);
                // Read with the session: a family's assurance never changes after login;
                // its workspace binding as it was when the rotation read it.
                let grant = grant_of(binding, av);
                let res = self.finish_session(user, family.id, &next_jti, &grant);
                Ok(Some(res.await?))
            }
            Rotation::Superseded => Ok(None),
            Rotation::FamilyEnded => Err(self.ended_error(&row.family_id, now).await),
        }
    }

    /// TOKEN_EXPIRED for a family past its end, TOKEN_INVALID for a revoked one.
    async fn ended_error(&self, family: &str, now: i64) -> SentriError {
        match self.db.find_family(family).await {
            Ok(Some(f)) if f.revoked_at.is_none() && !f.is_live(now) => {
                SentriError::token_expired()
            }
            _ => SentriError::token_invalid("Invalid refresh token"),
        }
    }

    /// A just-rotated token presented again within the grace window: the same successor.
    async fn grace_replay(
        &self,
        claims: &RefreshClaims,
        hash: &str,
        now: i64,
    ) -> Result<Option<AuthResult>> {
        let Some(next) = self.db.find_session_by_previous_hash(hash).await? else {
            return Ok(None);
        };
        let next_jti = successor_jti(&claims.jti);
        let is_successor: bool = sha256_hex(&next_jti)
            .as_bytes()
            .ct_eq(next.refresh_hash.as_bytes())
            .into();
        if next.family_id != claims.sid
            || !is_successor
            || !within_grace(now, next.last_used_at, self.grace)
            || next.expires_at <= now
            || !self.db.family_active(&next.family_id, now).await?
        {
            return Ok(None);
        }
        let (user, av) = self.load_session_user(&next).await?;
        let binding = self.db.family_binding(&next.family_id).await?;
        let grant = grant_of(binding, av);
        let res = self.finish_session(user, next.family_id, &next_jti, &grant);
        Ok(Some(res.await?))
    }

    async fn load_session_user(&self, row: &SessionRecord) -> Result<(AuthUser, i64)> {
        match self.db.stamped_user(&row.user_id).await? {
            Some(stamped) => Ok(stamped),
            None => Err(SentriError::token_invalid("Invalid refresh token")),
        }
    }

    /// Revokes a family in the store and forgets it here and (Redis) elsewhere. `true`
    /// when this call revoked it.
    async fn revoke_family(&self, family: &str) -> Result<bool> {
        let revoked = self.db.revoke_family(family, self.now()).await?;
        self.forget_session(family).await;
        Ok(revoked)
    }

    /// Ends the session of a refresh token (any token of the family, even a superseded
    /// one). Always succeeds for a missing, invalid or already-used token (logout is
    /// idempotent).
    pub async fn logout(&self, refresh_token: Option<&str>) -> Result<()> {
        let span = crate::core::observe::op_span!("logout");
        crate::core::observe::traced(span, self.logout_once(refresh_token), |_| "ok").await
    }

    async fn logout_once(&self, refresh_token: Option<&str>) -> Result<()> {
        let Some(token) = refresh_token else {
            return Ok(());
        };
        let Ok(claims) = self.tokens.verify_refresh(token) else {
            return Ok(());
        };
        if self.revoke_family(&claims.sid).await? {
            self.emit(AuthEventKind::Logout, &claims.sub, &claims.sid);
        }
        Ok(())
    }

    /// Ends the session `sid` (e.g. from an access token's `sid` claim).
    pub async fn revoke_session(&self, sid: &str) -> Result<()> {
        self.revoke_family(sid).await.map(|_| ())
    }

    /// Ends every session of a user: when this returns, no refresh token of any of them
    /// works, whatever rotations were in flight.
    pub async fn logout_all(&self, user_id: &str) -> Result<()> {
        let span = crate::core::observe::op_span!("logout_all");
        crate::core::observe::traced(span, self.logout_all_once(user_id), |_| "ok").await
    }

    async fn logout_all_once(&self, user_id: &str) -> Result<()> {
        let families = self.db.revoke_user_families(user_id, self.now()).await?;
        for family in &families {
            self.forget_session(family).await;
        }
        if !families.is_empty() {
            let event = AuthEvent::new(AuthEventKind::LogoutAll, self.now()).user(user_id);
            self.events.emit(event);
        }
        Ok(())
    }

    /// Deletes expired sessions and ended families (revoked ones an hour after their
    /// revocation). Runs every `purge_interval` on its own; returns the rows deleted.
    pub async fn purge_expired_sessions(&self) -> Result<u64> {
        let retention = duration_ms(REVOKED_RETENTION);
        self.db.purge_expired(self.now(), retention).await
    }

    /// Queues an event about one session of one user.
    pub(crate) fn emit(&self, kind: AuthEventKind, user_id: &str, session_id: &str) {
        let event = AuthEvent::new(kind, self.now())
            .user(user_id)
            .session(session_id);
        self.events.emit(event);
    }
}

/// What the tokens of a family with this stored `binding` carry, for a user at
/// authorization version `av` (refreshes carry the assurance over unchanged).
fn grant_of(binding: FamilyBinding, av: i64) -> AccessGrant {
    AccessGrant {
        assurance: binding
            .assurance
            .as_deref()
            .and_then(Assurance::from_column),
        av,
        workspace: binding.workspace,
    }
}

/// Spawns the periodic purge of ended sessions (stops when the service is dropped).
pub(crate) fn start_purge(sessions: &Arc<Sessions>, every: Option<Duration>) {
    let Some(every) = every else {
        return;
    };
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("create_auth was called outside a Tokio runtime: session purge is off");
        return;
    };
    let weak = Arc::downgrade(sessions);
    handle.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(sessions) = weak.upgrade() else {
                return;
            };
            match sessions.purge_expired_sessions().await {
                Ok(n) => tracing::debug!(deleted = n, "sentri: purged ended sessions"),
                Err(err) => tracing::warn!(error = %err, "sentri: session purge failed"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::cache::SessionCache;

    #[test]
    fn successors_are_stable_and_distinct() {
        assert_eq!(successor_jti("a"), successor_jti("a"));
        assert_ne!(successor_jti("a"), successor_jti("b"));
        assert_ne!(successor_jti(&successor_jti("a")), successor_jti("a"));
    }

    #[test]
    fn grace_window_bounds() {
        assert!(within_grace(1_000, 1_000, Duration::from_secs(10)));
        assert!(within_grace(10_999, 1_000, Duration::from_secs(10)));
        assert!(!within_grace(11_000, 1_000, Duration::from_secs(10)));
        assert!(!within_grace(1_000, 1_000, Duration::ZERO));
    }

    #[tokio::test]
    async fn a_revocation_wins_over_a_racing_insert() {
        let cache = SessionCache::new(Duration::from_secs(60));
        cache.forget("s");
        cache.remember("s", 0);
        assert!(!cache.contains("s"));
        cache.remember("t", 0);
        assert!(cache.contains("t"));
        cache.forget("t");
        assert!(!cache.contains("t"));
    }
}
