//! The machine facts presented at enrollment: what identifies this PC to the
//! server (machine id, instance id) and what an operator sees about it.

use std::path::Path;

use mamori_proto::agent::v1::MachineFacts;

use crate::error::{Error, Result};

const MACHINE_ID_PATHS: [&str; 2] = ["/etc/machine-id", "/var/lib/dbus/machine-id"];
const OS_RELEASE_PATHS: [&str; 2] = ["/etc/os-release", "/usr/lib/os-release"];

/// Gathers the facts; `machine_id` overrides the one read from the system
/// (tests enroll several "machines" from one host).
pub(crate) fn gather(machine_id: Option<&str>, instance_id: String) -> Result<MachineFacts> {
    let machine_id = match machine_id {
        Some(id) => id.trim().to_string(),
        None => read_machine_id()?,
    };
    let (os_name, os_version) = OS_RELEASE_PATHS
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|text| parse_os_release(&text))
        .unwrap_or_default();
    Ok(MachineFacts {
        machine_id,
        hostname: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        os_name: if os_name.is_empty() {
            std::env::consts::OS.to_string()
        } else {
            os_name
        },
        os_version,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        instance_id,
    })
}

fn read_machine_id() -> Result<String> {
    MACHINE_ID_PATHS
        .iter()
        .filter_map(|p| std::fs::read_to_string(Path::new(p)).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .ok_or(Error::NoMachineId)
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

    #[test]
    fn override_and_agent_version() {
        let facts = gather(Some(" test-machine \n"), "inst".into()).unwrap();
        assert_eq!(facts.machine_id, "test-machine");
        assert_eq!(facts.instance_id, "inst");
        assert_eq!(facts.agent_version, env!("CARGO_PKG_VERSION"));
        assert!(!facts.os_name.is_empty());
    }
}
