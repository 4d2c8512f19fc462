//! Linux's machine facts: the machine id systemd (or D-Bus) keeps, the
//! host name and os-release(5).

use std::path::Path;

const MACHINE_ID_PATHS: [&str; 2] = ["/etc/machine-id", "/var/lib/dbus/machine-id"];
/// Where the machine id comes from, for the error when it cannot be read.
pub(crate) const MACHINE_ID_SOURCE: &str =
    "neither /etc/machine-id nor /var/lib/dbus/machine-id is readable";
const OS_RELEASE_PATHS: [&str; 2] = ["/etc/os-release", "/usr/lib/os-release"];

pub(crate) fn machine_id() -> Option<String> {
    MACHINE_ID_PATHS
        .iter()
        .filter_map(|p| std::fs::read_to_string(Path::new(p)).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
}

pub(crate) fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The distribution's name and version, empty when unknown.
pub(crate) fn os_name_version() -> (String, String) {
    OS_RELEASE_PATHS
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|text| parse_os_release(&text))
        .unwrap_or_default()
}

/// `NAME` and `VERSION_ID` (or `VERSION`) from os-release(5) text.
fn parse_os_release(text: &str) -> (String, String) {
    let mut name = String::new();
    let (mut version_id, mut version) = (String::new(), String::new());
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once('=') else {
            continue;
        };
        let value = unquote(value.trim());
        match key {
            "NAME" => name = value,
            "VERSION_ID" => version_id = value,
            "VERSION" => version = value,
            _ => {}
        }
    }
    (
        name,
        if version_id.is_empty() {
            version
        } else {
            version_id
        },
    )
}

fn unquote(value: &str) -> String {
    let inner = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(value);
    inner.replace("\\\"", "\"").replace("\\\\", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_name_and_version() {
        let text = "PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"13\"\nVERSION=\"13 (trixie)\"\nID=debian\n";
        assert_eq!(
            parse_os_release(text),
            ("Debian GNU/Linux".into(), "13".into())
        );
        assert_eq!(
            parse_os_release("NAME=Arch\nVERSION='rolling'\n"),
            ("Arch".into(), "rolling".into())
        );
    }
}
