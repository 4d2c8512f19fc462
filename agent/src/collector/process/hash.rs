//! SHA-256 of executables, computed off the async runtime and cached.
//!
//! Hashing reads the whole file, so it runs on one dedicated thread fed by a
//! bounded queue; the collector task never blocks on it. The cache is keyed by
//! the file's identity on its volume (device and inode; volume serial and
//! file index on Windows), size and mtime: a busy machine runs the same few
//! hundred binaries over and over, and a replaced binary gets a new key.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use mamori_proto::agent::v1::{ProcessEvent, event::Kind};
use sha2::{Digest, Sha256};

use super::ProcessEnforcer;
use crate::policy::PolicyState;
use crate::sink::EventSink;

/// Files above this are not hashed (reading them would take too long).
pub(crate) const MAX_HASHED_BYTES: u64 = 256 << 20;
/// Cached hashes; the cache is emptied when full (simple, and refilling costs
/// one read per distinct binary).
const CACHE_ENTRIES: usize = 4096;
/// Execs of not-yet-hashed binaries that may wait; more are reported without
/// a hash rather than held up.
const QUEUE: usize = 256;

/// Identity of one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileKey {
    id: crate::platform::FileId,
    size: u64,
    mtime: Option<std::time::SystemTime>,
}

impl FileKey {
    /// The key of the open `file`; `None` when the OS cannot tell its
    /// identity (it is then hashed every time, never from the cache).
    pub(crate) fn of(file: &File, meta: &Metadata) -> Option<Self> {
        Some(FileKey {
            id: crate::platform::os::file_id(file, meta)?,
            size: meta.len(),
            mtime: meta.modified().ok(),
        })
    }
}

/// Known hashes; `None` for a file too big to hash.
#[derive(Debug, Default)]
pub(crate) struct HashCache {
    pub(crate) map: HashMap<FileKey, Option<[u8; 32]>>,
}

impl HashCache {
    pub(crate) fn get(&self, key: &FileKey) -> Option<Option<[u8; 32]>> {
        self.map.get(key).copied()
    }

    pub(crate) fn insert(&mut self, key: FileKey, hash: Option<[u8; 32]>) {
        if self.map.len() >= CACHE_ENTRIES {
            self.map.clear();
        }
        self.map.insert(key, hash);
    }
}

/// SHA-256 of the whole file; gives up (`Interrupted`) when `stop` is set.
pub(crate) fn sha256(file: &mut File, stop: &AtomicBool) -> std::io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(std::io::ErrorKind::Interrupted.into());
        }
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hasher.finalize().into())
}

/// A process event waiting for its executable's hash.
#[derive(Debug)]
pub(crate) struct Job {
    pub file: File,
    pub key: Option<FileKey>,
    pub event: ProcessEvent,
    pub occurred_at_us: i64,
    pub os_user: String,
    /// A policy rule matched already (by name or path): spool it urgently.
    pub urgent: bool,
}

/// The hashing thread and its queue.
///
/// Dropping it (the collector task ends) stops the thread and waits for it:
/// what is still queued is spooled without a hash, quickly, so that nothing
/// writes to the spool after the agent's final flush.
#[derive(Debug)]
pub(crate) struct Hasher {
    tx: Option<SyncSender<Job>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Hasher {
    pub(crate) fn start(
        cache: Arc<Mutex<HashCache>>,
        sink: EventSink,
        policy: Option<Arc<PolicyState>>,
        enforcer: Arc<dyn ProcessEnforcer>,
    ) -> std::io::Result<Hasher> {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("mamori-hash".into())
            .spawn(move || {
                hash_loop(
                    &rx,
                    &cache,
                    &sink,
                    policy.as_deref(),
                    enforcer.as_ref(),
                    &thread_stop,
                )
            })?;
        Ok(Hasher {
            tx: Some(tx),
            stop,
            thread: Some(thread),
        })
    }

    /// Queues `job`; gives it back when the queue is full.
    pub(crate) fn submit(&self, job: Job) -> Option<Job> {
        let Some(tx) = &self.tx else {
            return Some(job);
        };
        match tx.try_send(job) {
            Ok(()) => None,
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => Some(job),
        }
    }
}

impl Drop for Hasher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn hash_loop(
    rx: &Receiver<Job>,
    cache: &Mutex<HashCache>,
    sink: &EventSink,
    policy: Option<&PolicyState>,
    enforcer: &dyn ProcessEnforcer,
    stop: &AtomicBool,
) {
    while let Ok(mut job) = rx.recv() {
        // The same new binary may be queued several times in a burst.
        let cached = job
            .key
            .and_then(|key| cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key));
        let hash = match cached {
            Some(hash) => hash,
            None if stop.load(Ordering::Relaxed) => None,
            None => {
                let hash = sha256(&mut job.file, stop)
                    .inspect_err(|e| tracing::debug!(path = %job.event.exe_path, error = %e, "executable not hashed"))
                    .ok();
                if let Some(key) = job.key {
                    cache
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key, hash);
                }
                hash
            }
        };
        drop(job.file);
        if let Some(hash) = hash {
            job.event.exe_sha256 = hash.to_vec();
            if let Some(verdict) = policy.and_then(|p| p.current().check_hash(&hash)) {
                super::enforce(enforcer, &mut job.event, &verdict);
                job.urgent = true;
            }
        }
        let kind = Kind::Process(job.event);
        let spooled = if job.urgent {
            sink.emit_urgent(job.occurred_at_us, job.os_user, kind)
        } else {
            sink.emit(job.occurred_at_us, job.os_user, kind)
        };
        if let Err(e) = spooled {
            tracing::warn!(error = %e, "process event not spooled");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_a_file_and_keys_change_with_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let mut f = File::open(&path).unwrap();
        assert_eq!(
            hex::encode(sha256(&mut f, &AtomicBool::new(false)).unwrap()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let k1 = FileKey::of(&f, &f.metadata().unwrap()).unwrap();
        assert_eq!(Some(k1), FileKey::of(&f, &f.metadata().unwrap()));
        drop(f);
        std::fs::write(&path, b"abcd").unwrap();
        let f = File::open(&path).unwrap();
        let k2 = FileKey::of(&f, &f.metadata().unwrap()).unwrap();
        assert_ne!(k1, k2);
    }
}
