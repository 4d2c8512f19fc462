//! Validation and bounds for everything an agent sends (ingest checks each
//! batch with it; `fuzz/` feeds it arbitrary bytes). A batch is accepted
//! whole or refused whole, with a reason that names the event and field.
//!
//! Batches are checked in their encoding, field by field, and never decoded:
//! ingest passes each accepted event on as the bytes the agent sent. So the
//! checks here are also what makes those bytes safe for every reader after
//! it: each accepted event decodes as an `Event` (right wire types, UTF-8
//! text, no groups), has exactly one body with a known kind, no field twice
//! and no field the protocol does not define, and every value is bounded.

use crate::schema::{self, Check, field, max};
use crate::wire::{EVENT_BODIES, Field, WireError, next_field};
use prost::encoding::WireType;
use tonic::Code;

/// Bounds on one batch and its events.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_events: usize,
}

const MAX_TRACEPARENT: usize = 128;
/// Events older than this (by corrected time) are refused: the operation log
/// keeps nothing older, and it bounds the partitions a bad clock can touch.
const MAX_AGE_DAYS: i64 = 400;
/// Corrected times more than this in the future are a broken clock.
const MAX_FUTURE_SECS: i64 = 24 * 3600;
const MAX_CLOCK_OFFSET_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

/// Why a batch was refused: a gRPC code and a message for the agent's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: Code,
    pub reason: String,
    /// A short, fixed label for the rejected-events metric.
    pub label: &'static str,
}

impl Rejection {
    fn invalid(label: &'static str, reason: String) -> Self {
        Self {
            code: Code::InvalidArgument,
            reason,
            label,
        }
    }
}

/// An `EventBatch` read from its encoding: the header decoded, each event
/// still encoded (and not yet checked).
#[derive(Debug, Default)]
pub struct BatchView<'a> {
    pub sequence: u64,
    pub events: Vec<&'a [u8]>,
    pub traceparent: &'a str,
    pub device_id: &'a str,
}

/// Reads an encoded `EventBatch`. An error means the message itself is
/// broken (not just one of its events): the stream ends with it.
pub fn read_batch(bytes: &[u8]) -> Result<BatchView<'_>, String> {
    let mut view = BatchView::default();
    let mut buf = bytes;
    let broken = |what: &str, e: WireError| format!("event batch is malformed: {what}: {e}");
    while !buf.is_empty() {
        let f = next_field(&mut buf).map_err(|e| broken("field", e))?;
        // Field numbers of EventBatch (proto/mamori/agent/v1/agent.proto).
        // Fields it does not define are skipped, as a decoder would.
        match (f.tag, f.wire_type) {
            (1, WireType::Varint) => view.sequence = f.varint,
            (2, WireType::LengthDelimited) => view.events.push(f.bytes),
            (3, WireType::LengthDelimited) => {
                view.traceparent = f.text().map_err(|e| broken("traceparent", e))?;
            }
            (4, WireType::LengthDelimited) => {
                view.device_id = f.text().map_err(|e| broken("device_id", e))?;
            }
            (1..=4, _) => return Err(broken("field", WireError("wrong wire type"))),
            _ => {}
        }
    }
    Ok(view)
}

/// Checks a batch and each of its events, as of `now_us` (µs since the
/// Unix epoch).
pub fn validate_batch(batch: &BatchView<'_>, limits: Limits, now_us: i64) -> Result<(), Rejection> {
    if batch.sequence == 0 {
        return Err(Rejection::invalid(
            "sequence",
            "batch sequence must be positive".into(),
        ));
    }
    if batch.events.is_empty() {
        return Err(Rejection::invalid(
            "empty",
            format!("batch {} has no events", batch.sequence),
        ));
    }
    if batch.events.len() > limits.max_events {
        return Err(Rejection::invalid(
            "too_many_events",
            format!(
                "batch {} has {} events; at most {} per batch",
                batch.sequence,
                batch.events.len(),
                limits.max_events
            ),
        ));
    }
    if batch.traceparent.len() > MAX_TRACEPARENT {
        return Err(Rejection::invalid(
            "traceparent",
            format!("traceparent is longer than {MAX_TRACEPARENT} bytes"),
        ));
    }
    let window = TimeWindow::around(now_us);
    for (i, e) in batch.events.iter().enumerate() {
        validate_event(e, &window).map_err(|(label, why)| {
            Rejection::invalid(label, format!("batch {} event {i}: {why}", batch.sequence))
        })?;
    }
    Ok(())
}

type Bad = (&'static str, String);

/// The corrected times (µs) an event may have.
struct TimeWindow {
    oldest: i64,
    newest: i64,
}

impl TimeWindow {
    fn around(now_us: i64) -> Self {
        Self {
            oldest: now_us.saturating_sub(MAX_AGE_DAYS * 24 * 3600 * 1_000_000),
            newest: now_us.saturating_add(MAX_FUTURE_SECS * 1_000_000),
        }
    }
}

fn time_text(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map_or_else(|| format!("{us} µs"), |t| t.to_string())
}

fn malformed(at: &str, e: WireError) -> Bad {
    ("malformed", format!("{at}: {e}"))
}

fn text<'a>(field: &str, value: &'a [u8], max: usize) -> Result<&'a str, Bad> {
    if value.len() > max {
        return Err((
            "field_too_long",
            format!("{field} is {} bytes; at most {max}", value.len()),
        ));
    }
    let s = std::str::from_utf8(value)
        .map_err(|_| ("not_utf8", format!("{field} is not valid UTF-8")))?;
    if value.contains(&0) {
        return Err(("nul_byte", format!("{field} contains a NUL byte")));
    }
    Ok(s)
}

fn expect(f: &Field<'_>, wire_type: WireType, field: &str) -> Result<(), Bad> {
    if f.wire_type == wire_type {
        return Ok(());
    }
    Err((
        "wire_type",
        format!("{field} is encoded as {:?}, not {wire_type:?}", f.wire_type),
    ))
}

/// Marks field `tag` (< 64) seen; a field may appear once.
fn once(seen: &mut u64, tag: u32, field: &str) -> Result<(), Bad> {
    let bit = 1u64 << tag;
    if *seen & bit != 0 {
        return Err(("duplicate_field", format!("{field} appears twice")));
    }
    *seen |= bit;
    Ok(())
}

fn validate_event(bytes: &[u8], window: &TimeWindow) -> Result<(), Bad> {
    let (mut id, mut occurred_at_us, mut clock_offset_ms) = (&[][..], 0i64, 0i64);
    let mut body: Option<(u32, &[u8])> = None;
    let mut seen = 0u64;
    let mut buf = bytes;
    while !buf.is_empty() {
        let f = next_field(&mut buf).map_err(|e| malformed("event", e))?;
        match f.tag {
            field::ID => {
                once(&mut seen, field::ID, "id")?;
                expect(&f, WireType::LengthDelimited, "id")?;
                id = f.bytes;
            }
            field::OCCURRED_AT_US => {
                once(&mut seen, field::OCCURRED_AT_US, "occurred_at_us")?;
                expect(&f, WireType::Varint, "occurred_at_us")?;
                occurred_at_us = f.varint as i64;
            }
            field::CLOCK_OFFSET_MS => {
                once(&mut seen, field::CLOCK_OFFSET_MS, "clock_offset_ms")?;
                expect(&f, WireType::Varint, "clock_offset_ms")?;
                clock_offset_ms = f.varint as i64;
            }
            field::OS_USER => {
                once(&mut seen, field::OS_USER, "os_user")?;
                expect(&f, WireType::LengthDelimited, "os_user")?;
                text("os_user", f.bytes, max::EVENT_OS_USER)?;
            }
            tag if EVENT_BODIES.contains(&tag) => {
                let name = body_name(tag);
                expect(&f, WireType::LengthDelimited, name)?;
                if let Some((other, _)) = body {
                    let first = body_name(other);
                    return Err((
                        "kind",
                        format!("event has more than one kind ({first} and {name})"),
                    ));
                }
                body = Some((tag, f.bytes));
            }
            tag => {
                return Err((
                    "unknown_field",
                    format!("event has field {tag}, which the protocol does not define"),
                ));
            }
        }
    }
    match uuid::Uuid::from_slice(id) {
        Ok(id) if !id.is_nil() => {}
        _ => {
            return Err((
                "event_id",
                format!("id must be 16 bytes (a UUIDv7), got {} bytes", id.len()),
            ));
        }
    }
    if clock_offset_ms.unsigned_abs() > MAX_CLOCK_OFFSET_MS {
        return Err((
            "clock_offset",
            format!("clock_offset_ms {clock_offset_ms} is out of range"),
        ));
    }
    let ts = clock_offset_ms
        .checked_mul(1000)
        .and_then(|o| occurred_at_us.checked_add(o))
        .ok_or(("timestamp", "occurred_at_us is out of range".to_owned()))?;
    if ts < window.oldest {
        return Err((
            "timestamp",
            format!(
                "occurred at {}, more than {MAX_AGE_DAYS} days ago",
                time_text(ts)
            ),
        ));
    }
    if ts > window.newest {
        return Err((
            "timestamp",
            format!("occurred at {}, in the future", time_text(ts)),
        ));
    }
    let no_kind = || {
        (
            "kind",
            "event has no kind, or its action is unspecified".to_owned(),
        )
    };
    let (tag, body) = body.ok_or_else(no_kind)?;
    let action = validate_body(tag, body)?;
    crate::wire::kind(tag, action).ok_or_else(no_kind)?;
    Ok(())
}

fn body_name(tag: u32) -> &'static str {
    schema::body(tag).map_or("body", |b| b.name)
}

/// Checks an event body; returns its action (field 1 where that is a
/// varint, else 0) for [`crate::wire::kind`].
fn validate_body(tag: u32, bytes: &[u8]) -> Result<u64, Bad> {
    let spec = schema::body(tag).expect("called with a body field");
    let body = spec.name;
    let mut action = 0;
    let mut seen = 0u64;
    // Items of each repeated field, by its place in the spec.
    let mut items = [0usize; 64];
    let mut buf = bytes;
    while !buf.is_empty() {
        let f = next_field(&mut buf).map_err(|e| malformed(body, e))?;
        let Some(at) = spec.fields.iter().position(|s| s.number == f.tag) else {
            return Err((
                "unknown_field",
                format!(
                    "{body} has field {}, which the protocol does not define",
                    f.tag
                ),
            ));
        };
        let (name, check) = (spec.fields[at].name, spec.fields[at].check);
        if !matches!(check, Check::Texts { .. }) {
            once(&mut seen, f.tag, name)?;
        }
        match check {
            Check::Text { max_bytes } => {
                expect(&f, WireType::LengthDelimited, name)?;
                text(name, f.bytes, max_bytes)?;
            }
            Check::Texts {
                max_bytes,
                max_items,
            } => {
                expect(&f, WireType::LengthDelimited, name)?;
                let count = &mut items[at];
                *count += 1;
                if *count > max_items {
                    return Err((
                        "list_too_long",
                        format!("{name} has more than {max_items} items"),
                    ));
                }
                text(name, f.bytes, max_bytes)?;
            }
            Check::Digest { bytes } => {
                expect(&f, WireType::LengthDelimited, name)?;
                if !(f.bytes.is_empty() || f.bytes.len() == bytes) {
                    return Err((
                        name,
                        format!("{name} must be {bytes} bytes, got {}", f.bytes.len()),
                    ));
                }
            }
            Check::Varint => {
                expect(&f, WireType::Varint, name)?;
                if f.tag == 1 {
                    action = f.varint;
                }
            }
            Check::U32 { max } => {
                expect(&f, WireType::Varint, name)?;
                if f.varint > u64::from(max) {
                    return Err(("out_of_range", format!("{name} is above {max}")));
                }
            }
        }
    }
    Ok(action)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::v1::{
        Event, EventBatch, InventoryEvent, NetworkEvent, ProcessEvent, event::Kind,
        process_event::Action,
    };
    use prost::Message;

    fn now_us() -> i64 {
        chrono::Utc::now().timestamp_micros()
    }

    fn event(now_us: i64) -> Event {
        Event {
            id: uuid::Uuid::now_v7().as_bytes().to_vec(),
            occurred_at_us: now_us,
            clock_offset_ms: 0,
            os_user: "alice".into(),
            kind: Some(Kind::Process(ProcessEvent {
                action: Action::Start as i32,
                exe_path: "/usr/bin/true".into(),
                ..Default::default()
            })),
        }
    }

    fn check(events: &[Vec<u8>], now_us: i64) -> Result<(), Rejection> {
        let batch = BatchView {
            sequence: 7,
            events: events.iter().map(Vec::as_slice).collect(),
            ..Default::default()
        };
        validate_batch(&batch, LIMITS, now_us)
    }

    const LIMITS: Limits = Limits { max_events: 10 };

    #[test]
    fn an_encoded_batch_reads_as_its_header_and_events() {
        let now = now_us();
        let events = vec![event(now), event(now)];
        let batch = EventBatch {
            sequence: 9,
            events: events.clone(),
            traceparent: "00-abc".into(),
            device_id: "dev".into(),
        };
        let bytes = batch.encode_to_vec();
        let view = read_batch(&bytes).unwrap();
        assert_eq!(
            (view.sequence, view.traceparent, view.device_id),
            (9, "00-abc", "dev")
        );
        let decoded: Vec<Event> = view
            .events
            .iter()
            .map(|e| Event::decode(*e).unwrap())
            .collect();
        assert_eq!(decoded, events);
        assert_eq!(validate_batch(&view, LIMITS, now), Ok(()));

        let mut broken = bytes.clone();
        broken.truncate(bytes.len() - 1);
        let why = read_batch(&broken).unwrap_err();
        assert!(why.contains("runs past the end"), "{why}");
        // Sequence sent as a string: a decoder would refuse it too.
        let why = read_batch(&[0x0a, 0x01, b'7']).unwrap_err();
        assert!(why.contains("wrong wire type"), "{why}");
        let why = read_batch(&[0x1a, 0x01, 0xff]).unwrap_err();
        assert!(
            why.contains("traceparent") && why.contains("UTF-8"),
            "{why}"
        );
    }

    #[test]
    fn each_bad_field_is_named() {
        let now = now_us();
        type Mutation = Box<dyn Fn(&mut Event)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|e| e.id = vec![1, 2, 3]), "16 bytes"),
            (Box::new(|e| e.id = vec![0; 16]), "16 bytes"),
            (Box::new(|e| e.occurred_at_us = 0), "days ago"),
            (Box::new(|e| e.clock_offset_ms = 3_600_000 * 48), "future"),
            (Box::new(|e| e.clock_offset_ms = i64::MIN), "out of range"),
            (Box::new(|e| e.occurred_at_us = i64::MAX), "future"),
            (Box::new(|e| e.os_user = "x".repeat(300)), "os_user"),
            (Box::new(|e| e.kind = None), "no kind"),
            (
                Box::new(|e| {
                    if let Some(Kind::Process(p)) = &mut e.kind {
                        p.action = 0;
                    }
                }),
                "no kind",
            ),
            (
                Box::new(|e| {
                    if let Some(Kind::Process(p)) = &mut e.kind {
                        p.exe_sha256 = vec![0; 31];
                    }
                }),
                "exe_sha256 must be 32 bytes",
            ),
            (
                Box::new(|e| {
                    if let Some(Kind::Process(p)) = &mut e.kind {
                        p.exe_path = "a\0b".into();
                    }
                }),
                "exe_path contains a NUL",
            ),
            (
                Box::new(|e| {
                    if let Some(Kind::Process(p)) = &mut e.kind {
                        p.command_line = "c".repeat(max::PROCESS_COMMAND_LINE + 1);
                    }
                }),
                "command_line is 8193 bytes; at most 8192",
            ),
            (
                Box::new(|e| {
                    e.kind = Some(Kind::Network(NetworkEvent {
                        remote_port: 70000,
                        ..Default::default()
                    }))
                }),
                "remote_port is above 65535",
            ),
            (
                Box::new(|e| {
                    e.kind = Some(Kind::Inventory(InventoryEvent {
                        ip_addrs: vec!["10.0.0.1".into(); max::INVENTORY_IP_ADDRS_ITEMS + 1],
                        ..Default::default()
                    }))
                }),
                "ip_addrs has more than 64 items",
            ),
        ];
        for (mutate, expect) in cases {
            let mut e = event(now);
            mutate(&mut e);
            let r = check(&[event(now).encode_to_vec(), e.encode_to_vec()], now).unwrap_err();
            assert_eq!(r.code, Code::InvalidArgument);
            assert!(
                r.reason.contains(expect) && r.reason.contains("batch 7 event 1"),
                "{expect}: {}",
                r.reason
            );
        }
    }

    /// Encodings no agent of ours produces, but a decoder would choke on
    /// (or, worse, read differently from the writer's field reader).
    #[test]
    fn encodings_a_decoder_would_refuse_or_misread_are_refused() {
        let now = now_us();
        let good = event(now).encode_to_vec();
        let process_body = |e: &[u8]| {
            let mut buf = e;
            loop {
                let f = next_field(&mut buf).unwrap();
                if f.tag == 11 {
                    return f.bytes.to_vec();
                }
            }
        };
        let with_body = |body: &[u8]| {
            let mut e = good.clone();
            // The body is the last field of this encoding.
            let body_at = e.len() - process_body(&good).len() - 2;
            e.truncate(body_at);
            e.push(0x5a); // field 11, length-delimited
            e.push(u8::try_from(body.len()).unwrap());
            e.extend_from_slice(body);
            e
        };
        let body = process_body(&good);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            // exe_path (4) with a byte that is not UTF-8.
            (
                with_body(&[&body[..], &[0x22, 0x02, b'/', 0xff]].concat()),
                "exe_path appears twice",
            ),
            (
                with_body(&[0x08, 0x01, 0x22, 0x02, b'/', 0xff]),
                "exe_path is not valid UTF-8",
            ),
            // pid (2) sent as bytes.
            (
                with_body(&[0x08, 0x01, 0x12, 0x01, b'1']),
                "pid is encoded as LengthDelimited",
            ),
            // pid above u32.
            (
                with_body(&[0x08, 0x01, 0x10, 0x80, 0x80, 0x80, 0x80, 0x10]),
                "pid is above",
            ),
            // A field ProcessEvent does not have.
            (
                with_body(&[0x08, 0x01, 0xf8, 0x01, 0x01]),
                "process has field 31",
            ),
            // Truncated inside the body.
            (
                with_body(&[0x08, 0x01, 0x22, 0x05, b'/']),
                "process: field runs past the end",
            ),
            // A second body.
            (
                [&good[..], &[0x62, 0x02, 0x08, 0x01]].concat(),
                "more than one kind (process and file)",
            ),
            // A second id.
            (
                [&good[..], &[0x0a, 0x10], &[9; 16]].concat(),
                "id appears twice",
            ),
            // A field Event does not have.
            ([&good[..], &[0x28, 0x01]].concat(), "event has field 5"),
            // A group.
            ([&good[..], &[0x2b]].concat(), "groups are not used"),
        ];
        for (bytes, expect) in cases {
            let r = check(&[bytes], now).unwrap_err();
            assert!(r.reason.contains(expect), "{expect}: {}", r.reason);
        }
        assert_eq!(
            check(&[with_body(&body)], now),
            Ok(()),
            "the splice itself is fine"
        );
    }

    #[test]
    fn too_many_and_empty_batches_are_refused() {
        let now = now_us();
        let many: Vec<_> = (0..11).map(|_| event(now).encode_to_vec()).collect();
        let r = check(&many, now).unwrap_err();
        assert!(r.reason.contains("at most 10"), "{}", r.reason);
        assert!(check(&[], now).is_err());
    }

    /// Whatever passes decodes as an `Event` with a kind: ingest passes the
    /// bytes on, and the writer, alerting and the console decode them.
    #[test]
    fn whatever_passes_decodes_as_an_event_with_a_kind() {
        let now = now_us();
        let mut samples = vec![event(now)];
        samples.push(Event {
            kind: Some(Kind::Inventory(InventoryEvent {
                hostname: "pc-1".into(),
                ip_addrs: vec!["10.0.0.1".into(), "::1".into()],
                mac_addrs: vec!["aa:bb".into()],
                memory_bytes: 1 << 33,
                ..Default::default()
            })),
            ..event(now)
        });
        samples.push(Event {
            clock_offset_ms: -1500,
            kind: Some(Kind::Network(NetworkEvent {
                direction: 1,
                protocol: "tcp".into(),
                remote_addr: "example.org".into(),
                remote_port: 443,
                ..Default::default()
            })),
            ..event(now)
        });
        let encoded: Vec<Vec<u8>> = samples.iter().map(Message::encode_to_vec).collect();
        // xorshift: deterministic, no dependency.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut passed, mut refused) = (0, 0);
        for round in 0..40_000 {
            let mut bytes = encoded[round % encoded.len()].clone();
            for _ in 0..=(next() % 3) {
                let at = (next() as usize) % bytes.len();
                match next() % 4 {
                    0 => bytes[at] = next() as u8,
                    1 => bytes[at] ^= 1 << (next() % 8),
                    2 => bytes.truncate(at.max(1)),
                    _ => bytes.insert(at, next() as u8),
                }
            }
            match check(&[bytes.clone()], now) {
                Ok(()) => {
                    passed += 1;
                    let e = Event::decode(&bytes[..])
                        .unwrap_or_else(|err| panic!("{bytes:?} passed but: {err}"));
                    assert!(crate::kind_of(&e).is_some(), "{e:?}");
                    assert_eq!(e.id.len(), 16);
                    // Its canonical encoding passes too.
                    assert_eq!(check(&[e.encode_to_vec()], now), Ok(()), "{e:?}");
                }
                Err(r) => {
                    refused += 1;
                    assert!(r.reason.starts_with("batch 7 event 0: "), "{}", r.reason);
                }
            }
        }
        assert!(
            passed > 1000 && refused > 1000,
            "{passed} passed, {refused} refused"
        );
    }
}
