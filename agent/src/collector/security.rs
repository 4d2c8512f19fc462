//! The PC's security status: pending (and security) updates, the
//! antivirus and the age of its signatures, the firewall, disk encryption.
//! Every [`DEFAULT_POLL`] the collector asks the platform's [`SecurityProbe`]
//! (each platform supplies its own) and reports the status when it differs from the last one
//! reported (kept in the state directory), and at least once a day; the
//! first look reports it too. The latest is what the operation log's
//! `kind=security_status` search for a device shows first.

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use mamori_proto::agent::v1::{SecurityStatusEvent, event::Kind};
use serde::{Deserialize, Serialize};

use super::{Collector, EventSink};
use crate::clock::now_us;
use crate::error::{Error, Result};
use crate::fsutil;

/// How often the status is looked at.
pub const DEFAULT_POLL: Duration = Duration::from_secs(600);
/// The status is reported at least this often, changed or not.
const REPORT_EVERY_US: i64 = 24 * 3600 * 1_000_000;
/// Signatures older than this are out of date.
const SIGNATURES_MAX_AGE_DAYS: u32 = 7;

/// A platform's source of the security status.
pub trait SecurityProbe: Send + Sync + 'static {
    fn status(&self) -> SecurityStatusEvent;
}

/// What was last reported, and when.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Reported {
    at_us: i64,
    /// The status, encoded (compared whole).
    status: Vec<u8>,
}

/// The security-status collector.
pub struct SecurityCollector {
    probe: std::sync::Arc<dyn SecurityProbe>,
    saved_path: PathBuf,
    poll: Duration,
}

impl std::fmt::Debug for SecurityCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityCollector")
            .field("saved_path", &self.saved_path)
            .finish_non_exhaustive()
    }
}

impl SecurityCollector {
    pub fn new(probe: Box<dyn SecurityProbe>, saved_path: PathBuf, poll: Duration) -> Self {
        Self {
            probe: probe.into(),
            saved_path,
            poll,
        }
    }

    /// One look: reports the status when it changed or a day has passed;
    /// returns whether it did.
    fn check(&self, status: SecurityStatusEvent, sink: &EventSink) -> Result<bool> {
        use prost::Message;
        let now = now_us();
        let last: Option<Reported> = fsutil::read_json(&self.saved_path);
        let encoded = status.encode_to_vec();
        let due = last
            .as_ref()
            .is_none_or(|l| l.status != encoded || now - l.at_us >= REPORT_EVERY_US);
        if !due {
            return Ok(false);
        }
        sink.emit(now, String::new(), Kind::SecurityStatus(status))?;
        fsutil::write_json(
            &self.saved_path,
            &Reported {
                at_us: now,
                status: encoded,
            },
        )?;
        Ok(true)
    }
}

/// Marks the signatures up to date when young enough.
fn judged(mut s: SecurityStatusEvent) -> SecurityStatusEvent {
    s.antivirus_up_to_date = !s.antivirus_product.is_empty()
        && s.antivirus_signature_age_days <= SIGNATURES_MAX_AGE_DAYS;
    s
}

impl Collector for SecurityCollector {
    fn name(&self) -> &'static str {
        "security"
    }

    fn run(self: Box<Self>, sink: EventSink) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let mut tick = tokio::time::interval(self.poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // The probe runs programs (apt-get -s): off the runtime.
                let probe = std::sync::Arc::clone(&self.probe);
                let status = tokio::task::spawn_blocking(move || judged(probe.status()))
                    .await
                    .map_err(|e| Error::io("the security probe")(std::io::Error::other(e)))?;
                if let Err(e) = self.check(status, &sink) {
                    tracing::warn!(error = %e, "reporting the security status failed");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::testing::{sink_in, spooled};

    struct Fixed(SecurityStatusEvent);

    impl SecurityProbe for Fixed {
        fn status(&self) -> SecurityStatusEvent {
            self.0.clone()
        }
    }

    #[test]
    fn the_status_is_reported_first_on_change_and_daily() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, spool) = sink_in(dir.path());
        let c = SecurityCollector::new(
            Box::new(Fixed(SecurityStatusEvent::default())),
            dir.path().join("security.json"),
            DEFAULT_POLL,
        );
        let status = SecurityStatusEvent {
            pending_updates: 3,
            pending_security_updates: 1,
            antivirus_product: "ClamAV".into(),
            antivirus_signature_age_days: 2,
            ..Default::default()
        };
        assert!(
            c.check(judged(status.clone()), &sink).unwrap(),
            "the first look"
        );
        assert!(
            !c.check(judged(status.clone()), &sink).unwrap(),
            "unchanged"
        );
        let fixed = SecurityStatusEvent {
            pending_security_updates: 0,
            ..status.clone()
        };
        assert!(c.check(judged(fixed.clone()), &sink).unwrap(), "changed");
        // A day later it is reported again, unchanged.
        let mut saved: Reported = fsutil::read_json(&c.saved_path).unwrap();
        saved.at_us -= REPORT_EVERY_US;
        fsutil::write_json(&c.saved_path, &saved).unwrap();
        assert!(c.check(judged(fixed), &sink).unwrap(), "daily");
        let events = spooled(&spool);
        assert_eq!(events.len(), 3);
        let Some(Kind::SecurityStatus(first)) = &events[0].kind else {
            panic!("{:?}", events[0]);
        };
        assert!(first.antivirus_up_to_date, "2-day-old signatures");
        let stale = judged(SecurityStatusEvent {
            antivirus_product: "ClamAV".into(),
            antivirus_signature_age_days: 30,
            ..Default::default()
        });
        assert!(!stale.antivirus_up_to_date);
        assert!(
            !judged(SecurityStatusEvent::default()).antivirus_up_to_date,
            "no antivirus"
        );
    }
}
