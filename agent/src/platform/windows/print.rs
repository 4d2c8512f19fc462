//! Print jobs on Windows, from the print spooler's event 307 ("Document
//! printed") in the `Microsoft-Windows-PrintService/Operational` log.
//!
//! That log is off by default: the collector turns it on at start
//! (`EvtSetChannelConfigProperty(EvtChannelConfigEnabled)`), and sets the
//! policy that puts documents' names in it (`ShowJobTitleInEventLogs`;
//! without it Windows writes "Print Document"). Every two seconds it asks
//! the log for the 307 events after the last record it reported
//! (`EvtQuery` with `EventRecordID>N`, at most [`MAX_PER_POLL`] a time)
//! and renders each as XML, whose `UserData/DocumentPrinted` holds
//! `Param1` job id, `Param2` document, `Param3` user, `Param4` client
//! machine, `Param5` printer, `Param6` port, `Param7` bytes and `Param8`
//! pages. The last record reported is kept in `print.json`: a restart
//! neither repeats nor misses a job (a crash between spooling a job and
//! saving its number repeats that job), and the first run starts at the
//! log's end (history is not news). A log cleared meanwhile (its numbers
//! start again at 1) is read from its start. Copies are not in the event (0).
//!
//! Wine has no print-service log (its event-log API answers nothing):
//! under Wine the parser is tested with events built to that layout; the
//! log itself needs a real PC.

#![allow(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use mamori_proto::agent::v1::{PrintEvent, event::Kind};
use windows_sys::Win32::System::EventLog::{
    EVT_HANDLE, EVT_VARIANT, EvtChannelConfigEnabled, EvtClose, EvtNext, EvtOpenChannelConfig,
    EvtQuery, EvtQueryChannelPath, EvtQueryForwardDirection, EvtQueryReverseDirection, EvtRender,
    EvtRenderEventXml, EvtSaveChannelConfig, EvtSetChannelConfigProperty, EvtVarTypeBoolean,
};
use windows_sys::Win32::System::Registry::HKEY_LOCAL_MACHINE;

use super::win;
use crate::clock::days_from_civil;
use crate::collector::{Collector, EventSink, poll_every};
use crate::error::{Error, Result};

/// The print service's log.
pub const CHANNEL: &str = "Microsoft-Windows-PrintService/Operational";
/// Events read per poll, at most.
pub const MAX_PER_POLL: usize = 500;
/// The policy that puts documents' names in the log.
const PRINTERS_POLICY: &str = r"SOFTWARE\Policies\Microsoft\Windows NT\Printers";

/// One printed document, as event 307 tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Printed {
    pub(crate) record_id: u64,
    pub(crate) at_us: i64,
    /// The account's SID (`Security/@UserID`), when given.
    pub(crate) user_sid: String,
    pub(crate) user: String,
    pub(crate) document: String,
    pub(crate) printer: String,
    pub(crate) pages: u32,
}

/// The text of the first `<name>` element (entities decoded), none when
/// absent.
fn element<'a>(xml: &'a str, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    let open = format!("<{name}");
    let mut from = 0;
    loop {
        let at = from + xml[from..].find(&open)?;
        let rest = &xml[at + open.len()..];
        // `<Param1>` or `<Param1 …>`, not `<Param10>`.
        match rest.chars().next()? {
            '>' | ' ' | '\t' | '\r' | '\n' => {}
            '/' => return Some("".into()),
            _ => {
                from = at + open.len();
                continue;
            }
        }
        let start = rest.find('>')? + 1;
        if rest[..start].ends_with("/>") {
            return Some("".into());
        }
        let body = &rest[start..];
        let end = body.find(&format!("</{name}>"))?;
        return Some(unescape(&body[..end]));
    }
}

/// The value of `attr` on the first `<name …>` element.
fn attribute<'a>(xml: &'a str, name: &str, attr: &str) -> Option<std::borrow::Cow<'a, str>> {
    let open = format!("<{name} ");
    let at = xml.find(&open)?;
    let tag = &xml[at..at + xml[at..].find('>')?];
    let key = format!(" {attr}=");
    let value = &tag[tag.find(&key)? + key.len()..];
    let quote = value.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value = &value[1..];
    Some(unescape(&value[..value.find(quote)?]))
}

/// XML's five entities and character references.
fn unescape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('&') {
        return s.into();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let Some(end) = tail.find(';') else {
            out.push_str(tail);
            return out.into();
        };
        let entity = &tail[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => out.push(c),
            None => out.push_str(&tail[..=end]),
        }
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    out.into()
}

/// `2024-01-05T09:30:12.1234567Z` → µs since the epoch.
pub(crate) fn parse_system_time(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':');
    let (h, mi, sec): (i64, i64, i64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    if d.next().is_some()
        || t.next().is_some()
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || !(0..24).contains(&h)
        || !(0..60).contains(&mi)
        || !(0..=60).contains(&sec)
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let micros: i64 = format!("{fraction:0<6}").get(..6)?.parse().ok()?;
    let secs = days_from_civil(y, m, day) * 86_400 + h * 3600 + mi * 60 + sec;
    Some(secs * 1_000_000 + micros)
}

/// The record number of a rendered event.
pub(crate) fn record_id(xml: &str) -> Option<u64> {
    element(xml, "EventRecordID")?.trim().parse().ok()
}

/// A rendered event 307; none for any other event or one without the
/// document's parameters.
pub(crate) fn parse_printed(xml: &str) -> Option<Printed> {
    if element(xml, "EventID")?.trim() != "307" {
        return None;
    }
    let data = &xml[xml.find("<DocumentPrinted")?..];
    let param = |n: u32| element(data, &format!("Param{n}")).map(|s| s.trim().to_owned());
    Some(Printed {
        record_id: record_id(xml)?,
        at_us: parse_system_time(&attribute(xml, "TimeCreated", "SystemTime")?)?,
        user_sid: attribute(xml, "Security", "UserID")
            .map(|s| s.into_owned())
            .unwrap_or_default(),
        user: param(3).unwrap_or_default(),
        document: param(2)?,
        printer: param(5).unwrap_or_default(),
        pages: param(8).and_then(|p| p.parse().ok()).unwrap_or(0),
    })
}

/// The XPath query for the jobs after record `after`.
pub(crate) fn query_after(after: u64) -> String {
    format!("*[System[(EventID=307) and (EventRecordID>{after})]]")
}

/// An event-log handle, closed when dropped.
struct Evt(EVT_HANDLE);

impl Drop for Evt {
    fn drop(&mut self) {
        if self.0 != 0 {
            // SAFETY: a handle from the event-log API.
            unsafe { EvtClose(self.0) };
        }
    }
}

fn last_error(what: &str) -> Error {
    Error::io(what.to_owned())(std::io::Error::last_os_error())
}

/// Turns the print service's log on (it is off by default), and the
/// policy that puts documents' names in it.
fn enable_log() -> std::result::Result<(), String> {
    if let Err(status) = win::reg_set_dword(
        HKEY_LOCAL_MACHINE,
        PRINTERS_POLICY,
        "ShowJobTitleInEventLogs",
        1,
    ) {
        tracing::warn!(
            status,
            "cannot set ShowJobTitleInEventLogs: documents are named \"Print Document\""
        );
    }
    let path = win::wide(CHANNEL);
    // SAFETY: a NUL-terminated channel path; the handle is closed by Evt.
    let config = Evt(unsafe { EvtOpenChannelConfig(0, path.as_ptr(), 0) });
    if config.0 == 0 {
        return Err(format!(
            "cannot open the {CHANNEL} log's settings: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: all-zero is a valid EVT_VARIANT; a boolean is set.
    let mut on: EVT_VARIANT = unsafe { std::mem::zeroed() };
    on.Anonymous.BooleanVal = 1;
    on.Type = EvtVarTypeBoolean as u32;
    // SAFETY: an open channel configuration and a boolean variant.
    let ok = unsafe {
        EvtSetChannelConfigProperty(config.0, EvtChannelConfigEnabled, 0, &on) != 0
            && EvtSaveChannelConfig(config.0, 0) != 0
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "cannot turn the {CHANNEL} log on: {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// Runs `query` on the print log and renders up to `max` events as XML.
fn query(query: &str, reverse: bool, max: usize) -> Result<Vec<String>> {
    let (path, query) = (win::wide(CHANNEL), win::wide(query));
    let direction = if reverse {
        EvtQueryReverseDirection
    } else {
        EvtQueryForwardDirection
    };
    // SAFETY: NUL-terminated path and query; the handle is closed by Evt.
    let results = Evt(unsafe {
        EvtQuery(
            0,
            path.as_ptr(),
            query.as_ptr(),
            EvtQueryChannelPath | direction,
        )
    });
    if results.0 == 0 {
        return Err(last_error("querying the print service's log"));
    }
    let mut out = Vec::new();
    while out.len() < max {
        let mut handles = [0isize; 32];
        let mut returned = 0u32;
        let want = handles.len().min(max - out.len()) as u32;
        // SAFETY: room for `want` handles; each is closed below.
        let ok = unsafe {
            EvtNext(
                results.0,
                want,
                handles.as_mut_ptr(),
                1000,
                0,
                &mut returned,
            )
        };
        if ok == 0 {
            break; // ERROR_NO_MORE_ITEMS (or a timeout: the next poll).
        }
        for &h in &handles[..returned as usize] {
            let event = Evt(h);
            if let Some(xml) = render(&event) {
                out.push(xml);
            }
        }
    }
    Ok(out)
}

/// An event as XML.
fn render(event: &Evt) -> Option<String> {
    let mut buf = vec![0u16; 8192];
    for _ in 0..2 {
        let (mut used, mut props) = (0u32, 0u32);
        // SAFETY: the buffer's size is given in bytes.
        let ok = unsafe {
            EvtRender(
                0,
                event.0,
                EvtRenderEventXml,
                (buf.len() * 2) as u32,
                buf.as_mut_ptr().cast(),
                &mut used,
                &mut props,
            )
        };
        if ok != 0 {
            return Some(win::from_wide(&buf));
        }
        // Too small: `used` is the size needed, in bytes (bounded).
        let needed = (used as usize).div_ceil(2);
        if needed <= buf.len() || needed > 1 << 20 {
            return None;
        }
        buf = vec![0u16; needed];
    }
    None
}

/// The print collector.
#[derive(Debug)]
pub struct PrintCollector {
    state_path: PathBuf,
    poll: Duration,
}

impl PrintCollector {
    /// Keeps the last record reported in `state_path`.
    pub fn new(state_path: impl Into<PathBuf>) -> Self {
        PrintCollector {
            state_path: state_path.into(),
            poll: Duration::from_secs(2),
        }
    }
}

impl Collector for PrintCollector {
    fn name(&self) -> &'static str {
        "print"
    }

    fn run(self: Box<Self>, sink: EventSink) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            if let Err(e) = enable_log() {
                tracing::warn!(error = %e, "print jobs may not be logged");
                sink.warn("print", CHANNEL, &e);
            }
            let mut last: Option<u64> = crate::fsutil::read_json(&self.state_path);
            let state_path = self.state_path.clone();
            // A log that cannot be asked (none on this PC) is said once,
            // not every poll; asked again each poll all the same.
            let mut unreadable = false;
            poll_every(self.poll, &sink, "print", CHANNEL, || {
                let mut read = |q: &str, reverse: bool, max: usize| match query(q, reverse, max) {
                    Ok(found) => {
                        unreadable = false;
                        Some(found)
                    }
                    Err(e) => {
                        if !unreadable {
                            tracing::warn!(error = %e, "the print service's log cannot be read");
                            sink.warn("print", CHANNEL, &e.to_string());
                            unreadable = true;
                        }
                        None
                    }
                };
                let after = match last {
                    Some(n) => n,
                    None => {
                        // The first run starts at the log's end.
                        let Some(newest) = read("*", true, 1) else {
                            return Ok(());
                        };
                        let n = newest.first().and_then(|x| record_id(x)).unwrap_or(0);
                        crate::fsutil::write_json(&state_path, &n)?;
                        last = Some(n);
                        n
                    }
                };
                let Some(found) = read(&query_after(after), false, MAX_PER_POLL) else {
                    return Ok(());
                };
                if found.is_empty() {
                    // A log cleared since (`wevtutil cl`) numbers its
                    // records from 1 again: read it from its start.
                    let newest = read("*", true, 1)
                        .and_then(|n| n.first().and_then(|x| record_id(x)))
                        .unwrap_or(0);
                    if newest < after {
                        tracing::info!(
                            after,
                            newest,
                            "the print log was cleared: reading it from its start"
                        );
                        crate::fsutil::write_json(&state_path, &0u64)?;
                        last = Some(0);
                    }
                    return Ok(());
                }
                let mut newest = after;
                for xml in found {
                    newest = newest.max(record_id(&xml).unwrap_or(0));
                    let Some(job) = parse_printed(&xml) else {
                        continue;
                    };
                    let user = sid_name(&job.user_sid).unwrap_or(job.user);
                    let event = PrintEvent {
                        printer: job.printer,
                        document: job.document,
                        pages: job.pages,
                        copies: 0,
                        process_exe_path: String::new(),
                    };
                    sink.emit(job.at_us, user, Kind::Print(event))?;
                }
                if newest != after {
                    crate::fsutil::write_json(&state_path, &newest)?;
                    last = Some(newest);
                }
                Ok(())
            })
            .await
        })
    }
}

/// `DOMAIN\name` for a SID in string form.
fn sid_name(sid: &str) -> Option<String> {
    use windows_sys::Win32::Foundation::{HLOCAL, LocalFree};
    use windows_sys::Win32::Security::Authorization::ConvertStringSidToSidW;
    if sid.is_empty() {
        return None;
    }
    let wide = win::wide(sid);
    let mut psid = std::ptr::null_mut();
    // SAFETY: a NUL-terminated string; the SID is LocalAlloc'd, freed below.
    if unsafe { ConvertStringSidToSidW(wide.as_ptr(), &mut psid) } == 0 {
        return None;
    }
    // SAFETY: a valid SID until freed.
    let name = unsafe { win::account_name(psid) };
    // SAFETY: allocated by the call above.
    unsafe { LocalFree(psid as HLOCAL) };
    name
}

#[cfg(test)]
mod tests;
