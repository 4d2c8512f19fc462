//! Installed software, the part every OS shares: each platform reads what
//! is installed (dpkg's status database on Linux, the Uninstall registry
//! keys on Windows) and [`report`] compares it with the list kept in the
//! state directory and reports each program installed, removed or updated.
//! The very first look reports every installed program as installed (the
//! PC's inventory), once; after that only changes. The list is kept after
//! the events are spooled, so a restart neither repeats nor misses a
//! change, and a change made while the agent was stopped is reported when
//! it starts.

use std::collections::BTreeMap;
use std::path::Path;

use mamori_proto::agent::v1::{SoftwareEvent, event::Kind, software_event::Action};

use crate::clock::now_us;
use crate::collector::EventSink;
use crate::error::Result;
use crate::fsutil;

/// Installed programs: version and publisher, by name.
pub type Packages = BTreeMap<String, (String, String)>;

/// What changed from `before` to `now`, in name order.
pub fn changes(before: &Packages, now: &Packages) -> Vec<SoftwareEvent> {
    let event =
        |action: Action, name: &str, (version, publisher): &(String, String)| SoftwareEvent {
            action: action as i32,
            name: name.to_owned(),
            version: version.clone(),
            publisher: publisher.clone(),
            inventory: false,
        };
    let mut out = Vec::new();
    for (name, new) in now {
        match before.get(name) {
            None => out.push(event(Action::Installed, name, new)),
            Some(old) if old.0 != new.0 => out.push(event(Action::Updated, name, new)),
            Some(_) => {}
        }
    }
    for (name, old) in before {
        if !now.contains_key(name) {
            out.push(event(Action::Removed, name, old));
        }
    }
    out
}

/// Reports what changed from the list kept at `saved_path` to `now` (all
/// of `now` as the inventory when nothing is kept), then keeps `now`.
/// Returns how many events were spooled.
pub(crate) fn report(now: &Packages, saved_path: &Path, sink: &EventSink) -> Result<usize> {
    let saved: Option<Packages> = fsutil::read_json(saved_path);
    let inventory = saved.is_none();
    let mut found = changes(&saved.unwrap_or_default(), now);
    if inventory {
        // The first look (or a kept list that cannot be read): the PC's
        // inventory, not installations seen.
        for event in &mut found {
            event.inventory = true;
        }
    }
    let at = now_us();
    for change in &found {
        sink.emit(at, String::new(), Kind::Software(change.clone()))?;
    }
    if !found.is_empty() || !saved_path.exists() {
        fsutil::write_json(saved_path, now)?;
    }
    Ok(found.len())
}
