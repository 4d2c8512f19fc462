//! Validation and bounds for everything an agent sends. A batch is accepted
//! whole or refused whole, with a reason that names the event and field.

use chrono::{DateTime, Utc};
use mamori_proto::agent::v1::{Event, EventBatch, event::Kind};
use tonic::Code;

/// Bounds on one batch and its events.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_events: usize,
}

const MAX_PATH: usize = 4096;
const MAX_COMMAND_LINE: usize = 8192;
const MAX_TEXT: usize = 1024;
const MAX_URL: usize = 4096;
const MAX_LIST: usize = 64;
/// Events older than this (by corrected time) are refused: the operation log
/// keeps nothing older, and it bounds the partitions a bad clock can touch.
const MAX_AGE_DAYS: i64 = 400;
/// Corrected times more than this in the future are a broken clock.
const MAX_FUTURE_SECS: i64 = 24 * 3600;
const MAX_CLOCK_OFFSET_MS: i64 = 10 * 365 * 24 * 3600 * 1000;

/// Why a batch was refused: a gRPC code and a message for the agent's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub(crate) code: Code,
    pub(crate) reason: String,
    /// A short, fixed label for the rejected-events metric.
    pub(crate) label: &'static str,
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

/// The corrected time of an event (device time plus its clock offset).
pub(crate) fn corrected_time(e: &Event) -> Option<DateTime<Utc>> {
    let us = e
        .occurred_at_us
        .checked_add(e.clock_offset_ms.checked_mul(1000)?)?;
    DateTime::from_timestamp_micros(us)
}

pub(crate) fn validate_batch(
    batch: &EventBatch,
    limits: Limits,
    now: DateTime<Utc>,
) -> Result<(), Rejection> {
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
    if batch.traceparent.len() > 128 {
        return Err(Rejection::invalid(
            "traceparent",
            "traceparent is longer than 128 bytes".into(),
        ));
    }
    for (i, e) in batch.events.iter().enumerate() {
        validate_event(e, now).map_err(|(label, why)| {
            Rejection::invalid(label, format!("batch {} event {i}: {why}", batch.sequence))
        })?;
    }
    Ok(())
}

type Bad = (&'static str, String);

fn text(field: &'static str, value: &str, max: usize) -> Result<(), Bad> {
    if value.len() > max {
        return Err((
            "field_too_long",
            format!("{field} is {} bytes; at most {max}", value.len()),
        ));
    }
    if value.contains('\0') {
        return Err(("nul_byte", format!("{field} contains a NUL byte")));
    }
    Ok(())
}

fn list(field: &'static str, values: &[String], max_each: usize) -> Result<(), Bad> {
    if values.len() > MAX_LIST {
        return Err((
            "list_too_long",
            format!("{field} has {} items; at most {MAX_LIST}", values.len()),
        ));
    }
    values.iter().try_for_each(|v| text(field, v, max_each))
}

fn validate_event(e: &Event, now: DateTime<Utc>) -> Result<(), Bad> {
    match uuid::Uuid::from_slice(&e.id) {
        Ok(id) if !id.is_nil() => {}
        _ => {
            return Err((
                "event_id",
                format!("id must be 16 bytes (a UUIDv7), got {} bytes", e.id.len()),
            ));
        }
    }
    if e.clock_offset_ms.abs() > MAX_CLOCK_OFFSET_MS {
        return Err((
            "clock_offset",
            format!("clock_offset_ms {} is out of range", e.clock_offset_ms),
        ));
    }
    let ts = corrected_time(e).ok_or(("timestamp", "occurred_at_us is out of range".to_owned()))?;
    if ts < now - chrono::Duration::days(MAX_AGE_DAYS) {
        return Err((
            "timestamp",
            format!("occurred at {ts}, more than {MAX_AGE_DAYS} days ago"),
        ));
    }
    if ts > now + chrono::Duration::seconds(MAX_FUTURE_SECS) {
        return Err(("timestamp", format!("occurred at {ts}, in the future")));
    }
    text("os_user", &e.os_user, 256)?;
    if mamori_proto::kind_of(e).is_none() {
        return Err((
            "kind",
            "event has no kind, or its action is unspecified".to_owned(),
        ));
    }
    match e.kind.as_ref().expect("kind_of checked it") {
        Kind::Logon(l) => {
            text("terminal", &l.terminal, MAX_TEXT)?;
            text("remote_host", &l.remote_host, MAX_TEXT)
        }
        Kind::Process(p) => {
            text("exe_path", &p.exe_path, MAX_PATH)?;
            text("command_line", &p.command_line, MAX_COMMAND_LINE)?;
            text("parent_exe_path", &p.parent_exe_path, MAX_PATH)?;
            text("window_title", &p.window_title, MAX_TEXT)?;
            if !(p.exe_sha256.is_empty() || p.exe_sha256.len() == 32) {
                return Err((
                    "exe_sha256",
                    format!("exe_sha256 must be 32 bytes, got {}", p.exe_sha256.len()),
                ));
            }
            Ok(())
        }
        Kind::File(f) => {
            text("path", &f.path, MAX_PATH)?;
            text("target_path", &f.target_path, MAX_PATH)?;
            text("process_exe_path", &f.process_exe_path, MAX_PATH)
        }
        Kind::Device(d) => {
            text("vendor_id", &d.vendor_id, 64)?;
            text("product_id", &d.product_id, 64)?;
            text("serial", &d.serial, 256)?;
            text("description", &d.description, MAX_TEXT)?;
            text("mount_point", &d.mount_point, MAX_PATH)
        }
        Kind::Print(p) => {
            text("printer", &p.printer, MAX_TEXT)?;
            text("document", &p.document, MAX_TEXT)?;
            text("process_exe_path", &p.process_exe_path, MAX_PATH)
        }
        Kind::Web(w) => {
            text("url_host", &w.url_host, 255)?;
            text("url", &w.url, MAX_URL)?;
            text("title", &w.title, MAX_TEXT)?;
            text("browser", &w.browser, MAX_TEXT)
        }
        Kind::Network(n) => {
            text("protocol", &n.protocol, 16)?;
            text("local_addr", &n.local_addr, 64)?;
            text("remote_addr", &n.remote_addr, 255)?;
            text("process_exe_path", &n.process_exe_path, MAX_PATH)?;
            if n.local_port > 65535 || n.remote_port > 65535 {
                return Err(("port", "port is above 65535".to_owned()));
            }
            Ok(())
        }
        Kind::Software(s) => {
            text("name", &s.name, MAX_TEXT)?;
            text("version", &s.version, 256)?;
            text("publisher", &s.publisher, MAX_TEXT)
        }
        Kind::Inventory(i) => {
            text("hostname", &i.hostname, 255)?;
            text("os_name", &i.os_name, 256)?;
            text("os_version", &i.os_version, 256)?;
            text("kernel_version", &i.kernel_version, 256)?;
            text("cpu_model", &i.cpu_model, 256)?;
            list("ip_addrs", &i.ip_addrs, 64)?;
            list("mac_addrs", &i.mac_addrs, 64)
        }
        Kind::EnvironmentChange(c) => {
            text("old_value", &c.old_value, MAX_TEXT)?;
            text("new_value", &c.new_value, MAX_TEXT)
        }
        Kind::SecurityStatus(s) => {
            text("patch_level", &s.patch_level, 256)?;
            text("antivirus_product", &s.antivirus_product, 256)?;
            text(
                "antivirus_signature_version",
                &s.antivirus_signature_version,
                256,
            )
        }
        Kind::LanSighting(l) => {
            text("ip_addr", &l.ip_addr, 64)?;
            text("mac_addr", &l.mac_addr, 64)?;
            text("hostname", &l.hostname, 255)?;
            text("vendor", &l.vendor, 256)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mamori_proto::agent::v1::{ProcessEvent, process_event::Action};

    fn event(now: DateTime<Utc>) -> Event {
        Event {
            id: uuid::Uuid::now_v7().as_bytes().to_vec(),
            occurred_at_us: now.timestamp_micros(),
            clock_offset_ms: 0,
            os_user: "alice".into(),
            kind: Some(Kind::Process(ProcessEvent {
                action: Action::Start as i32,
                exe_path: "/usr/bin/true".into(),
                ..Default::default()
            })),
        }
    }

    fn batch(events: Vec<Event>) -> EventBatch {
        EventBatch {
            sequence: 7,
            events,
            ..Default::default()
        }
    }

    const LIMITS: Limits = Limits { max_events: 10 };

    #[test]
    fn good_batch_passes() {
        let now = Utc::now();
        assert_eq!(
            validate_batch(&batch(vec![event(now)]), LIMITS, now),
            Ok(())
        );
    }

    #[test]
    fn each_bad_field_is_named() {
        let now = Utc::now();
        type Mutation = Box<dyn Fn(&mut Event)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|e| e.id = vec![1, 2, 3]), "16 bytes"),
            (Box::new(|e| e.occurred_at_us = 0), "days ago"),
            (Box::new(|e| e.clock_offset_ms = 3_600_000 * 48), "future"),
            (Box::new(|e| e.os_user = "x".repeat(300)), "os_user"),
            (Box::new(|e| e.kind = None), "no kind"),
            (
                Box::new(|e| {
                    if let Some(Kind::Process(p)) = &mut e.kind {
                        p.exe_sha256 = vec![0; 31];
                    }
                }),
                "exe_sha256",
            ),
            (
                Box::new(|e| {
                    if let Some(Kind::Process(p)) = &mut e.kind {
                        p.exe_path = "a\0b".into();
                    }
                }),
                "NUL",
            ),
        ];
        for (mutate, expect) in cases {
            let mut e = event(now);
            mutate(&mut e);
            let r = validate_batch(&batch(vec![event(now), e]), LIMITS, now).unwrap_err();
            assert_eq!(r.code, Code::InvalidArgument);
            assert!(
                r.reason.contains(expect) && r.reason.contains("event 1"),
                "{}",
                r.reason
            );
        }
    }

    #[test]
    fn too_many_and_empty_batches_are_refused() {
        let now = Utc::now();
        let r =
            validate_batch(&batch((0..11).map(|_| event(now)).collect()), LIMITS, now).unwrap_err();
        assert!(r.reason.contains("at most 10"), "{}", r.reason);
        assert!(validate_batch(&batch(vec![]), LIMITS, now).is_err());
    }
}
