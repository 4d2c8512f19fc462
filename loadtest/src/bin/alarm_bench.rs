//! `mamori-alarm-bench`: from an act on this PC to the admin's alarm, with
//! the real agent (in this process), enrolled with `mamori ingest`, and a
//! tenant that mails its alarms to a confirmed address. Two kinds of act:
//!
//! - `--act program` (default): the policy bans (log only) programs named
//!   `act-*` in a temporary directory; the acts start N differently named
//!   copies of /bin/sleep one after another (the process collector).
//! - `--act file`: the policy makes N folders `act-NNNN` of a temporary
//!   directory confidential (at most 200, the policy's limit); each act is
//!   a shell writing a file into its folder (the file collector, fanotify).
//!
//! Each act is its own alarm and e-mail. Per act it measures from just
//! before the spawn to the commit of its alarm hit in PostgreSQL and to
//! the commit that marks its e-mail accepted by the SMTP server
//! (PostgreSQL commit timestamps; the script's database has
//! `track_commit_timestamp` on). Needs root (the kernel process connector,
//! fanotify) and a running `mamori all` (loadtest/alarm.sh starts one).

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
    /// What the acts are: `program` (banned program starts) or `file`
    /// (writes into confidential folders).
    #[arg(long, default_value = "program", value_parser = ["program", "file"])]
    act: String,
    /// Acts (at most 2000; 200 for `file`).
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
    let files = args.act == "file";
    let most = if files { 200 } else { 2000 };
    anyhow::ensure!(
        (1..=most).contains(&args.acts),
        "--acts must be 1..={most} for --act {}",
        args.act
    );
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
    // The alarm key's detail per act: a banned start's lower-cased path, a
    // confidential folder's glob.
    let act_path = |i: u32| bin.path().join(format!("act-{i:04}"));
    let detail = |i: u32| {
        if files {
            format!("{}/**", act_path(i).display())
        } else {
            act_path(i).display().to_string().to_lowercase()
        }
    };
    let (rule, doc) = if files {
        let folders: Vec<String> = (0..args.acts).map(detail).collect();
        for i in 0..args.acts {
            std::fs::create_dir(act_path(i))?;
        }
        (
            "confidential_folder",
            serde_json::json!({
                "confidential_folders": folders,
                "notifications": {"routes": [{"categories": ["confidential_folder"], "email": [RECIPIENT]}]}
            }),
        )
    } else {
        (
            "banned_app",
            serde_json::json!({
                "banned_apps": [{"path": format!("{}/act-*", bin.path().display()), "action": "log", "label": "bench"}],
                "notifications": {"routes": [{"categories": ["banned_app"], "email": [RECIPIENT]}]}
            }),
        )
    };
    let doc = mamori_policy::PolicyDocument::parse(doc)?;
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
    opts.collectors = if files { "files" } else { "process" }.parse()?;
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
    // The file collector marks the confidential folders' file system when
    // it next looks at its scope (every second or so).
    tokio::time::sleep(Duration::from_millis(if files { 3000 } else { 500 })).await;

    // The acts: each its own program or folder, so each is its own alarm
    // and e-mail.
    let mut started: HashMap<String, DateTime<Utc>> = HashMap::new();
    for i in 0..args.acts {
        let path = act_path(i);
        let mut act = if files {
            // Another process: the agent does not report its own files.
            let mut sh = tokio::process::Command::new("/bin/sh");
            let doc = path.join("my-number.csv");
            sh.arg("-c")
                .arg(r#"echo "1234 5678 9012,Sato" > "$1""#)
                .arg("sh")
                .arg(doc);
            sh
        } else {
            std::fs::copy("/bin/sleep", &path)?;
            // Alive for 50 ms: the start is seen with its path (a program
            // gone before the agent reads /proc is issue 15's other figure).
            let mut p = tokio::process::Command::new(&path);
            p.arg("0.05");
            p
        };
        let at = Utc::now();
        let status = act.status().await?;
        anyhow::ensure!(status.success(), "act {i} failed: {status}");
        started.insert(detail(i).to_lowercase(), at);
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }

    let tenant_id = tenant.as_uuid();
    let hits = || async {
        sqlx::query_as::<_, (String, Option<DateTime<Utc>>)>(
            "SELECT key, pg_xact_commit_timestamp(xmin) FROM alert_hits
             WHERE tenant_id = $1 AND rule = $2",
        )
        .bind(tenant_id)
        .bind(rule)
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

    let what = if files {
        "writes into confidential folders, real agent (file collector)"
    } else {
        "banned starts, real agent (process collector)"
    };
    println!(
        "== mamori alarm bench: {} {what}, {} ms apart ==",
        args.acts, args.interval_ms
    );
    for (label, rows) in [
        ("act → alarm row    ", hits().await?),
        ("act → e-mail (SMTP)", mails().await?),
    ] {
        let mut h = Histogram::<u64>::new(3)?;
        // A hit's and an alarm's key is `category|device|user|detail`; the
        // first hit of each act counts (a write may be several events).
        let mut first: HashMap<String, DateTime<Utc>> = HashMap::new();
        for (key, committed) in &rows {
            let detail = key.rsplit('|').next().unwrap_or_default().to_lowercase();
            if let Some(done) = committed {
                let e = first.entry(detail).or_insert(*done);
                *e = (*e).min(*done);
            }
        }
        for (detail, done) in &first {
            if let Some(at) = started.get(detail) {
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
