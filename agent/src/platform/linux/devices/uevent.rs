//! The kernel's device announcements (uevents): a netlink socket on which
//! the kernel says when a device is added, removed or changed, so the
//! device collector reads sysfs only when something happened instead of on
//! every poll.

// Reading the socket goes through libc (recv with MSG_DONTWAIT). Each
// unsafe block is one syscall on a descriptor this type owns.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// `NETLINK_KOBJECT_UEVENT` (linux/netlink.h).
const NETLINK_KOBJECT_UEVENT: i32 = 15;
/// The multicast group of the kernel's own messages (udev's are group 2).
const KERNEL_GROUP: u32 = 1;

/// A non-blocking uevent socket.
#[derive(Debug)]
pub(super) struct Uevents {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl Uevents {
    pub(super) fn open() -> io::Result<Self> {
        let fd = crate::platform::linux::netlink::bound_socket(
            NETLINK_KOBJECT_UEVENT,
            KERNEL_GROUP,
            |_| {},
        )?;
        Ok(Uevents {
            fd,
            buf: vec![0; 8192],
        })
    }

    /// Reads every message that has arrived, without waiting; true when one
    /// of them is about a USB device, or when some may have been lost (the
    /// socket overflowed) or the socket failed, so the caller rescans.
    pub(super) fn usb_changed(&mut self) -> bool {
        let mut changed = false;
        match self.drain(|msg| changed |= is_usb(msg)) {
            Ok(()) => changed,
            // ENOBUFS: messages were dropped; anything else: the socket is
            // of no use this time. Rescan either way.
            Err(_) => true,
        }
    }

    /// Hands every message that has arrived to `each`, without waiting.
    fn drain(&mut self, mut each: impl FnMut(&[u8])) -> io::Result<()> {
        loop {
            // SAFETY: recv(2) into `buf`, whose length is passed.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => return Ok(()),
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(e),
                }
            }
            each(&self.buf[..n as usize]);
        }
    }
}

/// Whether a kernel uevent (`ACTION@DEVPATH\0KEY=VALUE\0...`) is about the
/// USB subsystem (devices and their interfaces).
pub(super) fn is_usb(msg: &[u8]) -> bool {
    msg.split(|&b| b == 0)
        .any(|field| field == b"SUBSYSTEM=usb")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_usb_messages_count() {
        let usb = b"add@/devices/pci0000:00/0000:00:14.0/usb1/1-2\0ACTION=add\0DEVPATH=/devices/pci0000:00/0000:00:14.0/usb1/1-2\0SUBSYSTEM=usb\0DEVTYPE=usb_device\0SEQNUM=4711\0";
        let iface = b"bind@/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0\0ACTION=bind\0SUBSYSTEM=usb\0DEVTYPE=usb_interface\0";
        let block = b"add@/devices/virtual/block/loop0\0ACTION=add\0SUBSYSTEM=block\0";
        let serial = b"add@/devices/x/ttyUSB0\0ACTION=add\0SUBSYSTEM=usb-serial\0";
        assert!(is_usb(usb));
        assert!(is_usb(iface));
        assert!(!is_usb(block));
        assert!(
            !is_usb(serial),
            "another subsystem whose name starts with usb"
        );
        assert!(!is_usb(b""));
    }

    #[test]
    fn the_kernel_announcements_arrive_and_only_usb_ones_count() {
        // Binding the kernel group needs no privilege; asking the kernel to
        // announce /dev/null again ("change") needs root.
        let mut u = Uevents::open().expect("uevent socket");
        let _ = u.usb_changed();
        if let Err(e) = std::fs::write("/sys/devices/virtual/mem/null/uevent", "change") {
            eprintln!("skipped: cannot trigger a uevent ({e}); needs root");
            return;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut seen = Vec::new();
        let null = loop {
            u.drain(|m| seen.push(m.to_vec())).unwrap();
            if let Some(m) = seen
                .iter()
                .find(|m| m.starts_with(b"change@/devices/virtual/mem/null\0"))
            {
                break m;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no uevent for /dev/null"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(!is_usb(null), "a mem device is not a USB change");
        // Drained: with a quiet USB bus, nothing is left to report.
        assert!(!u.usb_changed());
    }
}
