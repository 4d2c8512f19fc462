//! The agent's own events: it started, it is stopping, and the removal
//! attempts `mamori-agent uninstall-check` recorded (another process, run
//! by the package before removal).

use std::path::{Path, PathBuf};
use std::time::Duration;

use mamori_proto::agent::v1::{AgentEvent, agent_event::Action, event::Kind};

use crate::sink::EventSink;

fn emit(sink: &EventSink, at_us: i64, action: Action, detail: String) {
    let event = Kind::Agent(AgentEvent {
        action: action as i32,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        detail,
    });
    if let Err(e) = sink.emit(at_us, String::new(), event) {
        tracing::warn!(error = %e, "cannot spool the agent's own event");
    }
}

pub(crate) fn started(sink: &EventSink) {
    emit(sink, crate::clock::now_us(), Action::Started, String::new());
}

/// Reports what is left to report, then the stop (both are spooled: what
/// the uplink cannot send before it stops goes at the next start).
pub(crate) fn stopping(state_dir: &Path, sink: &EventSink) {
    report_attempts(state_dir, sink);
    emit(
        sink,
        crate::clock::now_us(),
        Action::Stopping,
        String::new(),
    );
}

fn report_attempts(state_dir: &Path, sink: &EventSink) {
    crate::uninstall::take_attempts(state_dir, |at, allowed, detail| {
        let action = if allowed {
            Action::UninstallAllowed
        } else {
            Action::UninstallRefused
        };
        emit(sink, at, action, detail);
    });
}

/// Reports recorded removal attempts every two seconds.
pub(crate) async fn watch_attempts(state_dir: PathBuf, sink: EventSink) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        report_attempts(&state_dir, &sink);
    }
}
