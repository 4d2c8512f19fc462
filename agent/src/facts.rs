//! The machine facts presented at enrollment: what identifies this PC to the
//! server (machine id, instance id) and what an operator sees about it.
//! Each platform says where they come from (`platform::os::facts`).

use mamori_proto::agent::v1::MachineFacts;

use crate::error::{Error, Result};
use crate::platform::os::facts as os;

/// Gathers the facts; `machine_id` overrides the one read from the system
/// (tests enroll several "machines" from one host).
pub(crate) fn gather(machine_id: Option<&str>, instance_id: String) -> Result<MachineFacts> {
    let machine_id = match machine_id {
        Some(id) => id.trim().to_string(),
        None => os::machine_id().ok_or(Error::NoMachineId(os::MACHINE_ID_SOURCE))?,
    };
    let (os_name, os_version) = os::os_name_version();
    Ok(MachineFacts {
        machine_id,
        hostname: os::hostname(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_and_agent_version() {
        let facts = gather(Some(" test-machine \n"), "inst".into()).unwrap();
        assert_eq!(facts.machine_id, "test-machine");
        assert_eq!(facts.instance_id, "inst");
        assert_eq!(facts.agent_version, env!("CARGO_PKG_VERSION"));
        assert!(!facts.os_name.is_empty());
    }
}
