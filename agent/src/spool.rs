//! The durable on-disk spool between the collectors and the uplink.
//!
//! Every event is appended here before anything tries to send it, and leaves
//! only when the server has acked the batch that carried it. The agent can be
//! killed (`kill -9`), the machine can lose power, the server can be away for
//! days: what the collectors saw is sent once the way is clear again.
//!
//! Layout of `<state-dir>/spool/`:
//!
//! * `<base>.seg` — segment files named by the global index of their first
//!   event (20 zero-padded digits). A segment is a run of records framed as
//!   `len | crc32 | protobuf Event` (see `record`). Only the last segment (the
//!   head) is appended to; a sealed segment's event count is implied by the
//!   next segment's base, so opening the spool only scans the head.
//! * `acked` — the cursor: every event with an index below `acked` has been
//!   acked (or dropped), plus the life-long count of events dropped because
//!   the spool was full (see `cursor`).
//!
//! Global indices only ever grow, across restarts too (the cursor file keeps
//! the position when every segment has been deleted), so `index + 1` of a
//! batch's first event serves as the batch's sequence number.
//!
//! Durability: an append is one `write(2)` of a whole record, so it survives
//! the death of the process at once; [`Spool::flush`] (every second in the
//! agent, and on shutdown) fsyncs it for power loss. On open, a torn or
//! corrupt record at the tail of the head segment is cut off. Acks may arrive
//! out of order (several batches are in flight); acked ranges above the
//! cursor are remembered so a resend after a reconnect skips them. A fully
//! acked sealed segment is deleted, but only after the cursor that covers it
//! is durable. When the spool is over its size bound the oldest segment is
//! dropped, and the number of unacked events lost with it is counted.

mod cursor;
mod record;

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mamori_proto::agent::v1::Event;
use prost::Message;

use crate::error::{Error, Result};
use crate::fsutil;
use cursor::{Cursor, CursorStore};

/// Sizes of a spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolConfig {
    /// Upper bound of the segment files' total size; past it the oldest
    /// segment is dropped.
    pub max_bytes: u64,
    /// A segment is sealed and a new one started when the next record would
    /// take it past this size. Also the granularity of dropping when full.
    pub segment_bytes: u64,
}

impl SpoolConfig {
    /// The default bound of the spool: 1 GiB.
    pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
    const MAX_SEGMENT_BYTES: u64 = 8 << 20;

    /// A spool bounded at `max_bytes`, with segments small enough that a full
    /// spool drops at most about an eighth of its content at a time.
    pub fn with_max_bytes(max_bytes: u64) -> Self {
        SpoolConfig {
            max_bytes,
            segment_bytes: (max_bytes / 8).clamp(1, Self::MAX_SEGMENT_BYTES),
        }
    }
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self::with_max_bytes(Self::DEFAULT_MAX_BYTES)
    }
}

/// Events read from the spool for one batch: the global indices
/// `first..end` (some of which may be missing from `events` when a damaged
/// segment was skipped; acking the range settles them all).
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub first: u64,
    pub end: u64,
    pub events: Vec<Event>,
}

impl Batch {
    /// The batch's sequence number: never 0, and increasing with the spool's
    /// global index.
    pub fn sequence(&self) -> u64 {
        self.first + 1
    }
}

/// The spool. Not internally synchronized: the agent shares it behind a
/// mutex, and every operation is short (one `write(2)`, or reading one batch).
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    config: SpoolConfig,
    /// Oldest first; the last one is the head that takes appends, and its
    /// `base + count` is always `next_index`.
    segments: VecDeque<Segment>,
    /// Append handle of the head segment, opened on first append.
    head: Option<File>,
    head_unsynced: bool,
    /// Handles of segments sealed since the last flush, still to be fsynced.
    sealed_unsynced: Vec<File>,
    next_index: u64,
    cursor: Cursor,
    /// Bumped on every change of `cursor`, so an older snapshot never
    /// overwrites a newer one on disk.
    generation: u64,
    cursor_dirty: bool,
    cursor_store: Arc<CursorStore>,
    /// Acked ranges above the cursor (start → end), disjoint and not adjacent.
    done: BTreeMap<u64, u64>,
    total_bytes: u64,
    /// Segment files no longer needed, deleted once the cursor covering them
    /// is durable.
    doomed: Vec<PathBuf>,
    /// Read positions kept between batches (the uplink reads the backlog and
    /// live events from two places).
    readers: VecDeque<Reader>,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    base: u64,
    count: u64,
    bytes: u64,
}

impl Segment {
    fn end(&self) -> u64 {
        self.base + self.count
    }
}

#[derive(Debug)]
struct Reader {
    base: u64,
    /// Global index of the record the file is positioned at.
    next: u64,
    file: BufReader<File>,
}

/// How many read positions are kept open.
const READERS: usize = 2;
/// Per-event overhead inside an encoded `EventBatch` (tag and length varint).
const EVENT_OVERHEAD: usize = 5;

impl Spool {
    /// Opens (or creates) the spool in `dir`, cutting off a torn tail and
    /// deleting segments that were fully acked before a crash.
    pub fn open(dir: impl Into<PathBuf>, config: SpoolConfig) -> Result<Spool> {
        let dir = dir.into();
        fsutil::create_private_dir(&dir)?;
        let cursor_store = Arc::new(CursorStore::new(&dir));
        let mut cursor = cursor_store.load();

        let mut bases = Vec::new();
        let list_ctx = || format!("listing spool {}", dir.display());
        for entry in fs::read_dir(&dir).map_err(Error::io(list_ctx()))? {
            let name = entry.map_err(Error::io(list_ctx()))?.file_name();
            if let Some(base) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                bases.push(base);
            }
        }
        bases.sort_unstable();

        let mut segments = VecDeque::with_capacity(bases.len());
        for (i, &base) in bases.iter().enumerate() {
            let path = segment_path(&dir, base);
            let (count, bytes) = match bases.get(i + 1) {
                Some(&next) => {
                    let bytes = fs::metadata(&path)
                        .map_err(Error::io(format!("reading {}", path.display())))?
                        .len();
                    (next - base, bytes)
                }
                None => scan_head(&path)?,
            };
            segments.push_back(Segment { base, count, bytes });
        }

        let next_index = segments.back().map_or(0, Segment::end).max(cursor.acked);
        // Segments the cursor covers were acked (or dropped) before the agent
        // stopped; the deletion may not have happened yet.
        let mut deleted = false;
        while let Some(seg) = segments.front().copied() {
            if seg.end() > cursor.acked {
                break;
            }
            segments.pop_front();
            remove_segment(&segment_path(&dir, seg.base))?;
            deleted = true;
        }
        if deleted {
            fsutil::sync_dir(&dir)?;
        }
        // Nothing older than the first segment exists any more.
        cursor.acked = segments
            .front()
            .map_or(next_index, |s| s.base.max(cursor.acked));

        let total_bytes = segments.iter().map(|s| s.bytes).sum();
        Ok(Spool {
            dir,
            config,
            segments,
            head: None,
            head_unsynced: false,
            sealed_unsynced: Vec::new(),
            next_index,
            cursor,
            generation: 1,
            cursor_dirty: false,
            cursor_store,
            done: BTreeMap::new(),
            total_bytes,
            doomed: Vec::new(),
            readers: VecDeque::new(),
        })
    }

    /// Appends one event and returns its global index. The record is written
    /// with one `write(2)`: once this returns, the event survives the death of
    /// the process; [`Spool::flush`] makes it survive a power loss.
    pub fn append(&mut self, event: &Event) -> Result<u64> {
        let payload = event.encode_to_vec();
        if payload.is_empty() || payload.len() > record::MAX_PAYLOAD {
            return Err(Error::EventSize(payload.len()));
        }
        let rec_len = (record::HEADER_LEN + payload.len()) as u64;
        if let Some(head) = self.segments.back()
            && head.count > 0
            && head.bytes + rec_len > self.config.segment_bytes
        {
            self.seal_head()?;
        }
        self.make_room(rec_len)?;

        let mut buf = Vec::with_capacity(rec_len as usize);
        record::encode(&payload, &mut buf);
        let file = self.head_file()?;
        if let Err(e) = file.write_all(&buf) {
            // A partial record (disk full) must not stay in front of the
            // records appended after it: opening would cut those off with it.
            let good = self.segments.back().expect("head segment exists").bytes;
            if let Some(file) = &self.head {
                let _ = file.set_len(good);
            }
            return Err(Error::io("appending to the spool")(e));
        }
        let head = self.segments.back_mut().expect("head segment exists");
        head.count += 1;
        head.bytes += rec_len;
        self.total_bytes += rec_len;
        self.head_unsynced = true;
        let index = self.next_index;
        self.next_index += 1;
        Ok(index)
    }

    /// Reads the next batch at or after index `from` and below `limit`:
    /// already acked events are skipped, and the batch stops before an acked
    /// range, at `max_events`, or before its events would exceed `max_bytes`
    /// encoded (it always holds at least one event). `None` when there is
    /// nothing to read.
    pub fn read(
        &mut self,
        from: u64,
        limit: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Option<Batch>> {
        let mut start = from.max(self.cursor.acked);
        for (&s, &e) in &self.done {
            if s <= start && start < e {
                start = e;
            }
        }
        let stop = self
            .done
            .range(start..)
            .next()
            .map_or(u64::MAX, |(&s, _)| s)
            .min(limit)
            .min(self.next_index);
        if start >= stop || max_events == 0 {
            return Ok(None);
        }

        let mut reader = self
            .readers
            .iter()
            .position(|r| r.next == start)
            .and_then(|i| self.readers.remove(i));
        let mut events = Vec::new();
        let mut bytes = 0usize;
        let mut index = start;
        let mut payload = Vec::new();
        while index < stop && events.len() < max_events {
            let seg = self
                .segment_containing(index)
                .expect("index below next_index is in a segment");
            if !matches!(&reader, Some(r) if r.base == seg.base && r.next <= index) {
                reader = Some(self.open_reader(seg.base)?);
            }
            let r = reader.as_mut().expect("just ensured");
            match record::read(&mut r.file, &mut payload)
                .map_err(Error::io(format!("reading spool segment {}", seg.base)))?
            {
                record::Next::Record => {
                    let this = r.next;
                    r.next += 1;
                    if this < index {
                        continue;
                    }
                    if !events.is_empty() && bytes + payload.len() + EVENT_OVERHEAD > max_bytes {
                        // Leave it for the next batch.
                        let back = (record::HEADER_LEN + payload.len()) as i64;
                        r.file
                            .seek_relative(-back)
                            .map_err(Error::io("rewinding spool reader"))?;
                        r.next -= 1;
                        break;
                    }
                    match Event::decode(&payload[..]) {
                        Ok(event) => {
                            bytes += payload.len() + EVENT_OVERHEAD;
                            events.push(event);
                        }
                        Err(e) => {
                            tracing::warn!(index = this, error = %e, "undecodable spooled event skipped");
                        }
                    }
                    index = this + 1;
                }
                record::Next::End | record::Next::Bad => {
                    // Only a sealed segment can end early (damaged on disk);
                    // its remaining indices are skipped and settled with the
                    // batch's ack.
                    tracing::warn!(
                        segment = seg.base,
                        at = r.next,
                        "damaged spool segment, skipping the rest of it"
                    );
                    index = seg.end();
                    reader = None;
                    if index >= stop {
                        break;
                    }
                }
            }
        }
        if let Some(r) = reader {
            self.readers.push_back(r);
            while self.readers.len() > READERS {
                self.readers.pop_front();
            }
        }
        Ok(Some(Batch {
            first: start,
            end: index,
            events,
        }))
    }

    /// Marks the events `first..end` as done (acked, or rejected and so
    /// dropped): they are never read again and their space is freed once
    /// everything before them is done as well.
    pub fn ack(&mut self, first: u64, end: u64) {
        let (mut s, mut e) = (first.max(self.cursor.acked), end.min(self.next_index));
        if s >= e {
            return;
        }
        let touching: Vec<u64> = self
            .done
            .range(..=e)
            .filter(|&(_, &re)| re >= s)
            .map(|(&rs, _)| rs)
            .collect();
        for rs in touching {
            let re = self.done.remove(&rs).expect("key just listed");
            s = s.min(rs);
            e = e.max(re);
        }
        self.done.insert(s, e);
        if s <= self.cursor.acked {
            self.done.remove(&s);
            self.advance_to(e);
        }
        while self.segments.len() > 1 && self.segments[0].end() <= self.cursor.acked {
            self.forget_oldest();
        }
    }

    /// Number of events waiting to be acked.
    pub fn pending(&self) -> u64 {
        let done: u64 = self.done.iter().map(|(s, e)| e - s).sum();
        self.next_index - self.cursor.acked - done
    }

    /// Index the next appended event gets.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// Every event below this index is acked or dropped.
    pub fn acked_index(&self) -> u64 {
        self.cursor.acked
    }

    /// Events dropped because the spool was full, over the agent's life.
    pub fn dropped_total(&self) -> u64 {
        self.cursor.dropped_total
    }

    /// Total size of the segment files.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Makes everything so far durable: fsyncs appended data, persists the
    /// cursor, deletes segment files that are no longer needed.
    pub fn flush(&mut self) -> Result<()> {
        self.prepare_flush()?.run()
    }

    /// The slow part of [`Spool::flush`] as a job that can run on another
    /// thread without holding the spool (fsync can take a while).
    pub fn prepare_flush(&mut self) -> Result<FlushJob> {
        let mut files = std::mem::take(&mut self.sealed_unsynced);
        if self.head_unsynced
            && let Some(head) = &self.head
        {
            files.push(
                head.try_clone()
                    .map_err(Error::io("duplicating spool handle"))?,
            );
            self.head_unsynced = false;
        }
        let doomed = std::mem::take(&mut self.doomed);
        let cursor = if self.cursor_dirty || !doomed.is_empty() {
            self.cursor_dirty = false;
            Some((self.cursor, self.generation))
        } else {
            None
        };
        Ok(FlushJob {
            files,
            cursor,
            doomed,
            store: Arc::clone(&self.cursor_store),
            dir: self.dir.clone(),
        })
    }

    fn segment_containing(&self, index: u64) -> Option<Segment> {
        let i = self.segments.partition_point(|s| s.base <= index);
        let seg = *self.segments.get(i.checked_sub(1)?)?;
        (index < seg.end()).then_some(seg)
    }

    fn open_reader(&self, base: u64) -> Result<Reader> {
        let path = segment_path(&self.dir, base);
        let file = File::open(&path).map_err(Error::io(format!("opening {}", path.display())))?;
        Ok(Reader {
            base,
            next: base,
            file: BufReader::with_capacity(16 * 1024, file),
        })
    }

    fn head_file(&mut self) -> Result<&mut File> {
        if self.head.is_none() {
            if self.segments.is_empty() {
                self.segments.push_back(Segment {
                    base: self.next_index,
                    count: 0,
                    bytes: 0,
                });
            }
            let base = self.segments.back().expect("just ensured").base;
            self.head = Some(open_append(&segment_path(&self.dir, base))?);
        }
        Ok(self.head.as_mut().expect("just opened"))
    }

    /// Closes the head for appends and starts a new, empty one.
    fn seal_head(&mut self) -> Result<()> {
        if let Some(old) = self.head.take()
            && std::mem::take(&mut self.head_unsynced)
        {
            self.sealed_unsynced.push(old);
        }
        let base = self.next_index;
        self.head = Some(open_append(&segment_path(&self.dir, base))?);
        self.segments.push_back(Segment {
            base,
            count: 0,
            bytes: 0,
        });
        Ok(())
    }

    /// Drops the oldest segments until a record of `rec_len` bytes fits.
    fn make_room(&mut self, rec_len: u64) -> Result<()> {
        while self.total_bytes + rec_len > self.config.max_bytes {
            match self.segments.len() {
                0 => break,
                1 if self.segments[0].count == 0 => break,
                1 => self.seal_head()?,
                _ => {}
            }
            let oldest = self.segments[0];
            let lost = self.undone_between(oldest.base, oldest.end());
            self.forget_oldest();
            self.advance_to(oldest.end());
            if lost > 0 {
                self.cursor.dropped_total += lost;
                tracing::warn!(
                    dropped = lost,
                    dropped_total = self.cursor.dropped_total,
                    max_bytes = self.config.max_bytes,
                    "spool full, dropping the oldest events"
                );
            }
        }
        Ok(())
    }

    /// Removes the oldest segment from the spool; its file is deleted at the
    /// next flush, after the cursor.
    fn forget_oldest(&mut self) {
        let seg = self.segments.pop_front().expect("a segment to forget");
        self.total_bytes -= seg.bytes;
        self.readers.retain(|r| r.base != seg.base);
        self.doomed.push(segment_path(&self.dir, seg.base));
    }

    /// Moves the cursor up to `index`, absorbing acked ranges it reaches.
    fn advance_to(&mut self, index: u64) {
        if index <= self.cursor.acked {
            return;
        }
        self.cursor.acked = index;
        while let Some((&s, &e)) = self.done.first_key_value() {
            if s > self.cursor.acked {
                break;
            }
            self.done.remove(&s);
            self.cursor.acked = self.cursor.acked.max(e);
        }
        self.generation += 1;
        self.cursor_dirty = true;
    }

    /// Events in `first..end` that are neither below the cursor nor acked.
    fn undone_between(&self, first: u64, end: u64) -> u64 {
        let first = first.max(self.cursor.acked);
        if first >= end {
            return 0;
        }
        let done: u64 = self
            .done
            .iter()
            .map(|(&s, &e)| e.min(end).saturating_sub(s.max(first)))
            .sum();
        end - first - done
    }
}

/// The fsync, cursor write and file deletions of a flush, detached from the
/// spool.
#[derive(Debug)]
pub struct FlushJob {
    files: Vec<File>,
    cursor: Option<(Cursor, u64)>,
    doomed: Vec<PathBuf>,
    store: Arc<CursorStore>,
    dir: PathBuf,
}

impl FlushJob {
    /// Whether running the job would do nothing.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.cursor.is_none()
    }

    pub fn run(self) -> Result<()> {
        for f in &self.files {
            f.sync_data().map_err(Error::io("syncing the spool"))?;
        }
        if let Some((cursor, generation)) = self.cursor {
            self.store.store(cursor, generation)?;
        }
        if !self.doomed.is_empty() {
            for path in &self.doomed {
                remove_segment(path)?;
            }
            fsutil::sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

fn open_append(path: &Path) -> Result<File> {
    fsutil::open_append_private(path).map_err(Error::io(format!("opening {}", path.display())))
}

fn remove_segment(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io(format!("deleting {}", path.display()))(e))
        }
        _ => Ok(()),
    }
}

/// Counts the intact records of the head segment and cuts off whatever
/// follows the last one (a record torn by a crash).
fn scan_head(path: &Path) -> Result<(u64, u64)> {
    let ctx = || format!("scanning {}", path.display());
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(Error::io(ctx()))?;
    let len = file.metadata().map_err(Error::io(ctx()))?.len();
    let mut r = BufReader::with_capacity(64 * 1024, &file);
    let (mut count, mut good) = (0u64, 0u64);
    let mut payload = Vec::new();
    while record::read(&mut r, &mut payload).map_err(Error::io(ctx()))? == record::Next::Record {
        count += 1;
        good += (record::HEADER_LEN + payload.len()) as u64;
    }
    if good < len {
        tracing::warn!(segment = %path.display(), kept_bytes = good, cut_bytes = len - good, "torn record at the end of the spool cut off");
        file.set_len(good).map_err(Error::io(ctx()))?;
        file.sync_all().map_err(Error::io(ctx()))?;
    }
    Ok((count, good))
}

#[cfg(test)]
mod tests;
