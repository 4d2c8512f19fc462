//! Windows's machine facts: the machine GUID Windows generates at setup,
//! the computer's DNS host name, and the edition and build from the
//! registry.

#![allow(unsafe_code)]

use windows_sys::Win32::System::Registry::HKEY_LOCAL_MACHINE;
use windows_sys::Win32::System::SystemInformation::{
    ComputerNamePhysicalDnsHostname, GetComputerNameExW,
};

use super::win::{from_wide, reg_string};

/// Where the machine id comes from, for the error when it cannot be read.
pub(crate) const MACHINE_ID_SOURCE: &str =
    r"HKLM\SOFTWARE\Microsoft\Cryptography\MachineGuid is not readable";

const CURRENT_VERSION: &str = r"SOFTWARE\Microsoft\Windows NT\CurrentVersion";

pub(crate) fn machine_id() -> Option<String> {
    reg_string(
        HKEY_LOCAL_MACHINE,
        r"SOFTWARE\Microsoft\Cryptography",
        "MachineGuid",
    )
    .map(|s| s.trim().to_lowercase())
}

pub(crate) fn hostname() -> String {
    let mut buf = [0u16; 256];
    let mut len = buf.len() as u32;
    // SAFETY: `len` is the buffer's size in characters.
    let ok =
        unsafe { GetComputerNameExW(ComputerNamePhysicalDnsHostname, buf.as_mut_ptr(), &mut len) };
    if ok == 0 {
        return String::new();
    }
    from_wide(&buf[..len as usize])
}

/// "Windows 10 Pro" and "22H2 (build 19045.4291)", as far as the registry
/// says.
pub(crate) fn os_name_version() -> (String, String) {
    let get = |v| reg_string(HKEY_LOCAL_MACHINE, CURRENT_VERSION, v);
    let name = get("ProductName").unwrap_or_default();
    let build = get("CurrentBuild").or_else(|| get("CurrentBuildNumber"));
    let ubr = super::win::reg_dword(HKEY_LOCAL_MACHINE, CURRENT_VERSION, "UBR");
    let display = get("DisplayVersion").or_else(|| get("CSDVersion"));
    (
        name,
        version_text(display.as_deref(), build.as_deref(), ubr),
    )
}

/// `22H2 (build 19045.4291)`, or what of it is known.
fn version_text(display: Option<&str>, build: Option<&str>, ubr: Option<u32>) -> String {
    let build = match (build, ubr) {
        (Some(b), Some(u)) => Some(format!("build {b}.{u}")),
        (Some(b), None) => Some(format!("build {b}")),
        _ => None,
    };
    match (display, build) {
        (Some(d), Some(b)) => format!("{d} ({b})"),
        (Some(d), None) => d.to_owned(),
        (None, Some(b)) => b,
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_text_says_what_is_known() {
        assert_eq!(
            version_text(Some("22H2"), Some("19045"), Some(4291)),
            "22H2 (build 19045.4291)"
        );
        assert_eq!(version_text(None, Some("7601"), None), "build 7601");
        assert_eq!(version_text(None, None, None), "");
    }

    /// Under Wine too: the prefix has a machine GUID and a product name.
    #[test]
    fn the_registry_names_this_machine() {
        let id = machine_id().expect("MachineGuid");
        assert_eq!(id.len(), 36, "{id}");
        assert!(!hostname().is_empty());
        let (name, version) = os_name_version();
        assert!(name.contains("Windows"), "{name}");
        assert!(version.contains("build"), "{version}");
    }
}
