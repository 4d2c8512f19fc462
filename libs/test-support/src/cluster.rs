//! A real Redis Cluster on loopback for tests: `redis-server` processes
//! with `--cluster-enabled yes`, joined with `redis-cli --cluster create`,
//! each master with its replicas. Nodes can be killed (-9) to test a
//! failover; everything is killed when the value is dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One node of the cluster.
#[derive(Debug)]
pub struct Node {
    pub port: u16,
    child: Option<Child>,
}

/// The cluster's processes and their directory.
#[derive(Debug)]
pub struct RedisCluster {
    pub nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

/// A loopback port that is free, whose cluster-bus port (+10000) is free
/// too, and that none of `taken` (this cluster's nodes) uses as either.
fn free_port(taken: &[u16]) -> u16 {
    let clash = |port: u16| {
        taken
            .iter()
            .any(|&t| t == port || t + 10_000 == port || port + 10_000 == t)
    };
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind a loopback port")
            .local_addr()
            .expect("local address")
            .port();
        if port < 55_000
            && !clash(port)
            && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
        {
            return port;
        }
    }
}

/// Starts a node, on another port when redis-server could not bind its
/// port or its bus port (another process took one between the check and
/// the start).
fn start_node(dir: &std::path::Path, taken: &[u16]) -> (u16, Child) {
    for _ in 0..10 {
        let port = free_port(taken);
        let mut child = spawn_node(dir, port);
        if serving(port, &mut child) {
            return (port, child);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("no redis-server cluster node started on any of 10 ports");
}

/// Whether the node answers on its port and its bus port (false when it
/// exited, or after 10 s).
fn serving(port: u16, child: &mut Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        let up = |p: u16| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok();
        if up(port) && up(port + 10_000) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

impl RedisCluster {
    /// Starts `masters` masters with `replicas` replicas each and waits
    /// until the cluster answers with every slot covered.
    pub async fn start(masters: usize, replicas: usize) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut nodes = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            let taken: Vec<u16> = nodes.iter().map(|n: &Node| n.port).collect();
            let (port, child) = start_node(dir.path(), &taken);
            nodes.push(Node {
                port,
                child: Some(child),
            });
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli is installed (scripts/test.sh installs redis-tools)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { nodes, dir };
        cluster
            .wait_until(
                "every node sees the cluster as ok and every replica has synced",
                |c| async move {
                    for n in &c.nodes {
                        if !c.info(n.port).await.contains("cluster_state:ok") {
                            return false;
                        }
                        let repl = c.replication(n.port).await;
                        if !repl.contains("role:master") && !repl.contains("master_link_status:up")
                        {
                            return false;
                        }
                    }
                    true
                },
            )
            .await;
        cluster
    }

    /// `MAMORI_REDIS_URL` for the cluster: every node, comma-separated.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A plain connection to one node.
    pub async fn node(&self, port: u16) -> redis::aio::MultiplexedConnection {
        redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .expect("node url")
            .get_multiplexed_async_connection_with_config(
                &redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_response_timeout(Some(Duration::from_secs(2))),
            )
            .await
            .expect("connect to a cluster node")
    }

    async fn info(&self, port: u16) -> String {
        self.ask(port, &["CLUSTER", "INFO"]).await
    }

    async fn replication(&self, port: u16) -> String {
        self.ask(port, &["INFO", "replication"]).await
    }

    /// A text reply of the node on `port`, empty if it does not answer.
    async fn ask(&self, port: u16, args: &[&str]) -> String {
        let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}")) else {
            return String::new();
        };
        let Ok(Ok(mut conn)) = tokio::time::timeout(
            Duration::from_secs(1),
            client.get_multiplexed_async_connection(),
        )
        .await
        else {
            return String::new();
        };
        redis::cmd(args[0])
            .arg(&args[1..])
            .query_async::<String>(&mut conn)
            .await
            .unwrap_or_default()
    }

    /// The port of the master serving `key`'s slot, as the live nodes see it.
    pub async fn master_of(&self, key: &str) -> u16 {
        self.try_master_of(key)
            .await
            .unwrap_or_else(|why| panic!("{why}"))
    }

    async fn try_master_of(&self, key: &str) -> Result<u16, String> {
        let alive = self.alive().next().expect("a live node");
        let mut conn = self.node(alive).await;
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("CLUSTER KEYSLOT: {e}"))?;
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("CLUSTER NODES: {e}"))?;
        for line in nodes.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            let port: u16 = f[1]
                .split(['@', ':'])
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            for range in &f[8..] {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(lo), Ok(hi)) = (lo.parse::<u16>(), hi.parse::<u16>())
                    && (lo..=hi).contains(&slot)
                {
                    return Ok(port);
                }
            }
        }
        Err(format!("no live master serves slot {slot}:\n{nodes}"))
    }

    fn alive(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
    }

    /// Kills the node on `port` with SIGKILL, as a crash would.
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the node on `port` again (as Kubernetes restarts a pod): it
    /// rejoins from its `nodes.conf` and, its slots taken over, becomes a
    /// replica of the promoted master. Waits until it has synced.
    pub async fn restart(&mut self, port: u16) {
        let dir = self.dir.path().to_owned();
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster");
        assert!(node.child.is_none(), "node {port} is running");
        node.child = Some(spawn_node(&dir, port));
        wait_listening(port);
        self.wait_until("the restarted node is a synced replica", |c| async move {
            c.replication(port).await.contains("master_link_status:up") && c.all_ok().await
        })
        .await;
    }

    /// Waits until every live node reports the cluster ok again and `key`'s
    /// slot is served by a master other than `dead`: the failover is done.
    pub async fn wait_for_failover(&self, key: &str, dead: u16) -> u16 {
        self.wait_until("a replica is promoted", |c| async move {
            c.try_master_of(key).await.is_ok_and(|m| m != dead) && c.all_ok().await
        })
        .await;
        self.master_of(key).await
    }

    /// Whether every live node reports the cluster ok.
    async fn all_ok(&self) -> bool {
        for p in self.alive() {
            if !self.info(p).await.contains("cluster_state:ok") {
                return false;
            }
        }
        true
    }

    async fn wait_until<'a, F, Fut>(&'a self, what: &str, check: F)
    where
        F: Fn(&'a Self) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !check(self).await {
            assert!(
                Instant::now() < deadline,
                "Redis Cluster: {what}: timed out"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut child) = n.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = &self.dir;
    }
}

fn spawn_node(dir: &std::path::Path, port: u16) -> Child {
    let own = dir.join(port.to_string());
    std::fs::create_dir_all(&own).expect("node directory");
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--cluster-enabled", "yes"])
        .args(["--cluster-config-file", "nodes.conf"])
        // Failover within about two seconds of a master's death.
        .args(["--cluster-node-timeout", "1000"])
        // A replica may always take over (it has every acked write: WAIT).
        .args(["--cluster-replica-validity-factor", "0"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&own)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is installed (scripts/test.sh installs it)")
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server on port {port} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
