//! Print jobs, from CUPS's page log (Linux; CUPS also runs macOS printing).
//!
//! When a job ends, cupsd appends a line to its page log
//! (`/var/log/cups/page_log`, `PageLog` in cups-files.conf) in its default
//! `PageLogFormat`:
//!
//! ```text
//! PRINTER USER JOB-ID [DD/Mon/YYYY:HH:MM:SS +ZZZZ] total PAGES BILLING HOST JOB-NAME MEDIA SIDES
//! ```
//!
//! where PAGES counts every impression of every copy. (Some drivers' filters
//! add a line per page as well; only the `total` line is reported.) The
//! collector polls the file once a second, as the logon collector polls
//! wtmp, and keeps its place as [`tail`](super::tail) describes: a
//! restart neither repeats nor misses a job, the first run starts at the
//! end (history is not news), a rotated or truncated log is read from its
//! start. A missing log (no CUPS) is checked again every poll; a line that does not parse, or is longer
//! than [`MAX_LINE`], is skipped and counted, and at most [`MAX_LINES`]
//! lines are read per poll, so a flood neither grows memory nor starves
//! the other collectors.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use mamori_proto::agent::v1::{PrintEvent, event::Kind};

use super::tail::TailedFile;
use crate::clock::days_from_civil;
use crate::collector::{Collector, EventSink, poll_every};
use crate::error::{Error, Result};

/// Where Debian's CUPS writes its page log.
pub const DEFAULT_PAGE_LOG: &str = "/var/log/cups/page_log";
/// Longest page-log line read; longer ones are skipped.
pub const MAX_LINE: usize = 8192;
/// Lines read per poll, at most.
pub const MAX_LINES: usize = 1000;

/// One finished job, as the page log tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub printer: String,
    pub user: String,
    pub job_id: u64,
    pub at_us: i64,
    /// Impressions, every copy counted.
    pub pages: u32,
    pub document: String,
}

/// Parses a `total` line of the default `PageLogFormat`; `None` for a
/// per-page line or anything else.
pub fn parse_line(line: &str) -> Option<Job> {
    let (head, rest) = line.split_once(" [")?;
    let (date, tail) = rest.split_once("] ")?;
    let mut head = head.split(' ');
    let printer = head.next()?.to_owned();
    let user = head.next()?.to_owned();
    let job_id = head.next()?.parse().ok()?;
    if head.next().is_some() {
        return None;
    }
    let at_us = parse_time(date)?;
    // `total PAGES BILLING HOST JOB-NAME… MEDIA SIDES`: the job name may
    // hold spaces; the fields after it do not.
    let fields: Vec<&str> = tail.split(' ').collect();
    if fields.len() < 7 || fields[0] != "total" {
        return None;
    }
    let pages = fields[1].parse().ok()?;
    let document = fields[4..fields.len() - 2].join(" ");
    let dash = |s: String| if s == "-" { String::new() } else { s };
    Some(Job {
        printer,
        user: dash(user),
        job_id,
        at_us,
        pages,
        document: dash(document),
    })
}

/// `05/Dec/2026:17:24:36 +0900` → microseconds since the epoch (UTC).
fn parse_time(s: &str) -> Option<i64> {
    let (stamp, zone) = s.split_once(' ')?;
    let mut parts = stamp.split([':', '/']);
    let day: i64 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let hour: i64 = parts.next()?.parse().ok()?;
    let minute: i64 = parts.next()?.parse().ok()?;
    let second: i64 = parts.next()?.parse().ok()?;
    if parts.next().is_some()
        || !(1..=31).contains(&day)
        || !(0..24).contains(&hour)
        || !(0..60).contains(&minute)
        || !(0..=60).contains(&second)
    {
        return None;
    }
    let sign = match zone.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    if zone.len() != 5 {
        return None;
    }
    let zh: i64 = zone.get(1..3)?.parse().ok()?;
    let zm: i64 = zone.get(3..5)?.parse().ok()?;
    let offset = sign * (zh * 3600 + zm * 60);
    let secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(secs * 1_000_000)
}

/// The page-log collector.
#[derive(Debug, Clone)]
pub struct PrintCollector {
    page_log: PathBuf,
    position_path: PathBuf,
    poll: Duration,
}

impl PrintCollector {
    /// Watches `page_log`, keeping its position in `position_path`.
    pub fn new(page_log: impl Into<PathBuf>, position_path: impl Into<PathBuf>) -> Self {
        PrintCollector {
            page_log: page_log.into(),
            position_path: position_path.into(),
            poll: Duration::from_secs(1),
        }
    }

    /// Changes how often the log is checked (tests use a short interval).
    pub fn with_poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }
}

impl Collector for PrintCollector {
    fn name(&self) -> &'static str {
        "print"
    }

    fn run(self: Box<Self>, sink: EventSink) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let mut tracker = Tracker {
                file: TailedFile::open(self.page_log, self.position_path, 1)?,
                skipped: 0,
            };
            tracing::info!(page_log = %tracker.file.path.display(), offset = tracker.file.pos.offset, "watching print jobs");
            let what = tracker.file.path.display().to_string();
            poll_every(self.poll, &sink, "print", &what, || tracker.poll(&sink)).await
        })
    }
}

#[derive(Debug)]
struct Tracker {
    file: TailedFile,
    skipped: u64,
}

impl Tracker {
    /// Reads the whole lines appended since the last call (at most
    /// [`MAX_LINES`]) and emits a print event per finished job.
    fn poll(&mut self, sink: &EventSink) -> Result<()> {
        let path = self.file.path.display().to_string();
        let what = || format!("reading {path}");
        let Some((mut file, len)) = self.file.reopen()? else {
            return Ok(());
        };
        if len <= self.file.pos.offset {
            return Ok(());
        }
        file.seek(SeekFrom::Start(self.file.pos.offset))
            .map_err(Error::io(what()))?;
        let mut reader = BufReader::new(file).take(len - self.file.pos.offset);
        let mut line = Vec::new();
        let mut result = Ok(());
        let skipped_before = self.skipped;
        let mut why_skipped = "";
        for _ in 0..MAX_LINES {
            line.clear();
            let n = (&mut reader)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line)
                .map_err(Error::io(what()))?;
            if n == 0 {
                break;
            }
            if line.last() != Some(&b'\n') {
                if line.len() <= MAX_LINE {
                    // Half-written: read again when it is whole.
                    break;
                }
                // Too long: skip to its end.
                let mut rest = Vec::new();
                let more = reader
                    .read_until(b'\n', &mut rest)
                    .map_err(Error::io(what()))?;
                if rest.last() != Some(&b'\n') {
                    break;
                }
                why_skipped = "a line longer than the limit";
                self.skip(why_skipped);
                self.file.pos.offset += (n + more) as u64;
                continue;
            }
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            if let Some(job) = parse_line(text.trim_end_matches('\r')) {
                let event = PrintEvent {
                    printer: job.printer,
                    document: job.document,
                    pages: job.pages,
                    copies: 1,
                    process_exe_path: String::new(),
                };
                if let Err(e) = sink.emit(job.at_us, job.user, Kind::Print(event)) {
                    result = Err(e);
                    break;
                }
            } else if text.contains(" total ") {
                why_skipped = "a total line that does not parse";
                self.skip(why_skipped);
            }
            self.file.pos.offset += n as u64;
        }
        // Saved after the events are spooled, and also when emitting failed
        // half-way, so the jobs already spooled are not sent twice.
        self.file.save()?;
        let skipped = self.skipped - skipped_before;
        if skipped > 0 {
            // One warning per poll at most, however many lines it skipped.
            let why = format!("skipped {skipped} page-log line(s), the last {why_skipped}");
            sink.warn("print", &path, &why);
        }
        result
    }

    fn skip(&mut self, why: &str) {
        self.skipped += 1;
        tracing::warn!(page_log = %self.file.path.display(), skipped_total = self.skipped, "skipped {why}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::testing::{sink_in, spooled};
    use std::io::Write;

    fn tracker(log: &std::path::Path, position: &std::path::Path) -> Tracker {
        Tracker {
            file: TailedFile::open(log.to_owned(), position.to_owned(), 1).unwrap(),
            skipped: 0,
        }
    }

    const LINE: &str =
        "Virtual sato 2 [05/Dec/2026:17:24:36 +0900] total 122 - localhost 給与 明細.txt - -";

    #[test]
    fn a_total_line_is_a_job_with_its_pages_and_name() {
        let job = parse_line(LINE).unwrap();
        assert_eq!(job.printer, "Virtual");
        assert_eq!(job.user, "sato");
        assert_eq!(job.job_id, 2);
        assert_eq!(job.pages, 122);
        assert_eq!(job.document, "給与 明細.txt", "a name with a space");
        // 2026-12-05 08:24:36 UTC.
        assert_eq!(job.at_us, 1_796_459_076 * 1_000_000);
    }

    #[test]
    fn per_page_and_broken_lines_are_not_jobs() {
        for line in [
            "Virtual sato 2 [05/Dec/2026:17:24:36 +0900] 1 1 - localhost a.txt - -",
            "Virtual sato 2 [05/Dec/2026:17:24:36 +0900] total many - localhost a.txt - -",
            "Virtual sato 2 [31/Foo/2026:17:24:36 +0900] total 1 - localhost a.txt - -",
            "Virtual sato x [05/Dec/2026:17:24:36 +0900] total 1 - localhost a.txt - -",
            "Virtual sato 2 [05/Dec/2026:17:24:36 +0900] total 1 - localhost",
            "",
            "\u{0}\u{1}garbage",
        ] {
            assert_eq!(parse_line(line), None, "{line:?}");
        }
        assert_eq!(
            parse_line("P - 3 [01/Jan/2027:00:00:00 +0000] total 1 - - - - -")
                .map(|j| (j.user, j.document)),
            Some((String::new(), String::new())),
            "dashes are empty"
        );
    }

    #[test]
    fn jobs_are_reported_once_across_restarts_and_rotation_and_bad_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("page_log");
        let position = dir.path().join("print.offset");
        let append = |text: &str| {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
        };
        append(&format!("{LINE}\n"));
        let (sink, spool) = sink_in(dir.path());
        // The first run starts at the end: the old job is history.
        let mut t = tracker(&log, &position);
        t.poll(&sink).unwrap();
        assert!(spooled(&spool).is_empty());

        let long = "x".repeat(MAX_LINE + 10);
        append(&format!(
            "{long}\nP1 tanaka 7 [05/Dec/2026:09:00:00 +0000] total 60 - localhost report.pdf - -\nhalf"
        ));
        t.poll(&sink).unwrap();
        let events = spooled(&spool);
        assert_eq!(events.len(), 2, "the long line skipped, the half line kept");
        let Some(Kind::Print(p)) = &events[0].kind else {
            panic!("{events:?}")
        };
        assert_eq!((p.pages, p.document.as_str()), (60, "report.pdf"));
        assert_eq!(events[0].os_user, "tanaka");
        assert_eq!(t.skipped, 1);
        // The skipped line is not silent: one warning for the poll.
        let Some(Kind::CollectorWarning(w)) = &events[1].kind else {
            panic!("{events:?}")
        };
        assert_eq!(
            (w.collector.as_str(), w.source.as_str()),
            ("print", &*log.display().to_string())
        );
        assert!(
            w.message
                .contains("skipped 1 page-log line(s), the last a line longer"),
            "{w:?}"
        );
        let prints = |spool: &crate::sink::SharedSpool| -> Vec<mamori_proto::agent::v1::Event> {
            spooled(spool)
                .into_iter()
                .filter(|e| matches!(e.kind, Some(Kind::Print(_))))
                .collect()
        };

        // The half line becomes whole; a restart reads on from there.
        append(
            " written P2 - 8 [05/Dec/2026:09:01:00 +0000] total 1 - - x - -\nP2 suzuki 9 [05/Dec/2026:09:02:00 +0000] total 3 - - y.pdf - -\n",
        );
        let mut t = tracker(&log, &position);
        t.poll(&sink).unwrap();
        let events = prints(&spool);
        assert_eq!(
            events.len(),
            2,
            "the finished half line is no job; y.pdf is"
        );
        assert_eq!(events[1].os_user, "suzuki");

        // logrotate: a new, shorter file is read from its start.
        std::fs::remove_file(&log).unwrap();
        append("P3 sato 1 [05/Dec/2026:10:00:00 +0000] total 5 - - new.pdf - -\n");
        t.poll(&sink).unwrap();
        assert_eq!(prints(&spool).len(), 3);
        t.poll(&sink).unwrap();
        assert_eq!(prints(&spool).len(), 3, "nothing twice");
        // Warnings: the long line, the finished half line (a total line
        // that does not parse); none for the polls that skipped nothing.
        assert_eq!(spooled(&spool).len() - prints(&spool).len(), 2);
    }
}
