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

use windows_sys::Win32::Foundation::ERROR_ALREADY_EXISTS;
use windows_sys::Win32::System::Diagnostics::Etw::{
    CONTROLTRACE_HANDLE, CloseTrace, ControlTraceW, EVENT_CONTROL_CODE_ENABLE_PROVIDER,
    EVENT_RECORD, EVENT_TRACE_CONTROL_STOP, EVENT_TRACE_LOGFILEW, EVENT_TRACE_PROPERTIES,
    EVENT_TRACE_REAL_TIME_MODE, EnableTraceEx2, OpenTraceW, PROCESS_TRACE_MODE_EVENT_RECORD,
    PROCESS_TRACE_MODE_REAL_TIME, PROCESSTRACE_HANDLE, ProcessTrace, StartTraceW,
    TRACE_LEVEL_INFORMATION, WNODE_FLAG_TRACED_GUID,
};

use super::super::win;
use super::filetime_us;

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

/// Reads packed fields from an event's user data.
struct Fields<'a> {
    data: &'a [u8],
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.data.len() < n {
            return None;
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn filetime_us(&mut self) -> Option<i64> {
        let t = self.u64()?;
        Some(filetime_us(windows_sys::Win32::Foundation::FILETIME {
            dwLowDateTime: t as u32,
            dwHighDateTime: (t >> 32) as u32,
        }))
    }

    /// A NUL-terminated UTF-16 string (or the rest, unterminated).
    fn utf16(&mut self) -> Option<String> {
        let units: Vec<u16> = self
            .data
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        let consumed = (units.len() * 2 + 2).min(self.data.len());
        self.data = &self.data[consumed..];
        Some(String::from_utf16_lossy(&units))
    }

    /// A SID: revision, sub-authority count, 6-byte authority, then the
    /// sub-authorities (4 bytes each).
    fn sid(&mut self) -> Option<()> {
        let head = self.take(8)?;
        self.take(usize::from(head[1]) * 4)?;
        Some(())
    }
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

/// `\Device\HarddiskVolume3\Windows\notepad.exe` → `C:\Windows\notepad.exe`
/// with the table of (NT device, drive); unchanged when no device matches.
pub(crate) fn nt_to_dos(path: &str, devices: &[(String, String)]) -> String {
    for (device, drive) in devices {
        if let Some(rest) = path.get(device.len()..)
            && path[..device.len()].eq_ignore_ascii_case(device)
            && (rest.is_empty() || rest.starts_with('\\'))
        {
            return format!("{drive}{rest}");
        }
    }
    path.to_owned()
}

/// The drives' NT devices (`\Device\HarddiskVolume3`, `C:`).
pub(crate) fn dos_devices() -> Vec<(String, String)> {
    use windows_sys::Win32::Storage::FileSystem::QueryDosDeviceW;
    let mut out = Vec::new();
    for letter in b'A'..=b'Z' {
        let drive = format!("{}:", char::from(letter));
        let name = win::wide(&drive);
        let mut buf = [0u16; 1024];
        // SAFETY: a NUL-terminated drive name; the buffer's length in
        // characters is given.
        let n = unsafe { QueryDosDeviceW(name.as_ptr(), buf.as_mut_ptr(), buf.len() as u32) };
        if n > 0 {
            out.push((win::from_wide(&buf), drive));
        }
    }
    out
}

/// Events the consumer thread could not queue (the collector fell behind).
pub(crate) static DROPPED: AtomicU64 = AtomicU64::new(0);

/// A running session and its consumer thread; stopped when dropped.
pub(crate) struct Session {
    name: Vec<u16>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

/// `EVENT_TRACE_PROPERTIES` followed by room for the session's name.
#[repr(C)]
struct Properties {
    props: EVENT_TRACE_PROPERTIES,
    name: [u16; 128],
}

impl Properties {
    fn new() -> Box<Self> {
        // SAFETY: all-zero is a valid EVENT_TRACE_PROPERTIES and name.
        let mut p: Box<Self> = Box::new(unsafe { std::mem::zeroed() });
        p.props.Wnode.BufferSize = size_of::<Self>() as u32;
        p.props.Wnode.Flags = WNODE_FLAG_TRACED_GUID;
        // Query-performance-counter time stamps (converted to system time
        // for the consumer).
        p.props.Wnode.ClientContext = 1;
        p.props.LogFileMode = EVENT_TRACE_REAL_TIME_MODE;
        // Deliver at least every second.
        p.props.FlushTimer = 1;
        p.props.LoggerNameOffset = std::mem::offset_of!(Self, name) as u32;
        p
    }
}

/// Stops the session called `name` (one left by a crashed agent).
fn stop(name: &[u16]) -> u32 {
    let mut p = Properties::new();
    // SAFETY: a NUL-terminated name; the properties have room for the name
    // the call writes back.
    unsafe {
        ControlTraceW(
            CONTROLTRACE_HANDLE { Value: 0 },
            name.as_ptr(),
            &mut p.props,
            EVENT_TRACE_CONTROL_STOP,
        )
    }
}

impl Session {
    /// Starts the session and its consumer; `deliver` is called on the
    /// consumer thread with each process event and says whether it was
    /// queued (a refusal is counted in [`DROPPED`]).
    pub(crate) fn start(deliver: Box<dyn Fn(EtwProcess) -> bool + Send>) -> std::io::Result<Self> {
        let name = win::wide(SESSION_NAME);
        let mut control = CONTROLTRACE_HANDLE { Value: 0 };
        let mut status = {
            let mut p = Properties::new();
            // SAFETY: as in `stop`.
            unsafe { StartTraceW(&mut control, name.as_ptr(), &mut p.props) }
        };
        if status == ERROR_ALREADY_EXISTS {
            stop(&name);
            let mut p = Properties::new();
            // SAFETY: as above.
            status = unsafe { StartTraceW(&mut control, name.as_ptr(), &mut p.props) };
        }
        if status != 0 {
            return Err(std::io::Error::from_raw_os_error(status as i32));
        }
        // SAFETY: a session handle from StartTraceW; no filter parameters.
        let status = unsafe {
            EnableTraceEx2(
                control,
                &KERNEL_PROCESS,
                EVENT_CONTROL_CODE_ENABLE_PROVIDER,
                TRACE_LEVEL_INFORMATION as u8,
                KEYWORD_PROCESS,
                0,
                0,
                std::ptr::null(),
            )
        };
        if status != 0 {
            stop(&name);
            return Err(std::io::Error::from_raw_os_error(status as i32));
        }
        let context = Box::into_raw(Box::new(deliver));
        let mut logger = name.clone();
        // SAFETY: all-zero is a valid EVENT_TRACE_LOGFILEW.
        let mut logfile: EVENT_TRACE_LOGFILEW = unsafe { std::mem::zeroed() };
        logfile.LoggerName = logger.as_mut_ptr();
        logfile.Anonymous1.ProcessTraceMode =
            PROCESS_TRACE_MODE_REAL_TIME | PROCESS_TRACE_MODE_EVENT_RECORD;
        logfile.Anonymous2.EventRecordCallback = Some(on_event);
        logfile.Context = context.cast();
        // SAFETY: the log file names a NUL-terminated session; the context
        // lives until the consumer thread ends.
        let trace = unsafe { OpenTraceW(&mut logfile) };
        if trace.Value == u64::MAX {
            let e = std::io::Error::last_os_error();
            stop(&name);
            // SAFETY: not handed to any consumer.
            drop(unsafe { Box::from_raw(context) });
            return Err(e);
        }
        let context = context as usize;
        let thread = std::thread::Builder::new()
            .name("etw-process".into())
            .spawn(move || {
                let handle = PROCESSTRACE_HANDLE { Value: trace.Value };
                // SAFETY: an open trace; returns once the session stops.
                let status =
                    unsafe { ProcessTrace(&handle, 1, std::ptr::null(), std::ptr::null()) };
                if status != 0 {
                    tracing::warn!(status, "ETW process trace ended");
                }
                // SAFETY: opened above; the callback runs no more.
                unsafe { CloseTrace(handle) };
                // SAFETY: the context boxed above, no longer used.
                drop(unsafe {
                    Box::from_raw(context as *mut Box<dyn Fn(EtwProcess) -> bool + Send>)
                });
                // Keep the name alive as long as the trace.
                drop(logger);
            })?;
        Ok(Session {
            name,
            thread: Some(thread),
        })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        stop(&self.name);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The consumer's callback: parses process events and hands them on.
unsafe extern "system" fn on_event(record: *mut EVENT_RECORD) {
    // SAFETY: ETW passes a valid record for the duration of the call.
    let r = unsafe { &*record };
    let p = r.EventHeader.ProviderId;
    let k = KERNEL_PROCESS;
    if (p.data1, p.data2, p.data3, p.data4) != (k.data1, k.data2, k.data3, k.data4)
        || r.UserContext.is_null()
    {
        return;
    }
    let data = if r.UserData.is_null() {
        &[][..]
    } else {
        // SAFETY: UserDataLength bytes at UserData, valid during the call.
        unsafe {
            std::slice::from_raw_parts(r.UserData.cast::<u8>(), usize::from(r.UserDataLength))
        }
    };
    let d = &r.EventHeader.EventDescriptor;
    if let Some(event) = parse(d.Id, d.Version, data) {
        // SAFETY: the context set in `Session::start`, alive while the
        // trace is processed.
        let deliver = unsafe { &*(r.UserContext as *const Box<dyn Fn(EtwProcess) -> bool + Send>) };
        if !deliver(event) {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests;
