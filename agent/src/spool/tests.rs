//! The spool's behaviour across reopen, crashes, acks and a full disk budget.

use super::*;
use mamori_proto::agent::v1::{ProcessEvent, event::Kind};
use std::io::{Seek, SeekFrom};

fn event(n: u64, pad: usize) -> Event {
    Event {
        id: uuid::Uuid::now_v7().as_bytes().to_vec(),
        occurred_at_us: n as i64,
        os_user: "alice".into(),
        kind: Some(Kind::Process(ProcessEvent {
            action: 1,
            pid: n as u32,
            exe_path: "x".repeat(pad),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn big() -> SpoolConfig {
    SpoolConfig::with_max_bytes(64 << 20)
}

fn small_segments() -> SpoolConfig {
    SpoolConfig {
        max_bytes: 1 << 30,
        segment_bytes: 1024,
    }
}

fn pids(batch: &Batch) -> Vec<u64> {
    batch
        .events
        .iter()
        .map(|e| e.occurred_at_us as u64)
        .collect()
}

fn read_all(spool: &mut Spool) -> Vec<u64> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(b) = spool.read(from, u64::MAX, 1000, 1 << 20).unwrap() {
        out.extend(pids(&b));
        from = b.end;
    }
    out
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn reopen_keeps_unacked_events() {
    let dir = tempfile::tempdir().unwrap();
    let originals: Vec<Event> = (0..10).map(|n| event(n, 10)).collect();
    {
        let mut spool = Spool::open(dir.path(), big()).unwrap();
        for (i, e) in originals.iter().enumerate() {
            assert_eq!(spool.append(e).unwrap(), i as u64);
        }
        spool.flush().unwrap();
    }
    let mut spool = Spool::open(dir.path(), big()).unwrap();
    assert_eq!(spool.pending(), 10);
    let batch = spool.read(0, u64::MAX, 100, 1 << 20).unwrap().unwrap();
    assert_eq!(batch.events, originals, "same events, same ids, same order");
    assert_eq!((batch.first, batch.end, batch.sequence()), (0, 10, 1));
}

#[test]
fn appended_events_survive_without_flush() {
    // What a `kill -9` leaves: the process never got to flush, but every
    // append went to the kernel with write(2).
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), big()).unwrap();
    for n in 0..5 {
        spool.append(&event(n, 10)).unwrap();
    }
    drop(spool);
    let mut spool = Spool::open(dir.path(), big()).unwrap();
    assert_eq!(read_all(&mut spool), vec![0, 1, 2, 3, 4]);
}

#[test]
fn acked_events_are_not_read_again() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut spool = Spool::open(dir.path(), big()).unwrap();
        for n in 0..10 {
            spool.append(&event(n, 10)).unwrap();
        }
        let b = spool.read(0, u64::MAX, 4, 1 << 20).unwrap().unwrap();
        assert_eq!(pids(&b), vec![0, 1, 2, 3]);
        spool.ack(b.first, b.end);
        assert_eq!(spool.pending(), 6);
        // Reading again from the start (a reconnect) skips what was acked.
        assert_eq!(read_all(&mut spool), vec![4, 5, 6, 7, 8, 9]);
        spool.flush().unwrap();
    }
    let mut spool = Spool::open(dir.path(), big()).unwrap();
    assert_eq!(spool.pending(), 6);
    assert_eq!(spool.acked_index(), 4);
    assert_eq!(read_all(&mut spool), vec![4, 5, 6, 7, 8, 9]);
}

#[test]
fn out_of_order_acks_are_remembered_until_the_gap_closes() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), big()).unwrap();
    for n in 0..9 {
        spool.append(&event(n, 10)).unwrap();
    }
    let b1 = spool.read(0, u64::MAX, 3, 1 << 20).unwrap().unwrap();
    let b2 = spool.read(b1.end, u64::MAX, 3, 1 << 20).unwrap().unwrap();
    let b3 = spool.read(b2.end, u64::MAX, 3, 1 << 20).unwrap().unwrap();
    assert!(b1.sequence() < b2.sequence() && b2.sequence() < b3.sequence());

    spool.ack(b2.first, b2.end);
    assert_eq!(spool.acked_index(), 0, "cursor waits for the first batch");
    assert_eq!(spool.pending(), 6);
    // A resend after a reconnect skips the acked middle batch: the first
    // batch stops in front of it.
    let again = spool.read(0, u64::MAX, 100, 1 << 20).unwrap().unwrap();
    assert_eq!(pids(&again), vec![0, 1, 2]);
    let after = spool
        .read(again.end, u64::MAX, 100, 1 << 20)
        .unwrap()
        .unwrap();
    assert_eq!(pids(&after), vec![6, 7, 8]);

    spool.ack(b1.first, b1.end);
    assert_eq!(
        spool.acked_index(),
        6,
        "cursor jumps over both acked batches"
    );
    spool.ack(b3.first, b3.end);
    assert_eq!(spool.pending(), 0);
    assert_eq!(spool.read(0, u64::MAX, 100, 1 << 20).unwrap(), None);
}

#[test]
fn torn_tail_record_is_ignored_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut spool = Spool::open(dir.path(), big()).unwrap();
        for n in 0..3 {
            spool.append(&event(n, 10)).unwrap();
        }
        spool.flush().unwrap();
    }
    // Tear the last record in half, as a power cut in the middle of write(2)
    // would, then add a zero-filled block as some filesystems do.
    let seg = &segment_files(dir.path())[0];
    let len = fs::metadata(seg).unwrap().len();
    let f = OpenOptions::new().write(true).open(seg).unwrap();
    f.set_len(len - 7).unwrap();
    let mut f = OpenOptions::new().append(true).open(seg).unwrap();
    f.write_all(&[0u8; 512]).unwrap();
    drop(f);

    let mut spool = Spool::open(dir.path(), big()).unwrap();
    assert_eq!(spool.pending(), 2);
    assert_eq!(spool.append(&event(99, 10)).unwrap(), 2);
    assert_eq!(read_all(&mut spool), vec![0, 1, 99]);
    drop(spool);
    let mut spool = Spool::open(dir.path(), big()).unwrap();
    assert_eq!(read_all(&mut spool), vec![0, 1, 99]);
}

#[test]
fn corrupt_record_in_sealed_segment_skips_to_the_next_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), small_segments()).unwrap();
    for n in 0..40 {
        spool.append(&event(n, 100)).unwrap();
    }
    spool.flush().unwrap();
    drop(spool);
    let files = segment_files(dir.path());
    assert!(files.len() >= 3, "{files:?}");
    // Flip a byte in the middle of the first segment's second record.
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&files[0])
        .unwrap();
    let record_len = fs::metadata(&files[0]).unwrap().len() / {
        let second_base: u64 = files[1]
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        second_base
    };
    f.seek(SeekFrom::Start(record_len + 20)).unwrap();
    f.write_all(b"\xff\xff").unwrap();
    drop(f);

    let mut spool = Spool::open(dir.path(), small_segments()).unwrap();
    let got = read_all(&mut spool);
    assert_eq!(got[0], 0);
    let second_base: u64 = files[1]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        got[1], second_base,
        "the rest of the damaged segment is skipped"
    );
    assert_eq!(*got.last().unwrap(), 39);
    // Acking what was read settles the skipped indices too.
    let b = spool.read(0, u64::MAX, 1000, 1 << 20).unwrap().unwrap();
    spool.ack(b.first, b.end);
    assert_eq!(spool.pending(), 0);
}

#[test]
fn full_spool_drops_oldest_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let config = SpoolConfig {
        max_bytes: 8 * 1024,
        segment_bytes: 2 * 1024,
    };
    let appended = 200u64;
    {
        let mut spool = Spool::open(dir.path(), config).unwrap();
        for n in 0..appended {
            spool.append(&event(n, 100)).unwrap();
            assert!(spool.total_bytes() <= config.max_bytes);
        }
        assert!(spool.dropped_total() > 0);
        assert_eq!(spool.pending() + spool.dropped_total(), appended);
        spool.flush().unwrap();
        let on_disk: u64 = segment_files(dir.path())
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum();
        assert!(on_disk <= config.max_bytes, "{on_disk} bytes on disk");
    }
    let mut spool = Spool::open(dir.path(), config).unwrap();
    let dropped = spool.dropped_total();
    assert_eq!(
        spool.pending() + dropped,
        appended,
        "drop count is persisted"
    );
    let kept = read_all(&mut spool);
    assert_eq!(
        *kept.last().unwrap(),
        appended - 1,
        "the newest events are kept"
    );
    assert_eq!(kept[0], dropped, "the oldest events are the ones dropped");
}

#[test]
fn acked_events_do_not_count_as_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let config = SpoolConfig {
        max_bytes: 8 * 1024,
        segment_bytes: 2 * 1024,
    };
    let mut spool = Spool::open(dir.path(), config).unwrap();
    for n in 0..200 {
        let i = spool.append(&event(n, 100)).unwrap();
        spool.ack(i, i + 1);
    }
    assert_eq!(spool.dropped_total(), 0);
    assert_eq!(spool.pending(), 0);
}

#[test]
fn sequence_numbers_keep_increasing_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut last_sequence = 0;
    for round in 0..4 {
        let mut spool = Spool::open(dir.path(), small_segments()).unwrap();
        for n in 0..30 {
            spool.append(&event(round * 100 + n, 100)).unwrap();
        }
        let mut from = 0;
        while let Some(b) = spool.read(from, u64::MAX, 7, 1 << 20).unwrap() {
            assert!(
                b.sequence() > last_sequence,
                "round {round}: {} after {last_sequence}",
                b.sequence()
            );
            last_sequence = b.sequence();
            from = b.end;
            spool.ack(b.first, b.end);
        }
        spool.flush().unwrap();
        assert_eq!(spool.pending(), 0);
    }
    // Fully acked sealed segments were deleted along the way; only the head
    // is left.
    assert_eq!(segment_files(dir.path()).len(), 1);
}

#[test]
fn sequence_survives_deleting_every_segment() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut spool = Spool::open(dir.path(), big()).unwrap();
        for n in 0..5 {
            spool.append(&event(n, 10)).unwrap();
        }
        spool.ack(0, 5);
        spool.flush().unwrap();
    }
    // On reopen a fully acked head is deleted; the cursor file alone keeps
    // the position.
    let mut spool = Spool::open(dir.path(), big()).unwrap();
    assert!(segment_files(dir.path()).is_empty());
    assert_eq!(spool.append(&event(5, 10)).unwrap(), 5);
    drop(spool);
    let spool = Spool::open(dir.path(), big()).unwrap();
    assert_eq!((spool.next_index(), spool.pending()), (6, 1));
}

#[test]
fn batch_respects_byte_budget_but_always_carries_one_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), big()).unwrap();
    for n in 0..10 {
        spool.append(&event(n, 1000)).unwrap();
    }
    let b = spool.read(0, u64::MAX, 100, 3500).unwrap().unwrap();
    assert_eq!(pids(&b), vec![0, 1, 2]);
    let encoded: usize = b
        .events
        .iter()
        .map(|e| e.encoded_len() + EVENT_OVERHEAD)
        .sum();
    assert!(encoded <= 3500);
    // The event that did not fit starts the next batch.
    let b = spool.read(b.end, u64::MAX, 100, 10).unwrap().unwrap();
    assert_eq!(pids(&b), vec![3]);
}

#[test]
fn limit_splits_backlog_from_live_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), big()).unwrap();
    for n in 0..6 {
        spool.append(&event(n, 10)).unwrap();
    }
    let live_from = spool.next_index();
    for n in 6..8 {
        spool.append(&event(n, 10)).unwrap();
    }
    let live = spool
        .read(live_from, u64::MAX, 100, 1 << 20)
        .unwrap()
        .unwrap();
    assert_eq!(pids(&live), vec![6, 7]);
    let backlog = spool.read(0, live_from, 100, 1 << 20).unwrap().unwrap();
    assert_eq!(pids(&backlog), vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(
        spool.read(backlog.end, live_from, 100, 1 << 20).unwrap(),
        None
    );
}

#[test]
fn fully_acked_segments_are_deleted_after_flush() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), small_segments()).unwrap();
    for n in 0..50 {
        spool.append(&event(n, 100)).unwrap();
    }
    let before = segment_files(dir.path()).len();
    assert!(before > 3);
    let b = spool.read(0, u64::MAX, 25, 1 << 20).unwrap().unwrap();
    spool.ack(b.first, b.end);
    spool.flush().unwrap();
    let after = segment_files(dir.path());
    assert!(after.len() < before);
    let first_base: u64 = after[0]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(first_base <= 25, "the segment holding event 25 is kept");
    drop(spool);
    let mut spool = Spool::open(dir.path(), small_segments()).unwrap();
    assert_eq!(read_all(&mut spool), (25..50).collect::<Vec<_>>());
}

#[test]
fn oversized_and_empty_events_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), big()).unwrap();
    assert!(matches!(
        spool.append(&Event::default()),
        Err(Error::EventSize(0))
    ));
    assert!(matches!(
        spool.append(&event(0, record::MAX_PAYLOAD)),
        Err(Error::EventSize(_))
    ));
    assert_eq!(spool.pending(), 0);
}
