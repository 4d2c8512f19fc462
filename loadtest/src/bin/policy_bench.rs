//! Policy push benchmark: enrolls N simulated agents, holds N `Connect`
//! streams open against ingest, then changes the tenant's policy R times
//! (through the policy store and the change notice, as the gateway does)
//! and reports, per change, how long until the agents had it (p50, p99,
//! max: from before the change's transaction to the agent receiving it and
//! sending its PolicyApplied), and until PostgreSQL showed every device at
//! the new revision.

use anyhow::Context;
use clap::Parser;
use futures::StreamExt;
use hdrhistogram::Histogram;
use mamori_proto::agent::v1::agent_service_client::AgentServiceClient;
use mamori_proto::agent::v1::{
    AgentMessage, EnrollRequest, Hello, MachineFacts, PolicyApplied, agent_message, server_message,
};
use mamori_tenancy::{Db, TenantId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "mamori-policy-bench",
    about = "Policy push to many connected agents"
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
    /// Connected agents (at most 50000).
    #[arg(long, default_value_t = 10_000)]
    agents: usize,
    /// Agents sharing one HTTP/2 connection.
    #[arg(long, default_value_t = 100)]
    per_connection: usize,
    /// Policy changes (at most 100).
    #[arg(long, default_value_t = 5)]
    rounds: u32,
}

/// When each agent received each revision.
type Receipts = Arc<Mutex<HashMap<u64, Vec<Instant>>>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        (1..=50_000).contains(&args.agents),
        "--agents must be 1..=50000"
    );
    anyhow::ensure!((1..=100).contains(&args.rounds), "--rounds must be 1..=100");
    anyhow::ensure!(
        args.per_connection >= 1,
        "--per-connection must be positive"
    );
    let db = Db::connect(&args.database_url, 8)
        .await
        .context("cannot reach PostgreSQL (--database-url)")?;
    let tenant = mamori_registry::create_tenant(&db, "policy bench").await?;
    mamori_registry::set_device_limit(&db, tenant, (args.agents + 10) as i32).await?;
    let token =
        mamori_registry::create_token(&db, tenant, Some(Duration::from_secs(3600)), None).await?;

    let connections = args.agents.div_ceil(args.per_connection);
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(
            Channel::from_shared(args.ingest.clone())?
                .connect()
                .await
                .with_context(|| format!("cannot connect to {}", args.ingest))?,
        );
    }
    eprintln!("enrolling {} agents…", args.agents);
    let started = Instant::now();
    let credentials: Vec<String> = futures::stream::iter(0..args.agents)
        .map(|i| {
            let channel = channels[i % connections].clone();
            let token = token.token.expose().to_owned();
            async move {
                let machine = uuid::Uuid::new_v4().to_string();
                let resp = AgentServiceClient::new(channel)
                    .enroll(EnrollRequest {
                        enrollment_token: token,
                        facts: Some(MachineFacts {
                            machine_id: machine.clone(),
                            hostname: format!("push-{i}"),
                            os_name: "Windows".into(),
                            os_version: "11".into(),
                            agent_version: "policy-bench".into(),
                            instance_id: machine,
                        }),
                    })
                    .await?
                    .into_inner();
                anyhow::Ok(resp.device_credential)
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    eprintln!("enrolled in {:?}; connecting…", started.elapsed());

    let receipts: Receipts = Arc::default();
    let connected = Arc::new(AtomicUsize::new(0));
    for (i, credential) in credentials.into_iter().enumerate() {
        let channel = channels[i % connections].clone();
        let receipts = Arc::clone(&receipts);
        let connected = Arc::clone(&connected);
        tokio::spawn(async move {
            if let Err(e) = agent(channel, credential, receipts, connected).await {
                eprintln!("agent {i}: {e:#}");
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while connected.load(Ordering::Relaxed) < args.agents {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {} agents connected",
            connected.load(Ordering::Relaxed),
            args.agents
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let ingest finish the connect storm (every hello computes the
    // device's policy) before measuring changes.
    tokio::time::sleep(Duration::from_secs(10)).await;
    eprintln!("{} agents connected", args.agents);

    let redis = redis::Client::open(args.redis_url.as_str())?;
    let mut conn = redis.get_multiplexed_async_connection().await?;
    println!("policy push to {} connected agents", args.agents);
    for round in 1..=args.rounds {
        let doc = mamori_policy::PolicyDocument::parse(serde_json::json!({
            "banned_apps": [{"name": format!("bench-{round}"), "action": "kill"}]
        }))?;
        let t0 = Instant::now();
        let mut tx = db.begin_tenant(tenant).await?;
        let saved =
            mamori_policy::store::put(&mut tx, mamori_policy::Scope::Tenant, Some(&doc), None)
                .await?;
        tx.commit().await?;
        mamori_policy::notify::publish(&mut conn, tenant).await;
        let revision = saved.revision as u64;
        let deadline = t0 + Duration::from_secs(60);
        loop {
            let n = receipts.lock().unwrap().get(&revision).map_or(0, Vec::len);
            if n >= args.agents || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let agents_done = t0.elapsed();
        let recorded = wait_recorded(&db, tenant, saved.revision, args.agents, t0).await?;
        let times = receipts
            .lock()
            .unwrap()
            .remove(&revision)
            .unwrap_or_default();
        let mut h = Histogram::<u64>::new(3)?;
        for t in &times {
            h.record(t.duration_since(t0).as_micros().max(1) as u64)?;
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "round {round}: revision {revision}: {}/{} agents, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (all agents {:.0} ms); every device recorded in PostgreSQL after {}",
            times.len(),
            args.agents,
            ms(0.5),
            ms(0.99),
            h.max() as f64 / 1000.0,
            agents_done.as_secs_f64() * 1000.0,
            match recorded {
                Some(d) => format!("{:.0} ms", d.as_secs_f64() * 1000.0),
                None => "(not within 60 s)".into(),
            }
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

/// Waits until every device shows `revision` as applied.
async fn wait_recorded(
    db: &Db,
    tenant: TenantId,
    revision: i64,
    agents: usize,
    t0: Instant,
) -> anyhow::Result<Option<Duration>> {
    let deadline = t0 + Duration::from_secs(60);
    while Instant::now() < deadline {
        let mut tx = db.begin_tenant(tenant).await?;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM devices WHERE policy_version = $1")
            .bind(revision)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        if n as usize >= agents {
            return Ok(Some(t0.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(None)
}

/// One simulated agent: hello at revision 0, then applies (acknowledges)
/// every policy it is sent.
async fn agent(
    channel: Channel,
    credential: String,
    receipts: Receipts,
    connected: Arc<AtomicUsize>,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel(8);
    tx.send(AgentMessage {
        body: Some(agent_message::Body::Hello(Hello {
            agent_version: "policy-bench".into(),
            ..Default::default()
        })),
    })
    .await?;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {credential}").parse()?);
    let mut inbound = AgentServiceClient::new(channel)
        .connect(request)
        .await?
        .into_inner();
    connected.fetch_add(1, Ordering::Relaxed);
    while let Some(msg) = inbound.message().await? {
        if let Some(server_message::Body::Policy(update)) = msg.body {
            let at = Instant::now();
            receipts
                .lock()
                .unwrap()
                .entry(update.revision)
                .or_default()
                .push(at);
            tx.send(AgentMessage {
                body: Some(agent_message::Body::PolicyApplied(PolicyApplied {
                    revision: update.revision,
                    error: String::new(),
                })),
            })
            .await?;
        }
    }
    Ok(())
}
