//! The environment of a Windows PC: the DNS host name, the edition and
//! build, the processor (the registry's `ProcessorNameString`), logical
//! processors, memory (`GlobalMemoryStatusEx`) and the fixed drives'
//! sizes, and the addresses of the network adapters that are up
//! (`GetAdaptersAddresses`; loopback, link-local and tunnel adapters left
//! out, MACs of Ethernet and Wi-Fi adapters only: virtual switches and VPN
//! tunnels come and go and are not the PC's hardware).

#![allow(unsafe_code)]

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use windows_sys::Win32::NetworkManagement::IpHelper::{
    GAA_FLAG_SKIP_ANYCAST, GAA_FLAG_SKIP_DNS_SERVER, GAA_FLAG_SKIP_MULTICAST, GetAdaptersAddresses,
    IF_TYPE_ETHERNET_CSMACD, IF_TYPE_IEEE80211, IP_ADAPTER_ADDRESSES_LH,
};
use windows_sys::Win32::Storage::FileSystem::GetDiskFreeSpaceExW;
use windows_sys::Win32::System::Registry::HKEY_LOCAL_MACHINE;
use windows_sys::Win32::System::SystemInformation::{GlobalMemoryStatusEx, MEMORYSTATUSEX};

use super::{facts, win};
use crate::collector::environment::{Probe, Snapshot};

/// Reads the registry and asks Windows.
#[derive(Debug, Clone, Default)]
pub struct WindowsProbe;

impl Probe for WindowsProbe {
    fn snapshot(&self) -> Snapshot {
        let (name, version) = facts::os_name_version();
        let (ips, macs) = adapters();
        Snapshot {
            hostname: facts::hostname(),
            os: format!("{name} {version}").trim().to_owned(),
            hardware: hardware(),
            ip_addresses: ips.into_iter().collect::<Vec<_>>().join(", "),
            mac_addresses: macs.into_iter().collect::<Vec<_>>().join(", "),
        }
    }
}

/// `CPU x N; memory X GiB; disks: C: 512 GB, D: 1000 GB` (the same shape
/// as on Linux).
pub(crate) fn hardware() -> String {
    let cpu = win::reg_string(
        HKEY_LOCAL_MACHINE,
        r"HARDWARE\DESCRIPTION\System\CentralProcessor\0",
        "ProcessorNameString",
    )
    .map(|s| s.trim().to_owned())
    .filter(|s| !s.is_empty())
    .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: zeroed is valid; dwLength is set as the call requires.
    let mut mem: MEMORYSTATUSEX = unsafe { std::mem::zeroed() };
    mem.dwLength = size_of::<MEMORYSTATUSEX>() as u32;
    // SAFETY: a MEMORYSTATUSEX with its length set.
    let total = if unsafe { GlobalMemoryStatusEx(&mut mem) } != 0 {
        mem.ullTotalPhys
    } else {
        0
    };
    let disks = fixed_drives();
    format!(
        "{cpu} x {cpus}; memory {:.1} GiB; disks: {}",
        total as f64 / (1024.0 * 1024.0 * 1024.0),
        if disks.is_empty() {
            "none".to_owned()
        } else {
            disks.join(", ")
        }
    )
}

/// `C: 512 GB` for each fixed drive.
fn fixed_drives() -> Vec<String> {
    // DRIVE_FIXED.
    super::drives_of_type(&[3])
        .into_iter()
        .filter_map(|root| {
            let wide = win::wide(&root);
            let mut total = 0u64;
            // SAFETY: the root is NUL-terminated; one output asked for.
            let ok = unsafe {
                GetDiskFreeSpaceExW(
                    wide.as_ptr(),
                    std::ptr::null_mut(),
                    &mut total,
                    std::ptr::null_mut(),
                )
            };
            (ok != 0 && total > 0).then(|| format!("{} {} GB", &root[..2], total / 1_000_000_000))
        })
        .collect()
}

/// Whether an address is worth reporting (not loopback, link-local or
/// unspecified).
pub(crate) fn reportable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => {
            !v6.is_loopback() && (v6.segments()[0] & 0xffc0) != 0xfe80 && !v6.is_unspecified()
        }
    }
}

/// `aa:bb:cc:dd:ee:ff`; none for an empty or all-zero address.
pub(crate) fn mac_text(bytes: &[u8]) -> Option<String> {
    if bytes.len() != 6 || bytes.iter().all(|&b| b == 0) {
        return None;
    }
    Some(
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

/// The addresses of the adapters that are up, and the MACs of the
/// Ethernet and Wi-Fi ones.
fn adapters() -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut ips, mut macs) = (BTreeSet::new(), BTreeSet::new());
    let flags = GAA_FLAG_SKIP_ANYCAST | GAA_FLAG_SKIP_MULTICAST | GAA_FLAG_SKIP_DNS_SERVER;
    // 8-aligned, as the list of structures needs.
    let mut buf = vec![0u64; 4096];
    let mut size = (buf.len() * 8) as u32;
    let mut listed = false;
    for _ in 0..3 {
        // SAFETY: the buffer is `size` bytes; AF_UNSPEC (0).
        let status = unsafe {
            GetAdaptersAddresses(
                0,
                flags,
                std::ptr::null(),
                buf.as_mut_ptr().cast(),
                &mut size,
            )
        };
        match status {
            0 => {
                listed = true;
                break;
            }
            // ERROR_BUFFER_OVERFLOW: `size` is what it needs.
            111 if size as usize <= 1 << 22 => buf = vec![0u64; (size as usize).div_ceil(8)],
            _ => break,
        }
    }
    if !listed {
        return (ips, macs);
    }
    let mut at = buf.as_ptr().cast::<IP_ADAPTER_ADDRESSES_LH>();
    while !at.is_null() {
        // SAFETY: a list GetAdaptersAddresses wrote into `buf`.
        let a = unsafe { &*at };
        // IfOperStatusUp is 1.
        if a.OperStatus == 1 {
            let physical = a.IfType == IF_TYPE_ETHERNET_CSMACD || a.IfType == IF_TYPE_IEEE80211;
            if physical
                && let Some(mac) =
                    mac_text(&a.PhysicalAddress[..(a.PhysicalAddressLength as usize).min(8)])
            {
                macs.insert(mac);
            }
            let mut u = a.FirstUnicastAddress;
            while !u.is_null() {
                // SAFETY: the adapter's list of unicast addresses.
                let ua = unsafe { &*u };
                // SAFETY: a socket address of the length given.
                if let Some(ip) = unsafe {
                    socket_ip(
                        ua.Address.lpSockaddr.cast(),
                        ua.Address.iSockaddrLength as usize,
                    )
                } && reportable(&ip)
                {
                    ips.insert(ip.to_string());
                }
                u = ua.Next;
            }
        }
        at = a.Next;
    }
    (ips, macs)
}

/// The address in a `SOCKADDR_IN` (family 2) or `SOCKADDR_IN6` (23).
///
/// # Safety
/// `sa` points to `len` readable bytes.
unsafe fn socket_ip(sa: *const u8, len: usize) -> Option<IpAddr> {
    if sa.is_null() || len < 8 {
        return None;
    }
    // SAFETY: `len` bytes are readable.
    let bytes = unsafe { std::slice::from_raw_parts(sa, len) };
    match u16::from_le_bytes([bytes[0], bytes[1]]) {
        2 => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[4], bytes[5], bytes[6], bytes[7],
        ))),
        23 if len >= 24 => {
            let octets: [u8; 16] = bytes[8..24].try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_routable_addresses_and_real_macs_are_reported() {
        for (ip, keep) in [
            ("192.168.1.20", true),
            ("127.0.0.1", false),
            ("169.254.3.4", false),
            ("2001:db8::1", true),
            ("fe80::1", false),
            ("::1", false),
        ] {
            assert_eq!(reportable(&ip.parse().unwrap()), keep, "{ip}");
        }
        assert_eq!(
            mac_text(&[0x00, 0x1a, 0x2b, 0x3c, 0x4d, 0x5e]).as_deref(),
            Some("00:1a:2b:3c:4d:5e")
        );
        assert_eq!(mac_text(&[0; 6]), None);
        assert_eq!(mac_text(&[1, 2, 3]), None);
    }

    /// Under Wine too: the registry, the memory status and the drives are
    /// there.
    #[test]
    fn the_snapshot_describes_this_pc() {
        let s = WindowsProbe.snapshot();
        assert!(!s.hostname.is_empty(), "{s:?}");
        assert!(s.os.contains("Windows"), "{s:?}");
        assert!(s.hardware.contains(" x "), "{s:?}");
        assert!(s.hardware.contains("memory"), "{s:?}");
        assert!(!s.hardware.contains("memory 0.0 GiB"), "{s:?}");
        assert!(s.hardware.contains("C: "), "{s:?}");
    }
}
