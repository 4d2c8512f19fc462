//! USB devices: connects and disconnects, and device control. The OS
//! supplies a [`DeviceSource`] (the USB devices present now, with the
//! class codes that decide their [`DeviceClass`]) and a [`DeviceEnforcer`]
//! (how a device is refused or made read-only); the policy's verdict on a
//! device, the events and the loop that applies a new policy or an
//! expiring allowance within half a second are here.
//!
//! Every half second the current policy is re-applied to the devices
//! present; the source decides when it actually looks again (on Linux,
//! when the kernel announces a USB change, and every 30 s).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use mamori_proto::agent::v1::{
    DeviceClass, DeviceEvent, device_class_rule::Access, device_event::Action, event::Kind,
};

use crate::clock::now_us;
use crate::collector::{Collector, EventSink};
use crate::error::Result;
use crate::policy::{Compiled, PolicyState};

const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// One USB device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UsbDevice {
    /// The OS's name for it, stable while it is plugged in (the sysfs name
    /// `1-1.2` on Linux, the device instance id on Windows).
    pub(crate) name: String,
    pub(crate) vendor_id: String,
    pub(crate) product_id: String,
    pub(crate) serial: String,
    pub(crate) description: String,
    pub(crate) class: DeviceClass,
}

/// What the agent did to a device, so events are sent on changes only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Allowed,
    ReadOnly,
    Refused,
}

/// Where the USB devices present come from.
pub(crate) trait DeviceSource: Send {
    /// The devices present now, sorted by name. The source may answer from
    /// its last look when nothing announced a change.
    fn scan(&mut self) -> Vec<UsbDevice>;
}

/// How the OS refuses a device or makes it read-only.
pub(crate) trait DeviceEnforcer: Send {
    /// Brings class-wide settings in line with `policy` (Windows's
    /// removable-storage policy keys), called on every round before the
    /// devices; returns what failed, once per failure, for a warning.
    fn apply_policy(&mut self, _policy: &Compiled, _now_us: i64) -> Option<String> {
        None
    }

    /// Applies `decision` to a device whose state changed from `previous`;
    /// returns what was done, for the event.
    fn enforce(&mut self, dev: &UsbDevice, decision: State, previous: Option<State>) -> String;

    /// Called on every round for a device that stays read-only: makes
    /// read-only what appeared since (media mounted later); says what it
    /// did, nothing when there was nothing to do.
    fn keep_read_only(&mut self, _dev: &UsbDevice) -> Vec<String> {
        Vec::new()
    }

    /// Called on every round for a device that stays refused: refuses it
    /// again if it came back (replugged between two looks); says what it
    /// did, if anything.
    fn keep_refused(&mut self, _dev: &UsbDevice) -> Option<String> {
        None
    }
}

/// The device collector and enforcer.
pub struct DeviceCollector {
    source: Box<dyn DeviceSource>,
    enforcer: Box<dyn DeviceEnforcer>,
    policy: Arc<PolicyState>,
}

impl std::fmt::Debug for DeviceCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCollector").finish_non_exhaustive()
    }
}

impl DeviceCollector {
    pub(crate) fn new(
        source: Box<dyn DeviceSource>,
        enforcer: Box<dyn DeviceEnforcer>,
        policy: Arc<PolicyState>,
    ) -> Self {
        DeviceCollector {
            source,
            enforcer,
            policy,
        }
    }
}

impl Collector for DeviceCollector {
    fn name(&self) -> &'static str {
        "devices"
    }

    fn run(self: Box<Self>, sink: EventSink) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let DeviceCollector {
                mut source,
                mut enforcer,
                policy,
            } = *self;
            let mut known: HashMap<String, (UsbDevice, State)> = HashMap::new();
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let present = source.scan();
                let policy = policy.current();
                let now = now_us();
                if let Some(failure) = enforcer.apply_policy(&policy, now) {
                    tracing::warn!(%failure, "device control not applied");
                    sink.warn("devices", "device control", &failure);
                }
                for dev in &present {
                    // A device keeps the class it was first seen with until
                    // it is unplugged: refusing a composite device removes
                    // its interfaces, and with them the class that refused
                    // it (it would be let in again, and refused, in turn).
                    let dev = &match known.get(&dev.name) {
                        Some((first, _)) => UsbDevice {
                            class: first.class,
                            ..dev.clone()
                        },
                        None => dev.clone(),
                    };
                    let decision = decide(&policy, dev, now);
                    let previous = known.get(&dev.name).map(|(_, s)| *s);
                    if previous.is_none() {
                        emit(&sink, dev, Action::Connect, "");
                    }
                    if previous != Some(decision) {
                        let outcome = enforcer.enforce(dev, decision, previous);
                        if decision != State::Allowed {
                            emit(&sink, dev, Action::Blocked, &outcome);
                        }
                    } else if decision == State::ReadOnly {
                        let done = enforcer.keep_read_only(dev);
                        if !done.is_empty() {
                            emit(
                                &sink,
                                dev,
                                Action::Blocked,
                                &format!("read-only: {}", done.join(", ")),
                            );
                        }
                    } else if decision == State::Refused
                        && let Some(done) = enforcer.keep_refused(dev)
                    {
                        emit(&sink, dev, Action::Blocked, &done);
                    }
                    known.insert(dev.name.clone(), (dev.clone(), decision));
                }
                let gone: Vec<String> = known
                    .keys()
                    .filter(|n| !present.iter().any(|d| &&d.name == n))
                    .cloned()
                    .collect();
                for name in gone {
                    if let Some((dev, _)) = known.remove(&name) {
                        emit(&sink, &dev, Action::Disconnect, "");
                    }
                }
            }
        })
    }
}

/// Whether an unexpired exception names this device.
pub(crate) fn excepted(policy: &Compiled, dev: &UsbDevice, now_us: i64) -> bool {
    policy.update.device_exceptions.iter().any(|e| {
        e.vendor_id.eq_ignore_ascii_case(&dev.vendor_id)
            && e.product_id.eq_ignore_ascii_case(&dev.product_id)
            && (e.serial.is_empty() || e.serial == dev.serial)
            && (e.until_us == 0 || now_us < e.until_us)
    })
}

/// Whether any exception is still in force at `now_us`.
#[cfg_attr(not(windows), allow(dead_code))]
pub(crate) fn any_exception(policy: &Compiled, now_us: i64) -> bool {
    policy
        .update
        .device_exceptions
        .iter()
        .any(|e| e.until_us == 0 || now_us < e.until_us)
}

/// The policy's verdict on a device at `now_us`.
pub(crate) fn decide(policy: &Compiled, dev: &UsbDevice, now_us: i64) -> State {
    let access = policy.device_access(dev.class as i32);
    if access == Access::Allow || excepted(policy, dev, now_us) {
        return State::Allowed;
    }
    match access {
        Access::ReadOnly => State::ReadOnly,
        _ => State::Refused,
    }
}

fn emit(sink: &EventSink, dev: &UsbDevice, action: Action, outcome: &str) {
    let description = if outcome.is_empty() {
        dev.description.clone()
    } else {
        format!("{} ({outcome})", dev.description)
    };
    let event = DeviceEvent {
        action: action as i32,
        device_class: dev.class as i32,
        vendor_id: dev.vendor_id.clone(),
        product_id: dev.product_id.clone(),
        serial: dev.serial.clone(),
        description,
        mount_point: String::new(),
    };
    if let Err(e) = sink.emit(now_us(), String::new(), Kind::Device(event)) {
        tracing::warn!(error = %e, "device event not spooled");
    }
}

/// The device class from the USB class codes (lower-case hex): mass
/// storage (08) by its subclass (02/05 optical, 04 floppy), still image /
/// MTP (06), wireless controller (e0, Bluetooth). `interfaces` are the
/// interfaces' class and subclass; storage wins over anything else a
/// composite device offers.
pub(crate) fn classify(device_class: &str, interfaces: &[(String, String)]) -> DeviceClass {
    let mut class = match device_class {
        "e0" => DeviceClass::Bluetooth,
        _ => DeviceClass::Other,
    };
    for (c, sub) in interfaces {
        let this = match (c.as_str(), sub.as_str()) {
            ("08", "02" | "05") => DeviceClass::CdDvd,
            ("08", "04") => DeviceClass::Floppy,
            ("08", _) => DeviceClass::UsbStorage,
            ("06", _) => DeviceClass::Smartphone,
            ("e0", _) => DeviceClass::Bluetooth,
            _ => continue,
        };
        if class == DeviceClass::Other || this == DeviceClass::UsbStorage {
            class = this;
        }
    }
    class
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_come_from_interface_codes() {
        let i = |c: &str, s: &str| (c.to_owned(), s.to_owned());
        assert_eq!(classify("00", &[i("08", "06")]), DeviceClass::UsbStorage);
        assert_eq!(classify("00", &[i("08", "02")]), DeviceClass::CdDvd);
        assert_eq!(classify("00", &[i("08", "04")]), DeviceClass::Floppy);
        assert_eq!(classify("00", &[i("06", "01")]), DeviceClass::Smartphone);
        assert_eq!(classify("e0", &[]), DeviceClass::Bluetooth);
        assert_eq!(
            classify("00", &[i("03", "01"), i("08", "06")]),
            DeviceClass::UsbStorage
        );
        assert_eq!(classify("00", &[i("03", "01")]), DeviceClass::Other);
    }
}
