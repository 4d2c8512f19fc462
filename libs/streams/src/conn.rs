//! Where Redis is (one server, or a Redis Cluster) and a connection to it
//! that every role uses the same way.
//!
//! `MAMORI_REDIS_URL` is either one URL (`redis://host:6379/0`, one
//! server), or a Redis Cluster: several node URLs separated by commas
//! (`redis://10.0.0.1:6379,redis://10.0.0.2:6379`), or one seed written
//! `redis+cluster://host:6379` (a managed cluster's configuration endpoint;
//! `rediss+cluster://` for TLS). In a cluster the shard streams spread over
//! the masters by their hash tags (`mamori:events:{N}`); only database 0
//! exists there.

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::time::Duration;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The configured Redis: one server or a cluster's seed nodes.
#[derive(Clone)]
pub struct RedisTarget {
    kind: Kind,
    /// The setting without passwords, for messages.
    shown: String,
}

#[derive(Clone)]
enum Kind {
    Single(Box<redis::Client>),
    Cluster(Vec<redis::ConnectionInfo>),
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// `url` with any password replaced by `***`.
fn hide_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => {
            let auth = &url[s + 3..at];
            match auth.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl RedisTarget {
    /// Parses `MAMORI_REDIS_URL`; the error names the setting and the part
    /// that is wrong.
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        let shown = url
            .split(',')
            .map(|u| hide_password(u.trim()))
            .collect::<Vec<_>>()
            .join(",");
        let bad = |part: &str, e: &dyn std::fmt::Display| {
            format!(
                "MAMORI_REDIS_URL {:?} is not a valid Redis URL: {e}",
                hide_password(part)
            )
        };
        let cluster_seed = |u: &str| -> Option<String> {
            u.strip_prefix("redis+cluster://")
                .map(|rest| format!("redis://{rest}"))
                .or_else(|| {
                    u.strip_prefix("rediss+cluster://")
                        .map(|rest| format!("rediss://{rest}"))
                })
        };
        let parts: Vec<&str> = url.split(',').map(str::trim).collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(format!(
                "MAMORI_REDIS_URL {shown:?} has an empty node: separate a cluster's node URLs with single commas"
            ));
        }
        if parts.len() == 1 && cluster_seed(parts[0]).is_none() {
            let client = redis::Client::open(parts[0]).map_err(|e| bad(parts[0], &e))?;
            return Ok(Self {
                kind: Kind::Single(Box::new(client)),
                shown,
            });
        }
        let mut seeds = Vec::with_capacity(parts.len());
        for part in parts {
            let u = cluster_seed(part).unwrap_or_else(|| part.to_owned());
            let info = redis::IntoConnectionInfo::into_connection_info(u.as_str())
                .map_err(|e| bad(part, &e))?;
            if info.redis_settings().db() != 0 {
                return Err(format!(
                    "MAMORI_REDIS_URL {:?}: a Redis Cluster has only database 0; remove the /{} from the URL",
                    hide_password(part),
                    info.redis_settings().db()
                ));
            }
            seeds.push(info);
        }
        Ok(Self {
            kind: Kind::Cluster(seeds),
            shown,
        })
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.kind, Kind::Cluster(_))
    }

    /// A shared connection that reconnects by itself (and, in a cluster,
    /// follows the slots when a replica is promoted); `response` bounds each
    /// reply.
    pub async fn connect(&self, response: Duration) -> Result<Conn, String> {
        let conn = match &self.kind {
            Kind::Single(client) => {
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(response));
                ConnectionManager::new_with_config((**client).clone(), cfg)
                    .await
                    .map(Conn::Managed)
            }
            Kind::Cluster(_) => self.cluster(response).await.map(Conn::Cluster),
        };
        conn.map_err(|e| format!("cannot reach Redis at {self}: {e}"))
    }

    /// A connection of its own, for a blocking read (which would hold up
    /// every other command on a shared one).
    pub async fn reader(&self, response: Duration) -> redis::RedisResult<Conn> {
        match &self.kind {
            Kind::Single(client) => client
                .get_multiplexed_async_connection_with_config(
                    &redis::AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(CONNECT_TIMEOUT))
                        .set_response_timeout(Some(response)),
                )
                .await
                .map(Conn::Multiplexed),
            Kind::Cluster(_) => self.cluster(response).await.map(Conn::Cluster),
        }
    }

    async fn cluster(&self, response: Duration) -> redis::RedisResult<ClusterConnection> {
        let Kind::Cluster(seeds) = &self.kind else {
            unreachable!("cluster() on a single Redis");
        };
        ClusterClientBuilder::new(seeds.clone())
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(response)
            // A failover takes the cluster's node timeout plus an election:
            // keep asking for about that long before giving up on a command.
            .retries(6)
            .min_retry_wait(100)
            .max_retry_wait(2_000)
            .build()?
            .get_async_connection()
            .await
    }

    /// Clients to subscribe to pub/sub with, to be tried in turn: a
    /// cluster's classic `PUBLISH` reaches every node, so any one will do.
    pub fn pubsub_clients(&self) -> Vec<redis::Client> {
        match &self.kind {
            Kind::Single(client) => vec![(**client).clone()],
            Kind::Cluster(seeds) => seeds
                .iter()
                .filter_map(|s| redis::Client::open(s.clone()).ok())
                .collect(),
        }
    }
}

/// A connection to a single Redis or to a Redis Cluster. Cheap to clone;
/// clones share the connection.
#[derive(Clone)]
pub enum Conn {
    /// One server, reconnecting.
    Managed(ConnectionManager),
    /// One server, one connection of its own (blocking reads).
    Multiplexed(MultiplexedConnection),
    /// A cluster: commands go to the master of their key's slot.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Managed(_) => "Conn::Managed",
            Self::Multiplexed(_) => "Conn::Multiplexed",
            Self::Cluster(_) => "Conn::Cluster",
        })
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Managed(c) => c.req_packed_command(cmd),
            Self::Multiplexed(c) => c.req_packed_command(cmd),
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
            Self::Managed(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Multiplexed(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Managed(c) => c.get_db(),
            Self::Multiplexed(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Where the shard count is recorded: ingest and the consumers must agree
/// on it, or batches land in streams nobody reads.
pub const SHARDS_KEY: &str = "mamori:stream-shards";

/// Records `shards` on first start and refuses any other value after,
/// with how to change it.
pub async fn check_shards(conn: &mut Conn, shards: u32) -> Result<(), String> {
    let (_, recorded): ((), String) = redis::pipe()
        .cmd("SET")
        .arg(SHARDS_KEY)
        .arg(shards)
        .arg("NX")
        .cmd("GET")
        .arg(SHARDS_KEY)
        .query_async(conn)
        .await
        .map_err(|e| format!("cannot check the stream shard count in Redis: {e}"))?;
    match recorded {
        v if v == shards.to_string() => Ok(()),
        v => Err(format!(
            "stream_shards is {shards} here but {v} in Redis ({SHARDS_KEY}): every ingest, writer and alerting process must use the same count. \
             Set MAMORI_STREAM_SHARDS={v}, or to change it: stop every ingest, let the writer and alerting drain the streams, \
             stop them, delete the key ({SHARDS_KEY}) and start everything with the new count"
        )),
    }
}

/// `WAIT`: how many replicas must have an append before ingest acks it.
#[derive(Debug, Clone, Copy)]
pub struct Replication {
    /// 0: ack once the master has it (a single Redis).
    pub replicas: u32,
    pub timeout: Duration,
}

/// Why an append is not confirmed.
#[derive(Debug)]
pub enum AppendError {
    /// Redis failed (or did not answer): the entry may or may not be in it.
    Redis(redis::RedisError),
    /// The entry is on the master but fewer replicas than required have it
    /// within the timeout (a failover can lose it).
    NotReplicated {
        acked: u32,
        required: u32,
        timeout: Duration,
    },
}

impl std::fmt::Display for AppendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Redis(e) => e.fmt(f),
            Self::NotReplicated {
                acked,
                required,
                timeout,
            } => write!(
                f,
                "append not replicated: {acked} of the {required} Redis replicas required have it after {} ms",
                timeout.as_millis()
            ),
        }
    }
}

impl From<redis::RedisError> for AppendError {
    fn from(e: redis::RedisError) -> Self {
        Self::Redis(e)
    }
}

/// Appends `fields` to `key` and, with `replication`, waits until that many
/// replicas have it (XADD and WAIT in one round trip, on the connection
/// that wrote, to the key's master). An error says the entry may or may not
/// be in Redis; the caller must not ack it (a retry is deduplicated
/// downstream by event id).
pub async fn append(
    conn: &mut Conn,
    key: &str,
    field: &str,
    bytes: &[u8],
    replication: Replication,
) -> Result<(), AppendError> {
    if replication.replicas == 0 {
        redis::cmd("XADD")
            .arg(key)
            .arg("*")
            .arg(field)
            .arg(bytes)
            .query_async::<String>(conn)
            .await?;
        return Ok(());
    }
    let mut pipe = redis::pipe();
    pipe.cmd("XADD").arg(key).arg("*").arg(field).arg(bytes);
    pipe.cmd("WAIT")
        .arg(replication.replicas)
        .arg(replication.timeout.as_millis().max(1) as u64);
    let (_, acked): (String, u32) = pipe.query_async(conn).await?;
    if acked < replication.replicas {
        metrics::counter!("mamori_redis_replication_shortfalls_total").increment(1);
        return Err(AppendError::NotReplicated {
            acked,
            required: replication.replicas,
            timeout: replication.timeout,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_url_is_a_single_redis_several_or_the_cluster_scheme_a_cluster() {
        assert!(
            !RedisTarget::parse("redis://127.0.0.1:6379/3")
                .unwrap()
                .is_cluster()
        );
        let c = RedisTarget::parse("redis://10.0.0.1:7000, redis://10.0.0.2:7000").unwrap();
        assert!(c.is_cluster());
        assert!(
            RedisTarget::parse("redis+cluster://cfg.example:6379")
                .unwrap()
                .is_cluster()
        );
        let e = RedisTarget::parse("redis://a:1,redis://b:2/4").unwrap_err();
        assert!(e.contains("only database 0"), "{e}");
        let e = RedisTarget::parse("redis://a:1,,redis://b:2").unwrap_err();
        assert!(e.contains("empty node"), "{e}");
        let e = RedisTarget::parse("http://nope").unwrap_err();
        assert!(e.contains("MAMORI_REDIS_URL"), "{e}");
    }

    #[test]
    fn messages_never_show_the_password() {
        let t = RedisTarget::parse("redis://u:s3cret@10.0.0.1:6379,redis://u:s3cret@10.0.0.2:6379")
            .unwrap();
        assert!(!t.to_string().contains("s3cret"), "{t}");
        assert!(t.to_string().contains("u:***@10.0.0.1"), "{t}");
        let e = RedisTarget::parse("redis://:s3cret@h:notaport").unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
    }
}
