use super::*;

fn product(name: &str, state: u32) -> Product {
    Product {
        name: name.into(),
        state,
    }
}

fn found() -> Found {
    Found {
        antivirus: Vec::new(),
        firewalls: Vec::new(),
        windows_firewall: [None; 3],
        defender_signature: None,
        patch_level: "24H2 (build 26100.2605)".into(),
        updates: None,
        bitlocker: None,
    }
}

#[test]
fn security_center_states_are_decoded() {
    // Well-known productState values: Defender on and current, on and
    // out of date, off (another product took over).
    let on = product("Windows Defender", 0x0006_1100);
    assert!(on.enabled() && on.signatures_current());
    let stale = product("Windows Defender", 0x0006_1110);
    assert!(stale.enabled() && !stale.signatures_current());
    let off = product("Windows Defender", 0x0006_0100);
    assert!(!off.enabled());
    let other = product("ESET Security", 0x0004_1000);
    assert!(other.enabled() && other.signatures_current());
}

#[test]
fn the_scanning_antivirus_is_reported_with_defenders_signature_age() {
    let mut f = found();
    f.antivirus = vec![
        product("Windows Defender", 0x0006_0100),
        product("ESET Security", 0x0004_1000),
    ];
    let s = status_from(f);
    assert_eq!(s.antivirus_product, "ESET Security");
    assert!(s.antivirus_enabled);
    assert_eq!(s.antivirus_signature_age_days, 0);

    let mut f = found();
    f.antivirus = vec![product("Windows Defender", 0x0006_1100)];
    f.defender_signature = Some(("1.421.1234.0".into(), Some(3)));
    let s = status_from(f);
    assert_eq!(
        (
            s.antivirus_signature_version.as_str(),
            s.antivirus_signature_age_days
        ),
        ("1.421.1234.0", 3)
    );

    // Security Center says out of date, no age known: reported old.
    let mut f = found();
    f.antivirus = vec![product("Other AV", 0x0004_1010)];
    assert!(status_from(f).antivirus_signature_age_days > 7);
    // None registered: none reported.
    let s = status_from(found());
    assert_eq!(
        (s.antivirus_product.as_str(), s.antivirus_enabled),
        ("", false)
    );
}

#[test]
fn the_firewall_is_on_when_every_profile_is() {
    let mut f = found();
    f.windows_firewall = [Some(1), Some(1), Some(1)];
    let s = status_from(f);
    assert!(s.firewall_active);
    assert_eq!(s.firewall, "Windows Defender Firewall");
    let mut f = found();
    f.windows_firewall = [Some(1), Some(0), Some(1)];
    assert!(!status_from(f).firewall_active);
    let mut f = found();
    f.firewall_off_but_product();
    let s = status_from(f);
    assert_eq!(
        (s.firewall_active, s.firewall.as_str()),
        (true, "Acme Firewall")
    );
}

impl Found {
    fn firewall_off_but_product(&mut self) {
        self.windows_firewall = [Some(0); 3];
        self.firewalls = vec![product("Acme Firewall", 0x0001_1000)];
    }
}

#[test]
fn updates_and_bitlocker_are_carried_over() {
    let mut f = found();
    f.updates = Some((5, 2));
    f.bitlocker = Some("BitLocker on C:".into());
    let s = status_from(f);
    assert_eq!((s.pending_updates, s.pending_security_updates), (5, 2));
    assert!(s.disk_encrypted);
    assert_eq!(s.disk_encryption, "BitLocker on C:");
    assert_eq!(s.patch_level, "24H2 (build 26100.2605)");
}

#[test]
fn a_signature_age_comes_from_a_registry_filetime() {
    // 2024-01-01T00:00:00Z, seen ten and a half days later.
    let ft = 133_485_408_000_000_000u64.to_le_bytes();
    let now = 1_704_067_200_000_000 + 10 * 86_400_000_000 + 43_200_000_000;
    assert_eq!(age_days(&ft, now), Some(10));
    assert_eq!(age_days(&[0; 8], now), None);
    assert_eq!(age_days(&[1, 2], now), None);
}

/// WMI answers under Wine too.
#[test]
fn wmi_answers_a_query() {
    com().unwrap();
    let rows = wmi_query(
        r"root\CIMV2",
        "SELECT Caption FROM Win32_OperatingSystem",
        &["Caption"],
    )
    .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0][0].text().contains("Windows"), "{rows:?}");
    // The probe as a whole does not fail where parts are missing.
    let s = WindowsSecurityProbe.status();
    assert!(!s.patch_level.is_empty(), "{s:?}");
}
