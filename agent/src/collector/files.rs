//! File operations: create, modify, copy, move, rename and delete in the
//! watched directories (users' homes, the confidential folders, every
//! removable medium as it is mounted), and reads in confidential folders.
//!
//! An OS source ([`FileSource`]; fanotify on Linux) reports raw operations
//! with the file's path, the process and a handle on the file; this module
//! makes events of them, the same way on every OS:
//!
//! - **Copies**: a file opened by a process and a file it then writes with
//!   the same content is a copy (source → target). The candidates are the
//!   process's last few opened files of the same size; the contents are
//!   compared by SHA-256, read through the handles, so a file renamed just
//!   after it was written is still read.
//! - **Hashes**: copies, writes to removable media and files in
//!   confidential folders carry the content's SHA-256 (whole up to
//!   [`MAX_FULL_HASH`], else of its size, first and last MiB, said so in
//!   the event), which the file trace follows across PCs.
//! - **Bounds**: per-process and overall rates; what is over them is
//!   counted and reported as one summary event per action and interval
//!   (`summarized`), never queued. A few hundred bytes per tracked file,
//!   a bounded number of them.
//!
//! The source runs on its own thread, so a flood never stalls the other
//! collectors, and hashing never blocks the runtime.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use mamori_proto::agent::v1::{
    FileEvent,
    event::Kind,
    file_event::{Action, HashMethod},
};
use sha2::{Digest, Sha256};

use super::{Collector, EventSink};
use crate::clock::now_us;
use crate::error::{Error, Result};
use crate::platform::Medium;
use crate::policy::PolicyState;

/// Content up to this size is hashed whole.
pub const MAX_FULL_HASH: u64 = 100 << 20;
/// Above it: the size, the first and the last this many bytes.
const HEAD_TAIL: u64 = 1 << 20;
/// Files a process opened that may be the source of its next write.
const OPENS_PER_PROCESS: usize = 8;
/// Processes tracked (for copies and their programs).
const MAX_PROCESSES: usize = 1024;
/// How long an open file stays a copy candidate.
const COPY_WINDOW: Duration = Duration::from_secs(30);
/// Created files not yet written are reported as created after this.
const CREATE_WAIT: Duration = Duration::from_secs(2);
/// How often mounts and the policy's folders are looked at again besides
/// when something is mounted or unmounted (the source says so at once)
/// and when the policy changes.
const REWATCH_EVERY: Duration = Duration::from_secs(30);
/// The longest wait for operations before the collector's own chores
/// (created files due, summaries, a changed policy).
const READ_WAIT: Duration = Duration::from_secs(1);
/// Events per second one process may cause, and all together; over that,
/// operations are counted into a summary.
const PER_PROCESS_RATE: u32 = 200;
const TOTAL_RATE: u32 = 1000;
/// How often summaries of what was over the rates are sent.
const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// A handle on a file that opens it wherever it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Handle {
    /// The file system.
    pub(crate) fsid: [u8; 8],
    /// The file on it (the OS's encoding).
    pub(crate) bytes: Vec<u8>,
}

/// What happened to a file, as the OS source reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Create,
    Delete,
    /// Renamed or moved within a file system (`target` is the new path).
    Rename,
    /// Closed after writing.
    CloseWrite,
    /// Closed after reading only.
    #[cfg_attr(windows, expect(dead_code, reason = "Windows's sources see no reads"))]
    CloseRead,
    Open,
    /// A program was started from this file by `pid`.
    Exec,
}

/// One raw operation.
#[derive(Debug, Clone)]
pub(crate) struct FsOp {
    pub(crate) op: Op,
    pub(crate) path: PathBuf,
    pub(crate) target: Option<PathBuf>,
    pub(crate) pid: u32,
    pub(crate) handle: Option<Handle>,
}

/// An OS's source of file operations.
pub(crate) trait FileSource: Send {
    /// The directories watched: operations elsewhere may be dropped by
    /// the source (the collector drops them anyway).
    fn set_scope(&mut self, _dirs: &[PathBuf]) {}
    /// Watches the file system `dir` is on (again is a no-op).
    fn watch(&mut self, dir: &Path) -> io::Result<()>;
    /// Whether something was mounted or unmounted since the last call (a
    /// source that cannot tell says no; the collector looks again every
    /// [`REWATCH_EVERY`] anyway).
    fn take_mounts_changed(&mut self) -> bool {
        false
    }
    /// Waits up to `timeout` for operations and appends them; returns how
    /// many were lost by the OS (its queue overflowed).
    fn read(&mut self, timeout: Duration, out: &mut Vec<FsOp>) -> io::Result<u64>;
    /// Opens a file by its handle, for reading.
    fn open(&self, handle: &Handle) -> Option<File>;
    /// What this source cannot see, when it stands in for a better one
    /// (a device fact, see [`EventSink::degraded`]).
    fn degraded(&self) -> Option<String> {
        None
    }
}

/// What the file collector needs of the OS besides its source.
pub(crate) trait FileOs: Send + Sync + std::fmt::Debug {
    /// The OS's source of file operations.
    fn open_source(&self) -> io::Result<Box<dyn FileSource>>;
    /// The removable media mounted now.
    fn removable_media(&self) -> Vec<Medium>;
    /// The executable of a running process.
    fn program(&self, pid: u32) -> Option<String>;
    /// The user a running process runs as.
    fn user(&self, pid: u32) -> Option<String>;
    /// The user who owns a file.
    fn owner(&self, path: &Path) -> Option<String>;
}

/// The file-operation collector.
#[derive(Debug, Clone)]
pub struct FileCollector {
    /// Watched directories besides the confidential folders and media.
    roots: Vec<PathBuf>,
    policy: Arc<PolicyState>,
    os: Arc<dyn FileOs>,
}

impl FileCollector {
    pub(crate) fn new(roots: Vec<PathBuf>, policy: Arc<PolicyState>, os: Arc<dyn FileOs>) -> Self {
        Self { roots, policy, os }
    }
}

/// Sets the stop flag when the collector's task is dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Collector for FileCollector {
    fn name(&self) -> &'static str {
        "files"
    }

    fn run(self: Box<Self>, sink: EventSink) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            // Off the runtime: a source may check itself (Windows's ETW
            // session waits for a probe file's event).
            let os = Arc::clone(&self.os);
            let source = tokio::task::spawn_blocking(move || os.open_source())
                .await
                .map_err(|e| Error::io("opening the file source")(io::Error::other(e)))?
                .map_err(Error::io("file operations cannot be watched"))?;
            match source.degraded() {
                Some(why) => {
                    tracing::warn!(%why, "file operations in a degraded mode");
                    sink.warn("files", "file source", &format!("degraded mode: {why}"));
                    sink.degraded("files", Some(&why));
                }
                None => sink.degraded("files", None),
            }
            let stop = Arc::new(AtomicBool::new(false));
            let guard = StopOnDrop(Arc::clone(&stop));
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            let this = *self;
            std::thread::Builder::new()
                .name("mamori-files".into())
                .spawn(move || {
                    let mut tracker = Tracker::new(this, source, sink);
                    let _ = done_tx.send(tracker.run(&stop));
                })
                .map_err(Error::io("starting the file collector's thread"))?;
            let result = done_rx.await.unwrap_or_else(|_| {
                Err(Error::io("the file collector")(io::Error::other(
                    "its thread died",
                )))
            });
            drop(guard);
            result
        })
    }
}

/// A file a process opened.
#[derive(Debug, Clone)]
struct Opened {
    path: PathBuf,
    handle: Handle,
    at: Instant,
}

/// What is known of one process.
#[derive(Debug, Default)]
struct Process {
    exe: String,
    opened: VecDeque<Opened>,
    /// Rate window: its start and the events in it.
    window: Option<Instant>,
    events: u32,
}

/// Counts of what was over the rates, by action, and one path of each.
#[derive(Debug, Default)]
struct Summary {
    counts: HashMap<i32, (u32, String)>,
}

struct Tracker {
    config: FileCollector,
    source: Box<dyn FileSource>,
    sink: EventSink,
    processes: HashMap<u32, Process>,
    /// Created and not yet written: path → (pid, when).
    created: HashMap<PathBuf, (u32, Instant)>,
    watched: Vec<PathBuf>,
    media: Vec<Medium>,
    own_pid: u32,
    total_window: Instant,
    total_events: u32,
    summary: Summary,
    summary_at: Instant,
    lost: u64,
}

impl Tracker {
    fn new(config: FileCollector, source: Box<dyn FileSource>, sink: EventSink) -> Self {
        Self {
            config,
            source,
            sink,
            processes: HashMap::new(),
            created: HashMap::new(),
            watched: Vec::new(),
            media: Vec::new(),
            own_pid: std::process::id(),
            total_window: Instant::now(),
            total_events: 0,
            summary: Summary::default(),
            summary_at: Instant::now(),
            lost: 0,
        }
    }

    fn run(&mut self, stop: &AtomicBool) -> Result<()> {
        self.rewatch();
        let mut rewatched = Instant::now();
        let mut revision = self.config.policy.revision();
        let mut mounts_changed = false;
        let mut ops = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            ops.clear();
            match self.source.read(READ_WAIT, &mut ops) {
                Ok(lost) => self.lost += lost,
                Err(e) => return Err(Error::io("reading file operations")(e)),
            }
            for op in ops.drain(..) {
                self.handle(op);
            }
            self.flush_created(false);
            let policy = self.config.policy.revision();
            mounts_changed |= self.source.take_mounts_changed();
            // A mount change is acted on at most once a second: something
            // mounting in a loop does not keep the collector re-marking.
            let since = rewatched.elapsed();
            if (mounts_changed && since >= Duration::from_secs(1))
                || policy != revision
                || since >= REWATCH_EVERY
            {
                mounts_changed = false;
                self.rewatch();
                rewatched = Instant::now();
                revision = policy;
            }
            if self.summary_at.elapsed() >= SUMMARY_EVERY {
                self.send_summaries();
            }
        }
        self.flush_created(true);
        self.send_summaries();
        Ok(())
    }

    /// Watches the roots, the confidential folders' directories and the
    /// media mounted now.
    fn rewatch(&mut self) {
        let mut dirs = self.config.roots.clone();
        dirs.extend(self.config.policy.current().confidential_roots());
        self.media = self.config.os.removable_media();
        dirs.extend(self.media.iter().map(|m| m.mount_point.clone()));
        self.source.set_scope(&dirs);
        for dir in &dirs {
            if !dir.is_dir() {
                continue;
            }
            if let Err(e) = self.source.watch(dir)
                && !self.watched.contains(dir)
            {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch file operations here");
                let mut why = format!("cannot watch file operations here: {e}");
                if e.kind() == io::ErrorKind::PermissionDenied {
                    why.push_str(" (watching a file system needs root)");
                }
                self.sink.warn("files", &dir.to_string_lossy(), &why);
            }
        }
        self.watched = dirs;
    }

    fn in_watched(&self, path: &Path) -> bool {
        self.watched.iter().any(|d| path.starts_with(d))
    }

    fn medium_of(&self, path: &Path) -> Option<&Medium> {
        self.media
            .iter()
            .filter(|m| path.starts_with(&m.mount_point))
            .max_by_key(|m| m.mount_point.as_os_str().len())
    }

    fn process(&mut self, pid: u32) -> &mut Process {
        if self.processes.len() >= MAX_PROCESSES && !self.processes.contains_key(&pid) {
            // Forget the processes that opened nothing lately.
            self.processes.retain(|_, p| {
                p.opened
                    .back()
                    .is_some_and(|o| o.at.elapsed() < COPY_WINDOW)
            });
            if self.processes.len() >= MAX_PROCESSES {
                self.processes.clear();
            }
        }
        self.processes.entry(pid).or_default()
    }

    fn handle(&mut self, op: FsOp) {
        if op.pid == self.own_pid {
            return;
        }
        if op.op == Op::Exec {
            let exe = op.path.to_string_lossy().into_owned();
            if !super::process::is_loader(&exe) {
                let p = self.process(op.pid);
                p.exe = exe;
                p.opened.clear();
            }
            return;
        }
        let watched =
            self.in_watched(&op.path) || op.target.as_deref().is_some_and(|t| self.in_watched(t));
        if !watched {
            return;
        }
        match op.op {
            Op::Open => {
                if let Some(handle) = op.handle {
                    let p = self.process(op.pid);
                    if p.opened.len() >= OPENS_PER_PROCESS {
                        p.opened.pop_front();
                    }
                    p.opened.push_back(Opened {
                        path: op.path,
                        handle,
                        at: Instant::now(),
                    });
                }
            }
            Op::CloseRead => {
                let path = op.path.to_string_lossy();
                if self.config.policy.current().is_confidential(&path) {
                    let event = self.event(Action::Read, &op, None);
                    self.emit(op.pid, event);
                }
            }
            Op::Create => {
                self.created
                    .insert(op.path.clone(), (op.pid, Instant::now()));
                if self.created.len() > 4096 {
                    self.flush_created(true);
                }
            }
            Op::CloseWrite => self.written(op),
            Op::Rename => {
                self.created.remove(&op.path);
                let target = op.target.clone().unwrap_or_default();
                let action = if op.path.parent() == target.parent() {
                    Action::Rename
                } else {
                    Action::Move
                };
                let hash = self
                    .wants_hash(&target)
                    .then(|| self.hash(op.handle.as_ref()));
                let event = self.event(action, &op, hash.flatten());
                self.emit(op.pid, event);
            }
            Op::Delete => {
                if self.created.remove(&op.path).is_some() {
                    return; // Created and deleted unwritten: a temporary file.
                }
                let event = self.event(Action::Delete, &op, None);
                self.emit(op.pid, event);
            }
            Op::Exec => {}
        }
    }

    /// Whether content at `path` is hashed (removable media, confidential
    /// folders).
    fn wants_hash(&self, path: &Path) -> bool {
        self.medium_of(path).is_some()
            || self
                .config
                .policy
                .current()
                .is_confidential(&path.to_string_lossy())
    }

    /// A file closed after writing: a copy, a new file or a change.
    fn written(&mut self, op: FsOp) {
        let created = self.created.remove(&op.path).is_some();
        let action = if created {
            Action::Create
        } else {
            Action::Modify
        };
        // Gone already (deleted at once): reported without size or hash.
        let Some((handle, mut file)) = op
            .handle
            .clone()
            .and_then(|h| self.source.open(&h).map(|f| (h, f)))
        else {
            let event = self.event(action, &op, None);
            self.emit(op.pid, event);
            return;
        };
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        // Candidates: what this process opened lately and did not write
        // (a file it wrote is no source), of the same size; an empty file
        // is a copy of nothing.
        let mut candidates = Vec::new();
        if let Some(p) = self.processes.get_mut(&op.pid) {
            p.opened.retain(|o| o.handle != handle);
            if size > 0 {
                candidates.extend(
                    p.opened
                        .iter()
                        .filter(|o| o.at.elapsed() < COPY_WINDOW)
                        .cloned(),
                );
            }
        }
        let mut hash = None;
        let mut source = None;
        for c in candidates.iter().rev() {
            let Some(mut src) = self.source.open(&c.handle) else {
                continue;
            };
            if src.metadata().map(|m| m.len()).ok() != Some(size) {
                continue;
            }
            if hash.is_none() {
                hash = content_hash(&mut file).ok();
            }
            let Some(h) = hash else { break };
            if content_hash(&mut src).ok() == Some(h) {
                source = Some(c.path.clone());
                break;
            }
        }
        if let Some(source) = source {
            let copy = FsOp {
                op: Op::CloseWrite,
                path: source,
                target: Some(op.path.clone()),
                pid: op.pid,
                handle: None,
            };
            let mut event = self.event(Action::Copy, &copy, hash);
            event.0.size_bytes = size;
            self.emit(op.pid, event);
            return;
        }
        if hash.is_none() && self.wants_hash(&op.path) {
            hash = match content_hash(&mut file) {
                Ok(h) => Some(h),
                // A medium pulled out in the middle of the hash: the event
                // goes without it, and says so.
                Err(e) => {
                    let why = format!("cannot hash the content: {e}");
                    self.sink.warn("files", &op.path.to_string_lossy(), &why);
                    None
                }
            };
        }
        let mut event = self.event(action, &op, hash);
        event.0.size_bytes = size;
        self.emit(op.pid, event);
    }

    /// Created files that were not written within [`CREATE_WAIT`] (or all
    /// of them): reported as created.
    fn flush_created(&mut self, all: bool) {
        let due: Vec<(PathBuf, u32)> = self
            .created
            .iter()
            .filter(|(_, (_, at))| all || at.elapsed() >= CREATE_WAIT)
            .map(|(p, (pid, _))| (p.clone(), *pid))
            .collect();
        for (path, pid) in due {
            self.created.remove(&path);
            let op = FsOp {
                op: Op::Create,
                path,
                target: None,
                pid,
                handle: None,
            };
            let event = self.event(Action::Create, &op, None);
            self.emit(pid, event);
        }
    }

    fn hash(&self, handle: Option<&Handle>) -> Option<([u8; 32], HashMethod)> {
        let mut f = self.source.open(handle?)?;
        content_hash(&mut f).ok()
    }

    /// The event for `op`: paths, process, user, medium.
    fn event(
        &mut self,
        action: Action,
        op: &FsOp,
        hash: Option<([u8; 32], HashMethod)>,
    ) -> (FileEvent, String) {
        let path = op.path.to_string_lossy().into_owned();
        let target = op
            .target
            .as_deref()
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default();
        let medium = op
            .target
            .as_deref()
            .and_then(|t| self.medium_of(t))
            .or_else(|| self.medium_of(&op.path))
            .cloned();
        let (exe, user) = self.program_and_user(op.pid);
        // A process gone before it was looked at: the file's owner.
        let user = user
            .or_else(|| {
                let p = op.target.as_deref().unwrap_or(&op.path);
                self.config.os.owner(p)
            })
            .unwrap_or_default();
        let (sha256, method) = hash.map_or((Vec::new(), HashMethod::Unspecified), |(h, m)| {
            (h.to_vec(), m)
        });
        let event = FileEvent {
            action: action as i32,
            path,
            target_path: target,
            removable_media: medium.is_some(),
            size_bytes: 0,
            process_exe_path: exe,
            pid: op.pid,
            sha256,
            hash_method: method as i32,
            medium_vendor_id: medium
                .as_ref()
                .map(|m| m.vendor_id.clone())
                .unwrap_or_default(),
            medium_product_id: medium
                .as_ref()
                .map(|m| m.product_id.clone())
                .unwrap_or_default(),
            medium_serial: medium.map(|m| m.serial).unwrap_or_default(),
            summarized: 0,
        };
        (event, user)
    }

    /// The program (from the OS, else the exec the source saw) and the
    /// user of `pid`.
    fn program_and_user(&mut self, pid: u32) -> (String, Option<String>) {
        let exe = self.config.os.program(pid);
        let user = self.config.os.user(pid);
        let exe = match exe {
            Some(e) => e,
            None => self
                .processes
                .get(&pid)
                .map(|p| p.exe.clone())
                .unwrap_or_default(),
        };
        (exe, user)
    }

    /// Sends an event, or counts it into a summary when over the rates.
    fn emit(&mut self, pid: u32, (mut event, user): (FileEvent, String)) {
        let now = Instant::now();
        if now.duration_since(self.total_window) >= Duration::from_secs(1) {
            self.total_window = now;
            self.total_events = 0;
        }
        let p = self.process(pid);
        if p.window
            .is_none_or(|w| now.duration_since(w) >= Duration::from_secs(1))
        {
            p.window = Some(now);
            p.events = 0;
        }
        p.events += 1;
        let over = p.events > PER_PROCESS_RATE;
        self.total_events += 1;
        if over || self.total_events > TOTAL_RATE {
            let entry = self
                .summary
                .counts
                .entry(event.action)
                .or_insert((0, String::new()));
            entry.0 += 1;
            entry.1 = std::mem::take(&mut event.path);
            return;
        }
        let confidential = {
            let policy = self.config.policy.current();
            policy.is_confidential(&event.path) || policy.is_confidential(&event.target_path)
        };
        let kind = Kind::File(event);
        let sent = if confidential {
            self.sink.emit_urgent(now_us(), user, kind)
        } else {
            self.sink.emit(now_us(), user, kind)
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "cannot spool a file event");
        }
    }

    /// One event per action that was over the rates, with the count.
    fn send_summaries(&mut self) {
        self.summary_at = Instant::now();
        if self.lost > 0 {
            tracing::warn!(
                lost = self.lost,
                "the OS dropped file operations (its queue overflowed)"
            );
            let entry = self
                .summary
                .counts
                .entry(Action::Modify as i32)
                .or_insert((0, String::new()));
            entry.0 = entry
                .0
                .saturating_add(u32::try_from(self.lost).unwrap_or(u32::MAX));
            self.lost = 0;
        }
        for (action, (count, path)) in std::mem::take(&mut self.summary.counts) {
            let event = FileEvent {
                action,
                path,
                summarized: count,
                ..Default::default()
            };
            if let Err(e) = self.sink.emit(now_us(), String::new(), Kind::File(event)) {
                tracing::warn!(error = %e, "cannot spool a file summary");
            }
        }
    }
}

/// SHA-256 of a file's content: whole up to [`MAX_FULL_HASH`], else of its
/// size (8 bytes, little-endian), first and last [`HEAD_TAIL`] bytes.
pub(crate) fn content_hash(file: &mut File) -> io::Result<([u8; 32], HashMethod)> {
    let size = file.metadata()?.len();
    file.seek(SeekFrom::Start(0))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let method = if size <= MAX_FULL_HASH {
        copy_into(file, &mut hasher, &mut buf, u64::MAX)?;
        HashMethod::Full
    } else {
        hasher.update(size.to_le_bytes());
        copy_into(file, &mut hasher, &mut buf, HEAD_TAIL)?;
        file.seek(SeekFrom::Start(size - HEAD_TAIL))?;
        copy_into(file, &mut hasher, &mut buf, HEAD_TAIL)?;
        HashMethod::SizeHeadTail
    };
    Ok((hasher.finalize().into(), method))
}

fn copy_into(
    file: &mut File,
    hasher: &mut Sha256,
    buf: &mut [u8],
    mut left: u64,
) -> io::Result<()> {
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests;
