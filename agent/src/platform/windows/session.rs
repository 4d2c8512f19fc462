//! Logons, logoffs, lock and unlock, boot, shutdown, sleep and resume on
//! Windows.
//!
//! The service control manager tells the service (`SERVICE_CONTROL_
//! SESSIONCHANGE`, `SERVICE_CONTROL_POWEREVENT`, `SERVICE_CONTROL_SHUTDOWN`);
//! the service's control handler hands each notice to this collector
//! through [`notify`]. The user of a session comes from
//! `WTSQuerySessionInformationW` (`DOMAIN\name`), its terminal from the
//! window station's name (`Console`, `RDP-Tcp#3`) and, for a remote
//! session, the client's name. A logoff is reported with the user seen at
//! the logon (the sessions open at start are looked up then), since the
//! session may be gone by the time it is asked.
//!
//! Boot: the boot time is the clock now less `GetTickCount64`; when it
//! differs from the one last reported (kept in `boot.json`) by more than
//! two minutes, the PC booted since, and the boot is reported with its
//! time. A shutdown is reported from the service's shutdown notice, and
//! the handler waits (up to three seconds) for it to be in the spool
//! before it stops the agent.
//!
//! The agent started at a console (`mamori-agent run`) hears no notices:
//! it reports the boot only. Wine sends a service no session or power
//! notices: the tests under Wine see the boot event; the rest is tested
//! through [`Tracker`] with the notices built by hand.

#![allow(unsafe_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use mamori_proto::agent::v1::{
    LogonEvent, PowerEvent, event::Kind, logon_event::Action, power_event::Action as Power,
};
use windows_sys::Win32::System::RemoteDesktop::{
    WTS_CURRENT_SERVER_HANDLE, WTS_INFO_CLASS, WTS_SESSION_INFOW, WTSClientName, WTSDomainName,
    WTSEnumerateSessionsW, WTSFreeMemory, WTSQuerySessionInformationW, WTSUserName,
    WTSWinStationName,
};

use super::win;
use crate::clock::now_us;
use crate::collector::{Collector, EventSink};
use crate::error::Result;

/// `WTS_SESSION_LOGON` and the other session-change reasons.
pub(crate) const WTS_SESSION_LOGON: u32 = 5;
pub(crate) const WTS_SESSION_LOGOFF: u32 = 6;
pub(crate) const WTS_SESSION_LOCK: u32 = 7;
pub(crate) const WTS_SESSION_UNLOCK: u32 = 8;

/// A boot time this far from the last one reported is a new boot (the
/// clock and the tick count drift apart a little).
const NEW_BOOT: i64 = 120_000_000;

/// What the service manager told the service.
#[derive(Debug)]
pub(crate) enum Notice {
    /// A session changed (`WTS_SESSION_*`).
    Session {
        reason: u32,
        session_id: u32,
    },
    Suspend,
    Resume,
    /// The system shuts down; the sender hears once the event is spooled.
    Shutdown(std::sync::mpsc::Sender<()>),
}

static NOTICES: Mutex<Option<tokio::sync::mpsc::Sender<Notice>>> = Mutex::new(None);

/// Hands a notice to the running collector; false when none runs or its
/// queue is full (the notice is lost, and logged).
pub(crate) fn notify(notice: Notice) -> bool {
    let guard = NOTICES.lock().unwrap_or_else(|e| e.into_inner());
    let sent = guard.as_ref().is_some_and(|tx| tx.try_send(notice).is_ok());
    if !sent {
        tracing::warn!("a session or power notice was not collected");
    }
    sent
}

/// Tells the collector the system shuts down and waits (up to `wait`) for
/// the event to be spooled.
pub(crate) fn shutting_down(wait: Duration) {
    let (tx, rx) = std::sync::mpsc::channel();
    if notify(Notice::Shutdown(tx)) && rx.recv_timeout(wait).is_err() {
        tracing::warn!("the shutdown event was not spooled in time");
    }
}

/// A session as `WTSQuerySessionInformationW` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct SessionInfo {
    /// `DOMAIN\name`; empty for a session nobody is logged on to.
    pub(crate) user: String,
    pub(crate) terminal: String,
    pub(crate) remote_host: String,
}

/// Turns notices into events, remembering each session's user.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    sessions: HashMap<u32, SessionInfo>,
    suspended_at_us: Option<i64>,
}

impl Tracker {
    /// Remembers a session open at start (no event).
    pub(crate) fn prime(&mut self, session_id: u32, info: SessionInfo) {
        if !info.user.is_empty() {
            self.sessions.insert(session_id, info);
        }
    }

    /// The event for `notice` at `now_us` (with its user), if any;
    /// `lookup` asks Windows about a session.
    pub(crate) fn handle(
        &mut self,
        notice: &Notice,
        now_us: i64,
        lookup: impl Fn(u32) -> Option<SessionInfo>,
    ) -> Option<(String, Kind)> {
        match *notice {
            Notice::Session { reason, session_id } => {
                let action = match reason {
                    WTS_SESSION_LOGON => Action::Logon,
                    WTS_SESSION_LOGOFF => Action::Logoff,
                    WTS_SESSION_LOCK => Action::Lock,
                    WTS_SESSION_UNLOCK => Action::Unlock,
                    _ => return None,
                };
                let info = if action == Action::Logoff {
                    self.sessions
                        .remove(&session_id)
                        .or_else(|| lookup(session_id))
                } else {
                    let fresh = lookup(session_id).filter(|i| !i.user.is_empty());
                    if let Some(info) = &fresh {
                        self.sessions.insert(session_id, info.clone());
                    }
                    fresh.or_else(|| self.sessions.get(&session_id).cloned())
                }
                .unwrap_or_default();
                let terminal = if info.terminal.is_empty() {
                    format!("session {session_id}")
                } else {
                    info.terminal
                };
                Some((
                    info.user,
                    Kind::Logon(LogonEvent {
                        action: action as i32,
                        terminal,
                        remote_host: info.remote_host,
                        session_pid: 0,
                    }),
                ))
            }
            Notice::Suspend => {
                self.suspended_at_us = Some(now_us);
                Some((String::new(), power(Power::Suspend, 0)))
            }
            Notice::Resume => {
                // Windows sends "resume automatic" on every wake and
                // "resume suspend" as well when a user is there: one event.
                let since = self.suspended_at_us.take()?;
                let asleep_s = u64::try_from((now_us - since) / 1_000_000).unwrap_or(0);
                Some((String::new(), power(Power::Resume, asleep_s)))
            }
            Notice::Shutdown(_) => Some((String::new(), power(Power::Shutdown, 0))),
        }
    }
}

fn power(action: Power, asleep_s: u64) -> Kind {
    Kind::Power(PowerEvent {
        action: action as i32,
        asleep_s,
        source: "service manager".into(),
    })
}

/// Whether a boot at `boot_us` is one not reported yet, given the last one
/// reported.
pub(crate) fn is_new_boot(last_reported_us: Option<i64>, boot_us: i64) -> bool {
    last_reported_us.is_none_or(|last| (boot_us - last).abs() > NEW_BOOT)
}

/// The session collector.
#[derive(Debug)]
pub struct SessionCollector {
    boot_path: PathBuf,
}

impl SessionCollector {
    /// Keeps the last boot reported in `boot_path`.
    pub fn new(boot_path: impl Into<PathBuf>) -> Self {
        SessionCollector {
            boot_path: boot_path.into(),
        }
    }

    fn report_boot(&self, sink: &EventSink) {
        // SAFETY: plain call.
        let uptime_ms = unsafe { windows_sys::Win32::System::SystemInformation::GetTickCount64() };
        let boot_us = now_us() - i64::try_from(uptime_ms).unwrap_or(0) * 1000;
        let last: Option<i64> = crate::fsutil::read_json(&self.boot_path);
        if !is_new_boot(last, boot_us) {
            return;
        }
        if let Err(e) = sink.emit(boot_us, String::new(), power(Power::Boot, 0)) {
            tracing::warn!(error = %e, "boot event not spooled");
            return;
        }
        tracing::info!(boot_us, "boot reported");
        if let Err(e) = crate::fsutil::write_json(&self.boot_path, &boot_us) {
            tracing::warn!(path = %self.boot_path.display(), error = %e, "cannot keep the boot time");
        }
    }
}

impl Collector for SessionCollector {
    fn name(&self) -> &'static str {
        "logon"
    }

    fn run(self: Box<Self>, sink: EventSink) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel(256);
            *NOTICES.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
            self.report_boot(&sink);
            let mut tracker = Tracker::default();
            for id in session_ids() {
                if let Some(info) = session(id) {
                    tracker.prime(id, info);
                }
            }
            while let Some(notice) = rx.recv().await {
                let Some((user, kind)) = tracker.handle(&notice, now_us(), session) else {
                    continue;
                };
                if let Err(e) = sink.emit(now_us(), user, kind) {
                    tracing::warn!(error = %e, "session event not spooled");
                }
                if let Notice::Shutdown(done) = notice {
                    let _ = done.send(());
                }
            }
            Ok(())
        })
    }
}

/// The sessions on this PC.
fn session_ids() -> Vec<u32> {
    let mut list: *mut WTS_SESSION_INFOW = std::ptr::null_mut();
    let mut count = 0u32;
    // SAFETY: the list is allocated by the call and freed below.
    let ok =
        unsafe { WTSEnumerateSessionsW(WTS_CURRENT_SERVER_HANDLE, 0, 1, &mut list, &mut count) };
    if ok == 0 || list.is_null() {
        return Vec::new();
    }
    // SAFETY: `count` entries were written.
    let ids = unsafe { std::slice::from_raw_parts(list, count as usize) }
        .iter()
        .map(|s| s.SessionId)
        .collect();
    // SAFETY: allocated by WTSEnumerateSessionsW.
    unsafe { WTSFreeMemory(list.cast()) };
    ids
}

/// A string about a session.
fn query(session_id: u32, class: WTS_INFO_CLASS) -> Option<String> {
    let mut buf: windows_sys::core::PWSTR = std::ptr::null_mut();
    let mut bytes = 0u32;
    // SAFETY: the buffer is allocated by the call and freed below.
    let ok = unsafe {
        WTSQuerySessionInformationW(
            WTS_CURRENT_SERVER_HANDLE,
            session_id,
            class,
            &mut buf,
            &mut bytes,
        )
    };
    if ok == 0 || buf.is_null() {
        return None;
    }
    // SAFETY: `bytes` bytes were written (a NUL-terminated string).
    let units = unsafe { std::slice::from_raw_parts(buf, bytes as usize / 2) };
    let text = win::from_wide(units);
    // SAFETY: allocated by the call.
    unsafe { WTSFreeMemory(buf.cast()) };
    Some(text)
}

/// Who is logged on to a session, and where from.
fn session(session_id: u32) -> Option<SessionInfo> {
    let user = query(session_id, WTSUserName)?;
    let domain = query(session_id, WTSDomainName).unwrap_or_default();
    let terminal = query(session_id, WTSWinStationName).unwrap_or_default();
    let remote_host = if terminal.eq_ignore_ascii_case("console") {
        String::new()
    } else {
        query(session_id, WTSClientName).unwrap_or_default()
    };
    Some(SessionInfo {
        user: match (domain.is_empty(), user.is_empty()) {
            (_, true) => String::new(),
            (true, false) => user,
            (false, false) => format!("{domain}\\{user}"),
        },
        terminal,
        remote_host,
    })
}

#[cfg(test)]
mod tests;
