//! The launch guard: while the policy has a `block` rule, a banned
//! executable is refused before it runs. A fanotify group (needs
//! CAP_SYS_ADMIN) asks the agent about every exec on the machine's file
//! systems (`FAN_OPEN_EXEC_PERM`); the guard answers at once — deny for a
//! name or path rule with the `block` action, allow for everything else —
//! and then records what it refused. The program's `execve` fails with
//! EPERM.
//!
//! The kernel holds every exec until it is answered, so the group exists
//! only while the policy needs it, the guard does nothing slow before
//! answering (one readlink and the compiled policy's match), and it closes
//! the group gracefully: marks removed first, every question still queued
//! allowed, then closed. Hash rules cannot be decided before the exec
//! without reading the file; they are enforced by killing at exec, like
//! `kill` rules. Without the privilege (not root, a container) `block`
//! rules kill at exec too.

use std::collections::HashSet;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mamori_proto::agent::v1::{ProcessEvent, event::Kind, process_event::Action};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::fanotify::{
    EventFFlags, Fanotify, FanotifyEvent, FanotifyResponse, InitFlags, MarkFlags, MaskFlags,
    Response,
};

use super::procfs::Procfs;
use crate::clock::now_us;
use crate::collector::EventSink;
use crate::platform::linux::users::Users;
use crate::policy::PolicyState;

/// How often new mounts are looked for (a USB stick, a network share).
const REMARK_EVERY: Duration = Duration::from_secs(5);
/// How often the policy and the stop flag are looked at.
const TICK: Duration = Duration::from_millis(250);

/// The guard's thread. Dropping this (the process collector stopping)
/// makes it close its group gracefully and end.
#[derive(Debug)]
pub(super) struct LaunchGuard {
    stop: Arc<AtomicBool>,
}

impl Drop for LaunchGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Starts the guard's thread; it opens a group whenever the policy blocks
/// launches.
pub(super) fn start(policy: Arc<PolicyState>, sink: EventSink) -> std::io::Result<LaunchGuard> {
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::Builder::new()
        .name("mamori-launch-guard".into())
        .spawn({
            let stop = Arc::clone(&stop);
            move || supervise(&policy, &sink, &stop)
        })?;
    Ok(LaunchGuard { stop })
}

/// An open group and the mounts it watches.
struct Group {
    fan: Fanotify,
    marked: HashSet<PathBuf>,
    marked_at: Instant,
    /// The mount table: a medium mounted is marked at once, and one
    /// mounted again where another was is marked again.
    mount_watch: Option<crate::platform::linux::mounts::MountWatch>,
}

fn supervise(policy: &PolicyState, sink: &EventSink, stop: &AtomicBool) {
    let mut group: Option<Group> = None;
    // The revision a group could not be opened for (not retried until the
    // policy changes).
    let mut failed_for = None;
    let procfs = Procfs::default();
    let mut users = Users::new("/etc/passwd");
    while !stop.load(Ordering::Relaxed) {
        let current = policy.current();
        let wanted = current.blocks_launches();
        if wanted && group.is_none() && failed_for != Some(current.revision) {
            match open() {
                Ok(g) => {
                    tracing::info!(
                        mounts = g.marked.len(),
                        "launch guard on: blocked apps are refused before they run"
                    );
                    group = Some(g);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "launch guard unavailable (fanotify needs root): apps with a block rule are killed at exec instead");
                    failed_for = Some(current.revision);
                }
            }
        } else if !wanted && let Some(g) = group.take() {
            close(g);
            tracing::info!("launch guard off: the policy blocks no app");
        }
        let Some(g) = group.as_mut() else {
            std::thread::sleep(TICK);
            continue;
        };
        if g.marked_at.elapsed() >= REMARK_EVERY {
            mark_mounts(&g.fan, &mut g.marked);
            g.marked_at = Instant::now();
        }
        let mut fds = vec![PollFd::new(g.fan.as_fd(), PollFlags::POLLIN)];
        if let Some(w) = &g.mount_watch {
            fds.push(PollFd::new(w.as_fd(), PollFlags::POLLPRI));
        }
        let polled = poll(&mut fds, PollTimeout::from(TICK.as_millis() as u16));
        let mounts_changed = fds
            .get(1)
            .and_then(|f| f.revents())
            .is_some_and(|r| crate::platform::linux::mounts::MountWatch::fired(r.bits()));
        let readable = fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN));
        drop(fds);
        if mounts_changed {
            g.marked.clear();
            mark_mounts(&g.fan, &mut g.marked);
            g.marked_at = Instant::now();
        }
        match polled {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) if !readable && !stop.load(Ordering::Relaxed) => continue,
            // Stopping: the question is allowed by the graceful close.
            Ok(_) if stop.load(Ordering::Relaxed) => break,
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "launch guard failed; blocked apps are killed at exec");
                failed_for = Some(current.revision);
                if let Some(g) = group.take() {
                    close(g);
                }
                continue;
            }
        }
        let events = match g.fan.read_events() {
            Ok(events) => events,
            Err(_) => continue,
        };
        for event in events {
            if let Some((path, verdict_reason, revision)) = answer(&g.fan, &event, policy) {
                record(
                    &procfs,
                    &mut users,
                    sink,
                    &event,
                    path,
                    verdict_reason,
                    revision,
                );
            }
        }
    }
    if let Some(g) = group {
        close(g);
    }
}

fn open() -> std::io::Result<Group> {
    let fan = Fanotify::init(
        InitFlags::FAN_CLASS_CONTENT | InitFlags::FAN_CLOEXEC | InitFlags::FAN_NONBLOCK,
        EventFFlags::O_RDONLY | EventFFlags::O_LARGEFILE | EventFFlags::O_CLOEXEC,
    )?;
    let mut marked = HashSet::new();
    if mark_mounts(&fan, &mut marked) == 0 {
        return Err(std::io::Error::other("no mount could be watched"));
    }
    Ok(Group {
        fan,
        marked,
        marked_at: Instant::now(),
        mount_watch: crate::platform::linux::mounts::MountWatch::open(),
    })
}

/// Stops asking (marks removed), allows whatever is still queued, closes.
fn close(g: Group) {
    let _ = g.fan.mark(
        MarkFlags::FAN_MARK_FLUSH | MarkFlags::FAN_MARK_MOUNT,
        MaskFlags::empty(),
        nix::fcntl::AT_FDCWD,
        None::<&str>,
    );
    while let Ok(events) = g.fan.read_events() {
        if events.is_empty() {
            break;
        }
        for event in events {
            if let Some(fd) = event.fd() {
                let _ = g
                    .fan
                    .write_response(FanotifyResponse::new(fd.as_fd(), Response::FAN_ALLOW));
            }
        }
    }
}

/// Answers one question at once; returns what was refused.
fn answer(
    fan: &Fanotify,
    event: &FanotifyEvent,
    policy: &PolicyState,
) -> Option<(String, String, u64)> {
    let fd = event.fd()?;
    let current = policy.current();
    let refused = if event.check_version() && current.blocks_launches() {
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
            .and_then(|path| current.check_launch(&path).map(|v| (path, v)))
    } else {
        None
    };
    let response = if refused.is_some() {
        Response::FAN_DENY
    } else {
        Response::FAN_ALLOW
    };
    if let Err(e) = fan.write_response(FanotifyResponse::new(fd.as_fd(), response)) {
        tracing::warn!(error = %e, "cannot answer an exec question");
    }
    refused.map(|(path, v)| (path, v.reason, v.revision))
}

/// The event for a refused launch.
fn record(
    procfs: &Procfs,
    users: &mut Users,
    sink: &EventSink,
    event: &FanotifyEvent,
    path: String,
    reason: String,
    revision: u64,
) {
    // The process that tried: still running its old image.
    let pid = event.pid().max(0) as u32;
    let info = procfs.inspect(pid);
    let os_user = info.uid.map(|u| users.name(u)).unwrap_or_default();
    tracing::info!(pid, exe = %path, %reason, "banned app refused before launch");
    let blocked = ProcessEvent {
        action: Action::Blocked as i32,
        pid,
        parent_pid: info.ppid,
        exe_path: path,
        parent_exe_path: info.exe_path,
        uid: info.uid.unwrap_or(0),
        blocked_reason: format!("{reason}: blocked before launch"),
        policy_revision: revision,
        ..Default::default()
    };
    if let Err(e) = sink.emit(now_us(), os_user, Kind::Process(blocked)) {
        tracing::warn!(error = %e, "blocked launch not spooled");
    }
}

/// Marks every mount of a real file system not marked yet; returns how many
/// are marked in all.
fn mark_mounts(fan: &Fanotify, marked: &mut HashSet<PathBuf>) -> usize {
    crate::platform::linux::mounts::mark_new(marked, |target| {
        fan.mark(
            MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_MOUNT,
            MaskFlags::FAN_OPEN_EXEC_PERM,
            nix::fcntl::AT_FDCWD,
            Some(target),
        )
        .map_err(std::io::Error::from)
    })
}
