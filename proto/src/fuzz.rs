//! The properties the fuzz targets (`fuzz/`) check on arbitrary bytes,
//! here so that the crashes they find (kept in `fuzz/regressions/`) are
//! replayed by this crate's tests.

use prost::Message;

use crate::agent::v1::{Event, StreamBatch};
use crate::{kind_of, subject, validate, wire};

/// A fixed "now" (2025-11-24), so a run is repeatable.
const NOW_US: i64 = 1_764_000_000_000_000;

/// The wire reader never panics, and what it reads of an event agrees with
/// prost's decoding of it.
pub fn wire(data: &[u8]) {
    let _ = wire::read_stream_batch(data);
    let _ = wire::restore_subject(data, "/usr/bin/x");
    for field in wire::EVENT_BODIES {
        let _ = wire::split_subject(field, data);
    }
    let Ok(event) = Event::decode(data) else {
        return;
    };
    let Ok(Some(body)) = wire::body(data) else {
        return;
    };
    if let Some(encoding) = body.encoding
        && let Ok(Some((kind, subj))) = wire::kind_and_subject(body.field, encoding)
    {
        assert_eq!(Some(kind), kind_of(&event), "kind of {event:?}");
        assert_eq!(subj, subject(&event), "subject of {event:?}");
    }
    // A stream batch made of this event reads back as it.
    if let Ok(sb) = StreamBatch::decode(data) {
        let view = wire::read_stream_batch(data).expect("prost read it");
        assert_eq!(view.events.len(), sb.events.len());
    }
}

/// Validation never panics, and an accepted batch's events decode as
/// events that have a kind (what every reader after ingest relies on).
pub fn validate(data: &[u8]) {
    let Ok(batch) = validate::read_batch(data) else {
        return;
    };
    let limits = validate::Limits { max_events: 1000 };
    if validate::validate_batch(&batch, limits, NOW_US).is_ok() {
        for e in &batch.events {
            let event = Event::decode(*e).expect("an accepted event decodes");
            assert!(kind_of(&event).is_some(), "an accepted event has a kind");
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every input the fuzzers ever crashed on, and the seeds, still pass.
    #[test]
    fn the_fuzzers_findings_stay_fixed() {
        // The runner's CARGO_MANIFEST_DIR first: a test binary reused from a
        // build in another checkout (a shared target directory) still reads
        // this checkout's files.
        let manifest = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
            || env!("CARGO_MANIFEST_DIR").into(),
            std::path::PathBuf::from,
        );
        let root = manifest.join("../fuzz/regressions");
        let mut replayed = 0;
        for (target, check) in [
            ("wire", super::wire as fn(&[u8])),
            ("validate", super::validate),
        ] {
            let Ok(files) = std::fs::read_dir(root.join(target)) else {
                continue;
            };
            for f in files.flatten() {
                check(&std::fs::read(f.path()).unwrap());
                replayed += 1;
            }
        }
        assert!(
            replayed > 0,
            "the regression inputs are in {}",
            root.display()
        );
    }
}
