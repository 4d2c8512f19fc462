//! `mamori-gateway-bench`: figures for the gateway over real HTTP.
//!
//! `setup` signs a company up (its enrollment token then loads events with
//! `mamori-loadtest --enroll-token`); `run` measures login and refresh under
//! concurrent load, authenticated `GET /api/v1/devices` throughput, the
//! violation calendar's latency under load, and operation-log search
//! latency, and can turn PostgreSQL's auto_explain on
//! for one pass so the plans of the gateway's own queries land in the log.

use anyhow::Context;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Cli {
    /// The gateway's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    gateway: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Signs up a company; prints {email, password, tenant_id, enrollment_token}.
    Setup,
    /// Runs the measurements with the account `setup` printed.
    Run {
        /// The JSON `setup` printed.
        #[arg(long)]
        account: std::path::PathBuf,
        /// Concurrent clients.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Seconds per load phase (at most 120).
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Times each search is repeated.
        #[arg(long, default_value_t = 20)]
        repeat: usize,
        /// Owner URL of the database: turns auto_explain on for one pass of
        /// the searches (needs auto_explain in shared_preload_libraries).
        #[arg(long)]
        explain_database_url: Option<String>,
    },
}

const PASSWORD: &str = "bench-password-1234";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .timeout(Duration::from_secs(60))
                .build()?;
            match cli.command {
                Command::Setup => setup(&http, &cli.gateway).await,
                Command::Run {
                    account,
                    concurrency,
                    duration,
                    repeat,
                    explain_database_url,
                } => {
                    anyhow::ensure!((1..=120).contains(&duration), "--duration must be 1..=120");
                    anyhow::ensure!(
                        (1..=512).contains(&concurrency),
                        "--concurrency must be 1..=512"
                    );
                    let account: Value = serde_json::from_slice(
                        &std::fs::read(&account).context("read --account")?,
                    )?;
                    run(
                        &http,
                        &cli.gateway,
                        &account,
                        concurrency,
                        Duration::from_secs(duration),
                        repeat,
                        explain_database_url,
                    )
                    .await
                }
            }
        })
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> anyhow::Result<Value> {
    let resp = http.post(&url).json(&body).send().await?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    anyhow::ensure!(status.is_success(), "{url}: {status} {v}");
    Ok(v)
}

async fn setup(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let email = format!("bench-{}@bench.example.com", uuid::Uuid::new_v4().simple());
    let v = post(
        http,
        format!("{base}/api/v1/signup"),
        json!({ "email": email, "password": PASSWORD, "company": "Benchmark KK" }),
    )
    .await?;
    println!(
        "{}",
        json!({
            "email": email, "password": PASSWORD,
            "tenant_id": v["tenant_id"], "enrollment_token": v["enrollment_token"],
        })
    );
    Ok(())
}

/// Per-phase result: latencies in microseconds and failures.
struct Phase {
    latency: Histogram<u64>,
    failures: u64,
    elapsed: Duration,
}

/// Runs `work` from `concurrency` clients for `duration`.
async fn load<F, Fut>(concurrency: usize, duration: Duration, work: F) -> anyhow::Result<Phase>
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let stop = stop.clone();
        let work = work.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new(3).expect("histogram");
            let mut failures = 0u64;
            let mut first_error = None;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match work(worker).await {
                    Ok(()) => h
                        .record(t.elapsed().as_micros().max(1) as u64)
                        .expect("record"),
                    Err(e) => {
                        failures += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (h, failures, first_error)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latency = Histogram::<u64>::new(3)?;
    let mut failures = 0;
    for t in tasks {
        let (h, f, e) = t.await?;
        latency.add(&h)?;
        failures += f;
        if let Some(e) = e {
            eprintln!("  a request failed: {e:#}");
        }
    }
    Ok(Phase {
        latency,
        failures,
        elapsed: started.elapsed(),
    })
}

fn report(name: &str, p: &Phase) {
    let n = p.latency.len();
    println!(
        "{name:<34} {:>8.0} req/s  p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms  ({n} ok, {} failed)",
        n as f64 / p.elapsed.as_secs_f64(),
        p.latency.value_at_quantile(0.5) as f64 / 1000.0,
        p.latency.value_at_quantile(0.99) as f64 / 1000.0,
        p.latency.max() as f64 / 1000.0,
        p.failures
    );
}

async fn login(http: &reqwest::Client, base: &str, email: &str) -> anyhow::Result<Value> {
    post(
        http,
        format!("{base}/api/v1/auth/login"),
        json!({ "email": email, "password": PASSWORD }),
    )
    .await
}

async fn get_ok(http: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<Value> {
    let resp = http.get(url).bearer_auth(token).send().await?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    anyhow::ensure!(status.is_success(), "{url}: {status} {v}");
    Ok(v)
}

#[allow(clippy::too_many_arguments)]
async fn run(
    http: &reqwest::Client,
    base: &str,
    account: &Value,
    concurrency: usize,
    duration: Duration,
    repeat: usize,
    explain: Option<String>,
) -> anyhow::Result<()> {
    let email = account["email"]
        .as_str()
        .context("account email")?
        .to_owned();
    let session = login(http, base, &email).await?;
    let access = session["access_token"]
        .as_str()
        .context("access token")?
        .to_owned();
    let first = get_ok(http, &format!("{base}/api/v1/devices?limit=1000"), &access).await?;
    let device_count = first["total"].as_i64().unwrap_or(0);
    let listed = first["devices"].as_array().map_or(0, Vec::len);
    anyhow::ensure!(listed > 0, "the tenant has no devices: load events first");
    let sample_device = first["devices"][listed / 2]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    println!(
        "== mamori gateway bench: {concurrency} clients, {} s per phase ==",
        duration.as_secs()
    );

    // Login: argon2id on every attempt, by design. Each client logs in to
    // an account of its own: an account counts attempts in flight as
    // failures until one succeeds (so parallel guesses cannot all get in),
    // and 16 parallel logins to one account is a guesser, not a user.
    let mut emails = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let email = format!("login-{}@bench.example.com", uuid::Uuid::new_v4().simple());
        post(
            http,
            format!("{base}/api/v1/signup"),
            json!({ "email": email, "password": PASSWORD, "company": "Login KK" }),
        )
        .await?;
        emails.push(email);
    }
    let (h, b, emails) = (http.clone(), base.to_owned(), Arc::new(emails));
    let p = load(concurrency, duration, move |worker| {
        let (h, b, e) = (h.clone(), b.clone(), emails[worker].clone());
        async move { login(&h, &b, &e).await.map(drop) }
    })
    .await?;
    report("POST /auth/login", &p);

    // Refresh: each client rotates its own refresh token.
    let mut tokens = Vec::new();
    for _ in 0..concurrency {
        let s = login(http, base, &email).await?;
        tokens.push(Arc::new(tokio::sync::Mutex::new(
            s["refresh_token"]
                .as_str()
                .context("refresh token")?
                .to_owned(),
        )));
    }
    let tokens = Arc::new(tokens);
    let (h, b) = (http.clone(), base.to_owned());
    let p = load(concurrency, duration, move |worker| {
        let (h, b, tokens) = (h.clone(), b.clone(), tokens.clone());
        async move {
            let mut current = tokens[worker].lock().await;
            let v = post(
                &h,
                format!("{b}/api/v1/auth/refresh"),
                json!({ "refresh_token": *current }),
            )
            .await?;
            *current = v["refresh_token"]
                .as_str()
                .context("rotated token")?
                .to_owned();
            Ok(())
        }
    })
    .await?;
    report("POST /auth/refresh", &p);

    let (h, url, t) = (
        http.clone(),
        format!("{base}/api/v1/devices"),
        access.clone(),
    );
    let p = load(concurrency, duration, move |_| {
        let (h, url, t) = (h.clone(), url.clone(), t.clone());
        async move { get_ok(&h, &url, &t).await.map(drop) }
    })
    .await?;
    report(&format!("GET /devices (page of 100 of {device_count})"), &p);

    // The violation calendar: a month of alarms per day and category, in
    // the tenant's time zone, this month and the last.
    let alarms = get_ok(http, &format!("{base}/api/v1/tenant"), &access).await?;
    let this_month = chrono::Utc::now().format("%Y-%m").to_string();
    let last_month = (chrono::Utc::now() - chrono::Duration::days(31))
        .format("%Y-%m")
        .to_string();
    for month in [this_month, last_month] {
        let url = format!("{base}/api/v1/alarms/calendar?month={month}");
        let v = get_ok(http, &url, &access).await?;
        let total: i64 = v["days"].as_array().map_or(0, |d| {
            d.iter().map(|d| d["total"].as_i64().unwrap_or(0)).sum()
        });
        let (h, t) = (http.clone(), access.clone());
        let p = load(concurrency, duration, move |_| {
            let (h, url, t) = (h.clone(), url.clone(), t.clone());
            async move { get_ok(&h, &url, &t).await.map(drop) }
        })
        .await?;
        report(&format!("GET /alarms/calendar {month} ({total})"), &p);
    }
    println!(
        "  (the tenant has {} open alarms)",
        alarms["open_alarms"].as_i64().unwrap_or(0)
    );

    // A small tenant: the per-request cost without a large body.
    let small = post(
        http,
        format!("{base}/api/v1/signup"),
        json!({
            "email": format!("small-{}@bench.example.com", uuid::Uuid::new_v4().simple()),
            "password": PASSWORD, "company": "Small KK",
        }),
    )
    .await?;
    let small_access = small["access_token"]
        .as_str()
        .context("small token")?
        .to_owned();
    let (h, url) = (http.clone(), format!("{base}/api/v1/devices"));
    let p = load(concurrency, duration, move |_| {
        let (h, url, t) = (h.clone(), url.clone(), small_access.clone());
        async move { get_ok(&h, &url, &t).await.map(drop) }
    })
    .await?;
    report("GET /devices (empty tenant)", &p);

    // Operation-log search, one query at a time.
    let now = chrono::Utc::now();
    let day = (now - chrono::Duration::days(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let month =
        (now - chrono::Duration::days(30)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let week_ago = now - chrono::Duration::days(7);
    let deep_cursor = {
        // A page that starts a week back.
        let mut v = get_ok(
            http,
            &format!(
                "{base}/api/v1/events?limit=1&to={}",
                enc(&week_ago.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            ),
            &access,
        )
        .await?;
        v["next_cursor"]
            .take()
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let searches: Vec<(&str, String)> = vec![
        (
            "newest 50, last 24 h",
            format!("/api/v1/events?from={}", enc(&day)),
        ),
        (
            "newest 50, last 30 days",
            format!("/api/v1/events?from={}", enc(&month)),
        ),
        (
            "one device, 30 days",
            format!("/api/v1/events?from={}&device={sample_device}", enc(&month)),
        ),
        (
            "kind=print, 30 days",
            format!("/api/v1/events?from={}&kind=print", enc(&month)),
        ),
        (
            "user=sato, kind=file_copy, 30 d",
            format!(
                "/api/v1/events?from={}&user=sato&kind=file_copy",
                enc(&month)
            ),
        ),
        (
            "text: common (顧客名簿), 30 d",
            format!("/api/v1/events?from={}&q={}", enc(&month), enc("顧客名簿")),
        ),
        (
            "text: rare (案件_012345), 30 d",
            format!(
                "/api/v1/events?from={}&q={}",
                enc(&month),
                enc("案件_012345")
            ),
        ),
        (
            "text: absent (winny), 30 d",
            format!("/api/v1/events?from={}&q=winny", enc(&month)),
        ),
        (
            "page from a week back (cursor)",
            format!("/api/v1/events?from={}&cursor={deep_cursor}", enc(&month)),
        ),
    ];
    println!("search (each {repeat}×, sequential)");
    for (name, path) in &searches {
        let mut h = Histogram::<u64>::new(3)?;
        let mut found = 0;
        for _ in 0..repeat {
            let t = Instant::now();
            let v = get_ok(http, &format!("{base}{path}"), &access).await?;
            h.record(t.elapsed().as_micros().max(1) as u64)?;
            found = v["events"].as_array().map_or(0, Vec::len);
        }
        println!(
            "  {name:<34} p50 {:>7.1} ms  p99 {:>7.1} ms  ({found} rows)",
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
        );
    }

    if let Some(url) = explain {
        let owner = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await?;
        for sql in [
            "ALTER SYSTEM SET auto_explain.log_min_duration = 0",
            "ALTER SYSTEM SET auto_explain.log_analyze = on",
            "ALTER SYSTEM SET auto_explain.log_buffers = on",
            "SELECT pg_reload_conf()",
        ] {
            sqlx::query(sql).execute(&owner).await?;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        for (name, path) in &searches {
            eprintln!("explain pass: {name}");
            get_ok(http, &format!("{base}{path}"), &access).await?;
        }
        for sql in [
            "ALTER SYSTEM RESET auto_explain.log_min_duration",
            "SELECT pg_reload_conf()",
        ] {
            sqlx::query(sql).execute(&owner).await?;
        }
    }
    Ok(())
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
