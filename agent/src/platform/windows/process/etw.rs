//! Process starts and stops from ETW: a real-time session of our own
//! ("Mamori Agent Process Trace") with the `Microsoft-Windows-Kernel-Process`
//! provider enabled for its process keyword, consumed on a thread of its
//! own (`ProcessTrace` blocks). Unlike a snapshot poll, it sees every
//! process, however short-lived, with its parent, session and exit code.
//!
//! The events are parsed here from their documented templates (the
//! provider's manifest; all fields packed, strings NUL-terminated):
//!
//! - `ProcessStart` (id 1): v0 `ProcessID u32, CreateTime FILETIME,
//!   ParentProcessID u32, SessionID u32, ImageName UnicodeString`; v1 adds
//!   `Flags u32` before the name; v2 adds checksum, time stamp and package
//!   names after it; v3 adds the sequence numbers after the two process
//!   ids, and the token's elevation type, elevation and `MandatoryLabel`
//!   SID before the name.
//! - `ProcessStop` (id 2): v0/v1 `ProcessID u32, CreateTime FILETIME,
//!   ExitTime FILETIME, ExitCode u32, …, ImageName AnsiString`; v2 adds
//!   `ProcessSequenceNumber u64` after the id.
//!
//! The image name is an NT path (`\Device\HarddiskVolume3\…`), turned into
//! a drive path with the `QueryDosDeviceW` table.
//!
//! Wine has no ETW delivery: the collector checks that the session works
//! by starting a probe process and waiting for its start event, and falls
//! back to the Toolhelp poller (the degraded mode) when it does not come.
//! So under Wine only the parser is exercised (by unit tests with records
//! built to the templates above); the session needs a real PC.

use std::sync::atomic::{AtomicU64, Ordering};

use super::super::etw::{Fields, Session};
pub(crate) use super::super::etw::{dos_devices, nt_to_dos};

/// `Microsoft-Windows-Kernel-Process`.
pub(crate) const KERNEL_PROCESS: windows_sys::core::GUID =
    windows_sys::core::GUID::from_u128(0x22fb2cd6_0e7b_422b_a0c7_2fad1fd0e716);
/// `WINEVENT_KEYWORD_PROCESS`.
const KEYWORD_PROCESS: u64 = 0x10;
const SESSION_NAME: &str = "Mamori Agent Process Trace";

/// A process start or stop as ETW reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EtwProcess {
    Start {
        pid: u32,
        ppid: u32,
        session_id: u32,
        /// µs since the Unix epoch.
        created_us: i64,
        /// An NT path.
        image: String,
    },
    Stop {
        pid: u32,
        exited_us: i64,
        exit_code: i32,
    },
}

/// The process event in a `Microsoft-Windows-Kernel-Process` record with
/// this id, version and user data; none for other events or a record too
/// short for its template.
pub(crate) fn parse(id: u16, version: u8, data: &[u8]) -> Option<EtwProcess> {
    let mut f = Fields { data };
    match id {
        1 => {
            let pid = f.u32()?;
            if version >= 3 {
                f.u64()?; // ProcessSequenceNumber
            }
            let created_us = f.filetime_us()?;
            let ppid = f.u32()?;
            if version >= 3 {
                f.u64()?; // ParentProcessSequenceNumber
            }
            let session_id = f.u32()?;
            if version >= 1 {
                f.u32()?; // Flags
            }
            if version >= 3 {
                f.u32()?; // ProcessTokenElevationType
                f.u32()?; // ProcessTokenIsElevated
                f.sid()?; // MandatoryLabel
            }
            let image = f.utf16()?;
            Some(EtwProcess::Start {
                pid,
                ppid,
                session_id,
                created_us,
                image,
            })
        }
        2 => {
            let pid = f.u32()?;
            if version >= 2 {
                f.u64()?; // ProcessSequenceNumber
            }
            f.u64()?; // CreateTime
            let exited_us = f.filetime_us()?;
            let exit_code = f.u32()? as i32;
            Some(EtwProcess::Stop {
                pid,
                exited_us,
                exit_code,
            })
        }
        _ => None,
    }
}

/// Events the consumer thread could not queue (the collector fell behind).
pub(crate) static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Starts the process session; `deliver` is called on its consumer thread
/// with each process event and says whether it was queued (a refusal is
/// counted in [`DROPPED`]).
pub(crate) fn start(deliver: Box<dyn Fn(EtwProcess) -> bool + Send>) -> std::io::Result<Session> {
    Session::start(
        SESSION_NAME,
        KERNEL_PROCESS,
        KEYWORD_PROCESS,
        Box::new(move |r| {
            if let Some(event) = parse(r.id, r.version, r.data)
                && !deliver(event)
            {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }),
    )
}

#[cfg(test)]
mod tests;
