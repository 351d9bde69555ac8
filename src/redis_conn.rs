//! The one Redis connection every Redis user of sentri shares (feature `redis`): the
//! idempotency store, the revocation bus and the throttle store.
//!
//! A Redis URL names either one node (`redis://…`, `rediss://…`, `unix://…`) or a
//! Redis Cluster: `redis+cluster://[user:password@]host1:port1,host2:port2,…` (or
//! `rediss+cluster://…` for TLS). Any subset of the cluster's nodes will do: the client
//! discovers the others, follows `MOVED`/`ASK` redirections and the slot map after a
//! failover. The credentials apply to every node.
//!
//! Every script sentri runs touches exactly one key (`KEYS[1]`), so a script always runs
//! on one slot. Pub/sub uses plain `PUBLISH`/`SUBSCRIBE`: in a cluster a `PUBLISH` sent
//! to any node is forwarded to every node, so a subscriber on any one node hears it.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Client, Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// Where the Redis users connect: one node or a cluster.
#[derive(Clone)]
pub(crate) enum RedisTarget {
    /// One Redis node.
    Single(Client),
    /// A Redis Cluster: one plain URL per seed node.
    Cluster(Vec<String>),
}

/// How long to wait for a connection and for a reply.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    pub(crate) connect: Duration,
    pub(crate) response: Duration,
}

/// An open connection to one node (reconnecting by itself) or to a cluster.
#[derive(Clone)]
pub(crate) enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// The seed-node URLs of a `redis+cluster://` / `rediss+cluster://` URL, or `None` for
/// a single-node URL.
fn cluster_nodes(url: &str) -> Option<Vec<String>> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis+cluster://") {
        ("redis", rest)
    } else {
        ("rediss", url.strip_prefix("rediss+cluster://")?)
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    Some(
        hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| format!("{scheme}://{userinfo}{h}{tail}"))
            .collect(),
    )
}

impl RedisTarget {
    /// Parses `url` (no I/O).
    pub(crate) fn parse(url: &str) -> RedisResult<Self> {
        match cluster_nodes(url) {
            None => Ok(Self::Single(Client::open(url)?)),
            Some(nodes) => {
                if nodes.is_empty() {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::InvalidClientConfig,
                        "a redis+cluster:// URL needs at least one host",
                    )));
                }
                for node in &nodes {
                    Client::open(node.as_str())?;
                }
                Ok(Self::Cluster(nodes))
            }
        }
    }

    /// Opens a connection. A single node's connection is lazy (it connects on first
    /// use and reconnects by itself); a cluster connection reads the slot map now and
    /// follows it afterwards.
    pub(crate) async fn connect(&self, timeouts: Timeouts) -> RedisResult<RedisConn> {
        match self {
            Self::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(20))
                    .set_max_delay(Duration::from_millis(200))
                    .set_connection_timeout(Some(timeouts.connect))
                    .set_response_timeout(Some(timeouts.response));
                ConnectionManager::new_lazy_with_config(client.clone(), config)
                    .map(RedisConn::Single)
            }
            Self::Cluster(nodes) => ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                .connection_timeout(timeouts.connect)
                .response_timeout(timeouts.response)
                .retries(6)
                .min_retry_wait(20)
                .max_retry_wait(500)
                .build()?
                .get_async_connection()
                .await
                .map(RedisConn::Cluster),
        }
    }

    /// The nodes a subscriber can listen on, in the order to try them (a cluster
    /// forwards every `PUBLISH` to all its nodes, so any one of them will do).
    pub(crate) fn pubsub_clients(&self) -> Vec<Client> {
        match self {
            Self::Single(client) => vec![client.clone()],
            Self::Cluster(nodes) => nodes
                .iter()
                .filter_map(|n| Client::open(n.as_str()).ok())
                .collect(),
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::cluster_nodes;

    #[test]
    fn cluster_urls_split_into_nodes_with_shared_credentials() {
        assert_eq!(cluster_nodes("redis://h:1"), None);
        assert_eq!(
            cluster_nodes("redis+cluster://:pw@a:7001,b:7002/0").unwrap(),
            vec!["redis://:pw@a:7001/0", "redis://:pw@b:7002/0"]
        );
        assert_eq!(
            cluster_nodes("rediss+cluster://a:1").unwrap(),
            vec!["rediss://a:1"]
        );
    }
}
