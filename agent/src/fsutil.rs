//! Crash-safe file writes shared by the state files, the spool cursor and the
//! collectors' positions.
//!
//! A file is replaced by writing a temporary sibling, fsyncing it, renaming it
//! over the target and fsyncing the directory: after a crash or power loss the
//! target holds either the old or the new content, never a torn mix. How a
//! rename is made durable and a file private is the platform's
//! (`platform::os::fs`): the directory fsync and Unix modes on Linux;
//! `MoveFileExW` with write-through and the state directory's access list
//! on Windows.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::platform::os::fs as osfs;

/// Atomically replaces `path` with `contents`, created with permission `mode`.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let ctx = || format!("writing {}", path.display());
    // A leftover temporary file from a crash may have looser permissions than
    // wanted; start from scratch so `mode` applies.
    let _ = fs::remove_file(&tmp);
    let mut f = osfs::private(OpenOptions::new().write(true).create_new(true), mode)
        .open(&tmp)
        .map_err(Error::io(ctx()))?;
    f.write_all(contents).map_err(Error::io(ctx()))?;
    f.sync_all().map_err(Error::io(ctx()))?;
    drop(f);
    osfs::replace(&tmp, path).map_err(Error::io(ctx()))
}

/// Atomically replaces `path` with `value` as compact JSON, private to the
/// agent (mode 0600): the collectors' positions and snapshots, the spool
/// cursor.
pub(crate) fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let json = serde_json::to_vec(value).map_err(|source| Error::State {
        path: path.to_owned(),
        source,
    })?;
    write_atomic(path, &json, 0o600)
}

/// Reads what [`write_json`] wrote; `None` when the file is missing or
/// does not parse (a collector then starts afresh).
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// Makes a rename or unlink in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    osfs::sync_dir(dir).map_err(Error::io(format!("syncing directory {}", dir.display())))
}

/// Opens `path` for appending, creating it private to the agent.
pub(crate) fn open_append_private(path: &Path) -> std::io::Result<File> {
    osfs::private(OpenOptions::new().append(true).create(true), 0o600).open(path)
}

/// Creates `dir` (and parents) readable by the owner only: the state directory
/// holds the device credential.
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    osfs::create_private_dir(dir)
        .map_err(Error::io(format!("creating directory {}", dir.display())))
}
