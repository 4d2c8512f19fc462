//! Event sources. Each collector runs as its own task and reports through an
//! [`EventSink`]; the sink spools the events, the uplink sends them.
//!
//! The collectors here are the OS-neutral part: the process reporter
//! (policy verdicts, hashes, the started-process map), file operations
//! (pairing, copy detection, hashes, rates), the environment and security
//! snapshots and their diffs, and web history. Each OS's module under
//! [`platform`](crate::platform) supplies the sources, the probes and the
//! enforcers they run on, and the collectors that are its own (on Linux:
//! wtmp logons, sysfs devices, CUPS, dpkg).

pub mod devices;
pub mod environment;
pub mod files;
pub mod process;
pub mod security;
pub mod software;
pub mod web;

use std::str::FromStr;

use std::time::Duration;

use futures::future::BoxFuture;

use crate::error::{Error, Result};
pub use crate::sink::EventSink;

/// An event source.
pub trait Collector: Send {
    /// Short name for logs (`process`, `logon`).
    fn name(&self) -> &'static str;

    /// Watches its source and emits events until the task is dropped (the
    /// agent aborts collector tasks on shutdown, so the future must keep its
    /// own progress consistent at every await point). Returns only on a
    /// failure it cannot get past.
    fn run(self: Box<Self>, sink: EventSink) -> BoxFuture<'static, Result<()>>;
}

/// Calls `poll` every `every` until the task is dropped; a failure is
/// logged, reported as a collector warning (see [`Failing`]) and the next
/// round tries again.
pub(crate) async fn poll_every(
    every: Duration,
    sink: &EventSink,
    collector: &str,
    source: &str,
    mut poll: impl FnMut() -> Result<()>,
) -> Result<()> {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = Failing::default();
    loop {
        tick.tick().await;
        let outcome = poll();
        if let Err(e) = &outcome {
            tracing::warn!(error = %e, "reading {source} failed");
        }
        failing.report(sink, collector, source, &outcome);
    }
}

/// A source's failures as collector warnings: one event when the source
/// starts failing or fails for another reason, none while the same failure
/// repeats (a poll a second would otherwise send one a second), and again
/// once it has worked in between.
#[derive(Debug, Default)]
pub(crate) struct Failing {
    reported: Option<String>,
}

impl Failing {
    pub(crate) fn report<T>(
        &mut self,
        sink: &EventSink,
        collector: &str,
        source: &str,
        outcome: &Result<T>,
    ) {
        match outcome {
            Ok(_) => self.reported = None,
            Err(e) => {
                let why = e.to_string();
                if self.reported.as_deref() != Some(&why) {
                    sink.warn(collector, source, &why);
                    self.reported = Some(why);
                }
            }
        }
    }
}

/// Which collectors `run` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollectorSet {
    pub process: bool,
    pub logon: bool,
    pub devices: bool,
    pub print: bool,
    pub environment: bool,
    pub software: bool,
    pub files: bool,
    pub web: bool,
    pub security: bool,
}

impl CollectorSet {
    pub const ALL: CollectorSet = CollectorSet {
        process: true,
        logon: true,
        devices: true,
        print: true,
        environment: true,
        software: true,
        files: true,
        web: true,
        security: true,
    };
    pub const NONE: CollectorSet = CollectorSet {
        process: false,
        logon: false,
        devices: false,
        print: false,
        environment: false,
        software: false,
        files: false,
        web: false,
        security: false,
    };
}

impl Default for CollectorSet {
    fn default() -> Self {
        Self::ALL
    }
}

/// `process,logon,devices,print,environment,software,files,web,security`,
/// `all` or `none`.
impl FromStr for CollectorSet {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let mut set = CollectorSet::NONE;
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "process" => set.process = true,
                "logon" => set.logon = true,
                "devices" => set.devices = true,
                "print" => set.print = true,
                "environment" => set.environment = true,
                "software" => set.software = true,
                "files" => set.files = true,
                "web" => set.web = true,
                "security" => set.security = true,
                "all" => set = CollectorSet::ALL,
                "none" => {}
                other => {
                    return Err(Error::InvalidOption(format!(
                        "unknown collector {other:?} (known: process, logon, devices, print, environment, software, files, web, security, all, none)"
                    )));
                }
            }
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_sets_parse() {
        assert_eq!(
            "process,logon,devices,print,environment,software,files,web,security"
                .parse::<CollectorSet>()
                .unwrap(),
            CollectorSet::ALL
        );
        assert_eq!("all".parse::<CollectorSet>().unwrap(), CollectorSet::ALL);
        assert_eq!("none".parse::<CollectorSet>().unwrap(), CollectorSet::NONE);
        let logon = "logon".parse::<CollectorSet>().unwrap();
        assert!(logon.logon && !logon.process);
        assert!("usb".parse::<CollectorSet>().is_err());
    }
}
