//! Where the Redis store connects: one Redis (`redis://`, `rediss://`) or a Redis
//! Cluster (`redis+cluster://host:port,host:port,…`), behind one connection type.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::near_cache::NearCacheConfig;
use crate::store::StoreError;

/// How to reach Redis.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port/db` (`rediss://` for TLS) for one Redis, or
    /// `redis+cluster://[user:password@]host:port,host:port,…` (`rediss+cluster://`)
    /// for a Redis Cluster, given by one or more of its nodes.
    pub url: String,
    /// Bound on every call (and on connecting).
    pub timeout: Duration,
    /// Sessions read recently, kept on this node ([`NearCacheConfig`]).
    pub near_cache: NearCacheConfig,
}

impl RedisConfig {
    /// `url` with the defaults: 2 s per call, the near-cache on.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            timeout: Duration::from_secs(2),
            near_cache: NearCacheConfig::default(),
        }
    }

    /// The same, with another call timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The URL with its credentials, if any, replaced by `***` (for logs and
    /// `sessiond config check`).
    pub fn redacted_url(&self) -> String {
        match self.url.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((_, hosts)) => format!("{scheme}://***@{hosts}"),
                None => self.url.clone(),
            },
            None => "(not a URL)".into(),
        }
    }

    /// Checks the URL and the bounds.
    pub fn validate(&self) -> Result<(), String> {
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(60) {
            return Err("the Redis call timeout (store_timeout_ms) must be 1 to 60000 ms".into());
        }
        self.near_cache.validate()?;
        Target::parse(&self.url).map(|_| ())
    }
}

/// Shows the URL without its credentials.
impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted_url())
            .field("timeout", &self.timeout)
            .field("near_cache", &self.near_cache)
            .finish()
    }
}

/// The parsed URL: the node URLs, and whether they form a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    /// `redis://…` URLs: the one Redis, or the cluster's seed nodes.
    pub nodes: Vec<String>,
    pub cluster: bool,
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, String> {
        let cluster = [
            ("redis+cluster://", "redis://"),
            ("rediss+cluster://", "rediss://"),
        ]
        .into_iter()
        .find_map(|(scheme, node)| Some((url.strip_prefix(scheme)?, node)));
        let Some((rest, scheme)) = cluster else {
            redis::Client::open(url).map_err(|e| format!("invalid Redis URL: {e}"))?;
            return Ok(Self {
                nodes: vec![url.to_string()],
                cluster: false,
            });
        };
        let (credentials, hosts) = match rest.rsplit_once('@') {
            Some((c, h)) => (format!("{c}@"), h),
            None => (String::new(), rest),
        };
        let hosts = hosts.trim_end_matches('/');
        let nodes: Vec<String> = hosts
            .split(',')
            .map(|h| format!("{scheme}{credentials}{}", h.trim()))
            .collect();
        for (node, host) in nodes.iter().zip(hosts.split(',')) {
            if host.trim().is_empty() || host.contains('/') {
                return Err(format!(
                    "invalid Redis Cluster URL: {host:?} is not host:port (redis+cluster://host:port,host:port)"
                ));
            }
            redis::Client::open(node.as_str())
                .map_err(|e| format!("invalid Redis Cluster node {host:?}: {e}"))?;
        }
        Ok(Self {
            nodes,
            cluster: true,
        })
    }
}

/// A connection to one Redis or to a cluster; both reconnect by themselves.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

pub(super) fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Unavailable {
        message: e.to_string(),
        source: Some(Box::new(e)),
    }
}

/// `fut`, failing as unavailable if Redis does not answer within `timeout`.
pub(super) async fn bounded<T>(
    timeout: Duration,
    fut: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r.map_err(unavailable),
        Err(_) => Err(StoreError::Unavailable {
            message: format!("Redis did not answer within {timeout:?}"),
            source: None,
        }),
    }
}

impl Conn {
    pub async fn open(target: &Target, timeout: Duration) -> Result<Self, StoreError> {
        let connect = async {
            if target.cluster {
                let client = redis::cluster::ClusterClient::builder(target.nodes.clone())
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .build()?;
                Ok::<_, redis::RedisError>(Self::Cluster(client.get_async_connection().await?))
            } else {
                let client = redis::Client::open(target.nodes[0].as_str())?;
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1);
                Ok(Self::Single(
                    ConnectionManager::new_with_config(client, config).await?,
                ))
            }
        };
        match tokio::time::timeout(timeout, connect).await {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(StoreError::Unavailable {
                message: format!("no answer from {:?} within {timeout:?}", target.nodes),
                source: None,
            }),
        }
    }

    /// The keys matching `pattern` on every primary (one Redis: on it), each call
    /// bounded by `timeout`.
    pub async fn scan(
        &mut self,
        pattern: &str,
        timeout: Duration,
    ) -> Result<Vec<String>, StoreError> {
        let nodes = match self {
            Self::Single(_) => vec![None],
            Self::Cluster(c) => {
                let slots: Value = bounded(
                    timeout,
                    redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut *c),
                )
                .await?;
                primaries(&slots)
                    .into_iter()
                    .map(|(host, port)| {
                        Some(RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host,
                            port,
                        }))
                    })
                    .collect()
            }
        };
        let mut keys = Vec::new();
        for node in nodes {
            let mut cursor: u64 = 0;
            loop {
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000);
                let answer: Value = match (&mut *self, &node) {
                    (Self::Cluster(c), Some(routing)) => {
                        bounded(timeout, c.route_command(cmd, routing.clone())).await?
                    }
                    (conn, _) => bounded(timeout, cmd.query_async(conn)).await?,
                };
                let (next, batch): (u64, Vec<String>) =
                    redis::from_redis_value(answer).map_err(unavailable)?;
                keys.extend(batch);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(keys)
    }
}

/// The primaries' addresses in a `CLUSTER SLOTS` answer: entries of `[start, end,
/// [host, port, id, …], replicas…]`.
fn primaries(slots: &Value) -> Vec<(String, u16)> {
    let mut out: Vec<(String, u16)> = Vec::new();
    let Value::Array(ranges) = slots else {
        return out;
    };
    for range in ranges {
        let Value::Array(parts) = range else { continue };
        let Some(Value::Array(node)) = parts.get(2) else {
            continue;
        };
        let host = match node.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => continue,
        };
        let Some(Value::Int(port)) = node.get(1) else {
            continue;
        };
        let Ok(port) = u16::try_from(*port) else {
            continue;
        };
        if !out.iter().any(|(h, p)| *h == host && *p == port) {
            out.push((host, port));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_one_redis_or_a_cluster() {
        let one = Target::parse("redis://127.0.0.1:6379/0").unwrap();
        assert_eq!((one.nodes.len(), one.cluster), (1, false));
        let cluster = Target::parse("redis+cluster://:pw@10.0.0.1:7000, 10.0.0.2:7001/").unwrap();
        assert!(cluster.cluster);
        assert_eq!(
            cluster.nodes,
            ["redis://:pw@10.0.0.1:7000", "redis://:pw@10.0.0.2:7001"]
        );
        let tls = Target::parse("rediss+cluster://h:7000").unwrap();
        assert_eq!(tls.nodes, ["rediss://h:7000"]);
        for bad in [
            "redis+cluster://",
            "redis+cluster://h:1,,h:2",
            "redis+cluster://h:1/0",
            "http://h",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_never_show_in_the_redacted_url_or_debug_output() {
        for (url, shown) in [
            ("redis://:s3cret@h:6379/0", "redis://***@h:6379/0"),
            (
                "rediss+cluster://user:s3cret@a:1,b:2",
                "rediss+cluster://***@a:1,b:2",
            ),
            ("redis://h:6379/0", "redis://h:6379/0"),
        ] {
            let config = RedisConfig::new(url);
            assert_eq!(config.redacted_url(), shown);
            assert!(!format!("{config:?}").contains("s3cret"));
        }
    }
}
