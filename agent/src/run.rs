//! `mamori-agent run`: the collectors, the spool and the uplink, together
//! until shutdown.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;

use crate::clock::ClockOffset;
use crate::collector::CollectorSet;
use crate::collector::security;
use crate::error::{Error, Result};
use crate::platform::{PlatformOptions, os};
use crate::policy::PolicyState;
use crate::sink::{EventSink, SharedSpool, Wake, lock};
use crate::spool::{Spool, SpoolConfig};
use crate::state::StateDir;
use crate::uplink::{Uplink, UplinkOptions};

/// How often spooled events (and the ack cursor) are fsynced. Every append
/// is already in the kernel, so this bounds only what a power cut can take,
/// like the server's own `appendfsync everysec`; at 200 ms the fsyncs were a
/// fifth of the agent's CPU at 10 events/s.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// The server takes at most this many events per batch.
const SERVER_MAX_BATCH_EVENTS: usize = 1000;

/// What `run` needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub state_dir: PathBuf,
    /// Bound of the on-disk spool; the oldest events are dropped past it.
    pub spool_max_bytes: u64,
    /// Events per batch, at most (1..=1000).
    pub batch_max_events: usize,
    /// Backlog events sent per second after an outage; 0 for no limit.
    pub drain_rate: u32,
    /// The longest wait between reconnect attempts (the delays double from
    /// 0.5 s up to it, with full jitter).
    pub reconnect_max: Duration,
    /// What the OS's own sources read (paths of system files).
    pub platform: PlatformOptions,
    /// How often the environment collector looks at the PC.
    pub environment_poll: Duration,
    /// How often the software collector looks whether the installed
    /// software changed.
    pub software_poll: Duration,
    /// Directories whose file operations are watched (besides the
    /// confidential folders and removable media).
    pub watch_dirs: Vec<PathBuf>,
    /// Where users' homes are (directories of homes, or homes), whose
    /// browser histories the web collector reads, and how often.
    pub browser_homes: Vec<PathBuf>,
    pub web_poll: Duration,
    /// The managed-policy directories the web block list is written to
    /// (Chromium-based browsers, Firefox).
    pub chromium_policy_dirs: Vec<PathBuf>,
    pub firefox_policy_dirs: Vec<PathBuf>,
    /// How often the security status is looked at.
    pub security_poll: Duration,
    pub collectors: CollectorSet,
}

impl RunOptions {
    pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(30);
    /// Bounds of `reconnect_max`.
    const RECONNECT_MAX_RANGE: std::ops::RangeInclusive<Duration> =
        Duration::from_secs(1)..=Duration::from_secs(3600);

    /// The defaults: 1 GiB spool, 500 events per batch, 5000 backlog events
    /// per second, reconnects at most 30 s apart, the OS's own paths, the
    /// environment checked every minute, every collector.
    pub fn new(state_dir: PathBuf) -> Self {
        RunOptions {
            state_dir,
            spool_max_bytes: SpoolConfig::DEFAULT_MAX_BYTES,
            batch_max_events: 500,
            drain_rate: 5000,
            reconnect_max: Self::DEFAULT_RECONNECT_MAX,
            platform: PlatformOptions::default(),
            environment_poll: Duration::from_secs(60),
            watch_dirs: os::default_watch_dirs(),
            browser_homes: os::default_browser_homes(),
            web_poll: Duration::from_secs(5),
            chromium_policy_dirs: os::DEFAULT_CHROMIUM_POLICY_DIRS
                .iter()
                .map(PathBuf::from)
                .collect(),
            security_poll: security::DEFAULT_POLL,
            firefox_policy_dirs: os::DEFAULT_FIREFOX_POLICY_DIRS
                .iter()
                .map(PathBuf::from)
                .collect(),
            software_poll: Duration::from_secs(10),
            collectors: CollectorSet::ALL,
        }
    }

    fn validate(&self) -> Result<()> {
        if !(1..=SERVER_MAX_BATCH_EVENTS).contains(&self.batch_max_events) {
            return Err(Error::InvalidOption(format!(
                "batch-max-events must be between 1 and {SERVER_MAX_BATCH_EVENTS}, not {}",
                self.batch_max_events
            )));
        }
        if !Self::RECONNECT_MAX_RANGE.contains(&self.reconnect_max) {
            return Err(Error::InvalidOption(format!(
                "reconnect-max-s must be between 1 and 3600 seconds, not {}",
                self.reconnect_max.as_secs_f64()
            )));
        }
        if self.spool_max_bytes < 1 << 20 {
            return Err(Error::InvalidOption(format!(
                "spool-max-bytes must be at least 1 MiB, not {}",
                self.spool_max_bytes
            )));
        }
        Ok(())
    }
}

/// The spool directory inside a state directory (for tools and tests that
/// open the [`Spool`] of a stopped agent).
pub fn spool_dir(state_dir: &Path) -> PathBuf {
    StateDir::new(state_dir).spool_dir()
}

/// Runs until `shutdown` resolves; flushes the spool on the way out.
pub async fn run(opts: RunOptions, shutdown: impl Future<Output = ()>) -> Result<()> {
    opts.validate()?;
    let state = StateDir::new(&opts.state_dir);
    let config = state.load_config()?;
    state.load_credential()?;
    let _lock = state.lock()?;

    let spool = Spool::open(
        state.spool_dir(),
        SpoolConfig::with_max_bytes(opts.spool_max_bytes),
    )?;
    tracing::info!(
        device_id = %config.device_id,
        tenant_id = %config.tenant_id,
        server = %config.server,
        pending = spool.pending(),
        dropped_total = spool.dropped_total(),
        version = env!("CARGO_PKG_VERSION"),
        "agent starting"
    );
    let spool: SharedSpool = Arc::new(Mutex::new(spool));
    let clock = Arc::new(ClockOffset::default());
    let wake = Arc::new(Wake::default());
    let sink = EventSink::new(spool.clone(), clock.clone(), wake.clone());
    crate::lifecycle::started(&sink);

    let policy = Arc::new(PolicyState::load(state.policy_path()));
    let mut tasks = JoinSet::new();
    for collector in os::collectors(&opts, &state, &policy) {
        let sink = sink.clone();
        tasks.spawn(async move {
            let name = collector.name();
            match collector.run(sink.clone()).await {
                Ok(()) => tracing::info!(collector = name, "collector stopped"),
                Err(e) => {
                    tracing::error!(collector = name, error = %e, "collector failed");
                    // The server learns that this PC no longer reports
                    // what this collector would (an auditor must not read
                    // "no file operations" as "none happened").
                    sink.warn(name, name, &format!("the collector stopped: {e}"));
                }
            }
        });
    }
    // Held while a flush job runs: a job outlives the loop's abort (it is on
    // a blocking thread), and the last flush must not race it.
    let flushing = Arc::new(tokio::sync::Mutex::new(()));
    tasks.spawn(flush_loop(spool.clone(), Arc::clone(&flushing)));
    tasks.spawn(crate::lifecycle::watch_attempts(
        opts.state_dir.clone(),
        sink.clone(),
    ));
    let shutdown = {
        let sink = sink.clone();
        let dir = opts.state_dir.clone();
        async move {
            shutdown.await;
            crate::lifecycle::stopping(&dir, &sink);
        }
    };

    let uplink = Uplink::new(
        state,
        spool.clone(),
        wake,
        clock,
        policy,
        UplinkOptions {
            batch_max_events: opts.batch_max_events,
            drain_rate: opts.drain_rate,
            reconnect_max: opts.reconnect_max,
        },
    );
    uplink.run(shutdown).await;

    tracing::info!("shutting down");
    tasks.shutdown().await;
    let _flushing = flushing.lock().await;
    let mut spool = lock(&spool);
    spool.flush()?;
    tracing::info!(pending = spool.pending(), "agent stopped");
    Ok(())
}

/// Makes spooled events durable every [`FLUSH_INTERVAL`], fsyncing on the
/// blocking pool so the runtime (and the collectors on it) never waits for
/// the disk.
async fn flush_loop(spool: SharedSpool, flushing: Arc<tokio::sync::Mutex<()>>) {
    let mut tick = tokio::time::interval(FLUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let running = Arc::clone(&flushing).lock_owned().await;
        let job = match lock(&spool).prepare_flush() {
            Ok(job) if job.is_empty() => continue,
            Ok(job) => job,
            Err(e) => {
                tracing::warn!(error = %e, "spool flush failed");
                continue;
            }
        };
        match tokio::task::spawn_blocking(move || {
            let done = job.run();
            drop(running);
            done
        })
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "spool flush failed"),
            Err(e) => tracing::warn!(error = %e, "spool flush task failed"),
        }
    }
}
