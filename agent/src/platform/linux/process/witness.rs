//! The exec witness: which program each exec started, as the kernel
//! reports it with a descriptor on the executable (fanotify
//! `FAN_OPEN_EXEC`, a notification group marked on every mount; needs
//! CAP_SYS_ADMIN). A process that is gone before /proc can be read (a
//! `true` in a shell loop lives about a millisecond) still gets its
//! program's path from here.
//!
//! A thread reads the group and keeps the last program of each pid, for a
//! bounded number of pids. An exec also opens the dynamic loader for exec
//! (`ld-linux…`); that one is not the program and is skipped.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::fanotify::{EventFFlags, Fanotify, InitFlags, MarkFlags, MaskFlags};

use crate::collector::process::is_loader;

/// Pids remembered; the oldest are forgotten first.
const MAX_PIDS: usize = 16_384;
/// How often new mounts are marked besides when the mount table changes.
const REMARK_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct Seen {
    by_pid: HashMap<u32, String>,
    order: VecDeque<u32>,
}

/// The witness's thread; dropped, it stops.
#[derive(Debug)]
pub(super) struct ExecWitness {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
}

impl Drop for ExecWitness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl ExecWitness {
    /// Opens the group and starts reading it.
    pub(super) fn start() -> std::io::Result<Self> {
        let fan = Fanotify::init(
            InitFlags::FAN_CLASS_NOTIF | InitFlags::FAN_CLOEXEC | InitFlags::FAN_NONBLOCK,
            EventFFlags::O_RDONLY | EventFFlags::O_LARGEFILE | EventFFlags::O_CLOEXEC,
        )?;
        let mut marked = std::collections::HashSet::new();
        if mark_mounts(&fan, &mut marked) == 0 {
            return Err(std::io::Error::other("no mount could be watched"));
        }
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        std::thread::Builder::new()
            .name("mamori-exec-witness".into())
            .spawn({
                let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
                move || read(&fan, &mut marked, &seen, &stop)
            })?;
        Ok(Self { seen, stop })
    }

    /// The program `pid` last started, if the witness saw it.
    pub(super) fn exe_of(&self, pid: u32) -> Option<String> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_pid
            .get(&pid)
            .cloned()
    }
}

fn mark_mounts(
    fan: &Fanotify,
    marked: &mut std::collections::HashSet<std::path::PathBuf>,
) -> usize {
    crate::platform::linux::mounts::mark_new(marked, |target| {
        fan.mark(
            MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_MOUNT,
            MaskFlags::FAN_OPEN_EXEC,
            nix::fcntl::AT_FDCWD,
            Some(target),
        )
        .map_err(std::io::Error::from)
    })
}

fn read(
    fan: &Fanotify,
    marked: &mut std::collections::HashSet<std::path::PathBuf>,
    seen: &Mutex<Seen>,
    stop: &AtomicBool,
) {
    let mut remarked = Instant::now();
    let mount_watch = crate::platform::linux::mounts::MountWatch::open();
    let mut mounts_changed = false;
    while !stop.load(Ordering::Relaxed) {
        if mounts_changed || remarked.elapsed() >= REMARK_EVERY {
            if mounts_changed {
                // A mount gone takes its mark; one mounted again at the
                // same place needs a new one.
                marked.clear();
            }
            mark_mounts(fan, marked);
            remarked = Instant::now();
        }
        let mut fds = vec![PollFd::new(fan.as_fd(), PollFlags::POLLIN)];
        if let Some(w) = &mount_watch {
            fds.push(PollFd::new(w.as_fd(), PollFlags::POLLPRI));
        }
        let polled = poll(&mut fds, PollTimeout::from(1000u16));
        mounts_changed = fds
            .get(1)
            .and_then(|f| f.revents())
            .is_some_and(|r| crate::platform::linux::mounts::MountWatch::fired(r.bits()));
        let readable = fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN));
        match polled {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) if !readable => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "exec witness failed; short-lived programs may go unnamed");
                return;
            }
        }
        let Ok(events) = fan.read_events() else {
            continue;
        };
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        for event in events {
            let Some(fd) = event.fd() else { continue };
            let Ok(path) = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) else {
                continue;
            };
            let path = path.to_string_lossy().into_owned();
            let Ok(pid) = u32::try_from(event.pid()) else {
                continue;
            };
            if is_loader(&path) {
                continue;
            }
            if seen.by_pid.insert(pid, path).is_none() {
                seen.order.push_back(pid);
                if seen.order.len() > MAX_PIDS
                    && let Some(old) = seen.order.pop_front()
                {
                    seen.by_pid.remove(&old);
                }
            }
        }
    }
}
