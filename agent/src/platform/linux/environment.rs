//! The environment of a Linux PC: the host name of the agent's UTS
//! namespace, /etc/os-release and the kernel release, /proc/cpuinfo,
//! /proc/meminfo and the disks in /sys/block, the addresses of the
//! interfaces (loopback and link-local left out) and the MAC addresses of
//! the physical network cards (those with a `device` in sysfs: bridges,
//! veths and VPN tunnels come and go and are not the PC's hardware).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::collector::environment::{Probe, Snapshot};

/// Reads /proc, /sys and /etc (or a tree standing in for them).
#[derive(Debug, Clone)]
pub struct LinuxProbe {
    sysfs: PathBuf,
}

impl LinuxProbe {
    /// `sysfs` is where sysfs is mounted (`/sys`).
    pub fn new(sysfs: impl Into<PathBuf>) -> Self {
        LinuxProbe {
            sysfs: sysfs.into(),
        }
    }
}

impl Probe for LinuxProbe {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            os: os(),
            hardware: hardware(&self.sysfs),
            ip_addresses: ip_addresses(),
            mac_addresses: mac_addresses(&self.sysfs),
        }
    }
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn os() -> String {
    let release = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .map(read)
        .find(|t| !t.is_empty())
        .unwrap_or_default();
    let pretty = release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .unwrap_or_else(|| "Linux".into());
    format!(
        "{pretty}, kernel {}",
        read("/proc/sys/kernel/osrelease").trim()
    )
}

fn hardware(sysfs: &Path) -> String {
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count()
        .max(1);
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let mut disks = Vec::new();
    if let Ok(entries) = std::fs::read_dir(sysfs.join("block")) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // Loop devices, RAM disks and device-mapper volumes are not disks.
            if ["loop", "ram", "dm-", "zram", "sr"]
                .iter()
                .any(|p| name.starts_with(p))
            {
                continue;
            }
            let sectors: u64 = read(e.path().join("size")).trim().parse().unwrap_or(0);
            if sectors > 0 {
                disks.push(format!("{name} {} GB", sectors * 512 / 1_000_000_000));
            }
        }
    }
    disks.sort();
    format!(
        "{model} x {cpus}; memory {:.1} GiB; disks: {}",
        mem_kib as f64 / (1024.0 * 1024.0),
        if disks.is_empty() {
            "none".into()
        } else {
            disks.join(", ")
        }
    )
}

fn ip_addresses() -> String {
    let mut found = BTreeSet::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let Some(addr) = a.address else { continue };
            if let Some(v4) = addr.as_sockaddr_in() {
                let ip = v4.ip();
                if !ip.is_loopback() && !ip.is_link_local() && !ip.is_unspecified() {
                    found.insert(ip.to_string());
                }
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                let ip = v6.ip();
                let link_local = (ip.segments()[0] & 0xffc0) == 0xfe80;
                if !ip.is_loopback() && !link_local && !ip.is_unspecified() {
                    found.insert(ip.to_string());
                }
            }
        }
    }
    found.into_iter().collect::<Vec<_>>().join(", ")
}

fn mac_addresses(sysfs: &Path) -> String {
    let mut found = BTreeSet::new();
    if let Ok(entries) = std::fs::read_dir(sysfs.join("class/net")) {
        for e in entries.flatten() {
            if !e.path().join("device").exists() {
                continue;
            }
            let mac = read(e.path().join("address")).trim().to_lowercase();
            if !mac.is_empty() && mac != "00:00:00:00:00:00" {
                found.insert(mac);
            }
        }
    }
    found.into_iter().collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_has_a_snapshot_with_every_field_that_exists_here() {
        let s = LinuxProbe::new("/sys").snapshot();
        assert!(!s.hostname.is_empty());
        assert!(s.os.contains("kernel "), "{}", s.os);
        assert!(s.hardware.contains("memory"), "{}", s.hardware);
        assert_eq!(
            s,
            LinuxProbe::new("/sys").snapshot(),
            "two snapshots of an unchanged PC are equal"
        );
    }

    #[test]
    fn disks_and_physical_nics_come_from_sysfs() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        for (name, size) in [
            ("sda", "500118192"),
            ("loop0", "100"),
            ("nvme0n1", "1000215216"),
        ] {
            std::fs::create_dir_all(sys.join("block").join(name)).unwrap();
            std::fs::write(sys.join("block").join(name).join("size"), size).unwrap();
        }
        for (name, mac, physical) in [
            ("eth0", "52:54:00:AB:CD:EF", true),
            ("veth1", "aa:aa:aa:aa:aa:aa", false),
        ] {
            let nic = sys.join("class/net").join(name);
            std::fs::create_dir_all(&nic).unwrap();
            std::fs::write(nic.join("address"), format!("{mac}\n")).unwrap();
            if physical {
                std::fs::create_dir(nic.join("device")).unwrap();
            }
        }
        let hw = hardware(sys);
        assert!(hw.ends_with("disks: nvme0n1 512 GB, sda 256 GB"), "{hw}");
        assert_eq!(mac_addresses(sys), "52:54:00:ab:cd:ef");
    }
}
