//! Process starts and stops: the part every OS shares.
//!
//! Each OS's source (the kernel process connector on Linux, a Toolhelp
//! poller on Windows) sees a process start and hands what it could read
//! ([`ProcessInfo`]) to a [`Reporter`], which decides on the banned-app
//! rules, stops the process through the OS's [`ProcessEnforcer`], hashes
//! the executable off the runtime (`hash`, cached per file version),
//! remembers the started process for its stop event and spools the events.

pub(crate) mod hash;

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex};

use mamori_proto::agent::v1::banned_app::Action as BanAction;
use mamori_proto::agent::v1::{ProcessEvent, event::Kind, process_event::Action};

use crate::policy::{PolicyState, Verdict};
use crate::sink::EventSink;
use hash::{FileKey, HashCache, Hasher, Job};

/// Started processes remembered for their stop event. Entries leave on exit;
/// when exits were lost and the map fills up, dead pids are pruned.
pub(crate) const MAX_TRACKED: usize = 16_384;

/// Whether `path` is a dynamic loader, which an exec opens for exec after
/// the program itself (so it is not the program).
pub(crate) fn is_loader(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.starts_with("ld-linux") || name.starts_with("ld-musl") || name == "ld.so"
}

/// A process as the OS shows it right after it started (a short-lived
/// process may already be gone; whatever could be read is reported).
#[derive(Debug, Default)]
pub(crate) struct ProcessInfo {
    /// The executable, opened: it stays readable for hashing after the
    /// process exits.
    pub exe: Option<File>,
    pub exe_path: String,
    pub command_line: String,
    pub ppid: u32,
    /// Real uid on Unix; `None` when unknown, and on Windows (whose users
    /// are SIDs: the name says who it was).
    pub uid: Option<u32>,
    /// The Windows logon session (0 when unknown, and on Linux).
    pub session_id: u32,
}

/// How an OS stops a process under a banned-app rule.
pub(crate) trait ProcessEnforcer: Send + Sync + std::fmt::Debug {
    /// Stops `pid` at once; says what happened ("killed", "already gone",
    /// "could not be killed: …") for the event.
    fn kill(&self, pid: u32) -> String;
}

/// Stops a process under a banned-app rule and turns its start event into
/// a "blocked" one. Logging rules leave it be.
pub(crate) fn enforce(enforcer: &dyn ProcessEnforcer, event: &mut ProcessEvent, verdict: &Verdict) {
    if verdict.action == BanAction::Log {
        return;
    }
    let outcome = enforcer.kill(event.pid);
    tracing::info!(pid = event.pid, exe = %event.exe_path, reason = %verdict.reason, %outcome, "banned app stopped");
    event.action = Action::Blocked as i32;
    event.blocked_reason = format!("{}: {outcome}", verdict.reason);
    event.policy_revision = verdict.revision;
}

/// A started process, remembered for its stop event.
#[derive(Debug)]
struct Started {
    ppid: u32,
    exe_path: String,
    uid: u32,
    user: String,
    session_id: u32,
}

/// Turns the starts and stops an OS source saw into events.
#[derive(Debug)]
pub(crate) struct Reporter {
    sink: EventSink,
    pub(crate) cache: Arc<Mutex<HashCache>>,
    /// Started on the first binary that is not in the cache.
    hasher: Option<Hasher>,
    started: HashMap<u32, Started>,
    policy: Option<Arc<PolicyState>>,
    enforcer: Arc<dyn ProcessEnforcer>,
}

impl Reporter {
    pub(crate) fn new(
        sink: EventSink,
        policy: Option<Arc<PolicyState>>,
        enforcer: Arc<dyn ProcessEnforcer>,
    ) -> Self {
        Reporter {
            sink,
            cache: Arc::default(),
            hasher: None,
            started: HashMap::new(),
            policy,
            enforcer,
        }
    }

    /// The uid a started process was reported with.
    #[cfg_attr(windows, expect(dead_code, reason = "Windows has no uids"))]
    pub(crate) fn started_uid(&self, pid: u32) -> Option<u32> {
        self.started.get(&pid).map(|s| s.uid)
    }

    /// Forgets `pid` without a stop event (its exit status is unknown).
    pub(crate) fn forget(&mut self, pid: u32) {
        self.started.remove(&pid);
    }

    /// Forgets the processes that are gone (their exits were lost).
    pub(crate) fn prune(&mut self, exists: impl Fn(u32) -> bool) {
        self.started.retain(|&pid, _| exists(pid));
    }

    /// Reports a start: the banned-app rules first (a banned process is
    /// stopped before anything else is read), then the executable's hash
    /// (from the cache, else from the hashing thread, which spools the
    /// event when it is done).
    pub(crate) fn report_start(
        &mut self,
        pid: u32,
        occurred_at_us: i64,
        info: ProcessInfo,
        parent_exe_path: String,
        os_user: String,
        exists: impl Fn(u32) -> bool,
    ) {
        let policy = self.policy.as_ref().map(|p| p.current());
        let verdict = policy.as_ref().and_then(|p| p.check_path(&info.exe_path));
        let uid = info.uid.unwrap_or(0);
        if self.started.len() >= MAX_TRACKED {
            self.prune(exists);
        }
        if self.started.len() < MAX_TRACKED {
            self.started.insert(
                pid,
                Started {
                    ppid: info.ppid,
                    exe_path: info.exe_path.clone(),
                    uid,
                    user: os_user.clone(),
                    session_id: info.session_id,
                },
            );
        }
        let mut event = ProcessEvent {
            action: Action::Start as i32,
            pid,
            parent_pid: info.ppid,
            exe_path: info.exe_path,
            command_line: info.command_line,
            parent_exe_path,
            uid,
            session_id: info.session_id,
            ..Default::default()
        };
        // A policy hit (even "log only") goes to the server at once.
        let mut hit = verdict.is_some();
        if let Some(v) = &verdict {
            enforce(self.enforcer.as_ref(), &mut event, v);
            if event.action == Action::Blocked as i32 {
                // No stop event follows a blocked start.
                self.started.remove(&pid);
            }
        }

        let Some(file) = info.exe else {
            return self.emit(occurred_at_us, os_user, event, hit);
        };
        let Ok(meta) = file.metadata() else {
            return self.emit(occurred_at_us, os_user, event, hit);
        };
        if meta.len() > hash::MAX_HASHED_BYTES {
            return self.emit(occurred_at_us, os_user, event, hit);
        }
        let key = FileKey::of(&file, &meta);
        let cached = key.and_then(|key| {
            self.cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
        });
        if let Some(hash) = cached {
            if let Some(hash) = hash {
                event.exe_sha256 = hash.to_vec();
                if verdict.is_none()
                    && let Some(v) = policy.as_ref().and_then(|p| p.check_hash(&hash))
                {
                    enforce(self.enforcer.as_ref(), &mut event, &v);
                    self.started.remove(&pid);
                    hit = true;
                }
            }
            return self.emit(occurred_at_us, os_user, event, hit);
        }
        let job = Job {
            file,
            key,
            event,
            occurred_at_us,
            os_user,
            urgent: hit,
        };
        let job = match self.hasher() {
            Some(hasher) => match hasher.submit(job) {
                None => return,
                Some(job) => {
                    tracing::debug!(path = %job.event.exe_path, "hash queue full, reporting without a hash");
                    job
                }
            },
            None => job,
        };
        self.emit(job.occurred_at_us, job.os_user, job.event, job.urgent);
    }

    /// Reports a launch the OS refused before the program ran: `event` is
    /// the blocked start, sent at once.
    #[cfg_attr(
        not(windows),
        expect(dead_code, reason = "Linux's launch guard reports its own")
    )]
    pub(crate) fn report_refused(&self, occurred_at_us: i64, os_user: String, event: ProcessEvent) {
        tracing::info!(exe = %event.exe_path, reason = %event.blocked_reason, "banned app refused before launch");
        self.emit(occurred_at_us, os_user, event, true);
    }

    /// Reports the stop of a process whose start was reported.
    pub(crate) fn report_stop(&mut self, pid: u32, occurred_at_us: i64, exit_code: i32) {
        let Some(started) = self.started.remove(&pid) else {
            return;
        };
        let event = ProcessEvent {
            action: Action::Stop as i32,
            pid,
            parent_pid: started.ppid,
            exe_path: started.exe_path,
            uid: started.uid,
            exit_code,
            session_id: started.session_id,
            ..Default::default()
        };
        self.emit(occurred_at_us, started.user, event, false);
    }

    fn hasher(&mut self) -> Option<&Hasher> {
        if self.hasher.is_none() {
            match Hasher::start(
                self.cache.clone(),
                self.sink.clone(),
                self.policy.clone(),
                Arc::clone(&self.enforcer),
            ) {
                Ok(h) => self.hasher = Some(h),
                Err(e) => tracing::warn!(error = %e, "cannot start the hashing thread"),
            }
        }
        self.hasher.as_ref()
    }

    fn emit(&self, occurred_at_us: i64, os_user: String, event: ProcessEvent, hit: bool) {
        let kind = Kind::Process(event);
        let spooled = if hit {
            self.sink.emit_urgent(occurred_at_us, os_user, kind)
        } else {
            self.sink.emit(occurred_at_us, os_user, kind)
        };
        if let Err(e) = spooled {
            tracing::warn!(error = %e, "process event not spooled");
        }
    }
}
