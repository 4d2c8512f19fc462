//! The security status of a Windows PC:
//!
//! - **Antivirus**: Windows Security Center's registered products (WMI
//!   `root\SecurityCenter2`, `AntiVirusProduct`: name and `productState`,
//!   whose middle byte says whether it scans and whose low byte whether its
//!   signatures are current). For Microsoft Defender the signature version
//!   and age come from its registry key (`Signature Updates`).
//! - **Firewall**: a third-party firewall registered with Security Center
//!   (`FirewallProduct`), else Windows Defender Firewall when every profile
//!   (domain, private, public) has `EnableFirewall` set.
//! - **Updates**: the Windows Update Agent's offline search
//!   (`IsInstalled=0 and IsHidden=0`, from the last scan's cache: no
//!   network), with the updates that carry an MSRC severity counted as
//!   security updates; the patch level is the build and update revision.
//! - **BitLocker**: WMI `Win32_EncryptableVolume` of the system drive,
//!   `ProtectionStatus` 1.
//!
//! What cannot be asked is reported as absent (no product, 0 updates,
//! not encrypted) and logged. Under Wine the WMI queries answer (with no
//! products) and the update agent does not; the decoding of what they
//! answer is unit-tested.

#![allow(unsafe_code)]

use std::sync::OnceLock;

use mamori_proto::agent::v1::SecurityStatusEvent;
use windows::Win32::System::Com::{
    CLSCTX_INPROC_SERVER, COINIT_MULTITHREADED, CoCreateInstance, CoInitializeEx,
    CoInitializeSecurity, CoSetProxyBlanket, EOAC_NONE, RPC_C_AUTHN_LEVEL_CALL,
    RPC_C_AUTHN_LEVEL_DEFAULT, RPC_C_IMP_LEVEL_IMPERSONATE,
};
use windows::Win32::System::UpdateAgent::{IUpdateSession, UpdateSession};
use windows::Win32::System::Variant::{VARIANT, VT_BOOL, VT_BSTR, VT_I4, VT_UI4, VariantClear};
use windows::Win32::System::Wmi::{
    IWbemLocator, WBEM_FLAG_FORWARD_ONLY, WBEM_FLAG_RETURN_IMMEDIATELY, WBEM_INFINITE, WbemLocator,
};
use windows::core::{BSTR, HSTRING};
use windows_sys::Win32::System::Registry::HKEY_LOCAL_MACHINE;

use super::win;
use crate::clock::now_us;
use crate::collector::security::SecurityProbe;

/// A WMI property's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Text(String),
    Int(i64),
    Bool(bool),
    Null,
}

impl Value {
    fn text(&self) -> String {
        match self {
            Value::Text(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => String::new(),
        }
    }

    fn int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Text(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

/// A product registered with Security Center.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Product {
    pub(crate) name: String,
    pub(crate) state: u32,
}

impl Product {
    /// The scanner is on (`productState`'s middle byte, 0x10 set).
    pub(crate) fn enabled(&self) -> bool {
        (self.state >> 8) & 0x10 != 0
    }

    /// Its signatures are current (low byte 0x00; 0x10 is out of date).
    pub(crate) fn signatures_current(&self) -> bool {
        self.state & 0xff == 0
    }
}

/// Days between a FILETIME (as stored in the registry, 8 bytes little
/// endian) and `now_us`.
pub(crate) fn age_days(filetime: &[u8], now_us: i64) -> Option<u32> {
    let t = u64::from_le_bytes(filetime.get(..8)?.try_into().ok()?);
    if t == 0 {
        return None;
    }
    let at_us = super::process::filetime_us(windows_sys::Win32::Foundation::FILETIME {
        dwLowDateTime: t as u32,
        dwHighDateTime: (t >> 32) as u32,
    });
    let days = (now_us - at_us).max(0) / 86_400_000_000;
    Some(u32::try_from(days).unwrap_or(u32::MAX))
}

/// The status from what was found: the products, the firewall profiles,
/// Defender's signature facts, the update counts and BitLocker.
pub(crate) struct Found {
    pub(crate) antivirus: Vec<Product>,
    pub(crate) firewalls: Vec<Product>,
    /// `EnableFirewall` of the domain, private and public profiles.
    pub(crate) windows_firewall: [Option<u32>; 3],
    pub(crate) defender_signature: Option<(String, Option<u32>)>,
    pub(crate) patch_level: String,
    pub(crate) updates: Option<(u32, u32)>,
    pub(crate) bitlocker: Option<String>,
}

/// Decides the event from what was found. The antivirus reported is the
/// first that scans (else the first registered); the collector judges
/// "up to date" from the age where it is known.
pub(crate) fn status_from(f: Found) -> SecurityStatusEvent {
    let av = f
        .antivirus
        .iter()
        .find(|p| p.enabled())
        .or(f.antivirus.first());
    let mut s = SecurityStatusEvent {
        patch_level: f.patch_level,
        ..Default::default()
    };
    if let Some((pending, security)) = f.updates {
        s.pending_updates = pending;
        s.pending_security_updates = security;
    }
    if let Some(av) = av {
        s.antivirus_product = av.name.clone();
        s.antivirus_enabled = av.enabled();
        let defender = av.name.to_ascii_lowercase().contains("defender");
        match (&f.defender_signature, defender) {
            (Some((version, Some(age))), true) => {
                s.antivirus_signature_version = version.clone();
                s.antivirus_signature_age_days = *age;
            }
            // No age known: Security Center's verdict stands for it.
            _ => {
                s.antivirus_signature_age_days = if av.signatures_current() { 0 } else { 30 };
                if let (Some((version, _)), true) = (&f.defender_signature, defender) {
                    s.antivirus_signature_version = version.clone();
                }
            }
        }
    }
    if let Some(fw) = f.firewalls.iter().find(|p| p.enabled()) {
        s.firewall_active = true;
        s.firewall = fw.name.clone();
    } else if f.windows_firewall.iter().all(|p| *p == Some(1)) {
        s.firewall_active = true;
        s.firewall = "Windows Defender Firewall".into();
    }
    if let Some(how) = f.bitlocker {
        s.disk_encrypted = true;
        s.disk_encryption = how;
    }
    s
}

/// Asks Windows.
#[derive(Debug, Default)]
pub struct WindowsSecurityProbe;

impl SecurityProbe for WindowsSecurityProbe {
    fn status(&self) -> SecurityStatusEvent {
        if let Err(e) = com() {
            tracing::warn!(error = %e, "COM unavailable: the security status is incomplete");
        }
        let products = |class: &str| {
            wmi_query(
                r"root\SecurityCenter2",
                &format!("SELECT displayName, productState FROM {class}"),
                &["displayName", "productState"],
            )
            .inspect_err(|e| tracing::warn!(error = %e, class, "Security Center not asked: reported as none"))
            .unwrap_or_default()
            .into_iter()
            .map(|row| Product {
                name: row[0].text(),
                state: row[1].int().unwrap_or(0) as u32,
            })
            .collect::<Vec<_>>()
        };
        let profile = |name: &str| {
            win::reg_dword(
                HKEY_LOCAL_MACHINE,
                &format!(
                    r"SYSTEM\CurrentControlSet\Services\SharedAccess\Parameters\FirewallPolicy\{name}"
                ),
                "EnableFirewall",
            )
        };
        let signatures = r"SOFTWARE\Microsoft\Windows Defender\Signature Updates";
        let defender_signature =
            win::reg_string(HKEY_LOCAL_MACHINE, signatures, "AVSignatureVersion").map(|v| {
                let age = win::reg_binary(HKEY_LOCAL_MACHINE, signatures, "SignaturesLastUpdated")
                    .and_then(|ft| age_days(&ft, now_us()));
                (v, age)
            });
        let (_, version) = super::facts::os_name_version();
        status_from(Found {
            antivirus: products("AntiVirusProduct"),
            firewalls: products("FirewallProduct"),
            windows_firewall: [
                profile("DomainProfile"),
                profile("StandardProfile"),
                profile("PublicProfile"),
            ],
            defender_signature,
            patch_level: version,
            updates: pending_updates()
                .inspect_err(
                    |e| tracing::warn!(error = %e, "pending updates not counted: reported as 0"),
                )
                .ok(),
            bitlocker: bitlocker(),
        })
    }
}

/// COM for this thread, and the process's COM security once.
fn com() -> Result<(), String> {
    static SECURITY: OnceLock<()> = OnceLock::new();
    // SAFETY: initialising COM on this (blocking-pool) thread; a second
    // call is harmless (S_FALSE).
    let hr = unsafe { CoInitializeEx(None, COINIT_MULTITHREADED) };
    if hr.is_err() {
        return Err(format!("CoInitializeEx: {hr:?}"));
    }
    SECURITY.get_or_init(|| {
        // SAFETY: default security for the process; "too late" (someone
        // set it already) is fine.
        let _ = unsafe {
            CoInitializeSecurity(
                None,
                -1,
                None,
                None,
                RPC_C_AUTHN_LEVEL_DEFAULT,
                RPC_C_IMP_LEVEL_IMPERSONATE,
                None,
                EOAC_NONE,
                None,
            )
        };
    });
    Ok(())
}

/// Runs a WQL query in `namespace`; each row holds `fields` in order.
pub(crate) fn wmi_query(
    namespace: &str,
    wql: &str,
    fields: &[&str],
) -> Result<Vec<Vec<Value>>, String> {
    fn fail(what: &str) -> impl FnOnce(windows::core::Error) -> String + '_ {
        move |e| format!("{what}: {e}")
    }
    // SAFETY: COM calls on an initialised thread, with owned interface
    // pointers; each VARIANT is cleared after it is read.
    unsafe {
        let locator: IWbemLocator = CoCreateInstance(&WbemLocator, None, CLSCTX_INPROC_SERVER)
            .map_err(fail("the WMI locator"))?;
        let services = locator
            .ConnectServer(
                &BSTR::from(namespace),
                &BSTR::new(),
                &BSTR::new(),
                &BSTR::new(),
                0,
                &BSTR::new(),
                None,
            )
            .map_err(fail(namespace))?;
        CoSetProxyBlanket(
            &services,
            10, // RPC_C_AUTHN_WINNT
            0,  // RPC_C_AUTHZ_NONE
            None,
            RPC_C_AUTHN_LEVEL_CALL,
            RPC_C_IMP_LEVEL_IMPERSONATE,
            None,
            EOAC_NONE,
        )
        .map_err(fail("the WMI proxy"))?;
        let rows = services
            .ExecQuery(
                &BSTR::from("WQL"),
                &BSTR::from(wql),
                WBEM_FLAG_FORWARD_ONLY | WBEM_FLAG_RETURN_IMMEDIATELY,
                None,
            )
            .map_err(fail(wql))?;
        let mut out = Vec::new();
        while out.len() < 64 {
            let mut objects = [None];
            let mut returned = 0;
            let hr = rows.Next(WBEM_INFINITE, &mut objects, &mut returned);
            let Some(object) = objects[0].take() else {
                break;
            };
            if hr.is_err() || returned == 0 {
                break;
            }
            let mut row = Vec::with_capacity(fields.len());
            for field in fields {
                let mut v = VARIANT::default();
                let value = match object.Get(&HSTRING::from(*field), 0, &mut v, None, None) {
                    Ok(()) => variant_value(&v),
                    Err(_) => Value::Null,
                };
                let _ = VariantClear(&mut v);
                row.push(value);
            }
            out.push(row);
        }
        Ok(out)
    }
}

/// A VARIANT's value (strings, integers, booleans; anything else null).
///
/// # Safety
/// `v` is an initialised VARIANT.
unsafe fn variant_value(v: &VARIANT) -> Value {
    // SAFETY: the union member read is the one `vt` names.
    unsafe {
        let inner = &v.Anonymous.Anonymous;
        match inner.vt {
            VT_BSTR => Value::Text(inner.Anonymous.bstrVal.to_string()),
            VT_I4 => Value::Int(i64::from(inner.Anonymous.lVal)),
            VT_UI4 => Value::Int(i64::from(inner.Anonymous.ulVal)),
            VT_BOOL => Value::Bool(inner.Anonymous.boolVal.0 != 0),
            _ => Value::Null,
        }
    }
}

/// Pending updates and the security ones among them, from the update
/// agent's last scan.
fn pending_updates() -> Result<(u32, u32), String> {
    let fail = |what: &'static str| move |e: windows::core::Error| format!("{what}: {e}");
    // SAFETY: COM calls on an initialised thread with owned interfaces.
    unsafe {
        let session: IUpdateSession = CoCreateInstance(&UpdateSession, None, CLSCTX_INPROC_SERVER)
            .map_err(fail("the update session"))?;
        let searcher = session
            .CreateUpdateSearcher()
            .map_err(fail("the update searcher"))?;
        // The last scan's results: no network, no waiting on a server.
        searcher
            .SetOnline(windows::Win32::Foundation::VARIANT_FALSE)
            .map_err(fail("offline search"))?;
        let result = searcher
            .Search(&BSTR::from("IsInstalled=0 and IsHidden=0"))
            .map_err(fail("the update search"))?;
        let updates = result.Updates().map_err(fail("the updates found"))?;
        let count = updates.Count().map_err(fail("the updates' count"))?.max(0);
        let mut security = 0;
        for i in 0..count.min(1000) {
            if let Ok(u) = updates.get_Item(i)
                && u.MsrcSeverity().is_ok_and(|s| !s.is_empty())
            {
                security += 1;
            }
        }
        Ok((count as u32, security))
    }
}

/// How the system drive is encrypted, when BitLocker protects it.
fn bitlocker() -> Option<String> {
    let system = win::known_folder(&windows_sys::Win32::UI::Shell::FOLDERID_Windows)
        .and_then(|p| p.to_str().and_then(|s| s.get(..2)).map(str::to_owned))
        .unwrap_or_else(|| "C:".into());
    let rows = wmi_query(
        r"root\CIMV2\Security\MicrosoftVolumeEncryption",
        "SELECT DriveLetter, ProtectionStatus FROM Win32_EncryptableVolume",
        &["DriveLetter", "ProtectionStatus"],
    )
    .inspect_err(|e| tracing::warn!(error = %e, "BitLocker not asked: reported as not encrypted"))
    .ok()?;
    rows.iter()
        .find(|r| r[0].text().eq_ignore_ascii_case(&system) && r[1].int() == Some(1))
        .map(|_| format!("BitLocker on {system}"))
}

#[cfg(test)]
mod tests;
