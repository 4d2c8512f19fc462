use mamori_proto::agent::v1::{DeviceClassRule, DeviceException, PolicyUpdate};

use super::*;

fn policy(rules: &[(DeviceClass, Access)], exceptions: Vec<DeviceException>) -> Compiled {
    Compiled::compile(PolicyUpdate {
        revision: 1,
        device_classes: rules
            .iter()
            .map(|(class, access)| DeviceClassRule {
                device_class: *class as i32,
                access: *access as i32,
            })
            .collect(),
        device_exceptions: exceptions,
        ..Default::default()
    })
    .unwrap()
}

const DISKS: &str = "{53f5630d-b6bf-11d0-94f2-00a0c91efb8b}";
const CD: &str = "{53f56308-b6bf-11d0-94f2-00a0c91efb8b}";
const WPD: &str = "{6AC27878-A6FA-4155-BA85-F98F491D4F33}";
const WPD2: &str = "{F33FDC04-D1AC-4E8E-9A30-19BBD4B108AE}";

#[test]
fn the_policy_becomes_removable_storage_keys() {
    // Nothing set: nothing denied.
    assert!(policy_values(&policy(&[], vec![]), 0).is_empty());
    let p = policy(
        &[
            (DeviceClass::UsbStorage, Access::Deny),
            (DeviceClass::CdDvd, Access::ReadOnly),
            (DeviceClass::Smartphone, Access::Deny),
            (DeviceClass::Floppy, Access::Allow),
            // No policy key: enforced by disabling the device only.
            (DeviceClass::Bluetooth, Access::Deny),
        ],
        vec![],
    );
    let want: BTreeSet<_> = [
        (DISKS, "Deny_Read"),
        (DISKS, "Deny_Write"),
        (CD, "Deny_Write"),
        (WPD, "Deny_Read"),
        (WPD, "Deny_Write"),
        (WPD2, "Deny_Read"),
        (WPD2, "Deny_Write"),
    ]
    .into_iter()
    .collect();
    assert_eq!(policy_values(&p, 0), want);
}

#[test]
fn an_exception_in_force_leaves_a_denied_class_readable() {
    let exception = |until_us| DeviceException {
        vendor_id: "0781".into(),
        product_id: "5567".into(),
        serial: String::new(),
        until_us,
    };
    let rules = [(DeviceClass::UsbStorage, Access::Deny)];
    let p = policy(&rules, vec![exception(1_000)]);
    let write_only: BTreeSet<_> = [(DISKS, "Deny_Write")].into_iter().collect();
    assert_eq!(policy_values(&p, 999), write_only);
    // Expired: the whole class is denied again.
    assert_eq!(policy_values(&p, 1_000).len(), 2);
    // One without an end is always in force.
    assert_eq!(
        policy_values(&policy(&rules, vec![exception(0)]), i64::MAX),
        write_only
    );
}

#[test]
fn instance_ids_give_vendor_product_serial_and_interface() {
    assert_eq!(
        parse_instance_id(r"USB\VID_0781&PID_5567\4C530001230506117284"),
        Some(InstanceId {
            vendor_id: "0781".into(),
            product_id: "5567".into(),
            interface: None,
            serial: "4C530001230506117284".into(),
        })
    );
    // Windows made the instance part up: no serial.
    let id = parse_instance_id(r"USB\VID_046D&PID_C52B\5&2A5FF1F4&0&2").unwrap();
    assert_eq!(id.serial, "");
    let id = parse_instance_id(r"usb\vid_046d&pid_c52b&mi_01\7&2a5ff1f4&0&0001").unwrap();
    assert_eq!(id.interface.as_deref(), Some("01"));
    assert_eq!((id.vendor_id.as_str(), id.serial.as_str()), ("046d", ""));
    assert_eq!(parse_instance_id(r"USB\ROOT_HUB30\4&1B2C3D4E&0&0"), None);
    assert_eq!(parse_instance_id(r"USBSTOR\DISK&VEN_SANDISK\1&0"), None);
}

#[test]
fn compatible_ids_give_the_class_codes() {
    let ids = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        class_codes(&ids(&[
            r"USB\Class_08&SubClass_06&Prot_50",
            r"USB\Class_08&SubClass_06",
            r"USB\Class_08",
        ])),
        (None, Some(("08".into(), "06".into())))
    );
    assert_eq!(
        class_codes(&ids(&[
            r"USB\DevClass_E0&SubClass_01&Prot_01",
            r"USB\DevClass_E0",
            r"USB\COMPOSITE",
        ])),
        (Some("e0".into()), None)
    );
    assert_eq!(class_codes(&[]), (None, None));
}

fn node(id: &str, parent: &str, compatible: &[&str], description: &str) -> Node {
    Node {
        instance_id: id.into(),
        parent_id: parent.into(),
        compatible: compatible.iter().map(|s| s.to_string()).collect(),
        description: description.into(),
        manufacturer: "Maker".into(),
    }
}

#[test]
fn nodes_become_classified_devices_with_their_interfaces() {
    let hub = r"USB\ROOT_HUB30\4&1&0&0";
    let nodes = [
        node(hub, r"PCI\VEN_8086", &[r"USB\ROOT_HUB30"], "Root hub"),
        node(
            r"USB\VID_0781&PID_5567\4C5300",
            hub,
            &[r"USB\Class_08&SubClass_06&Prot_50"],
            "Cruzer",
        ),
        // A composite device: a keyboard interface and an optical one.
        node(
            r"USB\VID_1234&PID_0001\SN1",
            hub,
            &[r"USB\DevClass_00&SubClass_00&Prot_00", r"USB\COMPOSITE"],
            "Combo",
        ),
        node(
            r"USB\VID_1234&PID_0001&MI_00\7&1&0&0000",
            r"USB\VID_1234&PID_0001\SN1",
            &[r"USB\Class_03&SubClass_01&Prot_01"],
            "Keyboard",
        ),
        node(
            r"USB\VID_1234&PID_0001&MI_01\7&1&0&0001",
            r"usb\vid_1234&pid_0001\sn1",
            &[r"USB\Class_08&SubClass_02&Prot_50"],
            "CD",
        ),
        node(
            r"USB\VID_05E3&PID_0610\6&1&0&1",
            hub,
            &[r"USB\Class_09&SubClass_00"],
            "Hub",
        ),
        node(
            r"USB\VID_8087&PID_0A2B\5&1&0&7",
            hub,
            &[r"USB\Class_E0&SubClass_01&Prot_01"],
            "Bluetooth",
        ),
    ];
    let devices = devices_from(&nodes);
    let summary: Vec<(&str, &str, DeviceClass, &str)> = devices
        .iter()
        .map(|d| {
            (
                d.vendor_id.as_str(),
                d.serial.as_str(),
                d.class,
                d.description.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("0781", "4C5300", DeviceClass::UsbStorage, "Maker Cruzer"),
            ("1234", "SN1", DeviceClass::CdDvd, "Maker Combo"),
            ("8087", "", DeviceClass::Bluetooth, "Maker Bluetooth"),
        ]
    );
}

/// The enforcer writes and deletes the values in the registry (a test key,
/// not the real policy: Wine's registry is real enough for this).
#[test]
fn the_enforcer_writes_and_removes_the_values() {
    let key = format!(r"SOFTWARE\MamoriTest\{}", uuid::Uuid::new_v4());
    let mut enforcer = DevNodeEnforcer::new(&key);
    let read = |guid: &str, value: &str| {
        win::reg_dword(HKEY_LOCAL_MACHINE, &format!(r"{key}\{guid}"), value)
    };
    let denied = policy(&[(DeviceClass::UsbStorage, Access::Deny)], vec![]);
    assert_eq!(enforcer.apply_policy(&denied, 0), None);
    assert_eq!(read(DISKS, "Deny_Read"), Some(1));
    assert_eq!(read(DISKS, "Deny_Write"), Some(1));
    assert_eq!(read(CD, "Deny_Write"), None);

    let read_only = policy(&[(DeviceClass::UsbStorage, Access::ReadOnly)], vec![]);
    assert_eq!(enforcer.apply_policy(&read_only, 0), None);
    assert_eq!(read(DISKS, "Deny_Read"), None);
    assert_eq!(read(DISKS, "Deny_Write"), Some(1));

    assert_eq!(enforcer.apply_policy(&policy(&[], vec![]), 0), None);
    assert_eq!(read(DISKS, "Deny_Write"), None);
}
