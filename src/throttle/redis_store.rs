//! The shared store on Redis (feature `redis`): one atomic Lua script per key, the same
//! state machine as [`State::attempt`](super::State::attempt), so any number of
//! instances together admit the limit once.

use std::time::Duration;

use redis::RedisError;
use tokio::sync::OnceCell;

use super::{LimitMs, Settle, ThrottleKey};
use crate::core::error::{Result, SentriError};
use crate::redis_conn::{RedisConn, RedisTarget, Timeouts};

/// `KEYS[1]` the counter hash; `ARGV`: now, max, window, lockout, max lockout (ms).
/// Returns -1 when admitted, else the lockout left (ms).
const ATTEMPT: &str = r"
local now = tonumber(ARGV[1])
local max, win = tonumber(ARGV[2]), tonumber(ARGV[3])
local lock, cap = tonumber(ARGV[4]), tonumber(ARGV[5])
local s = redis.call('HMGET', KEYS[1], 'c', 'w', 'l', 'n')
local c, w = tonumber(s[1]) or 0, tonumber(s[2]) or 0
local l, n = tonumber(s[3]) or 0, tonumber(s[4]) or 0
if l > now then return l - now end
if now >= w then
  if l > 0 and now >= l + win then n = 0 end
  c = 0
  w = now + win
end
local out = -1
if c >= max then
  n = math.min(n + 1, 40)
  local d = math.min(lock * 2 ^ math.min(n - 1, 40), cap)
  l = now + d
  w = l
  c = 0
  out = d
else
  c = c + 1
end
redis.call('HSET', KEYS[1], 'c', c, 'w', w, 'l', l, 'n', n)
redis.call('PEXPIRE', KEYS[1], math.max(w, l) - now + win + cap)
return out
";

const REFUND: &str = r"
local c = tonumber(redis.call('HGET', KEYS[1], 'c')) or 0
if c > 0 then redis.call('HSET', KEYS[1], 'c', c - 1) end
return 0
";

/// The longest a throttle call waits for Redis before the per-process limiter answers.
const REDIS_DEADLINE: Duration = Duration::from_millis(1000);

pub(crate) struct RedisStore {
    target: RedisTarget,
    conn: OnceCell<RedisConn>,
    prefix: String,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

impl RedisStore {
    /// Parses the URL (no I/O).
    pub(crate) fn new(url: &str, prefix: &str) -> Result<Self> {
        let target = RedisTarget::parse(url).map_err(|e| {
            SentriError::configuration("redis_url is not a valid Redis URL").with_source(e)
        })?;
        Ok(Self {
            target,
            conn: OnceCell::new(),
            prefix: prefix.to_owned(),
        })
    }

    async fn conn(&self) -> std::result::Result<RedisConn, RedisError> {
        let timeouts = Timeouts {
            connect: Duration::from_millis(800),
            response: Duration::from_millis(800),
        };
        self.conn
            .get_or_try_init(|| self.target.connect(timeouts))
            .await
            .cloned()
    }

    async fn eval(
        &self,
        script: &str,
        key: &ThrottleKey,
        args: &[i64],
    ) -> std::result::Result<i64, StoreError> {
        let run = async {
            let mut conn = self.conn().await?;
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(script).arg(1).arg(key.storage_key(&self.prefix));
            for a in args {
                cmd.arg(*a);
            }
            Ok::<i64, StoreError>(cmd.query_async(&mut conn).await?)
        };
        tokio::time::timeout(REDIS_DEADLINE, run)
            .await
            .map_err(|_| StoreError::Timeout(REDIS_DEADLINE))?
    }

    pub(crate) async fn attempt(
        &self,
        key: &ThrottleKey,
        now: i64,
        limit: LimitMs,
    ) -> std::result::Result<Option<i64>, StoreError> {
        let args = [
            now,
            i64::from(limit.max),
            limit.window,
            limit.lockout,
            limit.max_lockout,
        ];
        let out = self.eval(ATTEMPT, key, &args).await?;
        Ok((out >= 0).then_some(out.max(1)))
    }

    pub(crate) async fn settle(
        &self,
        key: &ThrottleKey,
        how: Settle,
    ) -> std::result::Result<(), StoreError> {
        match how {
            Settle::Refund => {
                self.eval(REFUND, key, &[]).await?;
            }
            Settle::Reset => {
                let run = async {
                    let mut conn = self.conn().await?;
                    let _: i64 = redis::cmd("DEL")
                        .arg(key.storage_key(&self.prefix))
                        .query_async(&mut conn)
                        .await?;
                    Ok::<(), StoreError>(())
                };
                tokio::time::timeout(REDIS_DEADLINE, run)
                    .await
                    .map_err(|_| StoreError::Timeout(REDIS_DEADLINE))??;
            }
        }
        Ok(())
    }
}
