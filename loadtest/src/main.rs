//! `mamori-loadtest`: simulates N enrolled agents streaming a realistic mix
//! of events over real gRPC to a running ingest, for a bounded time, then
//! prints the figures: events/s accepted and committed, latency from event
//! creation to ack and to committed row, bytes per event on the wire and in
//! PostgreSQL, and — in the same run, on the same database — the raw rate of
//! batched inserts into `events` with no services in between.
//!
//! Commit latency comes from PostgreSQL's commit timestamps
//! (`track_commit_timestamp = on`, set by scripts/servers.sh).

mod agents;
mod events;
mod raw;
mod wire;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::Parser;
use mamori_tenancy::{Db, TenantId};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[derive(Debug, Parser, Clone)]
#[command(
    name = "mamori-loadtest",
    about = "Load generator for the Mamori event spine"
)]
pub struct Args {
    /// Ingest gRPC URL(s), comma-separated; agents are spread over them.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    ingest: String,
    /// PostgreSQL URL (the owner, as `mamori migrate` uses).
    #[arg(long, env = "MAMORI_DATABASE_URL")]
    database_url: String,
    /// Simulated agents (each its own connection and device).
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Tenants the agents are spread over.
    #[arg(long, default_value_t = 10)]
    tenants: usize,
    /// Seconds of sending (at most 600).
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Target total events/s; 0 sends as fast as acks allow.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Events per batch.
    #[arg(long, default_value_t = 200)]
    batch: usize,
    /// Batches in flight per agent before waiting for an ack.
    #[arg(long, default_value_t = 2)]
    window: usize,
    /// Compression of batches: zstd (what the real agent sends), gzip or none.
    #[arg(long, default_value = "zstd")]
    compression: String,
    /// Rows for the raw-insert comparison (0 = as many as the run committed,
    /// at most 2 million).
    #[arg(long, default_value_t = 0)]
    raw_rows: usize,
    /// Parallel connections for the raw-insert comparison (the writer uses
    /// one per stream shard).
    #[arg(long, default_value_t = 4)]
    raw_connections: usize,
    /// Skip the raw-insert comparison.
    #[arg(long)]
    no_raw: bool,
    /// Enroll every agent with this token (an existing tenant's) instead of
    /// creating tenants.
    #[arg(long)]
    enroll_token: Option<String>,
    /// Stop after about this many events in total (0 = run for --duration).
    #[arg(long, default_value_t = 0)]
    events: u64,
    /// Date events up to this many days back (a tenant's history for search
    /// benchmarks); latency figures are skipped then.
    #[arg(long, default_value_t = 0)]
    spread_days: u32,
    /// One event in this many is a start of `winny`, which the created
    /// tenants' policy bans (log only): alarm load for the alerting
    /// service (0: none).
    #[arg(long, default_value_t = 0)]
    alarm_every: u64,
    /// Redis, to wait before sending until every stream consumer group
    /// (writer, alerting) has caught up with what earlier runs left.
    #[arg(long, env = "MAMORI_REDIS_URL")]
    redis_url: Option<String>,
    /// The simulated PCs' host names: this prefix and a number (001, 002…).
    #[arg(long, default_value = "sim-")]
    hostname_prefix: String,
    /// Stream shards (as the services are configured).
    #[arg(long, env = "MAMORI_STREAM_SHARDS", default_value_t = 4)]
    stream_shards: u32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.duration > 0 && args.duration <= 600,
        "--duration must be 1..=600 seconds"
    );
    anyhow::ensure!(
        args.agents > 0 && args.agents <= 20_000,
        "--agents must be 1..=20000"
    );
    anyhow::ensure!(
        args.batch > 0 && args.batch <= 1000,
        "--batch must be 1..=1000"
    );
    anyhow::ensure!(
        args.tenants > 0 && args.tenants <= args.agents,
        "--tenants must be 1..=agents"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let db = Db::connect(&args.database_url, 8)
        .await
        .context("connect to PostgreSQL")?;
    let owner = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&args.database_url)
        .await?;
    let tracked: String = sqlx::query_scalar("SHOW track_commit_timestamp")
        .fetch_one(&owner)
        .await?;
    if tracked != "on" {
        eprintln!(
            "note: track_commit_timestamp is off; event→committed latency will not be reported"
        );
    }

    let mut tenants = Vec::new();
    if let Some(token) = &args.enroll_token {
        let parsed = mamori_registry::EnrollmentToken::parse(token)?;
        let tenant: Option<uuid::Uuid> =
            sqlx::query_scalar("SELECT mamori_tenant_of_enrollment_token($1)")
                .bind(parsed.hash())
                .fetch_one(db.pool())
                .await?;
        let tenant = tenant.context("--enroll-token is not a known enrollment token")?;
        tenants.push((TenantId::from_uuid(tenant), token.clone()));
    }
    for i in 0..if args.enroll_token.is_some() {
        0
    } else {
        args.tenants
    } {
        let t = mamori_registry::create_tenant(&db, &format!("loadtest {i}")).await?;
        let tok =
            mamori_registry::create_token(&db, t, Some(Duration::from_secs(3600)), None).await?;
        tenants.push((t, tok.token.expose().to_owned()));
        if args.alarm_every > 0 {
            // Each new alarm is also mailed (to the SMTP server the
            // benchmark script runs, if any), for the event → e-mail figure.
            let doc = mamori_policy::PolicyDocument::parse(serde_json::json!({
                "banned_apps": [{"name": "winny", "action": "log"}],
                "notifications": {"routes": [{"categories": ["banned_app"], "email": ["soc@loadtest.example"]}]}
            }))?;
            let mut tx = db.begin_tenant(t).await?;
            mamori_policy::store::put(&mut tx, mamori_policy::Scope::Tenant, Some(&doc), None)
                .await?;
            // The address as if it had followed its confirmation link.
            sqlx::query(
                "INSERT INTO notification_recipients (tenant_id, email, confirmed_at)
                 VALUES ($1, 'soc@loadtest.example', now())",
            )
            .bind(t.as_uuid())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
    }
    eprintln!(
        "enrolling {} agents over {} tenants...",
        args.agents,
        tenants.len()
    );
    if let Some(url) = &args.redis_url {
        wait_for_consumers(url, args.stream_shards).await?;
    }
    let started = Instant::now();
    let fleet = agents::enroll_all(&args, &tenants).await?;
    eprintln!(
        "enrolled in {:.1}s; sending for {}s...",
        started.elapsed().as_secs_f64(),
        args.duration
    );

    let run_start = chrono::Utc::now();
    let report = agents::drive(&args, fleet).await?;
    let tenant_ids: Vec<TenantId> = tenants.iter().map(|(t, _)| *t).collect();
    let tenant_uuids: Vec<uuid::Uuid> = tenant_ids.iter().map(TenantId::as_uuid).collect();

    // Wait for the writer to commit everything that was acked.
    eprintln!(
        "waiting for the writer to commit {} acked events...",
        report.acked_events
    );
    let wait_start = Instant::now();
    let mut committed: i64 = 0;
    // Spread-out events are found by arrival, not by event time.
    let count_sql = if args.spread_days > 0 {
        "SELECT count(*) FROM events WHERE tenant_id = ANY($1) AND received_at >= $2"
    } else {
        "SELECT count(*) FROM events WHERE tenant_id = ANY($1) AND ts >= $2"
    };
    while wait_start.elapsed() < Duration::from_secs(300) {
        committed = sqlx::query_scalar(count_sql)
            .bind(&tenant_uuids)
            .bind(run_start - chrono::Duration::seconds(5))
            .fetch_one(&owner)
            .await?;
        if committed as u64 >= report.acked_events {
            break;
        }
        tokio::time::sleep(Duration::from_millis(if args.spread_days > 0 {
            3000
        } else {
            500
        }))
        .await;
    }

    let secs = report.elapsed.as_secs_f64();
    println!(
        "== mamori loadtest: {} agents, {} tenants, batch {}, window {}, compression {}, target rate {} ==",
        args.agents,
        tenants.len(),
        args.batch,
        args.window,
        args.compression,
        if args.rate == 0 {
            "max".to_owned()
        } else {
            format!("{}/s", args.rate)
        }
    );
    println!("sent for                  {secs:.1} s");
    println!(
        "events acked by ingest    {} ({:.0} events/s)",
        report.acked_events,
        report.acked_events as f64 / secs
    );
    println!(
        "batches refused / errors  {} / {} ({} streams reopened after \"retry later\")",
        report.rejected, report.errors, report.retries
    );
    println!(
        "event → ack               p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        report.ack_latency.value_at_quantile(0.5) as f64 / 1000.0,
        report.ack_latency.value_at_quantile(0.99) as f64 / 1000.0,
        report.ack_latency.max() as f64 / 1000.0
    );
    println!(
        "events committed          {committed} (all acked events present: {})",
        committed as u64 >= report.acked_events
    );
    let mut committed_rate = committed as f64 / secs;
    if tracked == "on" && args.spread_days == 0 {
        type Commits = (
            Option<chrono::DateTime<chrono::Utc>>,
            Option<f64>,
            Option<f64>,
        );
        let warmup = 3.0_f64.min(secs / 4.0);
        let steady_from = run_start + chrono::Duration::milliseconds((warmup * 1000.0) as i64);
        let steady_to = run_start + chrono::Duration::milliseconds((secs * 1000.0) as i64);
        let steady: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE tenant_id = ANY($1) AND ts >= $2
               AND pg_xact_commit_timestamp(xmin) BETWEEN $3 AND $4",
        )
        .bind(&tenant_uuids)
        .bind(run_start - chrono::Duration::seconds(5))
        .bind(steady_from)
        .bind(steady_to)
        .fetch_one(&owner)
        .await?;
        let steady_rate = steady as f64 / (secs - warmup);
        let (last, p50, p99): Commits = sqlx::query_as(
            "SELECT max(c),
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM c - ts)),
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM c - ts))
             FROM (SELECT ts, pg_xact_commit_timestamp(xmin) AS c FROM events
                   WHERE tenant_id = ANY($1) AND ts >= $2) s",
        )
        .bind(&tenant_uuids)
        .bind(run_start - chrono::Duration::seconds(5))
        .fetch_one(&owner)
        .await?;
        if let (Some(last), Some(p50), Some(p99)) = (last, p50, p99) {
            let span = (last
                .max(run_start + chrono::Duration::milliseconds((secs * 1000.0) as i64))
                - run_start)
                .num_milliseconds() as f64
                / 1000.0;
            println!(
                "committed rate            {steady_rate:.0} events/s while sending (commit times {warmup:.0}–{secs:.0} s), {:.0} events/s first send → last commit ({span:.1} s)",
                committed as f64 / span
            );
            committed_rate = steady_rate;
            println!(
                "event → committed         p50 {:.1} ms, p99 {:.1} ms",
                p50 * 1000.0,
                p99 * 1000.0
            );
        }
    }
    if args.alarm_every > 0 && tracked == "on" {
        alarm_latency(&owner, &tenant_uuids, run_start).await?;
        email_latency(&owner, &tenant_uuids, run_start).await?;
    }
    let sent = wire::SENT.load(Ordering::Relaxed);
    let recv = wire::RECEIVED.load(Ordering::Relaxed);
    println!(
        "wire bytes / event        {:.1} up ({:.1} MB), {:.1} down",
        sent as f64 / report.acked_events.max(1) as f64,
        sent as f64 / 1e6,
        recv as f64 / report.acked_events.max(1) as f64
    );
    println!(
        "protobuf bytes / event    {:.1} (uncompressed)",
        report.encoded_bytes as f64 / report.sent_events.max(1) as f64
    );
    let (bytes, rows): (Option<i64>, i64) = sqlx::query_as(
        "SELECT (SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('events') WHERE isleaf)::bigint,
                (SELECT count(*) FROM events)",
    )
    .fetch_one(&owner)
    .await?;
    println!(
        "stored bytes / event      {:.1} (table + indexes, {} rows in events)",
        bytes.unwrap_or(0) as f64 / rows.max(1) as f64,
        rows
    );

    if !args.no_raw {
        let n = if args.raw_rows > 0 {
            args.raw_rows
        } else {
            (committed as usize).clamp(10_000, 2_000_000)
        };
        let raw_rate = raw::measure(&db, n, args.batch, args.raw_connections).await?;
        let e2e = committed_rate;
        println!(
            "raw batched insert        {raw_rate:.0} rows/s ({n} rows, {} connections, same statement as the writer)",
            args.raw_connections
        );
        println!("end-to-end / raw          {:.2}", e2e / raw_rate);
    }
    Ok(())
}

/// Event → alarm latency: from each banned-app event's time to the commit of
/// the alerting transaction that counted it (new alarm or count), once the
/// alerting service has caught up.
async fn alarm_latency(
    owner: &sqlx::PgPool,
    tenants: &[uuid::Uuid],
    run_start: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    let count = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM alert_hits WHERE tenant_id = ANY($1) AND at >= $2",
        )
        .bind(tenants)
        .bind(run_start - chrono::Duration::seconds(5))
        .fetch_one(owner)
        .await
    };
    let mut last = -1;
    for _ in 0..60 {
        let n = count().await?;
        if n == last {
            break;
        }
        last = n;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // All of the run, and the steady part after the first 3 s (new tenants'
    // caches and connections warming up), as the rates above.
    for (label, from) in [
        (
            "event → alarm row        ",
            run_start - chrono::Duration::seconds(5),
        ),
        (
            "  after the first 3 s    ",
            run_start + chrono::Duration::seconds(3),
        ),
    ] {
        let (n, p50, p99, max): (i64, Option<f64>, Option<f64>, Option<f64>) = sqlx::query_as(
            "SELECT count(*),
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY d),
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY d),
                    max(d)
             FROM (SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - at)::float8 AS d
                   FROM alert_hits WHERE tenant_id = ANY($1) AND at >= $2) s",
        )
        .bind(tenants)
        .bind(from)
        .fetch_one(owner)
        .await?;
        if let (Some(p50), Some(p99), Some(max)) = (p50, p99, max) {
            println!(
                "{label} p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({n} banned-app events)",
                p50 * 1000.0,
                p99 * 1000.0,
                max * 1000.0
            );
        } else {
            println!("{label} no alarm hits recorded (is the alerting service running?)");
        }
    }
    Ok(())
}

/// Event → e-mail latency: from the event that opened an alarm to the
/// commit that marked its e-mail handed to the SMTP server (the notifier
/// marks it after the server accepted it), once the outbox has drained.
async fn email_latency(
    owner: &sqlx::PgPool,
    tenants: &[uuid::Uuid],
    run_start: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    let from = run_start - chrono::Duration::seconds(5);
    let pending = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM notification_outbox
             WHERE tenant_id = ANY($1) AND created_at >= $2 AND channel = 'email' AND sent_at IS NULL",
        )
        .bind(tenants)
        .bind(from)
        .fetch_one(owner)
        .await
    };
    for _ in 0..60 {
        if pending().await? == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (n, unsent, p50, p99, max): (i64, i64, Option<f64>, Option<f64>, Option<f64>) =
        sqlx::query_as(
            "SELECT count(*) FILTER (WHERE o.sent_at IS NOT NULL),
                    count(*) FILTER (WHERE o.sent_at IS NULL),
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY d),
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY d),
                    max(d)
             FROM (SELECT o.sent_at,
                          CASE WHEN o.sent_at IS NOT NULL THEN
                              extract(epoch FROM pg_xact_commit_timestamp(o.xmin) - a.first_at)::float8
                          END AS d
                   FROM notification_outbox o
                   JOIN alarms a ON a.tenant_id = o.tenant_id AND a.id = o.alarm_id
                   WHERE o.tenant_id = ANY($1) AND o.created_at >= $2 AND o.channel = 'email') o",
        )
        .bind(tenants)
        .bind(from)
        .fetch_one(owner)
        .await?;
    match (p50, p99, max) {
        (Some(p50), Some(p99), Some(max)) => println!(
            "event → e-mail to SMTP    p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({n} e-mails, {unsent} not sent)",
            p50 * 1000.0,
            p99 * 1000.0,
            max * 1000.0
        ),
        _ => println!(
            "event → e-mail to SMTP    no e-mail sent ({unsent} waiting; is MAMORI_SMTP_URL set?)"
        ),
    }
    Ok(())
}

/// Waits (at most five minutes) until no consumer group has entries left
/// to read or acknowledge, so a run does not queue behind the last one.
async fn wait_for_consumers(url: &str, shards: u32) -> anyhow::Result<()> {
    let (_, mut conn) = mamori_streams::connect(url)
        .await
        .map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    loop {
        let mut behind = 0u64;
        for key in mamori_streams::stream_keys(shards) {
            for g in mamori_streams::groups(&mut conn, &key).await? {
                behind += g.lag.unwrap_or(0) + g.pending;
            }
        }
        if behind == 0 {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(300) {
            eprintln!("consumers still {behind} entries behind after 5 minutes; starting anyway");
            return Ok(());
        }
        if started.elapsed().as_secs().is_multiple_of(5) {
            eprintln!("waiting for the stream consumers to catch up ({behind} entries behind)...");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
