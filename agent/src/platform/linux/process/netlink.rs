//! The kernel's process connector: a netlink socket on which the kernel
//! multicasts an event for every fork, exec and exit on the machine.
//!
//! Listening needs CAP_NET_ADMIN in the initial namespaces (the agent runs as
//! root); without it `bind` fails and the collector falls back to polling
//! /proc. The wire format is fixed kernel ABI (linux/connector.h,
//! linux/cn_proc.h), parsed here by offset in host byte order.

// std and nix have no netlink-connector socket; its options, messages and
// reads go through libc (creating and binding it: crate::netlink). Each
// unsafe block is one syscall on a socket this type owns, with buffers
// whose sizes are passed alongside.
#![allow(unsafe_code)]

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, OwnedFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// What the collector cares about from the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProcEvent {
    /// A process (thread group `parent`) started another (`child`).
    Fork { parent: u32, child: u32 },
    /// A process (thread group `pid`) replaced its program.
    Exec { pid: u32 },
    /// A process (its thread group leader) ended.
    Exit { pid: u32, exit_code: i32 },
    /// The kernel refused the subscription (errno).
    ListenRefused { errno: u32 },
}

const NETLINK_CONNECTOR: i32 = 11;
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const NLMSG_DONE: u16 = 3;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_CN_MCAST_IGNORE: u32 = 2;
const PROC_EVENT_NONE: u32 = 0;
const PROC_EVENT_FORK: u32 = 0x0000_0001;
const PROC_EVENT_EXEC: u32 = 0x0000_0002;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;

/// nlmsghdr (16) + cn_msg (20).
const CN_MSG_DATA: usize = 36;
/// proc_event: what, cpu, timestamp_ns, then the union.
const EVENT_DATA: usize = CN_MSG_DATA + 16;

/// A subscribed process-connector socket.
#[derive(Debug)]
pub(crate) struct ProcConnector {
    fd: AsyncFd<OwnedFd>,
}

/// The initial PID namespace's inode number (the kernel's fixed
/// `PROC_PID_INIT_INO`).
const INIT_PID_NS_INODE: u64 = 0xEFFF_FFFC;

/// Whether this process is in the initial PID namespace. The kernel
/// ignores a connector subscription from any other, without an error: an
/// agent in a container would hear nothing.
fn in_initial_pid_namespace() -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata("/proc/self/ns/pid")?.ino() == INIT_PID_NS_INODE)
}

impl ProcConnector {
    /// Opens, binds and subscribes. Must be called inside a tokio runtime.
    pub(crate) fn open() -> io::Result<Self> {
        if !in_initial_pid_namespace()? {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the agent is not in the initial PID namespace (a container?), where the kernel reports no process events to it",
            ));
        }
        // A burst (a build starting thousands of compilers) must not overflow
        // the socket while the agent is busy; the memory is the kernel's and
        // only used when the agent falls behind.
        let fd =
            crate::platform::linux::netlink::bound_socket(NETLINK_CONNECTOR, CN_IDX_PROC, |fd| {
                let rcvbuf: libc::c_int = 4 << 20;
                // SAFETY: the option value is a c_int whose size is passed.
                unsafe {
                    libc::setsockopt(
                        fd.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_RCVBUF,
                        (&rcvbuf as *const libc::c_int).cast(),
                        size_of::<libc::c_int>() as libc::socklen_t,
                    );
                }
            })?;
        send_op(&fd, PROC_CN_MCAST_LISTEN)?;
        // SAFETY: `fd` is an open socket owned by the OwnedFd handed over, and
        // an OwnedFd always reports the descriptor it owns.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(ProcConnector { fd })
    }

    /// Waits for the next datagram and returns its length. `ENOBUFS` means
    /// the kernel dropped events because the socket was full.
    pub(crate) async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            let result = guard.try_io(|fd| {
                // SAFETY: recv(2) into `buf`, whose length is passed.
                let n =
                    unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            if let Ok(result) = result {
                return result;
            }
        }
    }
}

impl Drop for ProcConnector {
    fn drop(&mut self) {
        // The kernel counts listeners and skips building events when there
        // are none; tell it this one is gone.
        let _ = send_op(self.fd.get_ref(), PROC_CN_MCAST_IGNORE);
    }
}

fn send_op(fd: &OwnedFd, op: u32) -> io::Result<()> {
    let mut msg = [0u8; CN_MSG_DATA + 4];
    let len = msg.len() as u32;
    msg[0..4].copy_from_slice(&len.to_ne_bytes());
    msg[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
    msg[16..20].copy_from_slice(&CN_IDX_PROC.to_ne_bytes());
    msg[20..24].copy_from_slice(&CN_VAL_PROC.to_ne_bytes());
    msg[32..34].copy_from_slice(&4u16.to_ne_bytes());
    msg[CN_MSG_DATA..].copy_from_slice(&op.to_ne_bytes());
    // SAFETY: send(2) of `msg`, whose length is passed.
    let n = unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

/// Decodes one datagram; `None` for anything the collector ignores (new
/// threads, uid changes, thread exits, other connector users).
pub(crate) fn parse(buf: &[u8]) -> Option<ProcEvent> {
    let nl_type = u16::from_ne_bytes(buf.get(4..6)?.try_into().ok()?);
    if nl_type != NLMSG_DONE || u32_at(buf, 16)? != CN_IDX_PROC || u32_at(buf, 20)? != CN_VAL_PROC {
        return None;
    }
    match u32_at(buf, CN_MSG_DATA)? {
        PROC_EVENT_FORK => {
            // parent pid, parent tgid, child pid, child tgid.
            let (parent, pid, tgid) = (
                u32_at(buf, EVENT_DATA + 4)?,
                u32_at(buf, EVENT_DATA + 8)?,
                u32_at(buf, EVENT_DATA + 12)?,
            );
            // A new thread, not a new process.
            if pid != tgid {
                return None;
            }
            Some(ProcEvent::Fork {
                parent,
                child: tgid,
            })
        }
        PROC_EVENT_EXEC => Some(ProcEvent::Exec {
            pid: u32_at(buf, EVENT_DATA + 4)?,
        }),
        PROC_EVENT_EXIT => {
            let (pid, tgid) = (u32_at(buf, EVENT_DATA)?, u32_at(buf, EVENT_DATA + 4)?);
            // A thread of a process that goes on.
            if pid != tgid {
                return None;
            }
            Some(ProcEvent::Exit {
                pid: tgid,
                exit_code: exit_code(u32_at(buf, EVENT_DATA + 8)?),
            })
        }
        PROC_EVENT_NONE => match u32_at(buf, EVENT_DATA)? {
            0 => None,
            errno => Some(ProcEvent::ListenRefused { errno }),
        },
        _ => None,
    }
}

/// The kernel reports a wait(2) status; make it what a shell shows: the exit
/// status, or 128 + the signal that killed the process.
fn exit_code(status: u32) -> i32 {
    let signal = status & 0x7f;
    if signal == 0 {
        ((status >> 8) & 0xff) as i32
    } else {
        128 + signal as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(what: u32, data: &[u32]) -> Vec<u8> {
        let mut buf = vec![0u8; EVENT_DATA];
        buf[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        buf[16..20].copy_from_slice(&CN_IDX_PROC.to_ne_bytes());
        buf[20..24].copy_from_slice(&CN_VAL_PROC.to_ne_bytes());
        buf[CN_MSG_DATA..CN_MSG_DATA + 4].copy_from_slice(&what.to_ne_bytes());
        for d in data {
            buf.extend_from_slice(&d.to_ne_bytes());
        }
        buf
    }

    #[test]
    fn fork_exec_exit_and_refusal() {
        assert_eq!(
            parse(&message(PROC_EVENT_FORK, &[10, 10, 100, 100])),
            Some(ProcEvent::Fork {
                parent: 10,
                child: 100
            })
        );
        // A new thread of process 10.
        assert_eq!(parse(&message(PROC_EVENT_FORK, &[10, 10, 101, 10])), None);
        assert_eq!(
            parse(&message(PROC_EVENT_EXEC, &[101, 100])),
            Some(ProcEvent::Exec { pid: 100 })
        );
        assert_eq!(
            parse(&message(PROC_EVENT_EXIT, &[100, 100, 3 << 8, 17, 1, 1])),
            Some(ProcEvent::Exit {
                pid: 100,
                exit_code: 3
            })
        );
        assert_eq!(
            parse(&message(PROC_EVENT_EXIT, &[100, 100, 9, 17, 1, 1])),
            Some(ProcEvent::Exit {
                pid: 100,
                exit_code: 137
            })
        );
        assert_eq!(
            parse(&message(PROC_EVENT_EXIT, &[101, 100, 0, 17, 1, 1])),
            None,
            "thread exit"
        );
        assert_eq!(parse(&message(0x4, &[1, 1, 2, 2])), None, "a uid change");
        assert_eq!(parse(&message(PROC_EVENT_NONE, &[0])), None);
        assert_eq!(
            parse(&message(PROC_EVENT_NONE, &[1])),
            Some(ProcEvent::ListenRefused { errno: 1 })
        );
        assert_eq!(parse(&message(PROC_EVENT_EXEC, &[101])), None, "short");
        assert_eq!(parse(&[0u8; 8]), None);
    }
}
