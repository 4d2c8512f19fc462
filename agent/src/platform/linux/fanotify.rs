//! The Linux source of file operations: one fanotify group reporting file
//! handles and names (`FAN_REPORT_DFID_NAME | FAN_REPORT_FID`, which needs
//! CAP_SYS_ADMIN), marked on the file systems of the watched directories.
//!
//! Each event names the object's directory by handle plus its name, and
//! the object itself by handle. Directory handles are turned into paths
//! with `open_by_handle_at` when the event is read (no cache: a renamed
//! directory would make a cached path wrong, and the three system calls
//! cost a few microseconds). The object's handle is kept so that its
//! content can be read later, wherever it has been renamed to by then.
//!
//! A file-system mark sees the whole file system; the collector drops what
//! is outside its watched directories. Execs (`FAN_OPEN_EXEC`) are marked
//! on every mount, so an operation by a process that has already exited
//! (a `cp` of a small file) still names its program.
//!
//! fanotify's FID records and `open_by_handle_at` have no safe binding, so
//! this module calls libc; each unsafe block says why it is sound.

#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::collector::files::{FileSource, FsOp, Handle, Op};

/// The events the group asks for on watched file systems.
const FS_MASK: u64 = libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_RENAME
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_CLOSE_NOWRITE
    | libc::FAN_OPEN;

/// One fanotify group.
#[derive(Debug)]
pub(crate) struct Fanotify {
    fd: OwnedFd,
    /// A directory on each file system events come from (watched, or
    /// marked for execs), by fsid: opened for `open_by_handle_at` when
    /// needed, never kept open (a descriptor would keep a USB stick from
    /// being unmounted).
    mounts: HashMap<[u8; 8], PathBuf>,
    /// Whether every mount is marked for execs for the current scope.
    execs_marked: bool,
    /// The watched directories: a file-system mark sees the whole file
    /// system, and what happens elsewhere is dropped here, before any
    /// allocation.
    scope: Vec<PathBuf>,
    /// Directory handles resolved lately (in the scope or not: an exec is
    /// reported wherever it is): the path, or `None` when gone.
    /// Emptied every [`DIR_TTL`] and with every new scope, so a directory
    /// renamed in or out of the scope is misjudged for 2 s at most; on a
    /// busy file system this saves three system calls per event.
    dirs: DirCache,
    dirs_since: std::time::Instant,
    /// The mount table, polled beside the group: a medium mounted is
    /// watched at once, and nothing is re-marked while nothing changes.
    mount_watch: Option<crate::platform::linux::mounts::MountWatch>,
    mounts_changed: bool,
    buf: Vec<u8>,
}

impl Fanotify {
    pub(crate) fn open() -> io::Result<Self> {
        // SAFETY: plain system call; the result is checked.
        let fd = unsafe {
            libc::fanotify_init(
                libc::FAN_CLASS_NOTIF
                    | libc::FAN_CLOEXEC
                    | libc::FAN_NONBLOCK
                    | libc::FAN_REPORT_DFID_NAME
                    | libc::FAN_REPORT_FID,
                (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as u32,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            // SAFETY: a fresh descriptor this value now owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            mounts: HashMap::new(),
            execs_marked: false,
            scope: Vec::new(),
            dirs: DirCache::default(),
            dirs_since: std::time::Instant::now(),
            mount_watch: crate::platform::linux::mounts::MountWatch::open(),
            mounts_changed: false,
            buf: vec![0; 64 * 1024],
        })
    }

    fn mark(&self, flags: libc::c_uint, mask: u64, path: &Path) -> io::Result<()> {
        let c = c_path(path)?;
        // SAFETY: valid descriptor and C string; the result is checked.
        let r = unsafe {
            libc::fanotify_mark(
                self.fd.as_raw_fd(),
                libc::FAN_MARK_ADD | flags,
                mask,
                libc::AT_FDCWD,
                c.as_ptr(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Marks every real mount for execs, once per new scope (a mark goes
    /// with its mount; adding one again changes nothing).
    fn mark_execs(&mut self) {
        if self.execs_marked {
            return;
        }
        self.execs_marked = true;
        let mut marked = std::collections::HashSet::new();
        crate::platform::linux::mounts::mark_new(&mut marked, |target| {
            self.mark(libc::FAN_MARK_MOUNT, libc::FAN_OPEN_EXEC, target)
        });
        for target in &marked {
            self.remember_mount(target);
        }
    }

    /// Whether `dir` is in or below a watched directory.
    fn in_scope(&self, dir: &Path) -> bool {
        self.scope.iter().any(|d| dir.starts_with(d))
    }

    /// Remembers a directory on the file system `dir` is on, for
    /// resolving handles from it.
    fn remember_mount(&mut self, dir: &Path) {
        if let Ok(fsid) = fsid_of(dir) {
            self.mounts.insert(fsid, dir.to_owned());
        }
    }

    /// A descriptor on the file system `fsid`, for `open_by_handle_at`
    /// (which refuses an O_PATH one).
    fn mount_fd(&self, fsid: &[u8; 8]) -> Option<OwnedFd> {
        let dir = self.mounts.get(fsid)?;
        let c = c_path(dir).ok()?;
        // SAFETY: valid C string; the result is checked.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        // SAFETY: a fresh descriptor on success.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Resolves a handle on the file system of `mount` with `flags`.
    fn open_handle(mount: &OwnedFd, handle: &[u8], flags: i32) -> Option<OwnedFd> {
        // struct file_handle: handle_bytes (u32), handle_type (i32), bytes.
        if handle.len() < 8 {
            return None;
        }
        let mut owned = handle.to_vec();
        // SAFETY: `owned` holds a whole `struct file_handle` as the kernel
        // wrote it (length checked against handle_bytes by the reader), and
        // the kernel only reads it.
        let fd = unsafe {
            libc::open_by_handle_at(
                mount.as_raw_fd(),
                owned.as_mut_ptr().cast::<libc::file_handle>(),
                flags | libc::O_CLOEXEC,
            )
        };
        // SAFETY: a fresh descriptor on success.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// The path of the directory `handle` names, now.
    fn dir_path(mount: &OwnedFd, handle: &[u8]) -> Option<PathBuf> {
        let fd = Self::open_handle(mount, handle, libc::O_PATH)?;
        fd_path(fd.as_raw_fd())
    }
}

fn fd_path(fd: RawFd) -> Option<PathBuf> {
    let p = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    // A deleted directory reads as "/x (deleted)": nothing to report under.
    (!p.as_os_str().as_bytes().ends_with(b" (deleted)")).then_some(p)
}

/// Directories by file system and handle.
type DirCache = HashMap<([u8; 8], Vec<u8>), Option<PathBuf>>;
/// Directories cached at most.
const MAX_CACHED_DIRS: usize = 8192;
/// How long a resolved directory is trusted.
const DIR_TTL: Duration = Duration::from_secs(2);

/// `path` for a system call.
fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::other("path has a NUL byte"))
}

/// The fsid of the file system `path` is on, as fanotify reports it.
fn fsid_of(path: &Path) -> io::Result<[u8; 8]> {
    let c = c_path(path)?;
    // SAFETY: zeroed plain-data struct filled by the kernel; checked.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fsid_t is two C ints, 8 bytes of plain data.
    Ok(unsafe { std::ptr::read_unaligned(std::ptr::addr_of!(st.f_fsid).cast::<[u8; 8]>()) })
}

/// One FID record of an event: the file system, the handle (as a whole
/// `struct file_handle`) and, for directory records, the name in it.
struct Fid<'a> {
    fsid: [u8; 8],
    handle: &'a [u8],
    name: &'a [u8],
}

fn parse_fid(record: &[u8]) -> Option<Fid<'_>> {
    // header (4) + fsid (8) + handle_bytes (4) + handle_type (4) + bytes.
    let fsid: [u8; 8] = record.get(4..12)?.try_into().ok()?;
    let handle_bytes = u32::from_ne_bytes(record.get(12..16)?.try_into().ok()?) as usize;
    let handle = record.get(12..20 + handle_bytes)?;
    let rest = &record[20 + handle_bytes..];
    let name = rest.split(|&b| b == 0).next().unwrap_or(&[]);
    Some(Fid { fsid, handle, name })
}

impl FileSource for Fanotify {
    fn set_scope(&mut self, dirs: &[PathBuf]) {
        self.scope = dirs.to_vec();
        self.dirs.clear();
        self.dirs_since = std::time::Instant::now();
        self.execs_marked = false;
    }

    fn take_mounts_changed(&mut self) -> bool {
        std::mem::take(&mut self.mounts_changed)
    }

    fn watch(&mut self, dir: &Path) -> io::Result<()> {
        // Marked again each time: a mark goes when its file system is
        // unmounted, and a stick mounted again must be watched again.
        self.mark(libc::FAN_MARK_FILESYSTEM, FS_MASK, dir)?;
        self.remember_mount(dir);
        self.mark_execs();
        Ok(())
    }

    fn read(&mut self, timeout: Duration, out: &mut Vec<FsOp>) -> io::Result<u64> {
        use std::os::fd::AsFd;
        let entry = |fd: RawFd, events: i16| libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        let mut pfds = [
            entry(self.fd.as_raw_fd(), libc::POLLIN),
            // A negative descriptor is skipped by poll.
            entry(
                self.mount_watch
                    .as_ref()
                    .map_or(-1, |w| w.as_fd().as_raw_fd()),
                libc::POLLPRI,
            ),
        ];
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: two valid pollfds.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), 2, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(0)
            } else {
                Err(e)
            };
        }
        if crate::platform::linux::mounts::MountWatch::fired(pfds[1].revents) {
            self.mounts_changed = true;
        }
        if pfds[0].revents & libc::POLLIN == 0 {
            return Ok(0);
        }
        if self.dirs_since.elapsed() >= DIR_TTL {
            self.dirs.clear();
            self.dirs_since = std::time::Instant::now();
        }
        let mut lost = 0;
        // Drain what is queued, a buffer at a time, up to a bound per call
        // so the caller gets to its other work.
        for _ in 0..16 {
            // SAFETY: reading into our own buffer.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted {
                    break;
                }
                return Err(e);
            }
            if n == 0 {
                break;
            }
            let buf = std::mem::take(&mut self.buf);
            let mut dirs = std::mem::take(&mut self.dirs);
            lost += self.parse(&buf[..n as usize], out, &mut dirs);
            self.dirs = dirs;
            self.buf = buf;
        }
        Ok(lost)
    }

    fn open(&self, handle: &Handle) -> Option<File> {
        let mount = self.mount_fd(&handle.fsid)?;
        let fd = Self::open_handle(&mount, &handle.bytes, libc::O_RDONLY)?;
        Some(File::from(fd))
    }
}

impl Fanotify {
    /// Turns a buffer of events into operations; returns how many were
    /// lost to a queue overflow.
    fn parse(&self, mut buf: &[u8], out: &mut Vec<FsOp>, dirs: &mut DirCache) -> u64 {
        const META: usize = std::mem::size_of::<libc::fanotify_event_metadata>();
        let mut lost = 0;
        // The file systems' descriptors, open for this buffer only.
        let mut mounts: HashMap<[u8; 8], Option<OwnedFd>> = HashMap::new();
        // The path of a record, if it is in scope (`any`: wherever it is).
        // `any`: wherever it is (an exec); `fresh`: resolved now, not from
        // the cache (a rename's two sides: a directory renamed meanwhile
        // must not send the file trace down the old path).
        let mut path_of = |f: &Fid<'_>, any: bool, fresh: bool| {
            let key = (f.fsid, f.handle.to_vec());
            let dir = match dirs.get(&key).filter(|_| !fresh) {
                Some(d) => d.clone(),
                None => {
                    let mount = mounts
                        .entry(f.fsid)
                        .or_insert_with(|| self.mount_fd(&f.fsid))
                        .as_ref()?;
                    let dir = Self::dir_path(mount, f.handle);
                    if dirs.len() >= MAX_CACHED_DIRS {
                        dirs.clear();
                    }
                    dirs.insert(key, dir.clone());
                    dir
                }
            }?;
            if !any && !self.in_scope(&dir) {
                return None;
            }
            Some(dir.join(OsStr::from_bytes(f.name)))
        };
        while buf.len() >= META {
            // SAFETY: at least META bytes; read unaligned as plain data.
            let meta: libc::fanotify_event_metadata =
                unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
            let len = meta.event_len as usize;
            if len < META || len > buf.len() {
                break;
            }
            let (event, rest) = buf.split_at(len);
            buf = rest;
            if meta.fd >= 0 {
                // Not expected in FID mode; never leak one.
                // SAFETY: the kernel gave us this descriptor.
                drop(unsafe { OwnedFd::from_raw_fd(meta.fd) });
            }
            if meta.mask & libc::FAN_Q_OVERFLOW != 0 {
                lost += 1;
                continue;
            }
            let mut info = &event[(meta.metadata_len as usize).min(len)..];
            let (mut dir, mut old, mut new, mut object) = (None, None, None, None);
            while info.len() >= 4 {
                let kind = info[0];
                let rlen = u16::from_ne_bytes([info[2], info[3]]) as usize;
                if rlen < 4 || rlen > info.len() {
                    break;
                }
                let record = &info[..rlen];
                info = &info[rlen..];
                let fid = parse_fid(record);
                match kind {
                    libc::FAN_EVENT_INFO_TYPE_DFID_NAME => dir = fid,
                    libc::FAN_EVENT_INFO_TYPE_OLD_DFID_NAME => old = fid,
                    libc::FAN_EVENT_INFO_TYPE_NEW_DFID_NAME => new = fid,
                    libc::FAN_EVENT_INFO_TYPE_FID => object = fid,
                    _ => {}
                }
            }
            let pid = u32::try_from(meta.pid).unwrap_or(0);
            let handle = object.as_ref().map(|f| Handle {
                fsid: f.fsid,
                bytes: f.handle.to_vec(),
            });
            if meta.mask & libc::FAN_RENAME != 0 {
                let (Some(from), Some(to)) = (old.as_ref(), new.as_ref()) else {
                    continue;
                };
                let (Some(from), Some(to)) = (path_of(from, true, true), path_of(to, true, true))
                else {
                    continue;
                };
                out.push(FsOp {
                    op: Op::Rename,
                    path: from,
                    target: Some(to),
                    pid,
                    handle: handle.clone(),
                });
            }
            // Events of one object queued together are merged into one
            // mask: each is an operation, in the order they happen.
            const ORDER: [(u64, Op); 6] = [
                (libc::FAN_OPEN_EXEC, Op::Exec),
                (libc::FAN_CREATE, Op::Create),
                (libc::FAN_OPEN, Op::Open),
                (libc::FAN_CLOSE_WRITE, Op::CloseWrite),
                (libc::FAN_CLOSE_NOWRITE, Op::CloseRead),
                (libc::FAN_DELETE, Op::Delete),
            ];
            if meta.mask & ORDER.iter().fold(0, |m, (bit, _)| m | bit) == 0 {
                continue;
            }
            let exec = meta.mask & libc::FAN_OPEN_EXEC != 0;
            let Some(path) = dir.as_ref().and_then(|d| path_of(d, exec, false)) else {
                continue;
            };
            for (bit, op) in ORDER {
                // An exec also reports an open: the exec says it all.
                if meta.mask & bit == 0 || (op == Op::Open && meta.mask & libc::FAN_OPEN_EXEC != 0)
                {
                    continue;
                }
                out.push(FsOp {
                    op,
                    path: path.clone(),
                    target: None,
                    pid,
                    handle: handle.clone(),
                });
            }
        }
        lost
    }
}
