//! The simulated agents: enrollment, then one Connect stream each, sending
//! batches (paced or as fast as the ack window allows) and timing the acks.

use crate::{Args, events, wire};
use futures::StreamExt;
use hdrhistogram::Histogram;
use mamori_proto::agent::v1::agent_service_client::AgentServiceClient;
use mamori_proto::agent::v1::{EnrollRequest, MachineFacts, ServerMessage, server_message};
use mamori_tenancy::TenantId;
use rand::SeedableRng;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::CompressionEncoding;

#[derive(Clone)]
pub struct SimAgent {
    url: String,
    credential: String,
}

pub async fn enroll_all(
    args: &Args,
    tenants: &[(TenantId, String)],
) -> anyhow::Result<Vec<SimAgent>> {
    let urls: Vec<String> = args
        .ingest
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    let results = futures::stream::iter(0..args.agents)
        .map(|i| {
            let url = urls[i % urls.len()].clone();
            let token = tenants[i % tenants.len()].1.clone();
            let hostname = format!("{}{:03}", args.hostname_prefix, i + 1);
            async move {
                let channel = tonic::transport::Channel::from_shared(url.clone())?
                    .connect()
                    .await?;
                let machine = uuid::Uuid::new_v4().to_string();
                let resp = AgentServiceClient::new(channel)
                    .enroll(EnrollRequest {
                        enrollment_token: token,
                        facts: Some(MachineFacts {
                            machine_id: machine.clone(),
                            hostname,
                            os_name: "Windows".into(),
                            os_version: "11 23H2".into(),
                            agent_version: "loadtest".into(),
                            instance_id: machine,
                        }),
                    })
                    .await?
                    .into_inner();
                anyhow::Ok(SimAgent {
                    url,
                    credential: resp.device_credential,
                })
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    results.into_iter().collect()
}

pub struct Report {
    pub elapsed: Duration,
    pub sent_events: u64,
    pub acked_events: u64,
    pub encoded_bytes: u64,
    pub rejected: u64,
    pub errors: u64,
    /// Streams an agent reopened after ingest said "retry later" (as the
    /// real agent does, with its unacked batches lost to the count).
    pub retries: u64,
    /// Microseconds from event creation to ack, one count per event.
    pub ack_latency: Histogram<u64>,
}

impl Report {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            elapsed: Duration::ZERO,
            sent_events: 0,
            acked_events: 0,
            encoded_bytes: 0,
            rejected: 0,
            errors: 0,
            retries: 0,
            ack_latency: Histogram::new_with_bounds(1, 600_000_000, 3)?,
        })
    }
}

pub async fn drive(args: &Args, fleet: Vec<SimAgent>) -> anyhow::Result<Report> {
    let n = fleet.len();
    let per_agent_rate = (args.rate > 0).then(|| args.rate as f64 / n as f64);
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let started = Instant::now();
    // Event ids take their random bits from each agent's seeded generator:
    // a seed of this run keeps them apart from other runs' on the same day.
    let run_seed: u64 = rand::random();
    let mut tasks = Vec::with_capacity(n);
    for (i, agent) in fleet.into_iter().enumerate() {
        let args = args.clone();
        tasks.push(tokio::spawn(async move {
            let mut report = Report::new()?;
            let failure = loop {
                let result = run_agent(
                    agent.clone(),
                    &args,
                    per_agent_rate,
                    deadline,
                    run_seed ^ (i as u64 + report.retries * 1_000_003),
                    &mut report,
                )
                .await;
                match result {
                    Ok(()) => break None,
                    Err(e)
                        if retry_later(&e)
                            && Instant::now() + Duration::from_secs(3) < deadline =>
                    {
                        // Like the real agent: back off, reopen the stream.
                        report.retries += 1;
                        let jitter = (i as u64 * 7919 + report.retries * 104_729) % 1000;
                        tokio::time::sleep(Duration::from_millis(1000 + jitter)).await;
                    }
                    Err(e) => break Some(e),
                }
            };
            anyhow::Ok((report, failure))
        }));
    }
    let mut report = Report::new()?;
    for t in tasks {
        // An agent that failed still reports what was acked before.
        let (r, failure) = t.await??;
        report.sent_events += r.sent_events;
        report.acked_events += r.acked_events;
        report.encoded_bytes += r.encoded_bytes;
        report.rejected += r.rejected;
        report.retries += r.retries;
        report.ack_latency.add(&r.ack_latency)?;
        if let Some(e) = failure {
            report.errors += 1;
            if report.errors <= 5 {
                eprintln!("agent failed: {e:#}");
            }
        }
    }
    // Sending ends at the deadline, or earlier when --events is reached.
    report.elapsed = deadline
        .saturating_duration_since(started)
        .min(started.elapsed())
        .max(Duration::from_millis(1));
    Ok(report)
}

/// Whether ingest ended the stream with a "retry later" status.
fn retry_later(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<tonic::Status>().is_some_and(|s| {
            matches!(
                s.code(),
                tonic::Code::ResourceExhausted | tonic::Code::Unavailable
            )
        })
    })
}

/// An `AgentMessage` whose `EventBatch` is already encoded: the same bytes
/// on the wire as the generated message's.
#[derive(Clone, PartialEq, prost::Message)]
struct BatchMessage {
    #[prost(bytes = "vec", tag = "1")]
    batch: Vec<u8>,
}

async fn run_agent(
    agent: SimAgent,
    args: &Args,
    per_agent_rate: Option<f64>,
    deadline: Instant,
    seed: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut pool = events::Pool::new(&mut rng, 256);
    // This agent's share of --events (0: no limit).
    let budget = if args.events > 0 {
        args.events.div_ceil(args.agents as u64)
    } else {
        u64::MAX
    };
    let spread_us = i64::from(args.spread_days) * 86_400_000_000;
    let channel = wire::channel(&agent.url).await?;
    let mut grpc = tonic::client::Grpc::new(channel);
    match args.compression.as_str() {
        "zstd" => grpc = grpc.send_compressed(CompressionEncoding::Zstd),
        "gzip" => grpc = grpc.send_compressed(CompressionEncoding::Gzip),
        "none" => {}
        other => anyhow::bail!("--compression {other:?}: expected zstd, gzip or none"),
    }
    let (tx, rx) = mpsc::channel::<BatchMessage>(args.window + 1);
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", agent.credential).parse()?,
    );
    grpc.ready().await?;
    let mut inbound = grpc
        .streaming(
            req,
            http::uri::PathAndQuery::from_static("/mamori.agent.v1.AgentService/Connect"),
            tonic_prost::ProstCodec::<BatchMessage, ServerMessage>::default(),
        )
        .await?
        .into_inner();
    let interval = per_agent_rate.map(|r| Duration::from_secs_f64(args.batch as f64 / r));
    // Spread the agents' first batches over one interval.
    let mut next_send = Instant::now()
        + interval.map_or(Duration::ZERO, |i| {
            i.mul_f64(rand::Rng::random::<f64>(&mut rng))
        });
    let mut inflight: VecDeque<(u64, Instant, u32)> = VecDeque::new();
    let mut sequence = 0u64;
    loop {
        let now = Instant::now();
        let sending = now < deadline && report.sent_events < budget;
        if !sending && inflight.is_empty() {
            break;
        }
        if sending && inflight.len() < args.window && now >= next_send {
            sequence += 1;
            let now_us = chrono::Utc::now().timestamp_micros();
            // An encoded EventBatch: its sequence, then the events.
            let mut batch = Vec::with_capacity(args.batch * 200);
            prost::encoding::uint64::encode(1, &sequence, &mut batch);
            for _ in 0..args.batch {
                let at = if spread_us > 0 {
                    now_us - rand::Rng::random_range(&mut rng, 0..spread_us)
                } else {
                    now_us
                };
                let banned = args.alarm_every > 0
                    && rand::Rng::random_range(&mut rng, 0..args.alarm_every) == 0;
                pool.put(&mut rng, at, banned, &mut batch);
            }
            report.encoded_bytes += batch.len() as u64;
            report.sent_events += args.batch as u64;
            tx.send(BatchMessage { batch }).await?;
            inflight.push_back((sequence, Instant::now(), args.batch as u32));
            if let Some(i) = interval {
                next_send += i;
            }
            continue;
        }
        let wait_until = if sending && inflight.len() < args.window {
            next_send.min(deadline)
        } else {
            deadline.max(now) + Duration::from_secs(30)
        };
        let msg = tokio::select! {
            m = inbound.message() => m?,
            _ = tokio::time::sleep_until(wait_until.into()) => {
                if !sending { anyhow::bail!("acks missing 30 s after the end"); }
                continue;
            }
        };
        let Some(msg) = msg else {
            anyhow::bail!("stream ended")
        };
        let (seq, accepted) = match msg.body {
            Some(server_message::Body::Ack(a)) => (a.sequence, a.accepted),
            Some(server_message::Body::Rejected(r)) => {
                report.rejected += 1;
                (r.sequence, 0)
            }
            Some(server_message::Body::Policy(_)) | None => continue,
        };
        if let Some(pos) = inflight.iter().position(|(s, _, _)| *s == seq) {
            let (_, at, n) = inflight.remove(pos).expect("position is valid");
            report.acked_events += u64::from(accepted);
            report
                .ack_latency
                .record_n(at.elapsed().as_micros().max(1) as u64, u64::from(n))?;
        }
    }
    drop(tx);
    Ok(())
}
