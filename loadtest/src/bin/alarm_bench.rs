//! `mamori-alarm-bench`: from an act on this PC to the admin's alarm, with
//! the real agent. Creates a tenant whose policy bans (log only) programs
//! named `act-*` in a temporary directory and mails the banned-app alarms
//! to a confirmed address, enrolls the agent (process collector, in this
//! process) with `mamori ingest`, then starts N differently named copies of
//! /bin/sleep one after another and measures, per start, from just before
//! the spawn to the commit of its alarm hit in PostgreSQL and to the commit
//! that marks its e-mail accepted by the SMTP server (PostgreSQL commit
//! timestamps; the script's database has `track_commit_timestamp` on).
//! Needs root (the kernel process connector) and a running `mamori all`
//! (loadtest/alarm.sh starts one).

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Parser;
use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "mamori-alarm-bench",
    about = "Act → alarm and act → e-mail latency"
)]
struct Args {
    /// The ingest URL the agent enrolls with.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    ingest: String,
    /// PostgreSQL (the owner, as `mamori migrate` uses).
    #[arg(long, env = "MAMORI_DATABASE_URL")]
    database_url: String,
    /// Banned programs started (at most 2000).
    #[arg(long, default_value_t = 200)]
    acts: u32,
    /// Pause between two starts, in milliseconds.
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
}

const RECIPIENT: &str = "soc@alarm-bench.example";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!((1..=2000).contains(&args.acts), "--acts must be 1..=2000");
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "run as root: the agent watches processes through the kernel's process connector"
    );
    let db = mamori_tenancy::Db::connect(&args.database_url, 4)
        .await
        .context("connect to PostgreSQL")?;
    let owner = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&args.database_url)
        .await?;

    // The tenant, its policy and its confirmed alarm address.
    let bin = tempfile::tempdir()?;
    let tenant = mamori_registry::create_tenant(&db, "alarm bench").await?;
    let token =
        mamori_registry::create_token(&db, tenant, Some(Duration::from_secs(3600)), None).await?;
    let doc = mamori_policy::PolicyDocument::parse(serde_json::json!({
        "banned_apps": [{"path": format!("{}/act-*", bin.path().display()), "action": "log", "label": "bench"}],
        "notifications": {"routes": [{"categories": ["banned_app"], "email": [RECIPIENT]}]}
    }))?;
    let mut tx = db.begin_tenant(tenant).await?;
    mamori_policy::store::put(&mut tx, mamori_policy::Scope::Tenant, Some(&doc), None).await?;
    sqlx::query(
        "INSERT INTO notification_recipients (tenant_id, email, confirmed_at) VALUES ($1, $2, now())",
    )
    .bind(tenant.as_uuid())
    .bind(RECIPIENT)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;

    // The agent, enrolled like any PC, watching processes.
    let state = tempfile::tempdir()?;
    mamori_agent::enroll(&mamori_agent::EnrollOptions {
        server: args.ingest.clone(),
        token: token.token.expose().to_owned(),
        state_dir: state.path().to_owned(),
        ca_cert: None,
        machine_id: Some(uuid::Uuid::new_v4().to_string()),
    })
    .await?;
    let mut opts = mamori_agent::RunOptions::new(state.path().to_owned());
    opts.collectors = "process".parse()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(mamori_agent::run(opts, async {
        let _ = stop_rx.await;
    }));
    let policy = state.path().join("policy.pb");
    for _ in 0..200 {
        if policy.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(policy.exists(), "the agent received no policy within 10 s");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The acts: each its own program, so each is its own alarm and e-mail.
    let mut started: HashMap<String, DateTime<Utc>> = HashMap::new();
    for i in 0..args.acts {
        let path = bin.path().join(format!("act-{i:04}"));
        std::fs::copy("/bin/sleep", &path)?;
        let at = Utc::now();
        // Alive for 50 ms: the start is seen with its path (a program gone
        // before the agent reads /proc is issue 15's other figure).
        tokio::process::Command::new(&path)
            .arg("0.05")
            .status()
            .await?;
        started.insert(path.display().to_string().to_lowercase(), at);
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }

    let tenant_id = tenant.as_uuid();
    let hits = || async {
        sqlx::query_as::<_, (String, Option<DateTime<Utc>>)>(
            "SELECT key, pg_xact_commit_timestamp(xmin) FROM alert_hits
             WHERE tenant_id = $1 AND rule = 'banned_app'",
        )
        .bind(tenant_id)
        .fetch_all(&owner)
        .await
    };
    let mails = || async {
        sqlx::query_as::<_, (String, Option<DateTime<Utc>>)>(
            "SELECT a.dedupe_key, pg_xact_commit_timestamp(o.xmin) FROM notification_outbox o
             JOIN alarms a ON a.tenant_id = o.tenant_id AND a.id = o.alarm_id
             WHERE o.tenant_id = $1 AND o.channel = 'email' AND o.sent_at IS NOT NULL",
        )
        .bind(tenant_id)
        .fetch_all(&owner)
        .await
    };
    for _ in 0..600 {
        if hits().await?.len() >= started.len() && mails().await?.len() >= started.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(());
    agent.await??;
    let (outbox, sent, failed): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(sent_at), count(last_error) FROM notification_outbox WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_one(&owner)
    .await?;
    eprintln!(
        "alarm e-mails: {outbox} queued, {sent} accepted by the SMTP server, {failed} failed at least once"
    );

    println!(
        "== mamori alarm bench: {} banned starts, {} ms apart, real agent (process collector) ==",
        args.acts, args.interval_ms
    );
    for (label, rows) in [
        ("act → alarm row    ", hits().await?),
        ("act → e-mail (SMTP)", mails().await?),
    ] {
        let mut h = Histogram::<u64>::new(3)?;
        // A hit's and an alarm's key is `category|device|user|detail`; the
        // detail of a banned start is its lower-cased path.
        for (key, committed) in &rows {
            let path = key.rsplit('|').next().unwrap_or_default();
            if let (Some(at), Some(done)) = (started.get(path), committed) {
                h.record((*done - *at).num_microseconds().unwrap_or(0).max(1) as u64)?;
            }
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        if h.is_empty() {
            println!("{label}  none arrived (is alerting running? is MAMORI_SMTP_URL set?)");
        } else {
            println!(
                "{label}  p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  ({} of {})",
                ms(0.5),
                ms(0.99),
                h.max() as f64 / 1000.0,
                h.len(),
                args.acts
            );
        }
    }
    Ok(())
}
