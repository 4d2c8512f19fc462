//! Logons and logoffs, boots and shutdowns on Linux, from wtmp; sleep and
//! wake from the kernel's clocks.
//!
//! login, sshd and display managers append a `USER_PROCESS` record to
//! /var/log/wtmp when a session starts and a `DEAD_PROCESS` record on the
//! same terminal line when it ends; systemd (or init) appends a
//! `BOOT_TIME` record at boot and a `RUN_LVL` record for user `shutdown`
//! when the PC shuts down. The collector polls the file for growth once a
//! second (a logon is rare; inotify would buy little latency for more
//! moving parts) and turns records into `LogonEvent`s and `PowerEvent`s.
//! A shutdown is therefore never lost even when the agent is stopped
//! before the record is written: the record is read at the next start.
//!
//! Sleep: `CLOCK_MONOTONIC` stops while the PC is suspended and
//! `CLOCK_BOOTTIME` does not, so a poll that finds the second ahead of the
//! first by [`MIN_SLEEP`] or more reports a suspend (when it began, to
//! within a poll) and a resume (with how long the PC slept). This needs no
//! logind; screen lock and unlock do (logind's `LockedHint`) and are not
//! collected yet.
//!
//! Its place in the file is kept as [`tail`](super::tail) describes: a
//! restart neither repeats nor misses records, the very first run starts
//! at the end of the file rather than reporting years of history, and a
//! file that shrank or was replaced (logrotate) is read from the start.
//! Logoff records usually carry no user name: it comes from
//! the logon on the same line, which is why the records just before the saved
//! position are read again (silently) at start-up.

pub mod wtmp;

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use mamori_proto::agent::v1::{
    LogonEvent, PowerEvent, event::Kind, logon_event::Action, power_event::Action as Power,
};

use super::tail::TailedFile;
use crate::clock::now_us;
use crate::collector::{Collector, EventSink, poll_every};
use crate::error::{Error, Result};
use wtmp::{RECORD_SIZE, UtmpRecord};

/// Default wtmp location.
pub const DEFAULT_WTMP: &str = "/var/log/wtmp";

/// The shortest gap between the clocks reported as sleep: a busy PC may
/// hold a poll back, but not the boot-time clock alone.
pub const MIN_SLEEP: Duration = Duration::from_secs(5);

/// Records read per step, to keep the buffer small after a long outage.
const CHUNK_RECORDS: usize = 64;
/// How far back from the saved position start-up looks for open sessions.
const PRIME_RECORDS: u64 = 8192;

/// The wtmp collector.
#[derive(Debug, Clone)]
pub struct LogonCollector {
    wtmp: PathBuf,
    position_path: PathBuf,
    poll: Duration,
}

impl LogonCollector {
    /// Watches `wtmp`, keeping its position in `position_path`.
    pub fn new(wtmp: impl Into<PathBuf>, position_path: impl Into<PathBuf>) -> Self {
        LogonCollector {
            wtmp: wtmp.into(),
            position_path: position_path.into(),
            poll: Duration::from_secs(1),
        }
    }

    /// Changes how often the file is checked (tests use a short interval).
    pub fn with_poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }
}

impl Collector for LogonCollector {
    fn name(&self) -> &'static str {
        "logon"
    }

    fn run(self: Box<Self>, sink: EventSink) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let mut tracker = Tracker::open(self.wtmp, self.position_path)?;
            tracing::info!(wtmp = %tracker.file.path.display(), offset = tracker.file.pos.offset, "watching logons");
            let what = tracker.file.path.display().to_string();
            poll_every(self.poll, &sink, "logon", &what, || tracker.poll(&sink)).await
        })
    }
}

#[derive(Debug)]
struct Session {
    user: String,
    host: String,
}

#[derive(Debug)]
struct Tracker {
    file: TailedFile,
    /// Open sessions by terminal line.
    sessions: HashMap<String, Session>,
    sleep: SleepWatch,
}

/// Notices the PC sleeping between two looks: `CLOCK_MONOTONIC` stops
/// while it is suspended, `CLOCK_BOOTTIME` does not.
#[derive(Debug, Default)]
pub(crate) struct SleepWatch {
    last: Option<(Duration, Duration)>,
}

impl SleepWatch {
    /// The time slept since the last look, from the two clocks now, when
    /// it is [`MIN_SLEEP`] or more.
    pub(crate) fn observe(&mut self, monotonic: Duration, boottime: Duration) -> Option<Duration> {
        let (m0, b0) = self.last.replace((monotonic, boottime))?;
        let asleep = boottime
            .saturating_sub(b0)
            .saturating_sub(monotonic.saturating_sub(m0));
        (asleep >= MIN_SLEEP).then_some(asleep)
    }

    /// Looks at the system's clocks; the events to report (suspend,
    /// resume) when the PC slept.
    fn check(&mut self, now_us: i64) -> Vec<(i64, Kind)> {
        use nix::time::{ClockId, clock_gettime};
        let (Ok(m), Ok(b)) = (
            clock_gettime(ClockId::CLOCK_MONOTONIC),
            clock_gettime(ClockId::CLOCK_BOOTTIME),
        ) else {
            return Vec::new();
        };
        match self.observe(Duration::from(m), Duration::from(b)) {
            Some(asleep) => sleep_events(now_us, asleep),
            None => Vec::new(),
        }
    }
}

/// A suspend when the sleep began and a resume now.
pub(crate) fn sleep_events(now_us: i64, asleep: Duration) -> Vec<(i64, Kind)> {
    let began = now_us - i64::try_from(asleep.as_micros()).unwrap_or(i64::MAX / 2);
    vec![
        (began, power_kind(Power::Suspend, 0, "clocks")),
        (
            now_us,
            power_kind(Power::Resume, asleep.as_secs(), "clocks"),
        ),
    ]
}

impl Tracker {
    fn open(wtmp: PathBuf, position_path: PathBuf) -> Result<Tracker> {
        let mut tracker = Tracker {
            file: TailedFile::open(wtmp, position_path, RECORD_SIZE as u64)?,
            sessions: HashMap::new(),
            sleep: SleepWatch::default(),
        };
        tracker.prime();
        Ok(tracker)
    }

    /// Learns the sessions still open at the saved position from the records
    /// just before it.
    fn prime(&mut self) {
        let Ok(mut file) = File::open(&self.file.path) else {
            return;
        };
        if file.metadata().map(|m| m.ino()).ok() != Some(self.file.pos.inode) {
            return;
        }
        let from = self
            .file
            .pos
            .offset
            .saturating_sub(PRIME_RECORDS * RECORD_SIZE as u64);
        let to = self.file.pos.offset;
        let _ = self.each_record(&mut file, from, to, |tracker, rec| {
            tracker.apply(rec);
            Ok(())
        });
    }

    /// Reads what was appended since the last call and emits its events.
    fn poll(&mut self, sink: &EventSink) -> Result<()> {
        let now = now_us();
        for (at, kind) in self.sleep.check(now) {
            // A boot clock that jumped (a clock reset while asleep) must
            // not date a suspend beyond what the server accepts.
            if plausible(at, now) {
                sink.emit(at, String::new(), kind)?;
            }
        }
        let Some((mut file, len)) = self.file.reopen()? else {
            return Ok(());
        };
        let end = len - len % RECORD_SIZE as u64;
        if end <= self.file.pos.offset {
            return Ok(());
        }
        let start = self.file.pos.offset;
        let result = self.each_record(&mut file, start, end, |tracker, rec| {
            if let Some((user, kind)) = tracker.apply(rec) {
                if plausible(rec.time_us(), now) {
                    sink.emit(rec.time_us(), user, kind)?;
                } else {
                    tracing::debug!(line = %rec.line, time_us = rec.time_us(), "wtmp record with an implausible time skipped");
                }
            }
            tracker.file.pos.offset += RECORD_SIZE as u64;
            Ok(())
        });
        // Saved after the events are spooled, and also when emitting failed
        // half-way, so the records already spooled are not sent twice.
        self.file.save()?;
        result
    }

    /// Calls `f` for each whole record in `from..to`.
    fn each_record(
        &mut self,
        file: &mut File,
        from: u64,
        to: u64,
        mut f: impl FnMut(&mut Tracker, &UtmpRecord) -> Result<()>,
    ) -> Result<()> {
        let what = format!("reading {}", self.file.path.display());
        file.seek(SeekFrom::Start(from))
            .map_err(|e| Error::io(what.clone())(e))?;
        let mut buf = vec![0u8; CHUNK_RECORDS * RECORD_SIZE];
        let mut at = from;
        while at < to {
            let want = ((to - at) as usize).min(buf.len());
            file.read_exact(&mut buf[..want])
                .map_err(|e| Error::io(what.clone())(e))?;
            for chunk in buf[..want].chunks_exact(RECORD_SIZE) {
                let rec = UtmpRecord::parse(chunk.try_into().expect("exact chunk"));
                f(self, &rec)?;
            }
            at += want as u64;
        }
        Ok(())
    }

    /// Updates the open sessions with `rec` and says what to report.
    fn apply(&mut self, rec: &UtmpRecord) -> Option<(String, Kind)> {
        match rec.ut_type {
            wtmp::USER_PROCESS => {
                let host = remote_host(&rec.host);
                self.sessions.insert(
                    rec.line.clone(),
                    Session {
                        user: rec.user.clone(),
                        host: host.clone(),
                    },
                );
                Some((rec.user.clone(), logon_kind(Action::Logon, rec, host)))
            }
            wtmp::DEAD_PROCESS => {
                let session = self.sessions.remove(&rec.line);
                let (user, host) = match session {
                    Some(s) if rec.user.is_empty() => (s.user, s.host),
                    Some(s) => (rec.user.clone(), s.host),
                    // A getty or init child that never had a user session.
                    None if rec.user.is_empty() => return None,
                    None => (rec.user.clone(), remote_host(&rec.host)),
                };
                Some((user, logon_kind(Action::Logoff, rec, host)))
            }
            wtmp::BOOT_TIME => {
                self.sessions.clear();
                Some((String::new(), power_kind(Power::Boot, 0, "wtmp")))
            }
            wtmp::RUN_LVL if rec.user == "shutdown" => {
                Some((String::new(), power_kind(Power::Shutdown, 0, "wtmp")))
            }
            _ => None,
        }
    }
}

/// Whether a record's time can be a recent event. The server refuses a whole
/// batch for one event from long ago or the far future, so a zeroed or stale
/// record (a wtmp restored from a backup) is skipped here.
fn plausible(time_us: i64, now_us: i64) -> bool {
    const YEAR_US: i64 = 365 * 24 * 3600 * 1_000_000;
    const DAY_US: i64 = 24 * 3600 * 1_000_000;
    time_us > now_us - YEAR_US && time_us < now_us + DAY_US
}

/// The remote host of a session; a local X display (`:0`) is not one.
fn remote_host(host: &str) -> String {
    if host.starts_with(':') {
        String::new()
    } else {
        host.to_string()
    }
}

fn power_kind(action: Power, asleep_s: u64, source: &str) -> Kind {
    Kind::Power(PowerEvent {
        action: action as i32,
        asleep_s,
        source: source.into(),
    })
}

fn logon_kind(action: Action, rec: &UtmpRecord, remote_host: String) -> Kind {
    Kind::Logon(LogonEvent {
        action: action as i32,
        terminal: rec.line.clone(),
        remote_host,
        session_pid: u32::try_from(rec.pid).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests;
