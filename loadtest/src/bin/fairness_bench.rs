//! One tenant against another in the shared alerting service: a quiet
//! tenant's agent starts a banned app every `--probe-every-ms`, first
//! alone, then while a hostile tenant — a policy holding as much worst-case
//! glob text as it may, and `--hostile-devices` agents sending long paths
//! into its confidential folders at `--flood-rate` events/s in all — floods
//! the same shards. Prints the quiet tenant's event → alarm latency (to
//! the commit that counted it, from PostgreSQL's commit timestamps) for
//! both, and how much of the flood the alerting service had evaluated.
//!
//! `loadtest/fairness.sh` runs it against a private `mamori all`, with the
//! per-tenant budget on and off.

use anyhow::Context;
use clap::Parser;
use mamori_proto::agent::v1::agent_service_client::AgentServiceClient;
use mamori_proto::agent::v1::{
    AgentMessage, EnrollRequest, Event, EventBatch, FileEvent, MachineFacts, ProcessEvent,
    agent_message, event::Kind, file_event, process_event, server_message,
};
use mamori_tenancy::{Db, TenantId};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "mamori-fairness-bench",
    about = "A quiet tenant's alarm latency beside a hostile tenant"
)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    ingest: String,
    #[arg(long, env = "MAMORI_DATABASE_URL")]
    database_url: String,
    #[arg(
        long,
        env = "MAMORI_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,
    /// Seconds of each phase (alone, then beside the flood), at most 600.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// How often the quiet tenant starts a banned app.
    #[arg(long, default_value_t = 100)]
    probe_every_ms: u64,
    /// The hostile tenant's agents (at most 64).
    #[arg(long, default_value_t = 8)]
    hostile_devices: usize,
    /// The hostile tenant's events per second, all agents together.
    #[arg(long, default_value_t = 2000)]
    flood_rate: u64,
    /// Bytes of each flooded path (at most 4000).
    #[arg(long, default_value_t = 4000)]
    path_bytes: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        (1..=600).contains(&args.duration),
        "--duration must be 1..=600"
    );
    anyhow::ensure!(
        (1..=64).contains(&args.hostile_devices),
        "--hostile-devices must be 1..=64"
    );
    anyhow::ensure!(
        (64..=4000).contains(&args.path_bytes),
        "--path-bytes must be 64..=4000"
    );
    anyhow::ensure!(args.probe_every_ms >= 10, "--probe-every-ms must be >= 10");
    let db = Db::connect(&args.database_url, 4)
        .await
        .context("cannot reach PostgreSQL (--database-url)")?;
    let owner = sqlx::PgPool::connect(&args.database_url).await?;
    let redis = redis::Client::open(args.redis_url.as_str())?;
    let mut notices = redis.get_multiplexed_async_connection().await?;
    let channel = Channel::from_shared(args.ingest.clone())?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", args.ingest))?;

    // The quiet tenant bans an app; the hostile one fills its policy with
    // the costliest globs it may hold, the folder it floods last.
    let quiet = tenant(
        &db,
        "quiet",
        serde_json::json!({
            "banned_apps": [{"name": "winny", "action": "log"}]
        }),
    )
    .await?;
    let pattern_len = mamori_pathglob::MAX_PATTERN_BYTES;
    let folders: Vec<String> = (0..mamori_pathglob::MAX_TOTAL_BYTES / pattern_len - 1)
        .map(|i| format!("*{}{i:02}*", "a".repeat(pattern_len - 4)))
        .chain(["/srv/hr/**".to_owned()])
        .collect();
    let hostile = tenant(
        &db,
        "hostile",
        serde_json::json!({ "confidential_folders": folders }),
    )
    .await?;
    for t in [quiet, hostile] {
        mamori_policy::notify::publish(&mut notices, t).await;
    }
    let probe_device = enroll(&db, &channel, quiet, "quiet-pc").await?;
    let mut flooders = Vec::new();
    for i in 0..args.hostile_devices {
        flooders.push(enroll(&db, &channel, hostile, &format!("flood-{i}")).await?);
    }
    let probe = Agent::open(&channel, &probe_device).await?;

    println!(
        "quiet tenant: a banned app every {} ms; hostile tenant: {} folder globs ({} bytes), {} agents, {} events/s of {}-byte paths",
        args.probe_every_ms,
        folders.len(),
        folders.iter().map(String::len).sum::<usize>(),
        args.hostile_devices,
        args.flood_rate,
        args.path_bytes
    );
    // Warm up: the policies cached, the connections open.
    probe.send(vec![banned_start()]).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let from = chrono::Utc::now();
    run_probe(&probe, &args).await?;
    report(&owner, "alone", quiet, from, chrono::Utc::now()).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let per_agent = (args.flood_rate / args.hostile_devices as u64).max(1);
    let mut floods = Vec::new();
    for cred in &flooders {
        let agent = Agent::open(&channel, cred).await?;
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        let path = format!(
            "/srv/hr/{}/pay.xlsx",
            "b".repeat(args.path_bytes.saturating_sub(20))
        );
        floods.push(tokio::spawn(async move {
            flood(agent, path, per_agent, stop, sent).await
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let from = chrono::Utc::now();
    run_probe(&probe, &args).await?;
    let to = chrono::Utc::now();
    stop.store(true, Ordering::Relaxed);
    for f in floods {
        f.await??;
    }
    report(&owner, "beside the flood", quiet, from, to).await?;
    let flooded = sent.load(Ordering::Relaxed);
    let evaluated: i64 = sqlx::query_scalar("SELECT count(*) FROM alert_hits WHERE tenant_id = $1")
        .bind(hostile.as_uuid())
        .fetch_one(&owner)
        .await?;
    println!(
        "hostile tenant: {flooded} events acked, {evaluated} evaluated and counted by the end of the run"
    );
    Ok(())
}

async fn tenant(db: &Db, name: &str, policy: serde_json::Value) -> anyhow::Result<TenantId> {
    let t = mamori_registry::create_tenant(db, name).await?;
    let doc = mamori_policy::PolicyDocument::parse(policy)
        .map_err(|e| anyhow::anyhow!("bench policy refused: {e}"))?;
    let mut tx = db.begin_tenant(t).await?;
    mamori_policy::store::put(&mut tx, mamori_policy::Scope::Tenant, Some(&doc), None).await?;
    tx.commit().await?;
    Ok(t)
}

async fn enroll(db: &Db, channel: &Channel, t: TenantId, host: &str) -> anyhow::Result<String> {
    let token = mamori_registry::create_token(db, t, Some(Duration::from_secs(3600)), None).await?;
    let machine = uuid::Uuid::new_v4().to_string();
    let resp = AgentServiceClient::new(channel.clone())
        .enroll(EnrollRequest {
            enrollment_token: token.token.expose().to_owned(),
            facts: Some(MachineFacts {
                machine_id: machine.clone(),
                hostname: host.into(),
                os_name: "Windows".into(),
                os_version: "11".into(),
                agent_version: "fairness-bench".into(),
                instance_id: machine,
            }),
        })
        .await?
        .into_inner();
    Ok(resp.device_credential)
}

/// One `Connect` stream, one batch in flight at a time.
struct Agent {
    tx: mpsc::Sender<AgentMessage>,
    rx: tokio::sync::Mutex<tonic::Streaming<mamori_proto::agent::v1::ServerMessage>>,
    sequence: AtomicU64,
}

impl Agent {
    async fn open(channel: &Channel, credential: &str) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::channel(4);
        let mut req = tonic::Request::new(ReceiverStream::new(rx));
        req.metadata_mut()
            .insert("authorization", format!("Bearer {credential}").parse()?);
        let inbound = AgentServiceClient::new(channel.clone())
            .connect(req)
            .await?
            .into_inner();
        Ok(Self {
            tx,
            rx: tokio::sync::Mutex::new(inbound),
            sequence: AtomicU64::new(1),
        })
    }

    /// Sends a batch and waits for its ack (policy pushes are skipped).
    async fn send(&self, events: Vec<Event>) -> anyhow::Result<()> {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        self.tx
            .send(AgentMessage {
                body: Some(agent_message::Body::Batch(EventBatch {
                    sequence,
                    events,
                    ..Default::default()
                })),
            })
            .await
            .map_err(|_| anyhow::anyhow!("stream closed"))?;
        let mut rx = self.rx.lock().await;
        loop {
            let m = rx
                .message()
                .await?
                .ok_or_else(|| anyhow::anyhow!("stream ended"))?;
            match m.body {
                Some(server_message::Body::Ack(a)) if a.sequence == sequence => return Ok(()),
                Some(server_message::Body::Rejected(r)) => {
                    anyhow::bail!("batch refused: {}", r.reason)
                }
                _ => {}
            }
        }
    }
}

fn event(kind: Kind) -> Event {
    Event {
        id: uuid::Uuid::now_v7().as_bytes().to_vec(),
        occurred_at_us: chrono::Utc::now().timestamp_micros(),
        os_user: "bench".into(),
        kind: Some(kind),
        ..Default::default()
    }
}

fn banned_start() -> Event {
    event(Kind::Process(ProcessEvent {
        action: process_event::Action::Start as i32,
        pid: 4242,
        exe_path: "C:\\Tools\\winny.exe".into(),
        ..Default::default()
    }))
}

async fn run_probe(probe: &Agent, args: &Args) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_millis(args.probe_every_ms));
    let until = Instant::now() + Duration::from_secs(args.duration);
    while Instant::now() < until {
        tick.tick().await;
        probe.send(vec![banned_start()]).await?;
    }
    Ok(())
}

/// Sends `rate` events/s in batches of a tenth of a second until `stop`.
async fn flood(
    agent: Agent,
    path: String,
    rate: u64,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let per_batch = (rate / 10).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let events = (0..per_batch)
            .map(|_| {
                event(Kind::File(FileEvent {
                    action: file_event::Action::Modify as i32,
                    path: path.clone(),
                    ..Default::default()
                }))
            })
            .collect();
        agent.send(events).await?;
        sent.fetch_add(per_batch, Ordering::Relaxed);
    }
    Ok(())
}

/// The quiet tenant's event → alarm latency for events in `[from, to)`,
/// once the alerting service has counted them all.
async fn report(
    owner: &sqlx::PgPool,
    label: &str,
    quiet: TenantId,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    let mut last = -1;
    for _ in 0..120 {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM alert_hits WHERE tenant_id = $1 AND at >= $2 AND at < $3",
        )
        .bind(quiet.as_uuid())
        .bind(from)
        .bind(to)
        .fetch_one(owner)
        .await?;
        if n == last {
            break;
        }
        last = n;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (n, p50, p99, max): (i64, Option<f64>, Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT count(*),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY d),
                percentile_cont(0.99) WITHIN GROUP (ORDER BY d),
                max(d)
         FROM (SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - at)::float8 AS d
               FROM alert_hits WHERE tenant_id = $1 AND at >= $2 AND at < $3) s",
    )
    .bind(quiet.as_uuid())
    .bind(from)
    .bind(to)
    .fetch_one(owner)
    .await?;
    match (p50, p99, max) {
        (Some(p50), Some(p99), Some(max)) => println!(
            "quiet tenant's event → alarm, {label:<16}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({n} banned-app starts)",
            p50 * 1000.0,
            p99 * 1000.0,
            max * 1000.0
        ),
        _ => println!("quiet tenant's event → alarm, {label}: no alarm hits recorded"),
    }
    Ok(())
}
