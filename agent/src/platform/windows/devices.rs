//! USB devices on Windows: the [`DeviceSource`] and [`DeviceEnforcer`] of
//! the shared [device collector](crate::collector::devices).
//!
//! **Source.** SetupAPI lists the USB device nodes present
//! (`SetupDiGetClassDevsW("USB", DIGCF_PRESENT | DIGCF_ALLCLASSES)`) every
//! two seconds. A node's instance id (`USB\VID_0781&PID_5567\4C5300…`)
//! gives the vendor, product and serial (an instance id Windows made up,
//! one with `&` in it, means the device has no serial); its compatible ids
//! (`USB\Class_08&SubClass_06&Prot_50`, `USB\DevClass_E0`) give the class
//! codes the shared classification reads. The interfaces of a composite
//! device are nodes of their own (`…&MI_01`), attached to the device
//! through `CM_Get_Parent`.
//!
//! **Enforcement.** Two layers:
//! - Windows's own removable-storage policy
//!   (`HKLM\SOFTWARE\Policies\Microsoft\Windows\RemovableStorageDevices`,
//!   what Group Policy's "Removable Storage Access" writes): `Deny_Read`
//!   and `Deny_Write` under the class GUIDs of removable disks, CD/DVD,
//!   floppies and WPD devices (phones, cameras). The agent owns these
//!   values: it sets the ones the policy asks for and deletes the others,
//!   so they must not also be set by Group Policy. Windows applies them to
//!   storage opened after the change; they are the only read-only control
//!   Windows offers without a filter driver. Exceptions name devices, the
//!   keys name classes: while any exception is in force a denied class gets
//!   `Deny_Write` only (an excepted stick can be read but not written; a
//!   filter driver would be needed to do better), and the other devices of
//!   the class are cut off by the second layer.
//! - **An immediate cut-off**: a refused device's instance is disabled
//!   (`CM_Disable_DevNode`, not persistent) and enabled again when the
//!   policy or an allowance lets it in. One replugged between two looks
//!   comes back enabled: every round the agent checks the nodes it
//!   disabled and disables them again.
//!
//! Wine has no USB devices and no storage stack that reads the policy
//! keys: under Wine the tests see the keys written and removed; listing,
//! disabling and enabling real devices needs a real PC.

#![allow(unsafe_code)]

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use mamori_proto::agent::v1::{DeviceClass, device_class_rule::Access};
use windows_sys::Win32::Devices::DeviceAndDriverInstallation::{
    CM_DISABLE_UI_NOT_OK, CM_Disable_DevNode, CM_Enable_DevNode, CM_Get_Device_IDW, CM_Get_Parent,
    CM_LOCATE_DEVNODE_NORMAL, CM_Locate_DevNodeW, CR_SUCCESS, DIGCF_ALLCLASSES, DIGCF_PRESENT,
    SETUP_DI_REGISTRY_PROPERTY, SP_DEVINFO_DATA, SPDRP_COMPATIBLEIDS, SPDRP_DEVICEDESC,
    SPDRP_FRIENDLYNAME, SPDRP_MFG, SetupDiDestroyDeviceInfoList, SetupDiEnumDeviceInfo,
    SetupDiGetClassDevsW, SetupDiGetDeviceInstanceIdW, SetupDiGetDeviceRegistryPropertyW,
};
use windows_sys::Win32::Foundation::INVALID_HANDLE_VALUE;
use windows_sys::Win32::System::Registry::HKEY_LOCAL_MACHINE;

use super::win;
use crate::collector::devices::{
    DeviceEnforcer, DeviceSource, State, UsbDevice, any_exception, classify,
};
use crate::policy::Compiled;

/// Where Windows reads its removable-storage policy.
pub(crate) const POLICY_KEY: &str = r"SOFTWARE\Policies\Microsoft\Windows\RemovableStorageDevices";

/// The removable-storage policy's class GUIDs for each device class.
pub(crate) const CLASS_KEYS: &[(DeviceClass, &[&str])] = &[
    (
        DeviceClass::UsbStorage,
        &["{53f5630d-b6bf-11d0-94f2-00a0c91efb8b}"],
    ),
    (
        DeviceClass::CdDvd,
        &["{53f56308-b6bf-11d0-94f2-00a0c91efb8b}"],
    ),
    (
        DeviceClass::Floppy,
        &["{53f56311-b6bf-11d0-94f2-00a0c91efb8b}"],
    ),
    (
        DeviceClass::Smartphone,
        &[
            "{6AC27878-A6FA-4155-BA85-F98F491D4F33}",
            "{F33FDC04-D1AC-4E8E-9A30-19BBD4B108AE}",
        ],
    ),
];

/// The values the agent manages under each class GUID.
pub(crate) const VALUES: &[&str] = &["Deny_Read", "Deny_Write"];

/// The removable-storage policy values (class GUID, value name) that
/// `policy` wants set to 1 at `now_us`; every other `VALUES` entry under
/// `CLASS_KEYS` is to be absent.
pub(crate) fn policy_values(
    policy: &Compiled,
    now_us: i64,
) -> BTreeSet<(&'static str, &'static str)> {
    let excepting = any_exception(policy, now_us);
    let mut out = BTreeSet::new();
    for (class, guids) in CLASS_KEYS {
        let values: &[&str] = match policy.device_access(*class as i32) {
            Access::ReadOnly => &["Deny_Write"],
            Access::Deny if excepting => &["Deny_Write"],
            Access::Deny => &["Deny_Read", "Deny_Write"],
            _ => &[],
        };
        for guid in *guids {
            for value in values {
                out.insert((*guid, *value));
            }
        }
    }
    out
}

/// The parts of a USB instance id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InstanceId {
    pub(crate) vendor_id: String,
    pub(crate) product_id: String,
    /// The interface number of a composite device's interface node.
    pub(crate) interface: Option<String>,
    /// Empty when Windows made the instance part up (no serial).
    pub(crate) serial: String,
}

/// `USB\VID_0781&PID_5567\4C530001230506117284`,
/// `USB\VID_046D&PID_C52B&MI_01\7&2A5FF1F4&0&0001`; none for a root hub
/// or anything without a vendor.
pub(crate) fn parse_instance_id(id: &str) -> Option<InstanceId> {
    let mut parts = id.splitn(3, '\\');
    if !parts.next()?.eq_ignore_ascii_case("USB") {
        return None;
    }
    let hardware = parts.next()?;
    let instance = parts.next().unwrap_or_default();
    let mut vendor_id = None;
    let mut product_id = None;
    let mut interface = None;
    for field in hardware.split('&') {
        let upper = field.to_ascii_uppercase();
        if let Some(v) = upper.strip_prefix("VID_") {
            vendor_id = Some(v.to_ascii_lowercase());
        } else if let Some(p) = upper.strip_prefix("PID_") {
            product_id = Some(p.to_ascii_lowercase());
        } else if let Some(m) = upper.strip_prefix("MI_") {
            interface = Some(m.to_ascii_lowercase());
        }
    }
    let serial = if instance.contains('&') || interface.is_some() {
        String::new()
    } else {
        instance.chars().take(200).collect()
    };
    Some(InstanceId {
        vendor_id: vendor_id?,
        product_id: product_id.unwrap_or_default(),
        interface,
        serial,
    })
}

/// The class codes in compatible ids, lower-case: the device's
/// (`USB\DevClass_E0&…`), and the interface's
/// (`USB\Class_08&SubClass_06&Prot_50`) with its subclass.
pub(crate) fn class_codes(compatible: &[String]) -> (Option<String>, Option<(String, String)>) {
    let mut device = None;
    let mut interface = None;
    for id in compatible {
        let upper = id.to_ascii_uppercase();
        let Some(rest) = upper.strip_prefix(r"USB\") else {
            continue;
        };
        let field = |name: &str| {
            rest.split('&')
                .find_map(|f| f.strip_prefix(name))
                .map(str::to_ascii_lowercase)
        };
        if rest.starts_with("DEVCLASS_") {
            device = device.or_else(|| field("DEVCLASS_"));
        } else if rest.starts_with("CLASS_") {
            // The most specific id (with the subclass) comes first.
            if interface.is_none()
                && let Some(class) = field("CLASS_")
            {
                interface = Some((class, field("SUBCLASS_").unwrap_or_default()));
            }
        }
    }
    (device, interface)
}

/// A USB device node as SetupAPI lists it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Node {
    pub(crate) instance_id: String,
    pub(crate) parent_id: String,
    pub(crate) compatible: Vec<String>,
    pub(crate) description: String,
    pub(crate) manufacturer: String,
}

/// The devices among `nodes`, each with the class codes of its own node
/// and of its interface nodes; hubs left out.
pub(crate) fn devices_from(nodes: &[Node]) -> Vec<UsbDevice> {
    let mut interfaces: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for node in nodes {
        let Some(id) = parse_instance_id(&node.instance_id) else {
            continue;
        };
        if id.interface.is_some()
            && let (_, Some(codes)) = class_codes(&node.compatible)
        {
            interfaces
                .entry(node.parent_id.to_ascii_uppercase())
                .or_default()
                .push(codes);
        }
    }
    let mut out = Vec::new();
    for node in nodes {
        let Some(id) = parse_instance_id(&node.instance_id) else {
            continue;
        };
        if id.interface.is_some() {
            continue;
        }
        let (device_class, own) = class_codes(&node.compatible);
        let device_class = device_class.unwrap_or_default();
        let mut codes: Vec<(String, String)> = own.into_iter().collect();
        if let Some(more) = interfaces.get(&node.instance_id.to_ascii_uppercase()) {
            codes.extend(more.iter().cloned());
        }
        if device_class == "09" || codes.iter().any(|(c, _)| c == "09") {
            continue;
        }
        out.push(UsbDevice {
            name: node.instance_id.clone(),
            vendor_id: id.vendor_id,
            product_id: id.product_id,
            serial: id.serial,
            description: format!("{} {}", node.manufacturer, node.description)
                .trim()
                .chars()
                .take(200)
                .collect(),
            class: classify(&device_class, &codes),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// How often SetupAPI is asked.
const SCAN_EVERY: Duration = Duration::from_secs(2);

/// The USB devices SetupAPI lists, looked at every two seconds.
#[derive(Debug, Default)]
pub(crate) struct SetupApiDevices {
    present: Vec<UsbDevice>,
    scanned: Option<Instant>,
}

impl DeviceSource for SetupApiDevices {
    fn scan(&mut self) -> Vec<UsbDevice> {
        if self.scanned.is_none_or(|at| at.elapsed() >= SCAN_EVERY) {
            self.present = devices_from(&usb_nodes());
            self.scanned = Some(Instant::now());
        }
        self.present.clone()
    }
}

/// The USB device nodes present.
fn usb_nodes() -> Vec<Node> {
    let enumerator = win::wide("USB");
    // SAFETY: a NUL-terminated enumerator; the list is destroyed below.
    let set = unsafe {
        SetupDiGetClassDevsW(
            std::ptr::null(),
            enumerator.as_ptr(),
            std::ptr::null_mut(),
            DIGCF_PRESENT | DIGCF_ALLCLASSES,
        )
    };
    if set == INVALID_HANDLE_VALUE as isize {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "SetupAPI lists no USB devices"
        );
        return Vec::new();
    }
    let mut out = Vec::new();
    for index in 0..1024 {
        let mut data = SP_DEVINFO_DATA {
            cbSize: std::mem::size_of::<SP_DEVINFO_DATA>() as u32,
            ..Default::default()
        };
        // SAFETY: `set` is open; `data` has its size set.
        if unsafe { SetupDiEnumDeviceInfo(set, index, &mut data) } == 0 {
            break;
        }
        let mut buf = [0u16; 512];
        let mut needed = 0;
        // SAFETY: the buffer's length in characters is given.
        let ok = unsafe {
            SetupDiGetDeviceInstanceIdW(set, &data, buf.as_mut_ptr(), buf.len() as u32, &mut needed)
        };
        if ok == 0 {
            continue;
        }
        let property = |p: SETUP_DI_REGISTRY_PROPERTY| -> Vec<String> {
            let mut bytes = vec![0u8; 4096];
            let mut kind = 0;
            // SAFETY: the buffer's size in bytes is given.
            let ok = unsafe {
                SetupDiGetDeviceRegistryPropertyW(
                    set,
                    &data,
                    p,
                    &mut kind,
                    bytes.as_mut_ptr(),
                    bytes.len() as u32,
                    std::ptr::null_mut(),
                )
            };
            if ok == 0 {
                return Vec::new();
            }
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            // REG_SZ or REG_MULTI_SZ: strings separated by NULs, ended by
            // an empty one.
            units
                .split(|&u| u == 0)
                .take_while(|s| !s.is_empty())
                .map(String::from_utf16_lossy)
                .collect()
        };
        let first = |p| property(p).into_iter().next().unwrap_or_default();
        let description = Some(first(SPDRP_FRIENDLYNAME))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| first(SPDRP_DEVICEDESC));
        out.push(Node {
            instance_id: win::from_wide(&buf),
            parent_id: parent_id(data.DevInst).unwrap_or_default(),
            compatible: property(SPDRP_COMPATIBLEIDS),
            description,
            manufacturer: first(SPDRP_MFG),
        });
    }
    // SAFETY: opened above.
    unsafe { SetupDiDestroyDeviceInfoList(set) };
    out
}

/// The instance id of a device node's parent.
fn parent_id(devinst: u32) -> Option<String> {
    let mut parent = 0;
    // SAFETY: plain out-parameter.
    if unsafe { CM_Get_Parent(&mut parent, devinst, 0) } != CR_SUCCESS {
        return None;
    }
    let mut buf = [0u16; 512];
    // SAFETY: the buffer's length in characters is given.
    let status = unsafe { CM_Get_Device_IDW(parent, buf.as_mut_ptr(), buf.len() as u32, 0) };
    (status == CR_SUCCESS).then(|| win::from_wide(&buf))
}

/// The device node of an instance id.
fn locate(instance_id: &str) -> Result<u32, String> {
    let id = win::wide(instance_id);
    let mut devinst = 0;
    // SAFETY: a NUL-terminated instance id.
    let status = unsafe { CM_Locate_DevNodeW(&mut devinst, id.as_ptr(), CM_LOCATE_DEVNODE_NORMAL) };
    if status == CR_SUCCESS {
        Ok(devinst)
    } else {
        Err(format!("device node not found (CONFIGRET {status})"))
    }
}

/// Writes the removable-storage policy values and disables or enables
/// device instances.
#[derive(Debug)]
pub(crate) struct DevNodeEnforcer {
    /// The policy key under HKLM ([`POLICY_KEY`]; another in tests).
    key: String,
    /// The values last written, none before the first round.
    applied: Option<BTreeSet<(&'static str, &'static str)>>,
    /// The last failure reported, so it is reported once.
    failed: Option<String>,
    /// The devices this agent disabled (and disables again if they come
    /// back enabled).
    disabled: std::collections::HashSet<String>,
}

impl DevNodeEnforcer {
    /// Writes the policy under `HKLM\{key}`.
    pub(crate) fn new(key: &str) -> Self {
        DevNodeEnforcer {
            key: key.to_owned(),
            applied: None,
            failed: None,
            disabled: Default::default(),
        }
    }

    /// Deletes every value the agent manages (its removal).
    pub(crate) fn clear(&self) -> Result<(), String> {
        self.write(&BTreeSet::new())
    }

    /// Sets every value in `wanted` and deletes every other managed one;
    /// the first failure.
    fn write(&self, wanted: &BTreeSet<(&'static str, &'static str)>) -> Result<(), String> {
        for (_, guids) in CLASS_KEYS {
            for guid in *guids {
                let key = format!(r"{}\{guid}", self.key);
                for value in VALUES {
                    if wanted.contains(&(*guid, *value)) {
                        win::reg_set_dword(HKEY_LOCAL_MACHINE, &key, value, 1).map_err(
                            |status| format!(r"cannot set HKLM\{key}\{value} (error {status})"),
                        )?;
                    } else {
                        win::reg_delete_value(HKEY_LOCAL_MACHINE, &key, value).map_err(
                            |status| format!(r"cannot delete HKLM\{key}\{value} (error {status})"),
                        )?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl DeviceEnforcer for DevNodeEnforcer {
    fn apply_policy(&mut self, policy: &Compiled, now_us: i64) -> Option<String> {
        let wanted = policy_values(policy, now_us);
        if self.applied.as_ref() == Some(&wanted) {
            return None;
        }
        match self.write(&wanted) {
            Ok(()) => {
                tracing::info!(values = ?wanted, "removable-storage policy written");
                self.applied = Some(wanted);
                self.failed = None;
                None
            }
            Err(e) => {
                if self.failed.as_ref() == Some(&e) {
                    return None;
                }
                self.failed = Some(e.clone());
                Some(e)
            }
        }
    }

    fn keep_refused(&mut self, dev: &UsbDevice) -> Option<String> {
        // Replugged since the agent disabled it: a fresh node, enabled.
        // (One the agent could not disable is not tried every round.)
        if !self.disabled.contains(&dev.name) {
            return None;
        }
        let devinst = locate(&dev.name).ok()?;
        if disabled(devinst) {
            return None;
        }
        Some(self.disable(dev))
    }

    fn enforce(&mut self, dev: &UsbDevice, decision: State, previous: Option<State>) -> String {
        if decision != State::Refused {
            self.disabled.remove(&dev.name);
        }
        match decision {
            State::Refused => self.disable(dev),
            State::ReadOnly => {
                if previous == Some(State::Refused) {
                    enable(dev);
                }
                if CLASS_KEYS.iter().any(|(c, _)| *c == dev.class) {
                    "read-only: writes denied by the removable-storage policy".to_owned()
                } else {
                    "read-only: not enforceable for this class on Windows".to_owned()
                }
            }
            State::Allowed => {
                if previous == Some(State::Refused) {
                    enable(dev);
                }
                String::new()
            }
        }
    }
}

impl DevNodeEnforcer {
    /// Disables a refused device's node; what happened, for the event.
    fn disable(&mut self, dev: &UsbDevice) -> String {
        let outcome = disable(dev);
        if outcome == DISABLED {
            self.disabled.insert(dev.name.clone());
        } else {
            self.disabled.remove(&dev.name);
        }
        outcome
    }
}

/// The outcome of a device disabled.
const DISABLED: &str = "denied: device disabled";

/// Disables a refused device's node; what happened, for the event.
fn disable(dev: &UsbDevice) -> String {
    let result = locate(&dev.name).and_then(|devinst| {
        // SAFETY: plain call on a located node.
        let status = unsafe { CM_Disable_DevNode(devinst, CM_DISABLE_UI_NOT_OK) };
        if status == CR_SUCCESS {
            Ok(())
        } else {
            Err(format!("CONFIGRET {status}"))
        }
    });
    match result {
        Ok(()) => {
            tracing::info!(device = %dev.name, "USB device disabled");
            DISABLED.to_owned()
        }
        Err(e) => {
            tracing::warn!(device = %dev.name, error = %e, "cannot disable a denied USB device");
            format!("denied: could not disable the device: {e}")
        }
    }
}

/// Whether a device node is disabled (problem `CM_PROB_DISABLED`).
fn disabled(devinst: u32) -> bool {
    use windows_sys::Win32::Devices::DeviceAndDriverInstallation::{
        CM_Get_DevNode_Status, CM_PROB_DISABLED, DN_HAS_PROBLEM,
    };
    let (mut status, mut problem) = (0, 0);
    // SAFETY: plain out-parameters.
    let ok = unsafe { CM_Get_DevNode_Status(&mut status, &mut problem, devinst, 0) } == CR_SUCCESS;
    // Asking failed: taken as disabled, so a failing call is not retried
    // every half second.
    !ok || (status & DN_HAS_PROBLEM != 0 && problem == CM_PROB_DISABLED)
}

/// Gives back a device this agent disabled.
fn enable(dev: &UsbDevice) {
    let result = locate(&dev.name).and_then(|devinst| {
        // SAFETY: plain call on a located node.
        let status = unsafe { CM_Enable_DevNode(devinst, 0) };
        if status == CR_SUCCESS {
            Ok(())
        } else {
            Err(format!("CONFIGRET {status}"))
        }
    });
    if let Err(e) = result {
        tracing::warn!(device = %dev.name, error = %e, "cannot enable a USB device again");
    }
}

#[cfg(test)]
mod tests;
