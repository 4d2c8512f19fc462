//! Netlink sockets the collectors listen on (the process connector, the
//! kernel's device announcements).

// std and nix have no netlink socket of these protocols; creating and
// binding one goes through libc. Each unsafe block is one syscall on a
// descriptor this function owns.
#![allow(unsafe_code)]

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A non-blocking, close-on-exec netlink datagram socket of `protocol`,
/// bound to the multicast `groups` (a bit mask), with a port id the kernel
/// picks (so several sockets in one process do not collide). Options that
/// must be set before data flows, such as the receive buffer, are set by
/// `configure` before the bind.
pub(crate) fn bound_socket(
    protocol: i32,
    groups: u32,
    configure: impl FnOnce(&OwnedFd),
) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    configure(&fd);
    // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_pid = 0;
    addr.nl_groups = groups;
    // SAFETY: `addr` is a valid sockaddr_nl and its exact size is passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}
