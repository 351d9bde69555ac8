//! Cross-process session revocation.
//!
//! `protect()` trusts a live session for `session_cache_ttl` (default 5 s) without
//! asking the store. A session revoked on this process is dropped from its cache at
//! once. With a `redis_url`, the revoking process also publishes the session id on the
//! Redis channel `sentri:revoked`, and every other process subscribed to it drops the
//! session from its cache as soon as the message arrives (well under a second on a
//! healthy network). On a Redis Cluster (`redis+cluster://` URL) the message is a
//! plain `PUBLISH`, which the cluster forwards to every node; the subscriber listens on
//! one node and moves to the next listed one when that node fails. If Redis is unreachable, revocation falls back to the cache TTL:
//! no process trusts a revoked session for longer than `session_cache_ttl`.

#[cfg(feature = "redis")]
use std::time::Duration;

use crate::core::error::Result;
use crate::session::SessionCache;

/// The Redis channel revocations are published on.
pub const REVOCATION_CHANNEL: &str = "sentri:revoked";

/// The Redis channel revoked non-session credentials (API keys) are published on, by a
/// capability-chosen id; the same subscription as [`REVOCATION_CHANNEL`] listens to it.
pub const CREDENTIAL_REVOCATION_CHANNEL: &str = "sentri:revoked-credentials";

/// The Redis channel role changes are published on, as `<version>:<user id>`: other
/// processes raise that user's version floor in their session cache, so the user's
/// older access tokens are stale there too.
pub const AUTHZ_CHANNEL: &str = "sentri:authz";

/// The payload of a role change on [`AUTHZ_CHANNEL`].
fn authz_payload(user: &str, version: i64) -> String {
    format!("{version}:{user}")
}

/// Parses a payload of [`AUTHZ_CHANNEL`].
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
fn parse_authz(payload: &str) -> Option<(&str, i64)> {
    let (version, user) = payload.split_once(':')?;
    Some((user, version.parse().ok()?))
}

/// How many credential revocations a slow listener may fall behind before it is told
/// it lagged (and must drop its whole cache).
const CREDENTIAL_BACKLOG: usize = 1024;

/// A listener's end of the credential revocations: every id revoked by this process
/// or (with Redis) by another.
pub(crate) type CredentialRevocations = tokio::sync::broadcast::Receiver<String>;

#[cfg(feature = "redis")]
pub(crate) struct Revocations {
    target: Option<crate::redis_conn::RedisTarget>,
    publisher: tokio::sync::OnceCell<crate::redis_conn::RedisConn>,
    credentials: tokio::sync::broadcast::Sender<String>,
}

#[cfg(not(feature = "redis"))]
pub(crate) struct Revocations {
    credentials: tokio::sync::broadcast::Sender<String>,
}

// Used by the capabilities that cache credentials or memberships (API keys, workspaces).
impl Revocations {
    /// Subscribes to revoked credential ids (local and, with Redis, remote).
    pub(crate) fn credential_revocations(&self) -> CredentialRevocations {
        self.credentials.subscribe()
    }

    /// Runs `on_message` for every credential message (this process's and, with Redis,
    /// the others') while `owner` lives, and `on_lag` when the listener fell behind and
    /// lost messages (the owner must then drop everything it cached). `what` names the
    /// owner in the warning when there is no Tokio runtime to listen on.
    pub(crate) fn follow_credentials<T, M, L>(
        &self,
        owner: &std::sync::Arc<T>,
        what: &'static str,
        on_message: M,
        on_lag: L,
    ) where
        T: Send + Sync + 'static,
        M: Fn(std::sync::Arc<T>, String) -> crate::core::BoxFuture<'static, ()> + Send + 'static,
        L: Fn(&T) + Send + 'static,
    {
        let mut rx = self.credential_revocations();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                "sentri: {what} started outside a Tokio runtime: remote changes are off"
            );
            return;
        };
        let weak = std::sync::Arc::downgrade(owner);
        handle.spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                let message = rx.recv().await;
                let Some(owner) = weak.upgrade() else {
                    return;
                };
                match message {
                    Ok(m) => on_message(owner, m).await,
                    Err(RecvError::Lagged(_)) => on_lag(&owner),
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }

    /// Tells the other processes (Redis) that `user`'s roles changed (now at
    /// `version`). Best effort: failures are logged; the cache TTL bounds the rest.
    pub(crate) async fn publish_authz(&self, user: &str, version: i64) {
        self.publish_on(AUTHZ_CHANNEL, &authz_payload(user, version))
            .await;
    }

    /// Tells this process's listeners, then (with Redis) the other processes, that the
    /// credential `id` is revoked. Best effort across processes: failures are logged.
    pub(crate) async fn publish_credential(&self, id: &str) {
        let _ = self.credentials.send(id.to_owned());
        self.publish_on(CREDENTIAL_REVOCATION_CHANNEL, id).await;
    }
}

#[cfg(not(feature = "redis"))]
impl Revocations {
    pub(crate) fn new(redis_url: Option<&str>) -> Result<Self> {
        if redis_url.is_some() {
            tracing::warn!(
                "redis_url is set but sentri was built without the `redis` feature: revocation is per process"
            );
        }
        Ok(Revocations {
            credentials: tokio::sync::broadcast::channel(CREDENTIAL_BACKLOG).0,
        })
    }

    pub(crate) fn start(&self, _cache: &std::sync::Arc<SessionCache>) {}

    pub(crate) async fn publish(&self, _sid: &str) {}

    async fn publish_on(&self, _channel: &str, _id: &str) {}
}

#[cfg(feature = "redis")]
impl Revocations {
    pub(crate) fn new(redis_url: Option<&str>) -> Result<Self> {
        let target = match redis_url {
            Some(url) => Some(crate::redis_conn::RedisTarget::parse(url).map_err(|e| {
                crate::core::error::SentriError::configuration("redis_url is not a valid Redis URL")
                    .with_source(e)
            })?),
            None => None,
        };
        Ok(Self {
            target,
            publisher: tokio::sync::OnceCell::new(),
            credentials: tokio::sync::broadcast::channel(CREDENTIAL_BACKLOG).0,
        })
    }

    /// Spawns the subscriber that drops revoked sessions from this process's cache.
    pub(crate) fn start(&self, cache: &std::sync::Arc<SessionCache>) {
        let Some(nodes) = self.target.as_ref().map(|t| t.pubsub_clients()) else {
            return;
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                "create_auth was called outside a Tokio runtime: cross-process revocation is off"
            );
            return;
        };
        let weak = std::sync::Arc::downgrade(cache);
        let credentials = self.credentials.clone();
        handle.spawn(async move {
            use futures_util::StreamExt;
            let mut backoff = Duration::from_millis(100);
            // On a cluster, a node that fails hands over to the next one in the list.
            for client in nodes.iter().cycle() {
                match client.get_async_pubsub().await {
                    Ok(mut pubsub) => {
                        let channels = [
                            REVOCATION_CHANNEL,
                            CREDENTIAL_REVOCATION_CHANNEL,
                            AUTHZ_CHANNEL,
                        ];
                        if let Err(err) = pubsub.subscribe(&channels).await {
                            tracing::warn!(error = %err, "revocation subscribe failed");
                        } else {
                            backoff = Duration::from_millis(100);
                            let mut stream = pubsub.into_on_message();
                            while let Some(msg) = stream.next().await {
                                let Some(cache) = weak.upgrade() else {
                                    return;
                                };
                                let Ok(id) = msg.get_payload::<String>() else {
                                    continue;
                                };
                                if msg.get_channel_name() == CREDENTIAL_REVOCATION_CHANNEL {
                                    let _ = credentials.send(id);
                                } else if msg.get_channel_name() == AUTHZ_CHANNEL {
                                    if let Some((user, version)) = parse_authz(&id) {
                                        cache.raise(user, version);
                                    }
                                } else {
                                    cache.forget(&id);
                                }
                            }
                            tracing::warn!("revocation channel closed; reconnecting");
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "revocation subscriber cannot reach Redis")
                    }
                }
                if weak.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
    }

    /// Publishes a revoked session id (best effort: failures are logged).
    pub(crate) async fn publish(&self, sid: &str) {
        self.publish_on(REVOCATION_CHANNEL, sid).await;
    }

    /// Publishes `id` on `channel` (best effort: failures are logged).
    async fn publish_on(&self, channel: &str, id: &str) {
        let Some(target) = &self.target else {
            return;
        };
        let timeouts = crate::redis_conn::Timeouts {
            connect: Duration::from_secs(1),
            response: Duration::from_secs(1),
        };
        let conn = tokio::time::timeout(
            Duration::from_secs(1),
            self.publisher.get_or_try_init(|| target.connect(timeouts)),
        )
        .await;
        let mut conn = match conn {
            Ok(Ok(conn)) => conn.clone(),
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "revocation publish: Redis unreachable");
                return;
            }
            Err(_) => {
                tracing::warn!("revocation publish: Redis connect timed out");
                return;
            }
        };
        let sent = tokio::time::timeout(
            Duration::from_secs(1),
            redis::AsyncCommands::publish::<_, _, i64>(&mut conn, channel, id),
        )
        .await;
        match sent {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "revocation publish failed"),
            Err(_) => tracing::warn!("revocation publish timed out"),
        }
    }
}
