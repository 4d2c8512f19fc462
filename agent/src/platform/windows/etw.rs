//! ETW real-time sessions of the agent's own, each with one provider, and
//! what their consumers share: reading packed event fields, and turning
//! the kernel's NT paths into drive paths. The process collector
//! ([`process::etw`](super::process::etw)) and the file source
//! ([`files_etw`](super::files_etw)) parse their providers' events.
//!
//! Wine has no ETW delivery (`OpenTraceW` is refused): each user checks
//! that its session delivers and falls back to its degraded source.

#![allow(unsafe_code)]

use windows_sys::Win32::Foundation::ERROR_ALREADY_EXISTS;
use windows_sys::Win32::System::Diagnostics::Etw::{
    CONTROLTRACE_HANDLE, CloseTrace, ControlTraceW, EVENT_CONTROL_CODE_ENABLE_PROVIDER,
    EVENT_RECORD, EVENT_TRACE_CONTROL_STOP, EVENT_TRACE_LOGFILEW, EVENT_TRACE_PROPERTIES,
    EVENT_TRACE_REAL_TIME_MODE, EnableTraceEx2, OpenTraceW, PROCESS_TRACE_MODE_EVENT_RECORD,
    PROCESS_TRACE_MODE_REAL_TIME, PROCESSTRACE_HANDLE, ProcessTrace, StartTraceW,
    TRACE_LEVEL_INFORMATION, WNODE_FLAG_TRACED_GUID,
};

use super::process::filetime_us;
use super::win;

/// One event as a consumer sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record<'a> {
    pub(crate) id: u16,
    pub(crate) version: u8,
    /// The process the event happened in.
    pub(crate) pid: u32,
    /// 4 or 8: the size of a `Pointer` field.
    pub(crate) pointer: usize,
    pub(crate) data: &'a [u8],
}

/// What a session hands each event of its provider to (on its consumer
/// thread).
pub(crate) type Deliver = Box<dyn Fn(&Record<'_>) + Send>;

struct Context {
    provider: windows_sys::core::GUID,
    deliver: Deliver,
}

/// Reads packed fields from an event's user data.
pub(crate) struct Fields<'a> {
    pub(crate) data: &'a [u8],
}

impl<'a> Fields<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.data.len() < n {
            return None;
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Some(head)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    pub(crate) fn filetime_us(&mut self) -> Option<i64> {
        let t = self.u64()?;
        Some(filetime_us(windows_sys::Win32::Foundation::FILETIME {
            dwLowDateTime: t as u32,
            dwHighDateTime: (t >> 32) as u32,
        }))
    }

    /// A NUL-terminated UTF-16 string (or the rest, unterminated).
    pub(crate) fn utf16(&mut self) -> Option<String> {
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
    pub(crate) fn sid(&mut self) -> Option<()> {
        let head = self.take(8)?;
        self.take(usize::from(head[1]) * 4)?;
        Some(())
    }

    /// A `Pointer` field of `size` bytes (4 or 8), as a number.
    pub(crate) fn pointer(&mut self, size: usize) -> Option<u64> {
        match size {
            4 => self.u32().map(u64::from),
            _ => self.u64(),
        }
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
    /// Starts the session `name` with `provider` enabled for `keywords`,
    /// and its consumer thread, which calls `deliver` with each event.
    pub(crate) fn start(
        name: &str,
        provider: windows_sys::core::GUID,
        keywords: u64,
        deliver: Deliver,
    ) -> std::io::Result<Self> {
        let name = win::wide(name);
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
                &provider,
                EVENT_CONTROL_CODE_ENABLE_PROVIDER,
                TRACE_LEVEL_INFORMATION as u8,
                keywords,
                0,
                0,
                std::ptr::null(),
            )
        };
        if status != 0 {
            stop(&name);
            return Err(std::io::Error::from_raw_os_error(status as i32));
        }
        let context = Box::into_raw(Box::new(Context { provider, deliver }));
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
            .name("etw".into())
            .spawn(move || {
                let handle = PROCESSTRACE_HANDLE { Value: trace.Value };
                // SAFETY: an open trace; returns once the session stops.
                let status =
                    unsafe { ProcessTrace(&handle, 1, std::ptr::null(), std::ptr::null()) };
                if status != 0 {
                    tracing::warn!(status, "an ETW trace ended");
                }
                // SAFETY: opened above; the callback runs no more.
                unsafe { CloseTrace(handle) };
                // SAFETY: the context boxed above, no longer used.
                drop(unsafe { Box::from_raw(context as *mut Context) });
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

/// The consumer's callback: hands the provider's events on.
unsafe extern "system" fn on_event(record: *mut EVENT_RECORD) {
    // SAFETY: ETW passes a valid record for the duration of the call.
    let r = unsafe { &*record };
    if r.UserContext.is_null() {
        return;
    }
    // SAFETY: the context set in `Session::start`, alive while the trace
    // is processed.
    let context = unsafe { &*(r.UserContext as *const Context) };
    let (p, k) = (r.EventHeader.ProviderId, context.provider);
    if (p.data1, p.data2, p.data3, p.data4) != (k.data1, k.data2, k.data3, k.data4) {
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
    // EVENT_HEADER_FLAG_32_BIT_HEADER: pointers are 4 bytes.
    let pointer = if r.EventHeader.Flags & 0x20 != 0 {
        4
    } else {
        8
    };
    let d = &r.EventHeader.EventDescriptor;
    (context.deliver)(&Record {
        id: d.Id,
        version: d.Version,
        pid: r.EventHeader.ProcessId,
        pointer,
        data,
    });
}

#[cfg(test)]
pub(crate) mod testing {
    /// Builds an event's user data field by field, packed as ETW writes
    /// it (the providers' parser tests).
    #[derive(Default)]
    pub(crate) struct Record(pub(crate) Vec<u8>);

    impl Record {
        pub(crate) fn u32(mut self, v: u32) -> Self {
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        pub(crate) fn u64(mut self, v: u64) -> Self {
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        /// A `Pointer` of `size` bytes.
        pub(crate) fn ptr(self, v: u64, size: usize) -> Self {
            if size == 4 {
                self.u32(v as u32)
            } else {
                self.u64(v)
            }
        }
        pub(crate) fn utf16(mut self, s: &str) -> Self {
            for u in s.encode_utf16().chain(Some(0)) {
                self.0.extend_from_slice(&u.to_le_bytes());
            }
            self
        }
        pub(crate) fn ansi(mut self, s: &str) -> Self {
            self.0.extend_from_slice(s.as_bytes());
            self.0.push(0);
            self
        }
        /// S-1-16-8192 (medium integrity): one sub-authority.
        pub(crate) fn label(mut self) -> Self {
            self.0.extend_from_slice(&[1, 1, 0, 0, 0, 0, 0, 16]);
            self.0.extend_from_slice(&8192u32.to_le_bytes());
            self
        }
    }
}
