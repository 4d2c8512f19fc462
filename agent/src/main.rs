//! The `mamori-agent` binary: `enroll` once, then `run` (as a service).
//!
//! Everything runs on one current-thread tokio runtime: the agent spends its
//! life waiting, and one thread keeps its footprint small.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use mamori_agent::{CollectorSet, EnrollOptions, PlatformArgs, RunOptions, service};

#[derive(Debug, Parser)]
#[command(name = "mamori-agent", version, about = "The Mamori endpoint agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enroll this machine with a tenant's enrollment token.
    Enroll(EnrollArgs),
    /// Collect events and send them to the server until stopped.
    Run(RunArgs),
    /// Enroll this machine and enable and start the mamori-agent service
    /// (what the package's systemd unit runs).
    Install(InstallArgs),
    /// Runs as the MamoriAgent Windows service (what the service manager
    /// starts; the MSI installs it).
    #[command(hide = true)]
    Service(ServiceArgs),
    /// What the package runs before removal: exits 0 when the agent may be
    /// removed (the tenant's uninstall code is given, or the tenant has
    /// issued none), after stopping the agent's service and undoing what it
    /// set outside its files; refuses otherwise, leaving it running.
    UninstallCheck(UninstallCheckArgs),
    /// Stops the agent's service, which refuses a plain stop: needs the
    /// tenant's uninstall code as removal does. It starts again with the
    /// service manager (`systemctl start mamori-agent`) or at the next boot.
    Stop(StopArgs),
    /// What Windows runs instead of an app a `block` rule names (the
    /// app's Image File Execution Options debugger): runs nothing.
    #[command(hide = true)]
    Blocked(BlockedArgs),
}

#[derive(Debug, Args)]
struct BlockedArgs {
    /// The refused program's command line.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
struct ServiceArgs {
    #[arg(long, default_value_os_t = service::state_dir())]
    state_dir: PathBuf,
}

#[derive(Debug, Args)]
struct UninstallCheckArgs {
    #[arg(long, default_value_os_t = service::state_dir())]
    state_dir: PathBuf,
    /// The code from the console (Settings → Agent uninstall code).
    #[arg(long, env = "MAMORI_UNINSTALL_CODE", hide_env_values = true)]
    code: Option<String>,
}

/// No state directory to choose: the code is checked against the policy
/// of the service that is stopped (another directory, with no code in its
/// policy, would stop the service unchecked).
#[derive(Debug, Args)]
struct StopArgs {
    /// The code from the console (Settings → Agent uninstall code).
    #[arg(long, env = "MAMORI_UNINSTALL_CODE", hide_env_values = true)]
    code: Option<String>,
}

#[derive(Debug, Args)]
struct InstallArgs {
    /// The ingest server (or several, comma-separated).
    #[arg(long, env = "MAMORI_SERVER")]
    server: String,
    /// The enrollment token (from the environment keeps it out of `ps`).
    #[arg(long, env = "MAMORI_ENROLLMENT_TOKEN", hide_env_values = true)]
    token: String,
    /// PEM file of the CA that signed the server's certificate.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// The service's state directory (what its unit runs with).
    #[arg(long, default_value_os_t = service::state_dir())]
    state_dir: PathBuf,
}

#[derive(Debug, Args)]
struct EnrollArgs {
    /// The ingest server, e.g. https://ingest.example.com:443; or several,
    /// separated by commas, tried in turn when one cannot be reached.
    #[arg(long, env = "MAMORI_SERVER")]
    server: String,
    /// The enrollment token (from the environment keeps it out of `ps`).
    #[arg(long, env = "MAMORI_ENROLLMENT_TOKEN", hide_env_values = true)]
    token: String,
    #[arg(long, env = "MAMORI_STATE_DIR")]
    state_dir: PathBuf,
    /// PEM file of the CA that signed the server's certificate.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// Use this machine id instead of /etc/machine-id.
    #[arg(long)]
    machine_id: Option<String>,
    /// Print the outcome as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[arg(long, env = "MAMORI_STATE_DIR")]
    state_dir: PathBuf,
    /// Bound of the on-disk spool in bytes.
    #[arg(long, default_value_t = 1 << 30)]
    spool_max_bytes: u64,
    /// Events per batch, at most (1-1000).
    #[arg(long, default_value_t = 500)]
    batch_max_events: usize,
    /// Backlog events sent per second after an outage (0: no limit).
    #[arg(long, default_value_t = 5000)]
    drain_rate: u32,
    /// The longest wait between reconnect attempts, in seconds (1-3600);
    /// the waits double from 0.5 s up to it, with full jitter.
    #[arg(long, default_value_t = RunOptions::DEFAULT_RECONNECT_MAX.as_secs())]
    reconnect_max_s: u64,
    #[command(flatten)]
    platform: PlatformArgs,
    /// A directory whose file operations are watched (repeatable; default:
    /// users' homes; the confidential folders and removable media are
    /// watched besides).
    #[arg(long = "watch-dir")]
    watch_dirs: Vec<PathBuf>,
    /// A directory of users' homes, or a home, whose browser histories are
    /// read (repeatable; default: every user's).
    #[arg(long = "browser-home")]
    browser_homes: Vec<PathBuf>,
    /// A Chromium-based browser's managed-policy directory, where the web
    /// block list is written (repeatable; default: Chromium's, Chrome's and
    /// Edge's).
    #[arg(long = "chromium-policy-dir")]
    chromium_policy_dirs: Vec<PathBuf>,
    /// Collectors to run: process, logon, devices, print, environment,
    /// software, files, web, security, all or none (comma-separated).
    #[arg(long, default_value = "all")]
    collectors: CollectorSet,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Blocked(args) = &cli.command {
        let program = args
            .command
            .first()
            .map(|p| p.to_string_lossy().into_owned());
        eprintln!(
            "{} is blocked by your organisation's policy (Mamori)",
            program.as_deref().unwrap_or("this program")
        );
        // Long enough for the agent's process snapshot to see the refusal.
        std::thread::sleep(std::time::Duration::from_millis(1500));
        std::process::exit(1);
    }
    // A service logs to its state directory and runs its own runtime.
    if let Command::Service(args) = cli.command {
        return service::run_service(RunOptions::new(args.state_dir));
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours for a terminal only, not for a log file or the journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // Only fsync and hashing fall back to it; a few threads are plenty.
        .max_blocking_threads(4)
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Enroll(args) => enroll(args).await,
            Command::Run(args) => run(args).await,
            Command::Install(args) => install(args).await,
            Command::UninstallCheck(args) => uninstall_check(args),
            Command::Stop(args) => stop(args),
            Command::Service(_) | Command::Blocked(_) => unreachable!("handled above"),
        }
    })
}

async fn enroll(args: EnrollArgs) -> anyhow::Result<()> {
    let opts = EnrollOptions {
        server: args.server,
        token: args.token,
        state_dir: args.state_dir,
        ca_cert: args.ca_cert,
        machine_id: args.machine_id,
    };
    let outcome = mamori_agent::enroll(&opts)
        .await
        .context("enrollment failed")?;
    if args.json {
        println!("{}", serde_json::to_string(&outcome)?);
    } else if outcome.reenrolled {
        println!("re-enrolled as existing device {}", outcome.device_id);
    } else {
        println!("enrolled as device {}", outcome.device_id);
    }
    Ok(())
}

fn uninstall_check(args: UninstallCheckArgs) -> anyhow::Result<()> {
    code_check(&args, "", service::REMOVE_WITH_CODE)?;
    // Only the service's own state says whether the service may go: a
    // check against another directory stops nothing.
    if args.state_dir != service::state_dir() {
        return Ok(());
    }
    service::before_removal(&args.state_dir).context("preparing the agent's removal")
}

fn stop(args: StopArgs) -> anyhow::Result<()> {
    let args = UninstallCheckArgs {
        state_dir: service::state_dir(),
        code: args.code,
    };
    code_check(&args, "stop: ", service::STOP_WITH_CODE)?;
    service::stop_service().context("stopping the agent's service")?;
    println!(
        "the agent's service is stopped; it starts again at the next boot or with the service manager"
    );
    Ok(())
}

/// Checks the uninstall code `args` give and records the attempt (`what`
/// prefixes its detail) for the running agent to report; a refusal is an
/// error saying how to do it with the code (`hint`).
fn code_check(args: &UninstallCheckArgs, what: &str, hint: &str) -> anyhow::Result<()> {
    use mamori_agent::uninstall::Uninstall;
    // The MSI passes `--code=` when no UNINSTALL_CODE was given.
    let code = args.code.as_deref().filter(|c| !c.trim().is_empty());
    let verdict = mamori_agent::uninstall::check(&args.state_dir, code)?;
    let (allowed, detail) = match &verdict {
        Uninstall::Allowed => (true, "the uninstall code was given"),
        Uninstall::Unprotected => (true, "the tenant has issued no uninstall code"),
        Uninstall::Refused(why) => (false, *why),
    };
    // Reported by the running agent (a refused attempt leaves it running).
    if let Err(e) = mamori_agent::uninstall::record_attempt(
        &args.state_dir,
        allowed,
        &format!("{what}{detail}"),
    ) {
        tracing::warn!(error = %e, "cannot record the attempt");
    }
    match verdict {
        Uninstall::Allowed => {
            tracing::warn!(
                "the uninstall code was given: the agent may be {}",
                if what.is_empty() {
                    "removed"
                } else {
                    "stopped"
                }
            );
            Ok(())
        }
        Uninstall::Unprotected => Ok(()),
        Uninstall::Refused(why) => {
            tracing::warn!(reason = why, "refused without the uninstall code");
            anyhow::bail!(
                "{why}: get it from the console (Settings → Agent uninstall code) and run: {hint}"
            )
        }
    }
}

async fn install(args: InstallArgs) -> anyhow::Result<()> {
    let outcome = mamori_agent::enroll(&EnrollOptions {
        server: args.server,
        token: args.token,
        state_dir: args.state_dir.clone(),
        ca_cert: args.ca_cert,
        machine_id: None,
    })
    .await
    .context("enrollment failed")?;
    println!("enrolled as device {}", outcome.device_id);
    println!("{}", service::enable(&args.state_dir)?);
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut opts = RunOptions::new(args.state_dir);
    opts.spool_max_bytes = args.spool_max_bytes;
    opts.batch_max_events = args.batch_max_events;
    opts.drain_rate = args.drain_rate;
    opts.reconnect_max = std::time::Duration::from_secs(args.reconnect_max_s);
    opts.platform = args.platform.options();
    if !args.watch_dirs.is_empty() {
        opts.watch_dirs = args.watch_dirs;
    }
    if !args.browser_homes.is_empty() {
        opts.browser_homes = args.browser_homes;
    }
    if !args.chromium_policy_dirs.is_empty() {
        opts.chromium_policy_dirs = args.chromium_policy_dirs;
    }
    opts.collectors = args.collectors;
    let shutdown = async move {
        if let Err(e) = service::shutdown_signal().await {
            tracing::error!(error = %e, "cannot listen for the stop signal: stopping");
        }
    };
    // Started: the service manager may carry on; while the event loop
    // turns, the watchdog hears from it.
    service::notify("READY=1");
    tokio::spawn(service::keep_watchdog());
    let shutdown = async move {
        shutdown.await;
        service::notify("STOPPING=1");
    };
    mamori_agent::run(opts, shutdown).await?;
    Ok(())
}
