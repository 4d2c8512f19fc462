//! Reading encoded messages field by field, without decoding them: for hot
//! paths that need a few fields of many events (the writer stores each
//! event's encoding minus the fields it keeps in columns: id, time, user and
//! the body's subject).

use crate::convert::EventKind;
use prost::encoding::WireType;

/// Why an encoding cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(pub &'static str);

/// One protobuf field: its number, wire type, value and whole encoding.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    pub tag: u32,
    pub wire_type: WireType,
    /// The varint, or 0.
    pub varint: u64,
    /// The bytes of a length-delimited value, or empty.
    pub bytes: &'a [u8],
    /// Key and value as encoded.
    pub encoded: &'a [u8],
}

impl<'a> Field<'a> {
    pub fn is_bytes(&self) -> bool {
        self.wire_type == WireType::LengthDelimited
    }

    pub fn is_varint(&self) -> bool {
        self.wire_type == WireType::Varint
    }

    /// The value as UTF-8 text.
    pub fn text(&self) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.bytes).map_err(|_| WireError("text is not UTF-8"))
    }
}

/// Reads a varint, advancing `buf` past it. Accepts and refuses exactly
/// what prost's `decode_varint` does (tested), with a fast path for the
/// one-byte varints that most keys and lengths are.
#[inline]
pub fn read_varint(buf: &mut &[u8]) -> Result<u64, WireError> {
    let bytes: &[u8] = buf;
    match bytes.first() {
        Some(&b) if b < 0x80 => {
            *buf = &bytes[1..];
            return Ok(u64::from(b));
        }
        None => return Err(WireError("field runs past the end")),
        Some(_) => {}
    }
    let mut value = 0u64;
    for (i, &b) in bytes.iter().take(10).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            // The tenth byte holds the 64th bit only.
            if i == 9 && b > 1 {
                break;
            }
            *buf = &bytes[i + 1..];
            return Ok(value);
        }
    }
    Err(WireError("malformed varint"))
}

/// Reads a field key (number and wire type), as prost's `decode_key` does.
#[inline]
fn read_key(buf: &mut &[u8]) -> Result<(u32, WireType), WireError> {
    let key = read_varint(buf)?;
    let key = u32::try_from(key).map_err(|_| WireError("malformed field key"))?;
    let wire_type =
        WireType::try_from(u64::from(key & 0x07)).map_err(|_| WireError("malformed field key"))?;
    let tag = key >> 3;
    if tag == 0 {
        return Err(WireError("malformed field key"));
    }
    Ok((tag, wire_type))
}

/// The next field of an encoded message, advancing `buf` past it.
pub fn next_field<'a>(buf: &mut &'a [u8]) -> Result<Field<'a>, WireError> {
    let start: &'a [u8] = buf;
    let (tag, wire_type) = read_key(buf)?;
    let (mut varint, mut bytes) = (0, &[][..]);
    let skip = |buf: &mut &'a [u8], n: usize| {
        if n > buf.len() {
            return Err(WireError("field runs past the end"));
        }
        let rest: &'a [u8] = buf;
        let (value, rest) = rest.split_at(n);
        *buf = rest;
        Ok(value)
    };
    match wire_type {
        WireType::Varint => varint = read_varint(buf)?,
        WireType::LengthDelimited => {
            let len =
                usize::try_from(read_varint(buf)?).map_err(|_| WireError("length overflows"))?;
            bytes = skip(buf, len)?;
        }
        WireType::SixtyFourBit => {
            skip(buf, 8)?;
        }
        WireType::ThirtyTwoBit => {
            skip(buf, 4)?;
        }
        WireType::StartGroup | WireType::EndGroup => return Err(WireError("groups are not used")),
    }
    Ok(Field {
        tag,
        wire_type,
        varint,
        bytes,
        encoded: &start[..start.len() - buf.len()],
    })
}

/// A `StreamBatch` read field by field: the header decoded, the events
/// left encoded (each decodes as an `Event`).
#[derive(Debug, Clone, Default)]
pub struct StreamBatchView<'a> {
    pub tenant_id: &'a str,
    pub device_id: &'a str,
    pub received_at: Option<prost_types::Timestamp>,
    pub traceparent: &'a str,
    pub events: Vec<&'a [u8]>,
}

/// Reads an encoded `StreamBatch` without decoding its events.
pub fn read_stream_batch(bytes: &[u8]) -> Result<StreamBatchView<'_>, WireError> {
    use prost::Message;
    let mut view = StreamBatchView::default();
    let mut buf = bytes;
    while !buf.is_empty() {
        let f = next_field(&mut buf)?;
        if !f.is_bytes() {
            continue;
        }
        // Field numbers of StreamBatch (proto/mamori/agent/v1/agent.proto).
        match f.tag {
            1 => view.tenant_id = f.text()?,
            2 => view.device_id = f.text()?,
            4 => {
                view.received_at = Some(
                    prost_types::Timestamp::decode(f.bytes)
                        .map_err(|_| WireError("received_at is not a timestamp"))?,
                );
            }
            5 => view.traceparent = f.text()?,
            6 => view.events.push(f.bytes),
            _ => {}
        }
    }
    Ok(view)
}

/// Encodes a `StreamBatch` whose events are already encoded (each an
/// `Event`), copying their bytes instead of decoding and re-encoding them.
/// [`read_stream_batch`] reads it back; it decodes as a `StreamBatch`.
pub fn encode_stream_batch(
    tenant_id: &str,
    device_id: &str,
    sequence: u64,
    received_at: &prost_types::Timestamp,
    traceparent: &str,
    events: &[&[u8]],
) -> Vec<u8> {
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, message, uint64};
    fn put(tag: u32, value: &[u8], out: &mut Vec<u8>) {
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(value.len() as u64, out);
        out.extend_from_slice(value);
    }
    let events_len: usize = events
        .iter()
        .map(|e| 1 + encoded_len_varint(e.len() as u64) + e.len())
        .sum();
    let header = tenant_id.len() + device_id.len() + traceparent.len() + 64;
    let mut out = Vec::with_capacity(header + events_len);
    // Field numbers of StreamBatch (proto/mamori/agent/v1/agent.proto);
    // proto3 leaves empty and zero values out.
    for (tag, text) in [(1, tenant_id), (2, device_id)] {
        if !text.is_empty() {
            put(tag, text.as_bytes(), &mut out);
        }
    }
    if sequence != 0 {
        uint64::encode(3, &sequence, &mut out);
    }
    message::encode(4, received_at, &mut out);
    if !traceparent.is_empty() {
        put(5, traceparent.as_bytes(), &mut out);
    }
    for e in events {
        put(6, e, &mut out);
    }
    out
}

/// The body of an encoded `Event`, read by [`body`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Body<'a> {
    /// The body field (one of [`EVENT_BODIES`]): the last one, as the
    /// decoder keeps.
    pub field: u32,
    /// The body message's encoding when the event has just one body field.
    /// With several, the decoder merges or replaces them, so no single
    /// encoding is the body and this is `None`.
    pub encoding: Option<&'a [u8]>,
}

/// The body of an encoded `Event`, or `None` when it has none.
pub fn body(event: &[u8]) -> Result<Option<Body<'_>>, WireError> {
    let mut buf = event;
    let mut body = None;
    while !buf.is_empty() {
        let f = next_field(&mut buf)?;
        if EVENT_BODIES.contains(&f.tag) && f.is_bytes() {
            body = Some(Body {
                field: f.tag,
                encoding: body.is_none().then_some(f.bytes),
            });
        }
    }
    Ok(body)
}

pub use crate::schema::EVENT_BODIES;

/// The field of the body message in `Event` field `body_field` (one of
/// [`EVENT_BODIES`]) that holds the event's subject.
pub fn subject_field(body_field: u32) -> Option<u32> {
    crate::schema::body(body_field).map(|b| b.subject)
}

/// The kind and subject of an encoded event body — the message of the
/// `Event` field `field` (one of [`EVENT_BODIES`]) — read without decoding
/// it. Agrees with [`crate::kind_of`] and [`crate::subject`] (tested);
/// `Ok(None)` where `kind_of` is `None`.
pub fn kind_and_subject(field: u32, body: &[u8]) -> Result<Option<(EventKind, &str)>, WireError> {
    Ok(split_subject(field, body)?.map(|b| (b.kind, b.subject)))
}

/// An event body read by [`split_subject`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitBody<'a> {
    pub kind: EventKind,
    pub subject: &'a str,
    /// The body's encoding without its subject field, in two pieces (before
    /// and after it): the subject is stored once, in its own column, and
    /// [`restore_subject`] puts it back. The whole body when the subject
    /// field is absent or appears more than once.
    pub rest: [&'a [u8]; 2],
}

/// [`kind_and_subject`], plus the body without its subject field.
pub fn split_subject(field: u32, body: &[u8]) -> Result<Option<SplitBody<'_>>, WireError> {
    let Some(subject_field) = subject_field(field) else {
        return Ok(None);
    };
    let (mut action, mut subject) = (0, "");
    let (mut found, mut at) = (0, (0, 0));
    let mut buf = body;
    while !buf.is_empty() {
        let start = body.len() - buf.len();
        let f = next_field(&mut buf)?;
        if f.tag == 1 && f.is_varint() {
            action = f.varint;
        } else if f.tag == subject_field && f.is_bytes() {
            subject = f.text()?;
            found += 1;
            at = (start, body.len() - buf.len());
        }
    }
    let rest = if found == 1 {
        [&body[..at.0], &body[at.1..]]
    } else {
        [body, &[][..]]
    };
    Ok(kind(field, action).map(|kind| SplitBody {
        kind,
        subject,
        rest,
    }))
}

/// Appends the `Event` body field `field` made of `rest` (a body's
/// [`SplitBody::rest`], or a whole body and nothing) to an encoding.
pub fn encode_body(field: u32, rest: [&[u8]; 2], out: &mut Vec<u8>) {
    use prost::encoding::{encode_key, encode_varint};
    encode_key(field, WireType::LengthDelimited, out);
    encode_varint((rest[0].len() + rest[1].len()) as u64, out);
    out.extend_from_slice(rest[0]);
    out.extend_from_slice(rest[1]);
}

/// An `Event` payload as stored (see [`split_subject`]) with `subject` put
/// back into its body, so that it decodes as the event the agent sent
/// (less the fields stored in columns). Payloads that still hold their
/// subject, and empty subjects, come back as they are.
pub fn restore_subject<'a>(
    payload: &'a [u8],
    subject: &str,
) -> Result<std::borrow::Cow<'a, [u8]>, WireError> {
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len};
    use std::borrow::Cow;
    if subject.is_empty() {
        return Ok(Cow::Borrowed(payload));
    }
    let mut buf = payload;
    let mut body = None;
    while !buf.is_empty() {
        let start = payload.len() - buf.len();
        let f = next_field(&mut buf)?;
        if EVENT_BODIES.contains(&f.tag) && f.is_bytes() {
            body = Some((f.tag, f.bytes, start, payload.len() - buf.len()));
        }
    }
    let Some((tag, bytes, start, end)) = body else {
        return Ok(Cow::Borrowed(payload));
    };
    let Some(subject_field) = subject_field(tag) else {
        return Ok(Cow::Borrowed(payload));
    };
    let mut fields = bytes;
    while !fields.is_empty() {
        if next_field(&mut fields)?.tag == subject_field {
            return Ok(Cow::Borrowed(payload));
        }
    }
    let subject_len =
        key_len(subject_field) + encoded_len_varint(subject.len() as u64) + subject.len();
    let body_len = (bytes.len() + subject_len) as u64;
    let mut out = Vec::with_capacity(payload.len() + subject_len + 10);
    out.extend_from_slice(&payload[..start]);
    encode_key(tag, WireType::LengthDelimited, &mut out);
    encode_varint(body_len, &mut out);
    out.extend_from_slice(bytes);
    encode_key(subject_field, WireType::LengthDelimited, &mut out);
    encode_varint(subject.len() as u64, &mut out);
    out.extend_from_slice(subject.as_bytes());
    out.extend_from_slice(&payload[end..]);
    Ok(Cow::Owned(out))
}

/// The kind of an event whose body is the `Event` field `field` (one of
/// [`EVENT_BODIES`]) with `action` in its field 1 (0 when it has none, or
/// when field 1 is not its action). `None` where [`crate::kind_of`] is.
pub use crate::schema::kind;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::v1::*;
    use crate::{kind_of, subject};
    use prost::Message;

    /// One event of every kind and action (and some with none), each
    /// string field set to a distinct value.
    fn every_body() -> Vec<event::Kind> {
        use event::Kind;
        let s = |n: &str| format!("{n}-value");
        let mut out = Vec::new();
        for action in 0..=8 {
            out.push(Kind::Logon(LogonEvent {
                action,
                terminal: s("terminal"),
                remote_host: s("remote"),
                session_pid: 7,
            }));
            out.push(Kind::Process(ProcessEvent {
                action,
                pid: 1,
                parent_pid: 2,
                exe_path: s("exe"),
                command_line: s("cmd"),
                exe_sha256: vec![1; 32],
                parent_exe_path: s("parent"),
                window_title: s("title"),
                uid: 3,
                exit_code: -1,
                blocked_reason: s("why"),
                policy_revision: 9,
                session_id: 2,
            }));
            out.push(Kind::File(FileEvent {
                action,
                path: s("path"),
                target_path: s("target"),
                removable_media: true,
                size_bytes: 10,
                process_exe_path: s("proc"),
                pid: 4,
                sha256: vec![2; 32],
                hash_method: 1,
                medium_vendor_id: s("medium-vendor"),
                medium_product_id: s("medium-product"),
                medium_serial: s("medium-serial"),
                summarized: 3,
            }));
            out.push(Kind::Device(DeviceEvent {
                action,
                device_class: 1,
                vendor_id: s("vendor"),
                product_id: s("product"),
                serial: s("serial"),
                description: s("description"),
                mount_point: s("mount"),
            }));
            out.push(Kind::Software(SoftwareEvent {
                action,
                name: s("name"),
                version: s("version"),
                publisher: s("publisher"),
                inventory: action % 2 == 0,
            }));
            out.push(Kind::Network(NetworkEvent {
                direction: action,
                protocol: s("proto"),
                local_addr: s("local"),
                local_port: 1,
                remote_addr: s("remote"),
                remote_port: 2,
                process_exe_path: s("proc"),
            }));
            out.push(Kind::EnvironmentChange(EnvironmentChangeEvent {
                field: action,
                old_value: s("old"),
                new_value: s("new"),
            }));
        }
        out.push(Kind::Print(PrintEvent {
            printer: s("printer"),
            document: s("document"),
            pages: 3,
            copies: 1,
            process_exe_path: s("proc"),
        }));
        out.push(Kind::Web(WebEvent {
            url_host: s("host"),
            url: s("url"),
            title: s("title"),
            browser: s("browser"),
            summarized: 2,
        }));
        out.push(Kind::Inventory(InventoryEvent {
            hostname: s("hostname"),
            os_name: s("os"),
            ip_addrs: vec![s("ip")],
            ..Default::default()
        }));
        out.push(Kind::SecurityStatus(SecurityStatusEvent {
            patch_level: s("patch"),
            antivirus_product: s("av"),
            antivirus_signature_version: s("sig"),
            ..Default::default()
        }));
        out.push(Kind::LanSighting(LanSightingEvent {
            ip_addr: s("ip"),
            mac_addr: s("mac"),
            hostname: s("host"),
            vendor: s("vendor"),
            known: true,
        }));
        out.push(Kind::CollectorWarning(CollectorWarningEvent {
            collector: s("collector"),
            source: s("source"),
            message: s("message"),
        }));
        for action in 1..=4 {
            out.push(Kind::Power(PowerEvent {
                action,
                asleep_s: 3600,
                source: s("source"),
            }));
        }
        for action in 1..=4 {
            out.push(Kind::Agent(AgentEvent {
                action,
                version: s("version"),
                detail: s("detail"),
            }));
        }
        out
    }

    #[test]
    fn kind_and_subject_agree_with_the_decoded_event_for_every_body() {
        let mut kinds = std::collections::HashSet::new();
        for body in every_body() {
            let event = Event {
                id: vec![7; 16],
                os_user: "alice".into(),
                kind: Some(body),
                ..Default::default()
            };
            let encoded = event.encode_to_vec();
            let mut buf = &encoded[..];
            let mut found = None;
            while !buf.is_empty() {
                let f = next_field(&mut buf).unwrap();
                if EVENT_BODIES.contains(&f.tag) {
                    found = Some(kind_and_subject(f.tag, f.bytes).unwrap());
                }
            }
            let expected = kind_of(&event).map(|k| (k, subject(&event)));
            assert_eq!(found.unwrap(), expected, "{event:?}");
            kinds.extend(expected.map(|(k, _)| k));
        }
        assert_eq!(kinds.len(), EventKind::ALL.len(), "every kind covered");
    }

    /// The `Event` with `body`, as the writer stores it: its fields with the
    /// body's subject left out.
    fn stored(event: &Event) -> (Vec<u8>, String) {
        let encoded = event.encode_to_vec();
        let mut buf = &encoded[..];
        let (mut out, mut subject) = (Vec::new(), String::new());
        while !buf.is_empty() {
            let f = next_field(&mut buf).unwrap();
            match split_subject(f.tag, f.bytes).unwrap() {
                Some(b) if EVENT_BODIES.contains(&f.tag) => {
                    encode_body(f.tag, b.rest, &mut out);
                    subject = b.subject.to_owned();
                }
                _ => out.extend_from_slice(f.encoded),
            }
        }
        (out, subject)
    }

    #[test]
    fn a_body_without_its_subject_gets_it_back() {
        for body in every_body() {
            let event = Event {
                id: vec![7; 16],
                clock_offset_ms: -3,
                kind: Some(body),
                ..Default::default()
            };
            let Some(expected_subject) = kind_of(&event).map(|_| subject(&event)) else {
                continue;
            };
            let (payload, found) = stored(&event);
            assert_eq!(found, expected_subject, "{event:?}");
            // Without the subject the payload is shorter by its field (key,
            // length and text)...
            assert!(
                payload.len() + expected_subject.len() + 2 <= event.encoded_len(),
                "{event:?}"
            );
            let without = Event::decode(&payload[..]).unwrap();
            assert_eq!(subject(&without), "", "{event:?}");
            // ...and with it put back decodes as the event again.
            let restored = restore_subject(&payload, &found).unwrap();
            assert!(matches!(restored, std::borrow::Cow::Owned(_)));
            assert_eq!(Event::decode(&restored[..]).unwrap(), event);
            // A payload that kept its subject (stored before it was split
            // off) is read as it is, and so is an empty subject.
            let full = event.encode_to_vec();
            let kept = restore_subject(&full, &found).unwrap();
            assert!(matches!(kept, std::borrow::Cow::Borrowed(_)));
            assert_eq!(&kept[..], &full[..]);
            assert_eq!(&restore_subject(&payload, "").unwrap()[..], &payload[..]);
        }
    }

    #[test]
    fn a_subject_given_twice_is_not_split_off() {
        let mut body = ProcessEvent {
            action: 1,
            exe_path: "/bin/a".into(),
            ..Default::default()
        }
        .encode_to_vec();
        prost::encoding::string::encode(4, &"/bin/b".to_owned(), &mut body);
        let split = split_subject(11, &body).unwrap().unwrap();
        // The last one counts, as for a decoder; the body stays whole.
        assert_eq!(split.subject, "/bin/b");
        assert_eq!(split.rest, [&body[..], &[][..]]);
        // A body without a subject field has nothing to split.
        let bare = ProcessEvent {
            action: 1,
            ..Default::default()
        }
        .encode_to_vec();
        let split = split_subject(11, &bare).unwrap().unwrap();
        assert_eq!((split.subject, split.rest), ("", [&bare[..], &[][..]]));
    }

    #[test]
    fn a_stream_batch_reads_as_its_header_and_encoded_events() {
        let events: Vec<Event> = every_body()
            .into_iter()
            .map(|k| Event {
                kind: Some(k),
                ..Default::default()
            })
            .collect();
        let sb = StreamBatch {
            tenant_id: "t".into(),
            device_id: "d".into(),
            sequence: 9,
            received_at: Some(prost_types::Timestamp {
                seconds: 5,
                nanos: 6,
            }),
            traceparent: "tp".into(),
            events: events.clone(),
        };
        let bytes = sb.encode_to_vec();
        let view = read_stream_batch(&bytes).unwrap();
        assert_eq!(
            (view.tenant_id, view.device_id, view.traceparent),
            ("t", "d", "tp")
        );
        assert_eq!(view.received_at, sb.received_at);
        assert_eq!(view.events.len(), events.len());
        for (encoded, event) in view.events.iter().zip(&events) {
            assert_eq!(&Event::decode(*encoded).unwrap(), event);
            let b = body(encoded).unwrap().unwrap();
            let field = b.field;
            let only_body = Event {
                kind: event.kind.clone(),
                ..Default::default()
            };
            // The field number is the body's: encoded alone, its key comes first.
            let alone = only_body.encode_to_vec();
            assert_eq!(read_key(&mut &alone[..]).unwrap().0, field);
            // And the body's encoding is the body message's, as prost wrote it.
            assert_eq!(b.encoding, Some(next_field(&mut &alone[..]).unwrap().bytes));
        }
        assert_eq!(body(&Event::default().encode_to_vec()).unwrap(), None);
    }

    #[test]
    fn an_event_with_several_body_fields_has_no_single_body_encoding() {
        let start = Event {
            kind: Some(event::Kind::Process(ProcessEvent {
                action: process_event::Action::Blocked as i32,
                ..Default::default()
            })),
            ..Default::default()
        };
        let path = Event {
            kind: Some(event::Kind::Process(ProcessEvent {
                exe_path: "/usr/bin/winny".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        // Two occurrences of one body field: the decoder merges them, so
        // neither encoding alone is the body.
        let twice = [start.encode_to_vec(), path.encode_to_vec()].concat();
        let merged = Event::decode(&twice[..]).unwrap();
        let Some(event::Kind::Process(p)) = &merged.kind else {
            panic!("{merged:?}")
        };
        assert_eq!(
            (p.action(), p.exe_path.as_str()),
            (process_event::Action::Blocked, "/usr/bin/winny")
        );
        let no_single = |field| {
            Some(Body {
                field,
                encoding: None,
            })
        };
        assert_eq!(body(&twice).unwrap(), no_single(11));
        // A different body field after it replaces it: the field is the last.
        let web = Event {
            kind: Some(event::Kind::Web(WebEvent::default())),
            ..Default::default()
        };
        let replaced = [start.encode_to_vec(), web.encode_to_vec()].concat();
        assert_eq!(body(&replaced).unwrap(), no_single(15));
    }

    #[test]
    fn a_stream_batch_encoded_from_encoded_events_decodes_as_one() {
        let events: Vec<Event> = every_body()
            .into_iter()
            .map(|k| Event {
                id: vec![3; 16],
                occurred_at_us: 17,
                kind: Some(k),
                ..Default::default()
            })
            .collect();
        let encoded: Vec<Vec<u8>> = events.iter().map(Message::encode_to_vec).collect();
        let slices: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
        let at = prost_types::Timestamp {
            seconds: 1_800_000_000,
            nanos: 7,
        };
        let bytes = encode_stream_batch("tenant", "device", 42, &at, "00-tp", &slices);
        let expected = StreamBatch {
            tenant_id: "tenant".into(),
            device_id: "device".into(),
            sequence: 42,
            received_at: Some(at),
            traceparent: "00-tp".into(),
            events,
        };
        assert_eq!(StreamBatch::decode(&bytes[..]).unwrap(), expected);
        assert_eq!(bytes, expected.encode_to_vec(), "the same bytes as prost's");
        let empty = encode_stream_batch("", "", 0, &prost_types::Timestamp::default(), "", &[]);
        assert_eq!(
            StreamBatch::decode(&empty[..]).unwrap(),
            StreamBatch {
                received_at: Some(prost_types::Timestamp::default()),
                ..Default::default()
            }
        );
    }

    #[test]
    fn varints_and_keys_read_as_prost_reads_them() {
        use prost::encoding::{decode_key, decode_varint, encode_varint};
        let mut inputs: Vec<Vec<u8>> = vec![vec![], vec![0x80], vec![0xff; 11], vec![0x08]];
        for v in [
            0,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut b = Vec::new();
            encode_varint(v, &mut b);
            inputs.push(b.clone());
            b.push(0x42);
            inputs.push(b);
        }
        // Ten-byte varints whose last byte is 0, 1, 2 or has the high bit.
        for last in [0, 1, 2, 0x7f, 0x80] {
            inputs.push([&[0xff; 9][..], &[last, 0x01]].concat());
        }
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 12) as usize;
            let bytes = state.to_le_bytes();
            let mut b: Vec<u8> = (0..len)
                .map(|i| bytes[i % 8] | (0x80 * u8::from(i + 1 < len)))
                .collect();
            if state & 1 == 0 {
                b.iter_mut().for_each(|x| *x ^= (state >> 8) as u8);
            }
            inputs.push(b);
        }
        for input in inputs {
            let (mut ours, mut theirs) = (&input[..], &input[..]);
            let a = read_varint(&mut ours).ok();
            let b = decode_varint(&mut theirs).ok();
            assert_eq!(a, b, "{input:?}");
            if a.is_some() {
                assert_eq!(ours, theirs, "{input:?}");
            }
            let (mut ours, mut theirs) = (&input[..], &input[..]);
            let a = read_key(&mut ours).ok();
            let b = decode_key(&mut theirs).ok();
            assert_eq!(a, b, "{input:?}");
            if a.is_some() {
                assert_eq!(ours, theirs, "{input:?}");
            }
        }
    }

    #[test]
    fn truncated_and_bad_encodings_are_refused() {
        let mut buf = &[0x0a, 0x05, b'a'][..];
        assert_eq!(
            next_field(&mut buf).unwrap_err().0,
            "field runs past the end"
        );
        let mut buf = &[0x0b][..];
        assert_eq!(next_field(&mut buf).unwrap_err().0, "groups are not used");
        let mut buf = &[0x08, 0xff][..];
        assert!(next_field(&mut buf).is_err());
        assert_eq!(
            kind_and_subject(11, &[0x08, 0x01, 0x22, 0x01, 0xff])
                .unwrap_err()
                .0,
            "text is not UTF-8"
        );
    }
}
