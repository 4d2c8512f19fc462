//! USB devices on Linux: the [`DeviceSource`] and [`DeviceEnforcer`] of
//! the shared [device collector](crate::collector::devices). Reads sysfs (`{root}/bus/usb/devices`): each device's
//! vendor, product, serial and interface classes decide its class (mass
//! storage, CD/DVD, floppy, smartphone/MTP, Bluetooth, other). A device of a
//! denied class is refused by writing `0` to its `authorized` file; a
//! read-only class has the file systems mounted from it (found through
//! `{root}/block` and the mount table) remounted read-only. Exceptions by
//! vendor:product[:serial] are left alone, temporary ones until they
//! expire. Every refusal is an event.
//!
//! With the real `/sys`, sysfs is read again only when the
//! kernel announces a USB change (a uevent), and every 30 s in case an
//! announcement was missed; reading it on every tick cost about 0.17 % of
//! a core with 8 devices. Another sysfs root (a fake tree in tests) has no
//! announcements and is read on every tick.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mamori_proto::agent::v1::DeviceClass;

use crate::collector::devices::{DeviceEnforcer, DeviceSource, State, UsbDevice, classify};
use crate::platform::Medium;

mod uevent;

/// How often sysfs is read without an announcement.
const RESCAN_EVERY: Duration = Duration::from_secs(30);

/// The USB devices in sysfs, read again when the kernel announces a change
/// (with the real `/sys`) and every 30 s; on every call for another root.
#[derive(Debug)]
pub(crate) struct SysfsDevices {
    sysfs: PathBuf,
    uevents: Option<Option<uevent::Uevents>>,
    present: Vec<UsbDevice>,
    scanned: Option<Instant>,
}

impl SysfsDevices {
    pub(crate) fn new(sysfs: PathBuf) -> Self {
        SysfsDevices {
            sysfs,
            uevents: None,
            present: Vec::new(),
            scanned: None,
        }
    }
}

impl DeviceSource for SysfsDevices {
    fn scan(&mut self) -> Vec<UsbDevice> {
        let real = self.sysfs == Path::new("/sys");
        let uevents = self.uevents.get_or_insert_with(|| {
            real.then(|| {
                uevent::Uevents::open()
                    .inspect_err(|e| {
                        tracing::warn!(error = %e, "no uevent socket; reading sysfs on every poll");
                    })
                    .ok()
            })
            .flatten()
        });
        // The socket is drained on every call, rescan or not.
        let announced = uevents.as_mut().is_none_or(|u| u.usb_changed());
        if announced || self.scanned.is_none_or(|at| at.elapsed() >= RESCAN_EVERY) {
            self.present = scan(&self.sysfs);
            self.scanned = Some(Instant::now());
        }
        self.present.clone()
    }
}

/// Refuses a device through its sysfs `authorized` file, and makes one
/// read-only by remounting its file systems.
#[derive(Debug)]
pub(crate) struct SysfsEnforcer {
    sysfs: PathBuf,
    mounts: PathBuf,
    /// Mount points that refused a read-only remount (reported once).
    remount_failed: std::collections::HashSet<String>,
}

impl SysfsEnforcer {
    pub(crate) fn new(sysfs: PathBuf, mounts: PathBuf) -> Self {
        SysfsEnforcer {
            sysfs,
            mounts,
            remount_failed: Default::default(),
        }
    }
}

impl DeviceEnforcer for SysfsEnforcer {
    fn enforce(&mut self, dev: &UsbDevice, decision: State, previous: Option<State>) -> String {
        let authorized = self
            .sysfs
            .join("bus/usb/devices")
            .join(&dev.name)
            .join("authorized");
        match decision {
            State::Refused => match std::fs::write(&authorized, "0") {
                Ok(()) => {
                    tracing::info!(device = %dev.name, vendor = %dev.vendor_id, product = %dev.product_id, "USB device refused");
                    "denied: de-authorised".to_owned()
                }
                Err(e) => {
                    tracing::warn!(device = %dev.name, error = %e, "cannot de-authorise a denied USB device");
                    format!("denied: could not de-authorise: {e}")
                }
            },
            State::ReadOnly => {
                if previous == Some(State::Refused) {
                    self.reauthorise(dev, &authorized);
                }
                let done = self.remount_read_only(&dev.name);
                if done.is_empty() {
                    "read-only: nothing mounted yet".to_owned()
                } else {
                    format!("read-only: {}", done.join(", "))
                }
            }
            State::Allowed => {
                // Give back a device this agent refused (the policy or an
                // allowance changed).
                if previous == Some(State::Refused) {
                    self.reauthorise(dev, &authorized);
                }
                String::new()
            }
        }
    }

    fn keep_read_only(&mut self, dev: &UsbDevice) -> Vec<String> {
        // Media are mounted after they appear (by the desktop, by hand):
        // remount what came since.
        self.remount_read_only(&dev.name)
    }
}

impl SysfsEnforcer {
    fn reauthorise(&self, dev: &UsbDevice, authorized: &Path) {
        if let Err(e) = std::fs::write(authorized, "1") {
            tracing::warn!(device = %dev.name, error = %e, "cannot re-authorise a USB device");
        }
    }

    /// Remounts read-only every file system mounted writable from a block
    /// device of USB device `name` (writable as the kernel says, not the
    /// table); says what it did, nothing when there was nothing to do.
    fn remount_read_only(&mut self, name: &str) -> Vec<String> {
        let failed = &mut self.remount_failed;
        let blocks = block_devices_of(&self.sysfs, name);
        let mut done = Vec::new();
        for mount in crate::platform::linux::mounts::read(&self.mounts) {
            let Some(dev) = mount.source.strip_prefix("/dev/") else {
                continue;
            };
            if !blocks
                .iter()
                .any(|b| dev == b || dev.starts_with(b.as_str()))
            {
                continue;
            }
            let target = mount.target.to_string_lossy().into_owned();
            let writable = nix::sys::statvfs::statvfs(target.as_str())
                .is_ok_and(|v| !v.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
            // A mount that refused once is reported once, not every poll.
            if !writable || failed.contains(&target) {
                continue;
            }
            let result = nix::mount::mount(
                None::<&str>,
                target.as_str(),
                None::<&str>,
                nix::mount::MsFlags::MS_REMOUNT | nix::mount::MsFlags::MS_RDONLY,
                None::<&str>,
            );
            match result {
                Ok(()) => done.push(format!("{target} remounted read-only")),
                Err(e) => {
                    tracing::warn!(%target, error = %e, "cannot remount a read-only device's file system");
                    done.push(format!("{target} could not be remounted: {e}"));
                    failed.insert(target);
                }
            }
        }
        done
    }
}

/// The removable media mounted now: the storage devices in sysfs, their
/// block devices and the mount table's entries from those.
pub(crate) fn removable_media(sysfs: &Path, mounts: &Path) -> Vec<Medium> {
    let storage: Vec<UsbDevice> = scan(sysfs)
        .into_iter()
        .filter(|d| {
            matches!(
                d.class,
                DeviceClass::UsbStorage | DeviceClass::CdDvd | DeviceClass::Floppy
            )
        })
        .collect();
    if storage.is_empty() {
        return Vec::new();
    }
    let table = crate::platform::linux::mounts::read(mounts);
    let mut out = Vec::new();
    for dev in storage {
        let blocks = block_devices_of(sysfs, &dev.name);
        for mount in &table {
            let Some(source) = mount.source.strip_prefix("/dev/") else {
                continue;
            };
            if blocks.iter().any(|b| source.starts_with(b.as_str())) {
                out.push(Medium {
                    mount_point: mount.target.clone(),
                    vendor_id: dev.vendor_id.clone(),
                    product_id: dev.product_id.clone(),
                    serial: dev.serial.clone(),
                });
            }
        }
    }
    out
}

/// The block devices (`sdb`) below USB device `name` in sysfs.
fn block_devices_of(sysfs: &Path, name: &str) -> Vec<String> {
    let Ok(dev_path) = sysfs.join("bus/usb/devices").join(name).canonicalize() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(sysfs.join("block")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.path()
                .canonicalize()
                .is_ok_and(|p| p.starts_with(&dev_path))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn read_attr(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name))
        .map(|s| s.trim().chars().take(200).collect())
        .unwrap_or_default()
}

/// The USB devices under `{sysfs}/bus/usb/devices`, hubs left out.
fn scan(sysfs: &Path) -> Vec<UsbDevice> {
    let bus = sysfs.join("bus/usb/devices");
    let Ok(entries) = std::fs::read_dir(&bus) else {
        return Vec::new();
    };
    let names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut out = Vec::new();
    for name in names.iter().filter(|n| !n.contains(':') && n.contains('-')) {
        let dir = bus.join(name);
        if read_attr(&dir, "bDeviceClass") == "09" {
            continue;
        }
        let vendor_id = read_attr(&dir, "idVendor").to_ascii_lowercase();
        if vendor_id.is_empty() {
            continue;
        }
        // Interfaces are `{name}:{config}.{number}` beside the device.
        let interfaces: Vec<(String, String)> = names
            .iter()
            .filter(|n| {
                n.strip_prefix(name.as_str())
                    .is_some_and(|r| r.starts_with(':'))
            })
            .map(|n| {
                let d = bus.join(n);
                (
                    read_attr(&d, "bInterfaceClass").to_ascii_lowercase(),
                    read_attr(&d, "bInterfaceSubClass").to_ascii_lowercase(),
                )
            })
            .collect();
        let product = read_attr(&dir, "product");
        let manufacturer = read_attr(&dir, "manufacturer");
        out.push(UsbDevice {
            name: name.clone(),
            product_id: read_attr(&dir, "idProduct").to_ascii_lowercase(),
            serial: read_attr(&dir, "serial"),
            description: format!("{manufacturer} {product}").trim().to_owned(),
            class: classify(&read_attr(&dir, "bDeviceClass"), &interfaces),
            vendor_id,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
