//! Append-only logs that collectors poll (wtmp, CUPS's page log): where a
//! collector is in which file, kept in the state directory after the
//! events are spooled, so that a restart neither repeats nor misses
//! anything.
//!
//! The first run starts at the end of the file (history is not news); a
//! file that is missing then starts at 0 with inode 0, so its creation
//! counts as a replacement and it is read in full. A file that shrank or
//! was replaced (logrotate) is read from its start.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil;

/// Where in which file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Position {
    pub offset: u64,
    pub inode: u64,
}

/// A polled log and the collector's place in it.
#[derive(Debug)]
pub(crate) struct TailedFile {
    pub path: PathBuf,
    position_path: PathBuf,
    pub pos: Position,
}

impl TailedFile {
    /// The saved place, or on a first run the end of the file (rounded
    /// down to whole records of `unit` bytes), saved at once.
    pub(crate) fn open(path: PathBuf, position_path: PathBuf, unit: u64) -> Result<TailedFile> {
        let saved: Option<Position> = fsutil::read_json(&position_path);
        let mut file = TailedFile {
            path,
            position_path,
            pos: Position::default(),
        };
        match saved {
            Some(pos) => file.pos = pos,
            None => {
                if let Ok(meta) = std::fs::metadata(&file.path) {
                    file.pos = Position {
                        offset: meta.len() - meta.len() % unit.max(1),
                        inode: meta.ino(),
                    };
                }
                file.save()?;
            }
        }
        Ok(file)
    }

    /// Opens the log to read what was appended, with its length; `None`
    /// while it does not exist. A replaced or shrunk log is read from its
    /// start.
    pub(crate) fn reopen(&mut self) -> Result<Option<(File, u64)>> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("opening {}", self.path.display()))(e)),
        };
        let meta = file
            .metadata()
            .map_err(Error::io(format!("reading {}", self.path.display())))?;
        if meta.ino() != self.pos.inode || meta.len() < self.pos.offset {
            tracing::info!(path = %self.path.display(), "the log was rotated or truncated, reading it from the start");
            self.pos = Position {
                offset: 0,
                inode: meta.ino(),
            };
        }
        Ok(Some((file, meta.len())))
    }

    /// Keeps the place in the state directory.
    pub(crate) fn save(&self) -> Result<()> {
        fsutil::write_json(&self.position_path, &self.pos)
    }
}
