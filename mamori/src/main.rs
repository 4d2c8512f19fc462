//! `mamori`: the one server binary. Each role is a subcommand (`ingest`,
//! `writer`, `gateway`, `policy`, `alerting`, or `all` of them in one process);
//! `migrate` prepares the database; `tenant`, `token`, `device`, `user` and
//! `keys` are the operator's admin commands.

mod admin;

// The services allocate and free many small buffers per event (protobuf
// strings, row arrays); mimalloc spends less CPU on that than glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mamori_config::File;
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "mamori",
    version,
    about = "Mamori: endpoint monitoring and leak prevention"
)]
struct Cli {
    /// Optional TOML config file (sections [ingest], [writer], [gateway], [policy], [alerting], [admin];
    /// top-level keys apply to all). MAMORI_* variables override it.
    #[arg(long, global = true, env = "MAMORI_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Applies the database migrations.
    Migrate,
    /// Prints the REST API's OpenAPI document (what the console's types are
    /// generated from).
    Openapi,
    /// Runs the gRPC ingest edge for agents.
    Ingest,
    /// Runs the stream-to-PostgreSQL writer.
    Writer,
    /// Runs the public HTTP gateway (REST API).
    Gateway,
    /// Runs the policy service (internal gRPC API the gateway calls).
    Policy,
    /// Runs the alarm rules and notifications.
    Alerting,
    /// Runs every role in one process (small office, development).
    All,
    /// Tenants.
    #[command(subcommand)]
    Tenant(admin::TenantCommand),
    /// Enrollment tokens.
    #[command(subcommand)]
    Token(admin::TokenCommand),
    /// Devices.
    #[command(subcommand)]
    Device(admin::DeviceCommand),
    /// Users of a tenant.
    #[command(subcommand)]
    User(admin::UserCommand),
    /// The gateway's JWT signing keys.
    #[command(subcommand)]
    Keys(admin::KeysCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(cli));
    if let Err(e) = &result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

/// Everything the config layers need: the file (checked for unknown keys)
/// and the environment.
struct Settings {
    file: Option<File>,
    env: HashMap<String, String>,
}

impl Settings {
    fn load(path: Option<&PathBuf>) -> anyhow::Result<Self> {
        let file = path.map(|p| File::read(p)).transpose()?;
        if let Some(f) = &file {
            f.check_known(&[
                ("ingest", mamori_config::keys_of::<mamori_ingest::Config>()),
                ("writer", mamori_config::keys_of::<mamori_writer::Config>()),
                (
                    "gateway",
                    mamori_config::keys_of::<mamori_gateway::Config>(),
                ),
                ("policy", mamori_config::keys_of::<mamori_policy::Config>()),
                (
                    "alerting",
                    mamori_config::keys_of::<mamori_alerting::Config>(),
                ),
                ("admin", mamori_config::keys_of::<admin::Config>()),
            ])?;
        }
        Ok(Self {
            file,
            env: mamori_config::process_env(),
        })
    }

    fn get<T>(&self, section: &str) -> anyhow::Result<T>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Default,
    {
        Ok(mamori_config::load(section, self.file.as_ref(), &self.env)?)
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if matches!(cli.command, Command::Openapi) {
        use std::io::Write;
        // A closed pipe (`| head`) is not an error worth a panic.
        let _ = writeln!(std::io::stdout(), "{}", mamori_gateway::openapi_json());
        return Ok(());
    }
    let settings = Settings::load(cli.config.as_ref())?;
    match cli.command {
        Command::Openapi => Ok(()),
        Command::Migrate => {
            let cfg: admin::Config = settings.get("admin")?;
            let applied = mamori_tenancy::Db::migrate(&cfg.database_url)
                .await
                .context("migration failed (MAMORI_DATABASE_URL)")?;
            println!("migrations applied: {applied}");
            Ok(())
        }
        Command::Ingest => {
            let _telemetry = mamori_telemetry::init("mamori-ingest")?;
            mamori_telemetry::metrics_handle();
            let running = mamori_ingest::start(settings.get("ingest")?).await?;
            let stop = running.stopper();
            tokio::spawn(async move {
                shutdown_signal().await;
                stop.cancel();
            });
            running.wait().await
        }
        Command::Writer => {
            let _telemetry = mamori_telemetry::init("mamori-writer")?;
            mamori_telemetry::metrics_handle();
            let running = mamori_writer::start(settings.get("writer")?).await?;
            let failed = tokio::select! {
                _ = shutdown_signal() => None,
                why = async {
                    debug_fault(|task| running.abort_task(task)).await;
                    running.failed().await
                } => Some(why),
            };
            running.shutdown().await;
            failed.map_or(Ok(()), |why| {
                Err(anyhow::anyhow!("the writer failed: {why}"))
            })
        }
        Command::Gateway => {
            let _telemetry = mamori_telemetry::init("mamori-gateway")?;
            mamori_telemetry::metrics_handle();
            let running = mamori_gateway::start(settings.get("gateway")?).await?;
            let stop = running.stopper();
            tokio::spawn(async move {
                shutdown_signal().await;
                stop.cancel();
            });
            running.wait().await
        }
        Command::Policy => {
            let _telemetry = mamori_telemetry::init("mamori-policy")?;
            mamori_telemetry::metrics_handle();
            let running = mamori_policy::start(settings.get("policy")?).await?;
            let stop = running.stopper();
            tokio::select! {
                _ = shutdown_signal() => {}
                _ = stop.cancelled() => {}
            }
            running.shutdown().await
        }
        Command::Alerting => {
            let _telemetry = mamori_telemetry::init("mamori-alerting")?;
            mamori_telemetry::metrics_handle();
            let running = mamori_alerting::start(settings.get("alerting")?).await?;
            let failed = tokio::select! {
                _ = shutdown_signal() => None,
                why = async {
                    debug_fault(|task| running.abort_task(task)).await;
                    running.failed().await
                } => Some(why),
            };
            running.shutdown().await;
            failed.map_or(Ok(()), |why| Err(anyhow::anyhow!("alerting failed: {why}")))
        }
        Command::All => {
            let _telemetry = mamori_telemetry::init("mamori")?;
            mamori_telemetry::metrics_handle();
            let writer = mamori_writer::start(settings.get("writer")?).await?;
            let ingest_cfg: mamori_ingest::Config = settings.get("ingest")?;
            let ingest_scheme = if ingest_cfg.ingest_tls_cert.is_empty() {
                "http"
            } else {
                "https"
            };
            let ingest = mamori_ingest::start(ingest_cfg).await?;
            let policy_cfg: mamori_policy::Config = settings.get("policy")?;
            let policy_tls = policy_cfg.tls_enabled();
            let policy = mamori_policy::start(policy_cfg).await?;
            let mut gateway_cfg: mamori_gateway::Config = settings.get("gateway")?;
            if !policy_tls {
                // The gateway calls the policy service of this process,
                // wherever it was told to listen.
                gateway_cfg.policy_url = format!("http://{}", policy.grpc_addr);
            }
            if gateway_cfg.agent_server_url.is_empty() {
                gateway_cfg.agent_server_url = format!("{ingest_scheme}://{}", ingest.grpc_addr);
            }
            let gateway = mamori_gateway::start(gateway_cfg).await?;
            let alerting = mamori_alerting::start(settings.get("alerting")?).await?;
            println!(
                "mamori is running: gateway http://{} (ops {}), ingest gRPC on {} (ops {}), policy gRPC on {} (ops {}), writer ops on {}, alerting ops on {}",
                gateway.addr,
                gateway.ops_addr,
                ingest.grpc_addr,
                ingest.ops_addr,
                policy.grpc_addr,
                policy.ops_addr,
                writer.ops_addr,
                alerting.ops_addr
            );
            let stop = ingest.stopper();
            let gateway_stop = gateway.stopper();
            // A role that fails ends the whole process with an error, so
            // that systemd (or whoever started it) starts it again.
            let failed = tokio::select! {
                _ = shutdown_signal() => None,
                _ = stop.cancelled() => None,
                _ = gateway_stop.cancelled() => None,
                why = writer.failed() => Some(format!("the writer failed: {why}")),
                why = alerting.failed() => Some(format!("alerting failed: {why}")),
            };
            // Every role drains, even after another failed to.
            let gateway = gateway.shutdown().await;
            let policy = policy.shutdown().await;
            let ingest = ingest.shutdown().await;
            alerting.shutdown().await;
            writer.shutdown().await;
            gateway?;
            policy?;
            ingest?;
            failed.map_or(Ok(()), |why| Err(anyhow::anyhow!(why)))
        }
        Command::Tenant(c) => admin::tenant(settings.get("admin")?, c).await,
        Command::Token(c) => admin::token(settings.get("admin")?, c).await,
        Command::Device(c) => admin::device(settings.get("admin")?, c).await,
        Command::User(c) => admin::user(settings.get("admin")?, c).await,
        Command::Keys(c) => admin::keys(settings.get("admin")?, c).await,
    }
}

/// Debug builds only (release builds compile it to nothing):
/// `MAMORI_DEBUG_ABORT_TASK=NAME` aborts the role's first task whose name
/// contains NAME two seconds after the start, as a crash of that task would
/// end it. The test of the process-level supervision uses it; nothing else
/// can make a real task of a real process die on cue.
async fn debug_fault(abort: impl FnOnce(&str) -> bool) {
    #[cfg(debug_assertions)]
    if let Ok(task) = std::env::var("MAMORI_DEBUG_ABORT_TASK") {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let found = abort(&task);
        tracing::warn!(task, found, "MAMORI_DEBUG_ABORT_TASK: aborted the task");
    }
    #[cfg(not(debug_assertions))]
    let _ = abort;
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
