//! Process starts and stops on Linux.
//!
//! The kernel's process connector (`netlink`) reports every fork, exec and
//! exit as it happens; for each exec the collector reads /proc at once
//! (`procfs`): executable path, command line, parent, uid. A process gone
//! before /proc is read (a `true` in a shell loop lives about a
//! millisecond) is named a moment later from the exec witness (`witness`:
//! fanotify reports each exec with the executable), its parent from its
//! fork and its user from the parent, which is nearly always still there;
//! only its command line is lost. The SHA-256 of the executable
//! comes from a cache or from the hashing thread (`hash`), so a burst of
//! execs never stalls the socket. An exit is reported only for processes
//! whose start was reported, with the exit status.
//!
//! Without the privilege to listen (not root), or outside the initial PID
//! namespace (a container, where the kernel sends the connector nothing),
//! the collector polls /proc every 250 ms for new pids instead: starts of
//! processes that live shorter than that are missed, and stops are not
//! reported (their exit status cannot be known).

mod launch;
mod netlink;
pub(crate) mod procfs;
mod witness;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::users::Users;
use crate::clock::now_us;
use crate::collector::process::{ProcessEnforcer, ProcessInfo, Reporter};
use crate::collector::{Collector, EventSink};
use crate::error::{Error, Result};
use crate::policy::PolicyState;
use netlink::{ProcConnector, ProcEvent};
use procfs::Procfs;

const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How long a start whose process is already gone waits for the exec
/// witness to have read its program: at least the first, at most the
/// second (a busy machine delays the witness's thread too).
const WITNESS_WAIT: Duration = Duration::from_millis(20);
const WITNESS_WAIT_MAX: Duration = Duration::from_millis(500);
/// Forks remembered (child → parent) for processes gone before /proc
/// could be read.
const MAX_FORKS: usize = 16_384;
use crate::collector::process::MAX_TRACKED;

/// How the collector learns about new processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The process connector, else polling.
    Auto,
    /// Polling /proc only.
    Poll,
}

/// The process collector. With a policy it also enforces the banned-app
/// rules: where the kernel allows it, a `block` rule refuses the launch
/// before the program runs (`launch`); otherwise a matching process is
/// killed as soon as its exec is seen. The event says what was stopped and
/// why.
#[derive(Debug, Clone)]
pub struct ProcessCollector {
    source: Source,
    policy: Option<Arc<PolicyState>>,
}

impl ProcessCollector {
    /// Uses the kernel process connector, or polls /proc when it cannot.
    pub fn new() -> Self {
        ProcessCollector {
            source: Source::Auto,
            policy: None,
        }
    }

    /// Polls /proc even when the process connector is available.
    pub fn polling() -> Self {
        ProcessCollector {
            source: Source::Poll,
            policy: None,
        }
    }

    /// Enforces `policy`'s banned apps.
    pub fn enforcing(mut self, policy: Arc<PolicyState>) -> Self {
        self.policy = Some(policy);
        self
    }
}

/// Kills with SIGKILL, at once.
#[derive(Debug, Default)]
pub(crate) struct SignalKiller;

impl ProcessEnforcer for SignalKiller {
    fn kill(&self, pid: u32) -> String {
        match nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        ) {
            Ok(()) => "killed".to_owned(),
            Err(nix::errno::Errno::ESRCH) => "already gone".to_owned(),
            Err(e) => format!("could not be killed: {e}"),
        }
    }
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl Collector for ProcessCollector {
    fn name(&self) -> &'static str {
        "process"
    }

    fn run(self: Box<Self>, sink: EventSink) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            // Lives as long as this collector: dropped, it stops guarding.
            let _guard = match &self.policy {
                Some(policy) if self.source == Source::Auto => {
                    launch::start(Arc::clone(policy), sink.clone())
                        .inspect_err(|e| tracing::warn!(error = %e, "cannot start the launch guard: apps with a block rule are killed at exec"))
                        .ok()
                }
                _ => None,
            };
            let mut handler = Handler::new(sink, self.policy);
            if self.source == Source::Auto {
                handler.witness = witness::ExecWitness::start()
                    .inspect_err(|e| tracing::warn!(error = %e, "exec witness unavailable (needs root): programs that exit at once may go unnamed"))
                    .ok();
                match ProcConnector::open() {
                    Ok(conn) => {
                        tracing::info!("watching processes through the kernel process connector");
                        let e = watch_connector(&conn, &mut handler).await;
                        tracing::warn!(error = %e, "process connector failed, polling /proc instead");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "process connector unavailable, polling /proc instead");
                    }
                }
            }
            // Polling does not read it: closed, it does not fill a queue
            // with every exec on the machine.
            handler.witness = None;
            poll_proc(&mut handler).await
        })
    }
}

/// Reads the connector until it fails; returns why.
async fn watch_connector(conn: &ProcConnector, handler: &mut Handler) -> Error {
    let mut buf = [0u8; 1024];
    let mut tick = tokio::time::interval(WITNESS_WAIT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let received = tokio::select! {
            r = conn.recv(&mut buf) => r,
            _ = tick.tick(), if !handler.pending.is_empty() => {
                handler.resolve_pending(false);
                continue;
            }
        };
        match received {
            Ok(n) => match netlink::parse(&buf[..n]) {
                Some(ProcEvent::Fork { parent, child }) => handler.on_fork(parent, child),
                Some(ProcEvent::Exec { pid }) => handler.on_exec(pid),
                Some(ProcEvent::Exit { pid, exit_code }) => handler.on_exit(pid, exit_code),
                Some(ProcEvent::ListenRefused { errno }) => {
                    return Error::io("subscribing to process events")(
                        std::io::Error::from_raw_os_error(errno as i32),
                    );
                }
                None => {}
            },
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                tracing::warn!(
                    "process events arrived faster than the agent could read them; some were lost"
                );
                handler.prune();
            }
            Err(e) => return Error::io("reading process events")(e),
        }
    }
}

async fn poll_proc(handler: &mut Handler) -> Result<()> {
    let procfs = handler.procfs.clone();
    let mut known = procfs.pids().map_err(Error::io("listing /proc"))?;
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = match procfs.pids() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "listing /proc failed");
                continue;
            }
        };
        let mut new: Vec<u32> = now.difference(&known).copied().collect();
        new.sort_unstable();
        for pid in new {
            handler.on_exec(pid);
        }
        handler.resolve_pending(true);
        for pid in known.difference(&now) {
            handler.reporter.forget(*pid);
        }
        known = now;
    }
}

/// Turns exec and exit notifications into events.
#[derive(Debug)]
struct Handler {
    reporter: Reporter,
    procfs: Procfs,
    users: Users,
    /// Which program each exec started, for processes gone at once.
    witness: Option<witness::ExecWitness>,
    /// Each process's parent, from its fork.
    forks: HashMap<u32, u32>,
    /// Starts of processes that were gone when /proc was read, waiting for
    /// the witness: pid, when, and the exit code if the exit came first.
    pending: std::collections::VecDeque<Pending>,
}

#[derive(Debug)]
struct Pending {
    pid: u32,
    occurred_at_us: i64,
    seen: std::time::Instant,
    exit_code: Option<i32>,
}

impl Handler {
    fn new(sink: EventSink, policy: Option<Arc<PolicyState>>) -> Self {
        Handler {
            reporter: Reporter::new(sink, policy, Arc::new(SignalKiller)),
            procfs: Procfs::default(),
            users: Users::new("/etc/passwd"),
            witness: None,
            forks: HashMap::new(),
            pending: std::collections::VecDeque::new(),
        }
    }

    fn on_fork(&mut self, parent: u32, child: u32) {
        if self.forks.len() >= MAX_FORKS {
            self.forks.clear();
        }
        self.forks.insert(child, parent);
    }

    fn on_exec(&mut self, pid: u32) {
        let occurred_at_us = now_us();
        let mut info = self.procfs.inspect(pid);
        if info.uid.is_none() && !info.exe_path.is_empty() {
            // It exited between the reads of /proc: its parent's user.
            if info.ppid == 0 {
                info.ppid = self.forks.get(&pid).copied().unwrap_or(0);
            }
            info.uid = self.parent_uid(info.ppid);
        }
        if info.exe_path.is_empty() && self.witness.is_some() {
            // Gone already: named when the witness has read its exec.
            if self.pending.len() >= MAX_TRACKED {
                self.resolve_pending(true);
            }
            self.pending.push_back(Pending {
                pid,
                occurred_at_us,
                seen: std::time::Instant::now(),
                exit_code: None,
            });
            return;
        }
        self.report_exec(pid, occurred_at_us, info);
    }

    /// Reports the starts that waited [`WITNESS_WAIT`] and were witnessed,
    /// or waited [`WITNESS_WAIT_MAX`] (or all of them), named by
    /// the witness, parented by their fork, with their parent's user; and
    /// the stops of those that already exited.
    fn resolve_pending(&mut self, all: bool) {
        while let Some(p) = self.pending.front() {
            let age = p.seen.elapsed();
            let witnessed = || {
                self.witness
                    .as_ref()
                    .is_some_and(|w| w.exe_of(p.pid).is_some())
            };
            if !all && (age < WITNESS_WAIT || (age < WITNESS_WAIT_MAX && !witnessed())) {
                break;
            }
            let p = self.pending.pop_front().expect("looked at");
            let ppid = self.forks.remove(&p.pid).unwrap_or(0);
            let uid = self.parent_uid(ppid);
            let exe_path = self
                .witness
                .as_ref()
                .and_then(|w| w.exe_of(p.pid))
                .unwrap_or_default();
            let info = ProcessInfo {
                // Hashed by its path (it is rarely replaced that fast).
                exe: std::fs::File::open(&exe_path).ok(),
                exe_path,
                command_line: String::new(),
                ppid,
                uid,
                session_id: 0,
            };
            self.report_exec(p.pid, p.occurred_at_us, info);
            if let Some(code) = p.exit_code {
                self.on_exit(p.pid, code);
            }
        }
    }

    /// The user of a parent process (a child has its parent's unless its
    /// program is setuid): from /proc, or from its own start.
    fn parent_uid(&self, ppid: u32) -> Option<u32> {
        if ppid == 0 {
            return None;
        }
        self.procfs
            .uid(ppid)
            .or_else(|| self.reporter.started_uid(ppid))
    }

    fn report_exec(&mut self, pid: u32, occurred_at_us: i64, info: ProcessInfo) {
        let parent_exe_path = match info.ppid {
            0 => String::new(),
            ppid => self.procfs.exe_path(ppid).unwrap_or_default(),
        };
        let os_user = info.uid.map(|uid| self.users.name(uid)).unwrap_or_default();
        let procfs = &self.procfs;
        self.reporter
            .report_start(pid, occurred_at_us, info, parent_exe_path, os_user, |pid| {
                procfs.exists(pid)
            });
    }

    fn on_exit(&mut self, pid: u32, exit_code: i32) {
        if let Some(p) = self.pending.iter_mut().find(|p| p.pid == pid) {
            p.exit_code = Some(exit_code);
            return;
        }
        self.forks.remove(&pid);
        self.reporter.report_stop(pid, now_us(), exit_code);
    }

    /// Forgets processes that are gone (their exits were lost).
    fn prune(&mut self) {
        let procfs = &self.procfs;
        self.reporter.prune(|pid| procfs.exists(pid));
    }
}

#[cfg(test)]
mod tests;
