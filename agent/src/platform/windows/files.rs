//! Windows's source of file operations: `ReadDirectoryChangesW` on each
//! watched directory (with its subtree), overlapped, all waited for on the
//! file collector's thread.
//!
//! It reports names, not processes: every operation comes with pid 0, so
//! the event's user is the file's owner and its program is empty, and a
//! copy cannot be told from a new file (that needs the reads, which only
//! ETW's FileIo provider or a minifilter sees). A write shows up as one or
//! more "modified" notifications; one [`SETTLE`] after the last, the file
//! counts as written (closed after writing, for the collector), and a file
//! written without pause (a log) counts as written every [`SETTLE_MAX`].

#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::c_void;
use std::fs::File;
use std::io;
use std::os::windows::io::{AsRawHandle, OwnedHandle};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{
    ERROR_IO_INCOMPLETE, ERROR_NOTIFY_ENUM_DIR, ERROR_OPERATION_ABORTED, HANDLE, WAIT_FAILED,
    WAIT_TIMEOUT,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_ACTION_ADDED, FILE_ACTION_MODIFIED, FILE_ACTION_REMOVED,
    FILE_ACTION_RENAMED_NEW_NAME, FILE_ACTION_RENAMED_OLD_NAME, FILE_FLAG_BACKUP_SEMANTICS,
    FILE_FLAG_OVERLAPPED, FILE_LIST_DIRECTORY, FILE_NOTIFY_CHANGE_DIR_NAME,
    FILE_NOTIFY_CHANGE_FILE_NAME, FILE_NOTIFY_CHANGE_LAST_WRITE, FILE_NOTIFY_CHANGE_SIZE,
    FILE_NOTIFY_INFORMATION, FILE_SHARE_DELETE, FILE_SHARE_READ, FILE_SHARE_WRITE, OPEN_EXISTING,
    ReadDirectoryChangesW,
};
use windows_sys::Win32::System::IO::{CancelIoEx, GetOverlappedResult, OVERLAPPED};
use windows_sys::Win32::System::Threading::{CreateEventW, WaitForMultipleObjects};

use super::win::{owned, wide_path};
use crate::collector::files::{FileSource, FsOp, Handle, Op};

/// How long after its last change a file counts as written.
pub(crate) const SETTLE: Duration = Duration::from_millis(500);
/// How long after its first unreported change, at most.
pub(crate) const SETTLE_MAX: Duration = Duration::from_secs(5);
/// Notification buffer per directory (what the OS keeps between reads;
/// past it, notifications are lost and counted).
const BUF_BYTES: usize = 64 * 1024;
/// Watches at once (`WaitForMultipleObjects` takes 64 handles).
const MAX_WATCHES: usize = 64;

/// One watched directory with its read in flight.
struct Watch {
    dir: PathBuf,
    handle: OwnedHandle,
    event: OwnedHandle,
    overlapped: Box<OVERLAPPED>,
    buf: Box<[u64]>,
    /// The next read could not be started: the watch ends once the notes
    /// already read are handed on.
    broken: Option<io::Error>,
}

// SAFETY: the OVERLAPPED's pointer is this watch's own event handle, and
// the buffer is owned: nothing ties a watch to the thread that made it
// (the source is made on the runtime and moved to the collector's thread).
unsafe impl Send for Watch {}

impl Watch {
    fn open(dir: &Path) -> io::Result<Self> {
        let path = wide_path(dir);
        // SAFETY: NUL-terminated path; the handle is owned below.
        let h = unsafe {
            CreateFileW(
                path.as_ptr(),
                FILE_LIST_DIRECTORY,
                FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                std::ptr::null(),
                OPEN_EXISTING,
                FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OVERLAPPED,
                std::ptr::null_mut(),
            )
        };
        let handle = owned(h).ok_or_else(io::Error::last_os_error)?;
        // SAFETY: a manual-reset event, unnamed; owned below.
        let ev = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
        let event = owned(ev).ok_or_else(io::Error::last_os_error)?;
        let mut w = Watch {
            dir: dir.to_owned(),
            handle,
            event,
            // SAFETY: all-zero is a valid OVERLAPPED.
            overlapped: Box::new(unsafe { std::mem::zeroed() }),
            buf: vec![0u64; BUF_BYTES / 8].into_boxed_slice(),
            broken: None,
        };
        w.issue()?;
        Ok(w)
    }

    /// Starts the next read.
    fn issue(&mut self) -> io::Result<()> {
        self.overlapped.hEvent = self.event.as_raw_handle() as HANDLE;
        // SAFETY: the buffer (DWORD-aligned) and the OVERLAPPED are boxed
        // and live as long as the watch, whose drop cancels the read and
        // waits for it before they are freed.
        let ok = unsafe {
            ReadDirectoryChangesW(
                self.handle.as_raw_handle() as HANDLE,
                self.buf.as_mut_ptr().cast::<c_void>(),
                BUF_BYTES as u32,
                1,
                FILE_NOTIFY_CHANGE_FILE_NAME
                    | FILE_NOTIFY_CHANGE_DIR_NAME
                    | FILE_NOTIFY_CHANGE_LAST_WRITE
                    | FILE_NOTIFY_CHANGE_SIZE,
                std::ptr::null_mut(),
                &mut *self.overlapped,
                None,
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The notifications of a completed read (`None`: the buffer
    /// overflowed and they were lost), and the next read started.
    fn take(&mut self) -> io::Result<Option<Vec<(u32, PathBuf)>>> {
        let mut bytes = 0u32;
        // SAFETY: the read this OVERLAPPED belongs to was issued on this
        // handle.
        let ok = unsafe {
            GetOverlappedResult(
                self.handle.as_raw_handle() as HANDLE,
                &*self.overlapped,
                &mut bytes,
                0,
            )
        };
        if ok == 0 {
            let e = io::Error::last_os_error();
            // The changes did not fit the buffer: they are lost, the
            // watch goes on.
            if e.raw_os_error() != Some(ERROR_NOTIFY_ENUM_DIR as i32) {
                return Err(e);
            }
            bytes = 0;
        }
        // SAFETY: the read completed: `bytes` bytes of the buffer hold
        // FILE_NOTIFY_INFORMATION records, viewed as bytes.
        let raw =
            unsafe { std::slice::from_raw_parts(self.buf.as_ptr().cast::<u8>(), bytes as usize) };
        let parsed = (bytes > 0).then(|| parse(raw, &self.dir));
        // What was read is handed on even when the next read cannot start.
        if let Err(e) = self.issue() {
            self.broken = Some(e);
        }
        Ok(parsed)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let h = self.handle.as_raw_handle() as HANDLE;
        let mut bytes = 0;
        // SAFETY: cancels this watch's read and waits for it to end, so
        // the kernel no longer writes into the buffer being freed.
        unsafe {
            CancelIoEx(h, &*self.overlapped);
            GetOverlappedResult(h, &*self.overlapped, &mut bytes, 1);
        }
    }
}

/// FILE_NOTIFY_INFORMATION records: (action, path below `dir`).
pub(crate) fn parse(raw: &[u8], dir: &Path) -> Vec<(u32, PathBuf)> {
    let mut out = Vec::new();
    let mut at = 0usize;
    let header = std::mem::offset_of!(FILE_NOTIFY_INFORMATION, FileName);
    while at + header <= raw.len() {
        let u32_at =
            |o: usize| u32::from_le_bytes(raw[at + o..at + o + 4].try_into().unwrap_or([0; 4]));
        let next = u32_at(0) as usize;
        let action = u32_at(4);
        let name_bytes = u32_at(8) as usize;
        let name_end = at + header + name_bytes;
        if name_end > raw.len() {
            break;
        }
        let name: Vec<u16> = raw[at + header..name_end]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        out.push((action, dir.join(String::from_utf16_lossy(&name))));
        if next == 0 {
            break;
        }
        at += next;
    }
    out
}

/// Turns notifications into raw operations: renames paired, changes
/// settled.
#[derive(Debug, Default)]
pub(crate) struct Pairing {
    old_name: Option<PathBuf>,
    /// Changed files not yet reported: their first and last change.
    changed: HashMap<PathBuf, (Instant, Instant)>,
}

impl Pairing {
    pub(crate) fn push(&mut self, action: u32, path: PathBuf, now: Instant, out: &mut Vec<FsOp>) {
        tracing::trace!(action, path = %path.display(), "directory change");
        let op = |op: Op, path: PathBuf, target: Option<PathBuf>| FsOp {
            handle: Some(handle_of(target.as_ref().unwrap_or(&path))),
            op,
            path,
            target,
            pid: 0,
        };
        // An old name with no new one (moved out of the watched tree
        // between two notes): it is gone from here.
        if action != FILE_ACTION_RENAMED_NEW_NAME
            && let Some(old) = self.old_name.take()
        {
            self.changed.remove(&old);
            out.push(op(Op::Delete, old, None));
        }
        match action {
            // A new directory is no file operation (fanotify does not
            // report them on Linux either).
            FILE_ACTION_ADDED if path.is_dir() => {}
            FILE_ACTION_ADDED => out.push(op(Op::Create, path, None)),
            FILE_ACTION_REMOVED => {
                self.changed.remove(&path);
                out.push(op(Op::Delete, path, None));
            }
            FILE_ACTION_MODIFIED => {
                self.changed.entry(path).or_insert((now, now)).1 = now;
            }
            FILE_ACTION_RENAMED_OLD_NAME => self.old_name = Some(path),
            FILE_ACTION_RENAMED_NEW_NAME => {
                if let Some(old) = self.old_name.take() {
                    // A change not yet settled belongs to the new name.
                    if let Some(at) = self.changed.remove(&old) {
                        self.changed.insert(path.clone(), at);
                    }
                    out.push(op(Op::Rename, old, Some(path)));
                } else {
                    out.push(op(Op::Create, path, None));
                }
            }
            _ => {}
        }
    }

    /// The changed files that settled (all of them with `all`), as writes.
    pub(crate) fn settle(&mut self, now: Instant, all: bool, out: &mut Vec<FsOp>) {
        let due: Vec<PathBuf> = self
            .changed
            .iter()
            .filter(|(_, (first, last))| {
                all || now.duration_since(*last) >= SETTLE
                    || now.duration_since(*first) >= SETTLE_MAX
            })
            .map(|(p, _)| p.clone())
            .collect();
        for path in due {
            self.changed.remove(&path);
            if path.is_dir() {
                continue; // A directory's listing changed: not a file write.
            }
            out.push(FsOp {
                handle: Some(handle_of(&path)),
                op: Op::CloseWrite,
                path,
                target: None,
                pid: 0,
            });
        }
    }
}

/// Windows files are read by path (a handle kept open would get in the
/// user's way: a file open without delete sharing cannot be deleted).
pub(crate) fn handle_of(path: &Path) -> Handle {
    Handle {
        fsid: [0; 8],
        bytes: path.to_string_lossy().as_bytes().to_vec(),
    }
}

/// Opens the file a [`handle_of`] names, for reading.
pub(crate) fn open_by_path(handle: &Handle) -> Option<File> {
    let path = std::str::from_utf8(&handle.bytes).ok()?;
    File::open(path).ok()
}

/// Whether `path` is `dir` or below it, as Windows compares paths
/// (regardless of case).
pub(crate) fn within(path: &Path, dir: &Path) -> bool {
    let lower = |p: &Path| PathBuf::from(p.to_string_lossy().to_lowercase());
    lower(path).starts_with(lower(dir))
}

/// The source: the watches and the pairing.
#[derive(Default)]
pub(crate) struct DirectoryChanges {
    watches: Vec<Watch>,
    scope: Vec<PathBuf>,
    pairing: Pairing,
    /// Why this source stands in for the ETW one.
    degraded: Option<String>,
}

impl DirectoryChanges {
    #[cfg(test)]
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The source used when ETW's is not (`why`): the degraded mode.
    pub(crate) fn instead_of_etw(why: String) -> Self {
        DirectoryChanges {
            degraded: Some(format!(
                "ReadDirectoryChangesW: no processes, opens or copies ({why})"
            )),
            ..Self::default()
        }
    }
}

impl FileSource for DirectoryChanges {
    fn set_scope(&mut self, dirs: &[PathBuf]) {
        self.scope = dirs.to_vec();
        // Directories no longer in the scope are let go (a removed USB
        // drive's watch would fail anyway).
        self.watches
            .retain(|w| dirs.iter().any(|d| within(d, &w.dir) && within(&w.dir, d)));
    }

    fn watch(&mut self, dir: &Path) -> io::Result<()> {
        // A directory inside a watched one is seen already (subtrees).
        if self.watches.iter().any(|w| within(dir, &w.dir)) {
            return Ok(());
        }
        if self.watches.len() >= MAX_WATCHES {
            return Err(io::Error::other(format!(
                "more than {MAX_WATCHES} watched directories"
            )));
        }
        let w = Watch::open(dir)?;
        // Watches inside the new one are redundant now.
        self.watches.retain(|old| !within(&old.dir, dir));
        self.watches.push(w);
        Ok(())
    }

    fn read(&mut self, timeout: Duration, out: &mut Vec<FsOp>) -> io::Result<u64> {
        let mut lost = 0;
        if self.watches.is_empty() {
            std::thread::sleep(timeout.min(SETTLE));
        } else {
            let events: Vec<HANDLE> = self
                .watches
                .iter()
                .map(|w| w.event.as_raw_handle() as HANDLE)
                .collect();
            let wait = timeout.min(SETTLE).as_millis() as u32;
            // SAFETY: the handles are valid events owned by the watches.
            let r =
                unsafe { WaitForMultipleObjects(events.len() as u32, events.as_ptr(), 0, wait) };
            if r == WAIT_FAILED {
                return Err(io::Error::last_os_error());
            }
            if r != WAIT_TIMEOUT {
                let now = Instant::now();
                let mut failed = Vec::new();
                // Every watch whose read completed, not only the first.
                for (i, w) in self.watches.iter_mut().enumerate() {
                    match w.take() {
                        Ok(Some(notes)) => {
                            for (action, path) in notes {
                                self.pairing.push(action, path, now, out);
                            }
                        }
                        Ok(None) => lost += 1,
                        Err(e) if e.raw_os_error() == Some(ERROR_IO_INCOMPLETE as i32) => {}
                        Err(e) if e.raw_os_error() == Some(ERROR_OPERATION_ABORTED as i32) => {
                            failed.push(i)
                        }
                        Err(e) => {
                            tracing::warn!(dir = %w.dir.display(), error = %e, "watching file operations failed");
                            failed.push(i);
                        }
                    }
                    if let Some(e) = w.broken.take() {
                        tracing::warn!(dir = %w.dir.display(), error = %e, "watching file operations failed");
                        failed.push(i);
                    }
                }
                // A directory deleted or a drive removed: let it go; the
                // collector watches it again when it is back.
                for i in failed.into_iter().rev() {
                    self.watches.remove(i);
                }
            }
        }
        self.pairing.settle(Instant::now(), false, out);
        Ok(lost)
    }

    fn open(&self, handle: &Handle) -> Option<File> {
        open_by_path(handle)
    }

    fn degraded(&self) -> Option<String> {
        self.degraded.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records as Windows lays them out: NextEntryOffset, Action,
    /// FileNameLength, FileName (UTF-16), each DWORD-aligned.
    fn record(action: u32, name: &str, last: bool) -> Vec<u8> {
        let name: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let mut len = 12 + name.len();
        len = len.div_ceil(4) * 4;
        let mut r = Vec::with_capacity(len);
        r.extend_from_slice(&(if last { 0 } else { len as u32 }).to_le_bytes());
        r.extend_from_slice(&action.to_le_bytes());
        r.extend_from_slice(&(name.len() as u32).to_le_bytes());
        r.extend_from_slice(&name);
        r.resize(len, 0);
        r
    }

    #[test]
    fn records_parse_and_renames_pair() {
        let dir = Path::new(r"C:\Users\alice");
        let mut raw = record(FILE_ACTION_ADDED, "report.docx", false);
        raw.extend(record(FILE_ACTION_MODIFIED, "report.docx", false));
        raw.extend(record(FILE_ACTION_RENAMED_OLD_NAME, "report.docx", false));
        raw.extend(record(
            FILE_ACTION_RENAMED_NEW_NAME,
            "final\\report.docx",
            false,
        ));
        raw.extend(record(FILE_ACTION_REMOVED, "tmp.txt", true));
        let notes = parse(&raw, dir);
        assert_eq!(notes.len(), 5);
        assert_eq!(notes[3].1, dir.join("final\\report.docx"));

        let mut pairing = Pairing::default();
        let mut ops = Vec::new();
        let t0 = Instant::now();
        for (action, path) in notes {
            pairing.push(action, path, t0, &mut ops);
        }
        let kinds: Vec<Op> = ops.iter().map(|o| o.op).collect();
        assert_eq!(kinds, [Op::Create, Op::Rename, Op::Delete]);
        assert_eq!(
            ops[1].target.as_deref(),
            Some(dir.join("final\\report.docx").as_path())
        );
        // The write settles under the new name.
        ops.clear();
        pairing.settle(t0, false, &mut ops);
        assert!(ops.is_empty(), "not settled yet");
        pairing.settle(t0 + SETTLE, false, &mut ops);
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].op, Op::CloseWrite);
        assert_eq!(ops[0].path, dir.join("final\\report.docx"));

        // A file written without pause is reported every SETTLE_MAX.
        ops.clear();
        let log = dir.join("app.log");
        let mut t = t0;
        while t < t0 + SETTLE_MAX * 2 {
            pairing.push(FILE_ACTION_MODIFIED, log.clone(), t, &mut ops);
            pairing.settle(t, false, &mut ops);
            t += SETTLE / 5;
        }
        assert_eq!(ops.len(), 1, "{ops:?}");
    }

    #[test]
    fn an_old_name_without_its_new_one_is_a_delete() {
        let dir = Path::new(r"C:\Users\alice");
        let mut pairing = Pairing::default();
        let mut ops = Vec::new();
        let t0 = Instant::now();
        // Renamed out of the watched tree: only the old name is seen.
        pairing.push(
            FILE_ACTION_RENAMED_OLD_NAME,
            dir.join("a.txt"),
            t0,
            &mut ops,
        );
        pairing.push(FILE_ACTION_ADDED, dir.join("b.txt"), t0, &mut ops);
        // A later new name is not paired with the stale old one.
        pairing.push(
            FILE_ACTION_RENAMED_NEW_NAME,
            dir.join("c.txt"),
            t0,
            &mut ops,
        );
        let got: Vec<(Op, PathBuf)> = ops.iter().map(|o| (o.op, o.path.clone())).collect();
        assert_eq!(
            got,
            [
                (Op::Delete, dir.join("a.txt")),
                (Op::Create, dir.join("b.txt")),
                (Op::Create, dir.join("c.txt")),
            ]
        );
    }

    /// Reads operations until `done` says so (10 s at most).
    fn read_until(src: &mut DirectoryChanges, done: impl Fn(&[FsOp]) -> bool) -> Vec<FsOp> {
        let mut ops = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(&ops) {
            assert!(Instant::now() < deadline, "saw only {ops:?}");
            src.read(Duration::from_millis(100), &mut ops).unwrap();
        }
        ops
    }

    #[test]
    fn a_real_directory_reports_creates_writes_renames_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let mut src = DirectoryChanges::new();
        src.set_scope(&[dir.path().to_owned()]);
        src.watch(dir.path()).unwrap();
        let a = dir.path().join("a.txt");
        std::fs::write(&a, b"hello").unwrap();
        let ops = read_until(&mut src, |ops| ops.iter().any(|o| o.op == Op::CloseWrite));
        assert_eq!(ops[0].op, Op::Create, "{ops:?}");
        assert_eq!(ops[0].path, a);
        let written = ops.iter().find(|o| o.op == Op::CloseWrite).unwrap();
        let mut content = String::new();
        use std::io::Read;
        src.open(written.handle.as_ref().unwrap())
            .unwrap()
            .read_to_string(&mut content)
            .unwrap();
        assert_eq!(content, "hello");

        let b = dir.path().join("b.txt");
        std::fs::rename(&a, &b).unwrap();
        std::fs::remove_file(&b).unwrap();
        let ops = read_until(&mut src, |ops| ops.iter().any(|o| o.op == Op::Delete));
        let rename = ops.iter().find(|o| o.op == Op::Rename).unwrap();
        assert_eq!((&rename.path, rename.target.as_ref()), (&a, Some(&b)));
        assert_eq!(ops.iter().find(|o| o.op == Op::Delete).unwrap().path, b);
    }

    /// A second watch of the same directory (the agent restarted) sees
    /// what happens there too.
    #[test]
    fn a_directory_watched_again_reports_again() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..2 {
            let mut src = DirectoryChanges::new();
            src.watch(dir.path()).unwrap();
            let f = dir.path().join(format!("round-{round}.txt"));
            std::fs::write(&f, b"x").unwrap();
            let ops = read_until(&mut src, |ops| ops.iter().any(|o| o.op == Op::Create));
            assert_eq!(ops[0].path, f);
        }
    }

    #[test]
    fn a_truncated_buffer_parses_what_is_whole() {
        let dir = Path::new(r"C:\x");
        let mut raw = record(FILE_ACTION_ADDED, "a", false);
        let second = record(FILE_ACTION_ADDED, "bbbbbbbb", true);
        raw.extend(&second[..second.len() - 6]);
        assert_eq!(parse(&raw, dir).len(), 1);
    }
}
