//! File operations from ETW's `Microsoft-Windows-Kernel-File` provider, in
//! a real-time session of the agent's own: unlike `ReadDirectoryChangesW`,
//! every operation carries the process that did it, and opens are seen, so
//! the shared collector detects copies (a file opened, then one written with
//! the same content by the same process) and reports reads in confidential
//! folders, as on Linux.
//!
//! The events (version 1 of the provider's templates; `Pointer` fields
//! are 8 bytes, or 4 with a 32-bit header; strings NUL-terminated UTF-16):
//!
//! - `Create` (12) and `CreateNewFile` (30): `Irp, FileObject,
//!   IssuingThreadId u32, CreateOptions u32, CreateAttributes u32,
//!   ShareAccess u32, FileName`: an open (a new file for 30);
//! - `Write` (16): `ByteOffset u64, Irp, FileObject, …`;
//! - `Cleanup` (13) and `Close` (14): `Irp, FileObject, FileKey,
//!   IssuingThreadId u32`: the last handle of an open closed;
//! - `DeletePath` (26) and `RenamePath` (27): `Irp, FileObject, FileKey,
//!   ExtraInformation, IssuingThreadId u32, InfoClass u32, FilePath`.
//!
//! The operations are correlated by `FileObject` ([`Tracker`]): an open in
//! the watched folders is an open (a creation for 30), its writes make its
//! cleanup a "closed after writing", a rename whose path differs from the
//! open's is a rename to that path. Paths are NT paths, turned into drive
//! paths. Only opens below the watched folders are tracked (at most
//! [`MAX_OPEN`]); the rest of the machine's file activity is dropped in the
//! consumer's callback.
//!
//! The source checks at start that the session delivers (it creates a
//! probe file and waits for its event); otherwise, and under Wine (which
//! refuses ETW), the collector uses `ReadDirectoryChangesW` (the degraded
//! mode: no processes, no opens, no copies). Under Wine only the parser
//! and the correlation are exercised, by unit tests with events built to
//! the templates above; the session needs a real PC.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::etw::{Fields, Session, dos_devices, nt_to_dos};
use super::files::{handle_of, open_by_path, within};
use crate::collector::files::{FileSource, FsOp, Handle, Op};

/// `Microsoft-Windows-Kernel-File`.
pub(crate) const KERNEL_FILE: windows_sys::core::GUID =
    windows_sys::core::GUID::from_u128(0xedd08927_9cc4_4e65_b970_c2560fb5c289);
/// FILEIO (cleanup, close) | CREATE | WRITE | DELETE_PATH |
/// RENAME_SETLINK_PATH | CREATE_NEW_FILE; not READ (every read of every
/// file: an open is what the collector needs).
const KEYWORDS: u64 = 0x20 | 0x80 | 0x200 | 0x400 | 0x800 | 0x1000;
const SESSION_NAME: &str = "Mamori Agent File Trace";
/// Opens tracked at most (each a path and a few numbers).
pub(crate) const MAX_OPEN: usize = 65_536;
/// `FILE_DIRECTORY_FILE` in `CreateOptions`.
const FILE_DIRECTORY_FILE: u32 = 0x1;
/// How long the session has to deliver the probe file's creation.
const PROBE_WAIT: Duration = Duration::from_secs(5);

/// A Kernel-File event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileIo {
    /// A file opened; `new` when it was created by this open.
    Create {
        file_object: u64,
        options: u32,
        name: String,
        new: bool,
    },
    Write {
        file_object: u64,
    },
    /// The open's last handle closed (`Cleanup`, `Close`).
    Closed {
        file_object: u64,
    },
    Delete {
        file_object: u64,
        path: String,
    },
    Rename {
        file_object: u64,
        path: String,
    },
}

/// The event in a record with this id, version and pointer size; none for
/// another event, an older version, or a record too short.
pub(crate) fn parse(id: u16, version: u8, pointer: usize, data: &[u8]) -> Option<FileIo> {
    if version < 1 {
        return None;
    }
    let mut f = Fields { data };
    match id {
        12 | 30 => {
            f.pointer(pointer)?; // Irp
            let file_object = f.pointer(pointer)?;
            f.u32()?; // IssuingThreadId
            let options = f.u32()?;
            f.u32()?; // CreateAttributes
            f.u32()?; // ShareAccess
            let name = f.utf16()?;
            Some(FileIo::Create {
                file_object,
                options,
                name,
                new: id == 30,
            })
        }
        16 => {
            f.u64()?; // ByteOffset
            f.pointer(pointer)?; // Irp
            Some(FileIo::Write {
                file_object: f.pointer(pointer)?,
            })
        }
        13 | 14 => {
            f.pointer(pointer)?; // Irp
            Some(FileIo::Closed {
                file_object: f.pointer(pointer)?,
            })
        }
        26 | 27 => {
            f.pointer(pointer)?; // Irp
            let file_object = f.pointer(pointer)?;
            f.pointer(pointer)?; // FileKey
            f.pointer(pointer)?; // ExtraInformation
            f.u32()?; // IssuingThreadId
            f.u32()?; // InfoClass
            let path = f.utf16()?;
            Some(if id == 26 {
                FileIo::Delete { file_object, path }
            } else {
                FileIo::Rename { file_object, path }
            })
        }
        _ => None,
    }
}

/// An open being followed.
#[derive(Debug)]
struct Open {
    path: PathBuf,
    pid: u32,
    wrote: bool,
}

/// Turns Kernel-File events into the collector's operations.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    /// The watched folders.
    scope: Vec<PathBuf>,
    /// NT device → drive.
    devices: Vec<(String, String)>,
    open: HashMap<u64, Open>,
}

impl Tracker {
    pub(crate) fn new(devices: Vec<(String, String)>) -> Self {
        Tracker {
            devices,
            ..Default::default()
        }
    }

    pub(crate) fn set_scope(&mut self, dirs: &[PathBuf]) {
        self.scope = dirs.to_vec();
    }

    /// The drive path of an NT path, when it is in the scope.
    fn in_scope(&self, nt: &str) -> Option<PathBuf> {
        let path = PathBuf::from(nt_to_dos(nt, &self.devices));
        self.scope.iter().any(|d| within(&path, d)).then_some(path)
    }

    /// The operations `event`, done by `pid`, makes.
    pub(crate) fn push(&mut self, pid: u32, event: FileIo, out: &mut Vec<FsOp>) {
        let op = |op: Op, path: &Path, target: Option<PathBuf>, pid: u32| FsOp {
            handle: Some(handle_of(target.as_deref().unwrap_or(path))),
            op,
            path: path.to_owned(),
            target,
            pid,
        };
        match event {
            FileIo::Create {
                file_object,
                options,
                name,
                new,
            } => {
                if options & FILE_DIRECTORY_FILE != 0 {
                    return;
                }
                let Some(path) = self.in_scope(&name) else {
                    return;
                };
                out.push(op(
                    if new { Op::Create } else { Op::Open },
                    &path,
                    None,
                    pid,
                ));
                if self.open.len() < MAX_OPEN {
                    self.open.insert(
                        file_object,
                        Open {
                            path,
                            pid,
                            wrote: false,
                        },
                    );
                }
            }
            FileIo::Write { file_object } => {
                if let Some(o) = self.open.get_mut(&file_object) {
                    o.wrote = true;
                }
            }
            FileIo::Closed { file_object } => {
                if let Some(o) = self.open.remove(&file_object)
                    && o.wrote
                {
                    out.push(op(Op::CloseWrite, &o.path, None, o.pid));
                }
            }
            FileIo::Delete { file_object, path } => {
                self.open.remove(&file_object);
                if let Some(path) = self.in_scope(&path) {
                    out.push(op(Op::Delete, &path, None, pid));
                }
            }
            FileIo::Rename { file_object, path } => {
                let new = PathBuf::from(nt_to_dos(&path, &self.devices));
                let Some(o) = self.open.get_mut(&file_object) else {
                    return;
                };
                let same =
                    o.path.to_string_lossy().to_lowercase() == new.to_string_lossy().to_lowercase();
                // (A path equal to the open's names the file before the
                // rename: the new name is not known.)
                if !same {
                    let old = std::mem::replace(&mut o.path, new.clone());
                    out.push(op(Op::Rename, &old, Some(new), pid));
                }
            }
        }
    }
}

/// The ETW file source.
pub(crate) struct EtwFiles {
    _session: Session,
    ops: std::sync::mpsc::Receiver<FsOp>,
    tracker: Arc<Mutex<Tracker>>,
    lost: Arc<AtomicU64>,
    lost_told: u64,
}

impl std::fmt::Debug for EtwFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtwFiles").finish_non_exhaustive()
    }
}

impl EtwFiles {
    /// Starts the session and checks it delivers (a probe file created in
    /// the temporary folder).
    pub(crate) fn open() -> io::Result<Self> {
        let tracker = Arc::new(Mutex::new(Tracker::new(dos_devices())));
        let lost = Arc::new(AtomicU64::new(0));
        let (tx, ops) = std::sync::mpsc::sync_channel(8192);
        let probe_name = format!("mamori-probe-{}.tmp", uuid::Uuid::new_v4());
        let probe_seen = Arc::new(AtomicBool::new(false));
        let session = {
            let (tracker, lost, seen) = (
                Arc::clone(&tracker),
                Arc::clone(&lost),
                Arc::clone(&probe_seen),
            );
            let probe = probe_name.clone();
            Session::start(
                SESSION_NAME,
                KERNEL_FILE,
                KEYWORDS,
                Box::new(move |r| {
                    let Some(event) = parse(r.id, r.version, r.pointer, r.data) else {
                        return;
                    };
                    if let FileIo::Create { name, .. } = &event
                        && name.ends_with(&probe)
                    {
                        seen.store(true, Ordering::Release);
                    }
                    let mut out = Vec::new();
                    tracker
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(r.pid, event, &mut out);
                    for op in out {
                        if tx.try_send(op).is_err() {
                            lost.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }),
            )?
        };
        let probe = std::env::temp_dir().join(&probe_name);
        std::fs::write(&probe, b"probe")?;
        let started = Instant::now();
        while !probe_seen.load(Ordering::Acquire) && started.elapsed() < PROBE_WAIT {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_file(&probe);
        if !probe_seen.load(Ordering::Acquire) {
            return Err(io::Error::other(format!(
                "the ETW file session delivered nothing for a probe file within {} s",
                PROBE_WAIT.as_secs()
            )));
        }
        Ok(EtwFiles {
            _session: session,
            ops,
            tracker,
            lost,
            lost_told: 0,
        })
    }
}

impl FileSource for EtwFiles {
    fn set_scope(&mut self, dirs: &[PathBuf]) {
        self.tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_scope(dirs);
    }

    /// The session sees every volume: nothing to do per folder.
    fn watch(&mut self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn read(&mut self, timeout: Duration, out: &mut Vec<FsOp>) -> io::Result<u64> {
        match self.ops.recv_timeout(timeout) {
            Ok(op) => {
                out.push(op);
                while out.len() < 4096 {
                    match self.ops.try_recv() {
                        Ok(op) => out.push(op),
                        Err(_) => break,
                    }
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            // The consumer ended: the session was stopped from outside the
            // agent. The collector stops and says so (a collector warning).
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(io::Error::other(
                    "the ETW file session ended (stopped from outside the agent?)",
                ));
            }
        }
        let lost = self.lost.load(Ordering::Relaxed);
        let new = lost - self.lost_told;
        self.lost_told = lost;
        Ok(new)
    }

    fn open(&self, handle: &Handle) -> Option<File> {
        open_by_path(handle)
    }
}

#[cfg(test)]
mod tests;
