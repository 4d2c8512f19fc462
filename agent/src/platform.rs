//! What differs between operating systems, in one module per OS
//! (`linux`, `windows`), each supplying the same items:
//!
//! - `collectors`: the OS's collectors for a [`RunOptions`](crate::RunOptions),
//!   with its data sources and enforcers: a process source and a
//!   [`ProcessEnforcer`](crate::collector::process::ProcessEnforcer), a
//!   [`FileOs`](crate::collector::files::FileOs) for the file collector, an
//!   environment [`Probe`](crate::collector::environment::Probe) and a
//!   [`SecurityProbe`](crate::collector::security::SecurityProbe);
//! - `PlatformOptions` (paths the OS's sources read, with the command-line
//!   arguments that set them: `PlatformArgs`);
//! - `fs` (how a file is made private and a rename durable), `facts`
//!   (machine id, host name, OS), `file_id` (a file's identity on its
//!   volume), `Owners` (who owns a home directory), the browsers' history
//!   locations, and `service` (the service manager and the shutdown
//!   signal).
//!
//! Everything else (the spool, the uplink, enrollment, policy verdicts,
//! the hash cache, the started-process map, the file operations' pairing
//! and copy detection, the history reader) is shared and knows no OS.

#[cfg(target_os = "linux")]
pub mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux as os;

#[cfg(windows)]
pub mod windows;
#[cfg(windows)]
pub(crate) use windows as os;

pub use os::{PlatformArgs, PlatformOptions, service};

use std::path::PathBuf;

/// A file's identity on its volume: device and inode on Linux, volume
/// serial number and file index on Windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileId {
    pub(crate) volume: u64,
    pub(crate) file: u64,
}

/// A mounted removable medium and the device it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Medium {
    pub(crate) mount_point: PathBuf,
    pub(crate) vendor_id: String,
    pub(crate) product_id: String,
    pub(crate) serial: String,
}
