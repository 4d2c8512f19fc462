//! Kill latency of a banned process on this machine: runs the real agent
//! (process collector) offline, enforcing a stored policy that bans
//! `winny`, starts a copy of /bin/sleep named `winny` N times and measures
//! from spawning it to its death (the parent's wait returning SIGKILL).
//! Needs root (the kernel process connector).

use clap::Parser;
use hdrhistogram::Histogram;
use mamori_proto::agent::v1::{BannedApp, PolicyUpdate, banned_app::Action};
use prost::Message;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(name = "mamori-kill-bench", about = "Kill latency of a banned app")]
struct Args {
    /// Launches of the banned program (at most 10000).
    #[arg(long, default_value_t = 200)]
    launches: u32,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        (1..=10_000).contains(&args.launches),
        "--launches must be 1..=10000"
    );
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "run as root: the agent watches processes through the kernel's process connector"
    );
    // An enrolled-looking agent whose server is unreachable: it enforces
    // the policy it stored, as it does offline.
    let state = tempfile::tempdir()?;
    std::fs::write(
        state.path().join("agent.json"),
        serde_json::to_vec(&serde_json::json!({
            "server": "http://127.0.0.1:9",
            "ca_cert": null,
            "device_id": uuid::Uuid::new_v4().to_string(),
            "tenant_id": uuid::Uuid::new_v4().to_string(),
            "instance_id": uuid::Uuid::new_v4().to_string(),
        }))?,
    )?;
    std::fs::write(state.path().join("credential"), "mmd_offline")?;
    let policy = PolicyUpdate {
        revision: 1,
        banned_apps: vec![BannedApp {
            name: "winny".into(),
            action: Action::Kill as i32,
            label: "winny".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    std::fs::write(state.path().join("policy.pb"), policy.encode_to_vec())?;
    let mut opts = mamori_agent::RunOptions::new(state.path().to_owned());
    opts.collectors = "process".parse()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(mamori_agent::run(opts, async {
        let _ = stop_rx.await;
    }));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let bin = tempfile::tempdir()?;
    let winny = bin.path().join("winny");
    std::fs::copy("/bin/sleep", &winny)?;
    let mut h = Histogram::<u64>::new(3)?;
    let mut survived = 0;
    for _ in 0..args.launches {
        let started = Instant::now();
        let status = tokio::process::Command::new(&winny)
            .arg("5")
            .status()
            .await?;
        let took = started.elapsed();
        if status.signal() == Some(9) {
            h.record(took.as_micros().max(1) as u64)?;
        } else {
            survived += 1;
        }
    }
    let _ = stop_tx.send(());
    agent.await??;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "kill latency (spawn to death) over {} launches: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; not killed: {survived}",
        args.launches,
        ms(0.5),
        ms(0.99),
        h.max() as f64 / 1000.0
    );
    Ok(())
}
