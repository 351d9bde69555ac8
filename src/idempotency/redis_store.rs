//! Shared store on Redis (feature `redis`).
//!
//! * in-flight marker: an atomic `SET key marker NX PX ttl` (inside a Lua script that
//!   also returns the current value when the key is taken);
//! * completion: compare-and-set from our marker to the serialized response, or to a
//!   not-replayable record (`N` + fingerprint) when the response could not be kept;
//! * release: compare-and-delete of our marker.
//!
//! The connection (one node or a Redis Cluster, see `crate::redis_conn`) is created on
//! first use (so the layer can be built outside a runtime) and reconnects by itself; a
//! command that fails on a broken connection is retried once on the fresh one. Each
//! script touches one key, so on a cluster it runs on the key's slot.

use std::time::Duration;

use redis::{Cmd, RedisError};
use tokio::sync::OnceCell;

use super::store::{
    Begin, Completion, Fingerprint, Record, StoreError, Ticket, decode_record, encode_completion,
    encode_marker,
};
use crate::redis_conn::{RedisConn, RedisTarget, Timeouts};

const KEY_PREFIX: &str = "sentri:idem:";

const BEGIN: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
return redis.call('GET', KEYS[1])
";

const COMPLETE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
";

// Markers are `P` + 32-byte fingerprint + 16-byte ticket: compare the tag and the ticket.
const RELEASE: &str = r"
local v = redis.call('GET', KEYS[1])
if v and #v == 49 and string.sub(v, 1, 1) == 'P' and string.sub(v, 34) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

pub(crate) struct RedisStore {
    target: RedisTarget,
    conn: OnceCell<RedisConn>,
    ttl_ms: u64,
}

/// `EVAL script 1 key args…` (plain EVAL: no script cache to lose when Redis restarts).
fn eval(script: &str, key: &str) -> Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(1).arg(key);
    cmd
}

impl RedisStore {
    /// Parses the URL (no I/O).
    pub(crate) fn new(url: &str, ttl: Duration) -> Result<Self, RedisError> {
        Ok(Self {
            target: RedisTarget::parse(url)?,
            conn: OnceCell::new(),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1),
        })
    }

    async fn conn(&self) -> Result<RedisConn, StoreError> {
        let timeouts = Timeouts {
            connect: Duration::from_secs(1),
            response: Duration::from_secs(2),
        };
        self.conn
            .get_or_try_init(|| self.target.connect(timeouts))
            .await
            .cloned()
            .map_err(|e| StoreError(Box::new(e)))
    }

    /// Runs `op` once, and once more when the connection was broken (the manager
    /// has started reconnecting by then).
    async fn with_retry<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: Fn(RedisConn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let conn = self.conn().await?;
        match op(conn.clone()).await {
            Ok(v) => Ok(v),
            Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() => {
                tracing::debug!(error = %e, "idempotency: redis connection broken, retrying once");
                op(conn).await.map_err(|e| StoreError(Box::new(e)))
            }
            Err(e) => Err(StoreError(Box::new(e))),
        }
    }
}

fn redis_key(key: &str) -> String {
    let mut k = String::with_capacity(KEY_PREFIX.len() + key.len());
    k.push_str(KEY_PREFIX);
    k.push_str(key);
    k
}

impl super::store::Store for RedisStore {
    async fn try_begin(&self, key: &str, fingerprint: &Fingerprint) -> Result<Begin, StoreError> {
        let ticket: Ticket = uuid::Uuid::new_v4().as_u128();
        let marker = encode_marker(fingerprint, ticket);
        let rkey = redis_key(key);
        let existing: Option<Vec<u8>> = self
            .with_retry(|mut conn| {
                let mut cmd = eval(BEGIN, &rkey);
                cmd.arg(&marker).arg(self.ttl_ms);
                async move { cmd.query_async(&mut conn).await }
            })
            .await?;
        let Some(raw) = existing else {
            return Ok(Begin::Started(ticket));
        };
        if raw == marker {
            // Our own SET went through before a retry: the key is ours.
            return Ok(Begin::Started(ticket));
        }
        Ok(match decode_record(raw)? {
            Record::InFlight { fingerprint: fp } if fp == *fingerprint => Begin::InProgress,
            Record::Done(resp) if resp.fingerprint == *fingerprint => {
                Begin::Completed(std::sync::Arc::new(resp))
            }
            Record::NotReplayable { fingerprint: fp } if fp == *fingerprint => Begin::NotReplayable,
            _ => Begin::Mismatch,
        })
    }

    async fn complete(
        &self,
        key: &str,
        ticket: Ticket,
        completion: Completion,
    ) -> Result<(), StoreError> {
        let marker = encode_marker(completion.fingerprint(), ticket);
        let value = encode_completion(&completion)?;
        let rkey = redis_key(key);
        let stored: i64 = self
            .with_retry(|mut conn| {
                let mut cmd = eval(COMPLETE, &rkey);
                cmd.arg(&marker).arg(&value).arg(self.ttl_ms);
                async move { cmd.query_async(&mut conn).await }
            })
            .await?;
        if stored == 0 {
            tracing::warn!(
                "idempotency: in-flight marker expired before the response was stored; not cached"
            );
        }
        Ok(())
    }

    async fn release(&self, key: &str, ticket: Ticket) -> Result<(), StoreError> {
        let rkey = redis_key(key);
        let ticket_bytes = ticket.to_be_bytes();
        let _: i64 = self
            .with_retry(|mut conn| {
                let mut cmd = eval(RELEASE, &rkey);
                cmd.arg(&ticket_bytes[..]);
                async move { cmd.query_async(&mut conn).await }
            })
            .await?;
        Ok(())
    }
}
