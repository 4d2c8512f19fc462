//! Faults on purpose: two of every role (one policy service) as separate
//! processes against one PostgreSQL and a Redis Cluster (3 masters with a
//! replica each, acks after `WAIT 1`), simulated agents spread over both
//! ingests, while one replica of each role in turn is killed with -9 and
//! started again. Every acked event is stored exactly once, every alarm is
//! raised once, the agents carry on through the surviving ingest and a
//! gateway answers throughout.
//!
//! `MAMORI_CHAOS_ROUNDS=N` (default 1) repeats the kill sequence N times,
//! for longer runs (`loadtest/chaos.sh`).

use crate::support::*;
use mamori_proto::agent::v1::server_message::Body;
use mamori_test_support::TestEnv;
use mamori_test_support::cluster::RedisCluster;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const DEVICES: usize = 8;

/// One role's process, started again with the same settings after a kill.
struct Role {
    name: String,
    args: Vec<(String, String)>,
    subcommand: &'static str,
    log: PathBuf,
    /// Its metrics and health port (`/readyz`).
    ops: u16,
    proc: Option<Proc>,
}

impl Role {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mamori"));
        cmd.arg(self.subcommand)
            .env_remove("MAMORI_CONFIG")
            .env(
                "RUST_LOG",
                std::env::var("MAMORI_CHAOS_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &self.args {
            cmd.env(k, v);
        }
        self.proc = Some(Proc(cmd.spawn().unwrap()));
    }

    fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            crate::crash::kill9(&mut p);
        }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.proc.as_mut()?.0.try_wait().ok().flatten()
    }
}

fn env_of(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

async fn listening(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

/// Whether the role on ops port `port` answers `/readyz` with 200.
async fn ready(http: &reqwest::Client, port: u16) -> bool {
    http.get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// The roles' log directory, deleted unless the test fails.
struct KeptOnFailure(Option<tempfile::TempDir>);

impl KeptOnFailure {
    fn path(&self) -> &Path {
        self.0.as_ref().unwrap().path()
    }
}

impl Drop for KeptOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.0.take()
        {
            eprintln!(
                "chaos: the roles' logs are kept in {}",
                dir.keep().display()
            );
        }
    }
}

/// One kill: when, and when the restarted process was started and ready.
struct Kill {
    name: String,
    killed: Instant,
    started: Instant,
    ready: Instant,
}

/// The longest time without an ack between `from` and `to`, counting from
/// `from` to the first ack and from the last to `to`: how long a kill held
/// up the agent(s) whose acks these are. `acks` is sorted.
fn longest_pause(acks: impl Iterator<Item = Instant>, from: Instant, to: Instant) -> Duration {
    let mut last = from;
    let mut longest = Duration::ZERO;
    for a in acks.filter(|&a| a > from && a <= to) {
        longest = longest.max(a - last);
        last = a;
    }
    longest.max(to.saturating_duration_since(last))
}

/// Sends batches until `stop`, each retried until acked, switching to the
/// other ingest after a failure (as an agent given both addresses does).
async fn agent(
    ingests: Arc<Vec<String>>,
    first: usize,
    credential: String,
    stop: Arc<AtomicBool>,
    switches: Arc<AtomicU64>,
    acks: Arc<std::sync::Mutex<Vec<(usize, Instant)>>>,
) -> Vec<Vec<u8>> {
    let mut acked = Vec::new();
    let mut turn = first;
    let mut stream: Option<AgentStream> = None;
    let mut seq = 0;
    let mut banned_sent = false;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let mut events: Vec<_> = (0..10)
            .map(|i| process_event(&format!("/usr/bin/chaos-{seq}-{i}")))
            .collect();
        // One banned start per device, the devices' spread over the first
        // dozen seconds (across the kills): one alarm each.
        if seq == 3 + 12 * first as u64 && !banned_sent {
            events.push(process_event("/opt/p2p/winny"));
            banned_sent = true;
        }
        let ids: Vec<Vec<u8>> = events.iter().map(|e| e.id.clone()).collect();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            assert!(Instant::now() < deadline, "batch {seq} never acked");
            if stream.is_none() {
                stream = open_at(&ingests[turn % ingests.len()], &credential).await;
            }
            let sent = match stream.as_mut() {
                Some(st) => send(st, batch(seq, events.clone())).await,
                None => None,
            };
            match sent {
                Some(m) if matches!(m.body, Some(Body::Ack(_))) => break,
                Some(m) => panic!("batch {seq} refused: {m:?}"),
                None => {
                    stream = None;
                    turn += 1;
                    switches.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        acked.extend(ids);
        acks.lock().unwrap().push((first, Instant::now()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    acked
}

/// Sends a batch and takes its reply: the ack or refusal with its
/// sequence, passing over policy pushes (a new stream gets one first) and
/// acks of other sequences; None on an error or 20 s of silence (an ack may
/// wait up to the back-pressure wait for the writers).
async fn send(
    st: &mut AgentStream,
    b: mamori_proto::agent::v1::EventBatch,
) -> Option<mamori_proto::agent::v1::ServerMessage> {
    let seq = b.sequence;
    st.tx
        .send(mamori_proto::agent::v1::AgentMessage {
            body: Some(mamori_proto::agent::v1::agent_message::Body::Batch(b)),
        })
        .await
        .ok()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, st.inbound.message()).await {
            Ok(Ok(Some(m))) => match &m.body {
                Some(Body::Ack(a)) if a.sequence != seq => {}
                Some(Body::Rejected(r)) if r.sequence != seq => {}
                Some(Body::Policy(_)) => {}
                _ => return Some(m),
            },
            other => {
                eprintln!("chaos agent: no ack ({other:?}); switching ingest");
                return None;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_every_role_survive_kill_9_of_each_in_turn() {
    let rounds: usize = std::env::var("MAMORI_CHAOS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let cluster = RedisCluster::start(3, 1).await;
    let env = TestEnv::new().await;
    let logs = KeptOnFailure(Some(
        tempfile::Builder::new()
            .prefix("mamori-chaos-logs")
            .tempdir()
            .unwrap(),
    ));
    eprintln!("chaos: role logs in {}", logs.path().display());
    let kek = mamori_gateway::Kek::generate_base64();
    let mail = tempfile::tempdir().unwrap();
    let common = [
        ("MAMORI_DATABASE_URL", env.database_url.clone()),
        ("MAMORI_REDIS_URL", cluster.url()),
        ("MAMORI_KEY_ENCRYPTION_KEY", kek.clone()),
        ("MAMORI_DB_MAX_CONNECTIONS", "3".to_owned()),
        ("MAMORI_MAIL_DIR", mail.path().display().to_string()),
    ];
    let policy_port = free_port();
    let ingest_ports = [free_port(), free_port()];
    let gateway_ports = [free_port(), free_port()];
    let mut roles: Vec<Role> = Vec::new();
    let role = |name: String, subcommand: &'static str, extra: &[(&str, String)], log: &Path| {
        let ops = free_port();
        let mut all = env_of(&common);
        all.extend(env_of(extra));
        all.push((
            format!("MAMORI_{}_OPS_ADDR", subcommand.to_uppercase()),
            format!("127.0.0.1:{ops}"),
        ));
        Role {
            log: log.join(format!("{name}.log")),
            name,
            args: all,
            subcommand,
            ops,
            proc: None,
        }
    };
    roles.push(role(
        "policy".into(),
        "policy",
        &[("MAMORI_POLICY_ADDR", format!("127.0.0.1:{policy_port}"))],
        logs.path(),
    ));
    for i in 0..2 {
        roles.push(role(
            format!("ingest-{i}"),
            "ingest",
            &[
                (
                    "MAMORI_INGEST_ADDR",
                    format!("127.0.0.1:{}", ingest_ports[i]),
                ),
                ("MAMORI_REDIS_WAIT_REPLICAS", "1".into()),
                ("MAMORI_BACKPRESSURE_WAIT_MS", "5000".into()),
            ],
            logs.path(),
        ));
        roles.push(role(
            format!("writer-{i}"),
            "writer",
            &[
                ("MAMORI_WRITER_CLAIM_IDLE_MS", "1500".into()),
                // One connection per shard writer, and maintenance.
                ("MAMORI_DB_MAX_CONNECTIONS", "6".into()),
            ],
            logs.path(),
        ));
        roles.push(role(
            format!("alerting-{i}"),
            "alerting",
            &[("MAMORI_ALERTING_CLAIM_IDLE_MS", "1500".into())],
            logs.path(),
        ));
        roles.push(role(
            format!("gateway-{i}"),
            "gateway",
            &[
                (
                    "MAMORI_GATEWAY_ADDR",
                    format!("127.0.0.1:{}", gateway_ports[i]),
                ),
                (
                    "MAMORI_POLICY_URL",
                    format!("http://127.0.0.1:{policy_port}"),
                ),
            ],
            logs.path(),
        ));
    }
    for r in &mut roles {
        r.start();
    }
    for port in ingest_ports.iter().chain(&gateway_ports) {
        let port = *port;
        wait_for("every listener", Duration::from_secs(60), || async {
            listening(port).await.then_some(())
        })
        .await;
    }

    for r in &mut roles {
        assert!(
            r.exited().is_none(),
            "{} did not start:\n{}",
            r.name,
            std::fs::read_to_string(&r.log).unwrap_or_default()
        );
    }
    // A tenant that bans `winny`, and its devices, enrolled through ingest 0.
    let tenant = mamori_registry::create_tenant(&env.db, "Chaos KK")
        .await
        .unwrap();
    let token = mamori_registry::create_token(&env.db, tenant, None, None)
        .await
        .unwrap();
    let doc = mamori_policy::PolicyDocument::parse(serde_json::json!({
        "banned_apps": [{"name": "winny", "action": "log"}]
    }))
    .unwrap();
    let mut tx = env.db.begin_tenant(tenant).await.unwrap();
    mamori_policy::store::put(&mut tx, mamori_policy::Scope::Tenant, Some(&doc), None)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let ingests: Arc<Vec<String>> = Arc::new(
        ingest_ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect(),
    );
    let mut credentials = Vec::new();
    for i in 0..DEVICES {
        let channel = tonic::transport::Channel::from_shared(ingests[0].clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let m = format!("chaos-{i}-{}", uuid::Uuid::new_v4());
        let r = mamori_proto::agent::v1::agent_service_client::AgentServiceClient::new(channel)
            .enroll(mamori_proto::agent::v1::EnrollRequest {
                enrollment_token: token.token.expose().to_owned(),
                facts: Some(mamori_proto::agent::v1::MachineFacts {
                    machine_id: m.clone(),
                    hostname: m.clone(),
                    os_name: "Debian".into(),
                    os_version: "13".into(),
                    agent_version: "test".into(),
                    instance_id: m,
                }),
            })
            .await
            .unwrap()
            .into_inner();
        credentials.push(r.device_credential);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let switches = Arc::new(AtomicU64::new(0));
    let acks = Arc::new(std::sync::Mutex::new(Vec::new()));
    let agents: Vec<_> = credentials
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            tokio::spawn(agent(
                Arc::clone(&ingests),
                i,
                c,
                Arc::clone(&stop),
                Arc::clone(&switches),
                Arc::clone(&acks),
            ))
        })
        .collect();
    // A client of the gateways, as a load balancer would be: every probe
    // must be answered by one of them.
    let probing = Arc::new(AtomicBool::new(true));
    let prober = tokio::spawn({
        let probing = Arc::clone(&probing);
        async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap();
            let mut probes = 0u64;
            while probing.load(Ordering::Relaxed) {
                let mut answered = false;
                for p in gateway_ports {
                    let r = http
                        .get(format!("http://127.0.0.1:{p}/.well-known/jwks.json"))
                        .send()
                        .await;
                    if r.is_ok_and(|r| r.status().is_success()) {
                        answered = true;
                        break;
                    }
                }
                assert!(answered, "no gateway answered probe {probes}");
                probes += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            probes
        }
    });

    let began = Instant::now();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut kills = Vec::new();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for round in 0..rounds {
        // Replica 0 in even rounds, 1 in odd ones: the agents that moved
        // to the other ingest are moved back.
        for role in ["ingest", "writer", "alerting", "gateway"] {
            let name = format!("{role}-{}", round % 2);
            let r = roles.iter_mut().find(|r| r.name == name).unwrap();
            let killed = Instant::now();
            r.kill();
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let started = Instant::now();
            r.start();
            let ops = r.ops;
            wait_for(
                &format!("{name} ready again"),
                Duration::from_secs(60),
                || async { ready(&http, ops).await.then_some(()) },
            )
            .await;
            kills.push(Kill {
                name: name.clone(),
                killed,
                started,
                ready: Instant::now(),
            });
            tokio::time::sleep(Duration::from_millis(1500)).await;
            eprintln!(
                "chaos round {round}: {name} killed and restarted ({:?} since the start)",
                began.elapsed()
            );
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let stopped = Instant::now();
    let mut acked = Vec::new();
    for a in agents {
        acked.extend(a.await.expect("agent"));
    }
    // Per kill: how soon the new process was ready, and the longest any
    // one agent, and all of them together, went without an ack until the
    // next kill (an agent sends a batch every 100 ms after its last ack).
    let mut acks = std::mem::take(&mut *acks.lock().unwrap());
    acks.sort_by_key(|&(_, at)| at);
    for (i, k) in kills.iter().enumerate() {
        let until = kills.get(i + 1).map_or(stopped, |n| n.killed);
        let any = longest_pause(acks.iter().map(|&(_, at)| at), k.killed, until);
        let one = (0..DEVICES)
            .map(|d| {
                let of_d = acks.iter().filter(|&&(a, _)| a == d).map(|&(_, at)| at);
                longest_pause(of_d, k.killed, until)
            })
            .max()
            .unwrap_or_default();
        eprintln!(
            "chaos kill {i}: {}: ready {} ms after its restart ({} ms after the kill); longest pause in acks: {} ms for one agent, {} ms for all",
            k.name,
            (k.ready - k.started).as_millis(),
            (k.ready - k.killed).as_millis(),
            one.as_millis(),
            any.as_millis()
        );
    }
    probing.store(false, Ordering::Relaxed);
    let probes = prober.await.expect("the gateways answered every probe");
    let unique: HashSet<&Vec<u8>> = acked.iter().collect();
    assert_eq!(unique.len(), acked.len());

    assert_stored_exactly_once(&env, tenant, &acked).await;

    // One banned-app alarm per device, each counted once.
    let alarms: Vec<(uuid::Uuid, i32)> = wait_for(
        "an alarm for every device",
        Duration::from_secs(60),
        || async {
            let rows: Vec<(uuid::Uuid, i32)> = sqlx::query_as(
                "SELECT device_id, count FROM alarms WHERE tenant_id = $1 AND category = 'banned_app'",
            )
            .bind(tenant.as_uuid())
            .fetch_all(&env.owner)
            .await
            .unwrap();
            (rows.len() >= DEVICES).then_some(rows)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM alarms WHERE tenant_id = $1 AND category = 'banned_app'",
    )
    .bind(tenant.as_uuid())
    .fetch_one(&env.owner)
    .await
    .unwrap();
    assert_eq!(again, DEVICES as i64, "one alarm per device: {alarms:?}");
    assert!(
        alarms.iter().all(|(_, n)| *n == 1),
        "each banned start counted once: {alarms:?}"
    );
    for r in &mut roles {
        assert!(
            r.exited().is_none(),
            "{} ended:\n{}",
            r.name,
            std::fs::read_to_string(&r.log).unwrap_or_default()
        );
    }
    eprintln!(
        "chaos: {rounds} round(s), {} events acked and stored once, {DEVICES} alarms, {} agent reconnects, {probes} gateway probes answered",
        acked.len(),
        switches.load(Ordering::Relaxed)
    );
}
