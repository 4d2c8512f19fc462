//! The spool's small durable cursor file: up to which global event index
//! everything is acked (or dropped), and how many events a full spool has
//! dropped over the agent's life.
//!
//! It is rewritten atomically (temporary file + rename). Writes can come from
//! the flusher thread and from the spool itself, so the store remembers the
//! generation it last wrote and never lets an older snapshot overwrite a newer
//! one: a cursor that went backwards after segments were deleted would make
//! the spool hand out event indices (batch sequence numbers) a second time.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::fsutil;

/// The persisted content.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Cursor {
    /// Every event with a global index below this is acked or dropped.
    pub acked: u64,
    /// Events dropped because the spool was full, over the agent's life.
    pub dropped_total: u64,
}

/// The cursor file and the generation of the content it holds.
#[derive(Debug)]
pub(crate) struct CursorStore {
    path: PathBuf,
    written_generation: Mutex<u64>,
}

impl CursorStore {
    pub(crate) fn new(dir: &Path) -> Self {
        CursorStore {
            path: dir.join("acked"),
            written_generation: Mutex::new(0),
        }
    }

    /// Reads the cursor; a missing file is a fresh spool. A corrupt one (it is
    /// written atomically, so only outside tampering makes one) is reported
    /// and replaced by zero, which only means already-acked events are sent
    /// again and the server dedupes them.
    pub(crate) fn load(&self) -> Cursor {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %self.path.display(), error = %e, "spool cursor unreadable, resending from the oldest spooled event");
                Cursor::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Cursor::default(),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "spool cursor unreadable, resending from the oldest spooled event");
                Cursor::default()
            }
        }
    }

    /// Persists `cursor` unless a newer generation is already on disk.
    pub(crate) fn store(&self, cursor: Cursor, generation: u64) -> Result<()> {
        let mut written = self
            .written_generation
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if generation <= *written {
            return Ok(());
        }
        fsutil::write_json(&self.path, &cursor)?;
        *written = generation;
        Ok(())
    }
}
