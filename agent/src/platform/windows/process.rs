//! Process starts and stops on Windows.
//!
//! The source is ETW's `Microsoft-Windows-Kernel-Process` provider in a
//! real-time session of the agent's own ([`etw`]), which sees every start
//! and stop with parent, session, creation and exit time and exit code. At
//! start the collector checks that the session delivers (it starts itself
//! with `--version` and waits up to 5 s for that start); when the session
//! cannot be opened (not elevated; Wine answers "access denied") or does
//! not deliver, or ends later, it falls back to the *degraded mode*, said
//! so in a collector warning: a Toolhelp snapshot every [`POLL_INTERVAL`],
//! where a new pid is a start and a pid gone is a stop, and processes that
//! live shorter than the interval are missed.
//!
//! For each start the collector opens the process at once: image path
//! (`QueryFullProcessImageNameW`, else ETW's NT path turned into a drive
//! path), command line, user from its token. The poller keeps the handle
//! until the process exits, so that the stop carries the exit code and
//! time and the pid cannot be reused meanwhile (ETW's stop event carries
//! them itself).
//!
//! Banned apps are stopped with `TerminateProcess`; the agent run as a
//! blocked program's debugger is reported as that program's refused launch
//! (see [`launch`](super::launch)).

#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::c_void;
use std::fs::File;
use std::os::windows::io::{AsRawHandle, OwnedHandle};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use mamori_proto::agent::v1::{ProcessEvent, process_event::Action as ProcessAction};
use mamori_proto::schema::{fit_str, max};
use windows_sys::Win32::Foundation::{
    ERROR_INVALID_PARAMETER, FILETIME, HANDLE, STILL_ACTIVE, UNICODE_STRING,
};
use windows_sys::Win32::Security::{GetTokenInformation, TOKEN_QUERY, TOKEN_USER, TokenUser};
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, PROCESSENTRY32W, Process32FirstW, Process32NextW, TH32CS_SNAPPROCESS,
};
use windows_sys::Win32::System::Threading::{
    GetExitCodeProcess, GetProcessTimes, OpenProcess, OpenProcessToken, PROCESS_QUERY_INFORMATION,
    PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_SYNCHRONIZE, PROCESS_TERMINATE, PROCESS_VM_READ,
    QueryFullProcessImageNameW, TerminateProcess,
};

use super::launch::{self, IFEO_KEY, LaunchGuard};
use super::win::{account_name, from_wide, owned};
use crate::clock::now_us;
use crate::collector::process::{MAX_TRACKED, ProcessEnforcer, ProcessInfo, Reporter};
use crate::collector::{Collector, EventSink};
use crate::error::{Error, Result};
use crate::policy::PolicyState;
use etw::EtwProcess;

pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// The process collector (and, with a policy, the banned-app enforcer).
#[derive(Debug, Default)]
pub struct ProcessCollector {
    policy: Option<Arc<PolicyState>>,
    guard: Option<LaunchGuard>,
}

impl ProcessCollector {
    pub fn new() -> Self {
        Self::default()
    }

    /// Enforces `policy`'s banned apps.
    pub fn enforcing(mut self, policy: Arc<PolicyState>) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Also refuses launches of apps a `block` rule names, through Image
    /// File Execution Options (see [`launch`](super::launch)), marked as
    /// the agent's with `state_dir`.
    pub fn blocking_launches(mut self, state_dir: &std::path::Path) -> Self {
        let program_files =
            super::win::known_folder(&windows_sys::Win32::UI::Shell::FOLDERID_ProgramFiles);
        match (std::env::current_exe(), program_files) {
            (Ok(exe), Some(pf)) if launch::may_be_debugger(&exe, &pf) => {
                self.guard = Some(LaunchGuard::new(IFEO_KEY, &exe, state_dir));
            }
            (Ok(exe), _) => tracing::info!(
                exe = %exe.display(),
                "not installed below Program Files: block rules are enforced by kill on start"
            ),
            (Err(e), _) => {
                tracing::warn!(error = %e, "cannot find the agent's own path: no launch blocks")
            }
        }
        self
    }
}

/// Stops processes with `TerminateProcess` (exit code 1).
#[derive(Debug, Default)]
pub(crate) struct Terminator;

impl ProcessEnforcer for Terminator {
    fn kill(&self, pid: u32) -> String {
        // SAFETY: plain call; the handle is owned below.
        let h = unsafe { OpenProcess(PROCESS_TERMINATE, 0, pid) };
        let Some(h) = owned(h) else {
            let e = std::io::Error::last_os_error();
            return if e.raw_os_error() == Some(ERROR_INVALID_PARAMETER as i32) {
                "already gone".to_owned()
            } else {
                format!("could not be killed: {e}")
            };
        };
        // SAFETY: a process handle with PROCESS_TERMINATE.
        if unsafe { TerminateProcess(raw(&h), 1) } == 0 {
            return format!("could not be killed: {}", std::io::Error::last_os_error());
        }
        "killed".to_owned()
    }
}

fn raw(h: &OwnedHandle) -> HANDLE {
    h.as_raw_handle() as HANDLE
}

/// One entry of a Toolhelp snapshot.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) pid: u32,
    pub(crate) ppid: u32,
    /// The image's file name (not its path).
    pub(crate) name: String,
}

/// Every process running now.
pub(crate) fn snapshot() -> std::io::Result<Vec<Entry>> {
    // SAFETY: plain call; the handle is owned below.
    let snap = unsafe { CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0) };
    let snap = owned(snap).ok_or_else(std::io::Error::last_os_error)?;
    let mut out = Vec::with_capacity(256);
    // SAFETY: zeroed is a valid PROCESSENTRY32W; dwSize is set as required.
    let mut e: PROCESSENTRY32W = unsafe { std::mem::zeroed() };
    e.dwSize = size_of::<PROCESSENTRY32W>() as u32;
    // SAFETY: `e` is a PROCESSENTRY32W with its size set.
    let mut more = unsafe { Process32FirstW(raw(&snap), &mut e) } != 0;
    while more {
        out.push(Entry {
            pid: e.th32ProcessID,
            ppid: e.th32ParentProcessID,
            name: from_wide(&e.szExeFile),
        });
        // SAFETY: as above.
        more = unsafe { Process32NextW(raw(&snap), &mut e) } != 0;
    }
    Ok(out)
}

/// A handle on `pid` to query it (and wait for it).
pub(crate) fn open(pid: u32) -> Option<OwnedHandle> {
    // SAFETY: plain call; the handle is owned.
    owned(unsafe {
        OpenProcess(
            PROCESS_QUERY_LIMITED_INFORMATION | PROCESS_SYNCHRONIZE,
            0,
            pid,
        )
    })
}

/// The full path of the process's image.
pub(crate) fn image_path(h: &OwnedHandle) -> Option<String> {
    let mut buf = vec![0u16; 32 * 1024];
    let mut len = buf.len() as u32;
    // SAFETY: `len` is the buffer's size in characters.
    let ok = unsafe { QueryFullProcessImageNameW(raw(h), 0, buf.as_mut_ptr(), &mut len) };
    (ok != 0).then(|| fit_str(from_wide(&buf[..len as usize]), max::PROCESS_EXE_PATH))
}

/// The command line of `pid`: asked of the kernel (Windows 8.1 and later),
/// else read from the process's own memory (its PEB, as debuggers do;
/// also what works under Wine); empty when neither can be read.
pub(crate) fn command_line_of(pid: u32, h: &OwnedHandle) -> String {
    let asked = command_line(h);
    if !asked.is_empty() {
        return asked;
    }
    // SAFETY: plain call; the handle is owned.
    let Some(reader) =
        owned(unsafe { OpenProcess(PROCESS_QUERY_INFORMATION | PROCESS_VM_READ, 0, pid) })
    else {
        return String::new();
    };
    fit_str(
        command_line_from_peb(&reader).unwrap_or_default(),
        max::PROCESS_COMMAND_LINE,
    )
}

/// Reads `len` bytes at `at` in the process.
fn read_memory(h: &OwnedHandle, at: usize, out: &mut [u8]) -> Option<()> {
    use windows_sys::Win32::System::Diagnostics::Debug::ReadProcessMemory;
    let mut read = 0usize;
    // SAFETY: `out` is writable for its length; the address is the
    // other process's, read by the kernel.
    let ok = unsafe {
        ReadProcessMemory(
            raw(h),
            at as *const c_void,
            out.as_mut_ptr().cast(),
            out.len(),
            &mut read,
        )
    };
    (ok != 0 && read == out.len()).then_some(())
}

/// PEB → ProcessParameters (offset 0x20 on x64) → CommandLine, a
/// UNICODE_STRING at offset 0x70. The offsets are x64's (the agent and the
/// process read both 64-bit): other targets read nothing this way.
fn command_line_from_peb(h: &OwnedHandle) -> Option<String> {
    if !cfg!(target_arch = "x86_64") {
        return None;
    }
    use windows_sys::Wdk::System::Threading::{NtQueryInformationProcess, ProcessBasicInformation};
    // PROCESS_BASIC_INFORMATION: ExitStatus, PebBaseAddress, ... (six
    // pointer-sized fields).
    let mut pbi = [0usize; 6];
    let mut ret = 0u32;
    // SAFETY: the buffer is as large as the structure asked for.
    let status = unsafe {
        NtQueryInformationProcess(
            raw(h),
            ProcessBasicInformation,
            pbi.as_mut_ptr().cast(),
            size_of_val(&pbi) as u32,
            &mut ret,
        )
    };
    if status < 0 || pbi[1] == 0 {
        return None;
    }
    let mut word = [0u8; 8];
    read_memory(h, pbi[1] + 0x20, &mut word)?;
    let params = usize::from_le_bytes(word);
    // UNICODE_STRING: Length (u16), MaximumLength (u16), padding, Buffer.
    let mut us = [0u8; 16];
    read_memory(h, params + 0x70, &mut us)?;
    let len = usize::from(u16::from_le_bytes([us[0], us[1]]));
    let buffer = usize::from_le_bytes(us[8..16].try_into().ok()?);
    if len == 0 || buffer == 0 {
        return None;
    }
    let mut text = vec![0u8; len.min(2 * max::PROCESS_COMMAND_LINE)];
    read_memory(h, buffer, &mut text)?;
    let wide: Vec<u16> = text
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    Some(String::from_utf16_lossy(&wide))
}

/// The process's command line as the kernel gives it (Windows 8.1 and
/// later); empty when it cannot.
fn command_line(h: &OwnedHandle) -> String {
    use windows_sys::Wdk::System::Threading::{
        NtQueryInformationProcess, ProcessCommandLineInformation,
    };
    let mut buf = vec![0u64; 8 * 1024];
    let bytes = (buf.len() * 8) as u32;
    let mut ret = 0u32;
    // SAFETY: the buffer is `bytes` long and 8-aligned (what a
    // UNICODE_STRING header needs).
    let status = unsafe {
        NtQueryInformationProcess(
            raw(h),
            ProcessCommandLineInformation,
            buf.as_mut_ptr().cast::<c_void>(),
            bytes,
            &mut ret,
        )
    };
    if status < 0 {
        return String::new();
    }
    // SAFETY: on success the buffer starts with a UNICODE_STRING whose
    // Buffer points into the same buffer, Length bytes long.
    let text = unsafe {
        let us = &*(buf.as_ptr().cast::<UNICODE_STRING>());
        if us.Buffer.is_null() {
            return String::new();
        }
        let start = us.Buffer as usize;
        let base = buf.as_ptr() as usize;
        let len = us.Length as usize / 2;
        if start < base || start + len * 2 > base + bytes as usize {
            return String::new();
        }
        from_wide(std::slice::from_raw_parts(us.Buffer, len))
    };
    fit_str(text, max::PROCESS_COMMAND_LINE)
}

/// `DOMAIN\user` of the process's token.
pub(crate) fn user(h: &OwnedHandle) -> Option<String> {
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: plain call; the token handle is owned below.
    if unsafe { OpenProcessToken(raw(h), TOKEN_QUERY, &mut token) } == 0 {
        return None;
    }
    let token = owned(token)?;
    let mut buf = vec![0u64; 128];
    let mut len = 0u32;
    // SAFETY: the buffer is as long as said and 8-aligned for TOKEN_USER.
    let ok = unsafe {
        GetTokenInformation(
            raw(&token),
            TokenUser,
            buf.as_mut_ptr().cast::<c_void>(),
            (buf.len() * 8) as u32,
            &mut len,
        )
    };
    if ok == 0 {
        return None;
    }
    // SAFETY: filled with a TOKEN_USER whose SID lies in the buffer.
    unsafe {
        let tu = &*(buf.as_ptr().cast::<TOKEN_USER>());
        account_name(tu.User.Sid)
    }
}

/// Creation and exit times, in µs since the Unix epoch (exit is 0 while
/// it runs).
fn times(h: &OwnedHandle) -> Option<(i64, i64)> {
    let zero = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
    // SAFETY: four FILETIMEs to fill.
    let ok = unsafe { GetProcessTimes(raw(h), &mut created, &mut exited, &mut kernel, &mut user) };
    (ok != 0).then(|| (filetime_us(created), filetime_us(exited)))
}

/// A FILETIME (100 ns since 1601) in µs since 1970; 0 for 0.
pub(crate) fn filetime_us(ft: FILETIME) -> i64 {
    let t = (u64::from(ft.dwHighDateTime) << 32) | u64::from(ft.dwLowDateTime);
    if t == 0 {
        return 0;
    }
    (t as i64 - 116_444_736_000_000_000) / 10
}

/// The exit code of an exited process.
fn exit_code(h: &OwnedHandle) -> Option<i32> {
    let mut code = 0u32;
    // SAFETY: plain call.
    let ok = unsafe { GetExitCodeProcess(raw(h), &mut code) };
    (ok != 0 && code != STILL_ACTIVE as u32).then_some(code as i32)
}

impl Collector for ProcessCollector {
    fn name(&self) -> &'static str {
        "process"
    }

    fn run(self: Box<Self>, sink: EventSink) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let ProcessCollector { policy, guard } = *self;
            let reporter = Reporter::new(sink.clone(), policy.clone(), Arc::new(Terminator));
            let mut enforcing = Enforcing { policy, guard };
            match open_etw().await {
                Ok(etw) => {
                    tracing::info!("process starts and stops from ETW");
                    sink.degraded("process", None);
                    let reporter = etw_loop(etw, reporter, &mut enforcing, &sink).await;
                    sink.warn(
                        "process",
                        "etw",
                        "the ETW session ended: degraded mode from now on (process starts are polled every 250 ms)",
                    );
                    sink.degraded("process", Some(&degraded_mode("the ETW session ended")));
                    poll_loop(reporter, &mut enforcing, &sink).await
                }
                Err(why) => {
                    tracing::warn!(%why, "no ETW: polling processes");
                    sink.warn(
                        "process",
                        "toolhelp",
                        &format!("degraded mode: process starts are polled every 250 ms, so processes that live shorter are not seen ({why})"),
                    );
                    sink.degraded("process", Some(&degraded_mode(&why)));
                    poll_loop(reporter, &mut enforcing, &sink).await
                }
            }
        })
    }
}

/// The device's degraded-mode fact for the process source.
fn degraded_mode(why: &str) -> String {
    format!("Toolhelp polling every 250 ms, processes that live shorter are missed ({why})")
}

/// The policy and the launch blocks that follow it.
struct Enforcing {
    policy: Option<Arc<PolicyState>>,
    guard: Option<LaunchGuard>,
}

impl Enforcing {
    /// Brings the launch blocks in line with the policy; a block that
    /// could not be written is a collector warning.
    fn sync(&mut self, sink: &EventSink) {
        let (Some(guard), Some(policy)) = (self.guard.as_mut(), self.policy.as_ref()) else {
            return;
        };
        let failed = guard.sync(&policy.current());
        if !failed.is_empty() {
            sink.warn(
                "process",
                "image file execution options",
                &format!(
                    "not blocked before launch (killed on start instead): {}",
                    failed.join("; ")
                ),
            );
        }
    }
}

/// A working ETW session: its events, those that came during the check,
/// and the probe process's pid (not reported).
struct Etw {
    session: super::etw::Session,
    events: tokio::sync::mpsc::Receiver<EtwProcess>,
    early: Vec<EtwProcess>,
    probe: u32,
}

/// How long the session has to deliver the probe's start.
const ETW_PROBE_WAIT: Duration = Duration::from_secs(5);

/// Starts the ETW session and checks that it delivers: the agent starts
/// itself (`--version`, no window) and waits for that start.
async fn open_etw() -> std::result::Result<Etw, String> {
    use std::os::windows::process::CommandExt;
    let (tx, mut events) = tokio::sync::mpsc::channel(4096);
    let session = etw::start(Box::new(move |e| tx.try_send(e).is_ok()))
        .map_err(|e| format!("cannot start the ETW session: {e}"))?;
    let exe = std::env::current_exe().map_err(|e| format!("the agent's own path: {e}"))?;
    // CREATE_NO_WINDOW.
    let mut child = std::process::Command::new(exe)
        .arg("--version")
        .creation_flags(0x0800_0000)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the probe process: {e}"))?;
    let probe = child.id();
    let deadline = tokio::time::Instant::now() + ETW_PROBE_WAIT;
    let mut early = Vec::new();
    let seen = loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(e)) => {
                let is_probe = matches!(e, EtwProcess::Start { pid, .. } if pid == probe);
                early.push(e);
                if is_probe {
                    break true;
                }
            }
            _ => break false,
        }
    };
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    if !seen {
        return Err(format!(
            "the ETW session delivered no start for a probe process within {} s",
            ETW_PROBE_WAIT.as_secs()
        ));
    }
    Ok(Etw {
        session,
        events,
        early,
        probe,
    })
}

/// Reports what the ETW session delivers until it ends; gives the reporter
/// back for the poller.
async fn etw_loop(
    etw: Etw,
    mut reporter: Reporter,
    enforcing: &mut Enforcing,
    sink: &EventSink,
) -> Reporter {
    let Etw {
        session,
        mut events,
        early,
        probe,
    } = etw;
    let mut devices = etw::dos_devices();
    let policy = enforcing.policy.clone();
    // The probe's own start and stop are not reported; once it stopped,
    // its pid may be any process's.
    let mut probe = Some(probe);
    let mut handle = |reporter: &mut Reporter, e: EtwProcess| match e {
        EtwProcess::Start { pid, .. } if Some(pid) == probe => {}
        EtwProcess::Stop { pid, .. } if Some(pid) == probe => probe = None,
        EtwProcess::Start {
            pid,
            ppid,
            created_us,
            image,
            session_id,
        } => {
            // The event comes up to a second late: a handle on a process
            // created at another time is a later process with the same pid.
            let h = open(pid).filter(|h| {
                times(h).is_some_and(|(created, _)| (created - created_us).abs() < 10_000)
            });
            let exe_path = h.as_ref().and_then(image_path).unwrap_or_else(|| {
                let mut path = etw::nt_to_dos(&image, &devices);
                if path.starts_with('\\') {
                    // A drive mapped since: read the table again.
                    devices = etw::dos_devices();
                    path = etw::nt_to_dos(&image, &devices);
                }
                fit_str(path, max::PROCESS_EXE_PATH)
            });
            let start = Start {
                pid,
                ppid,
                occurred_at_us: created_us,
                session_id,
                exe_path,
                command_line: h
                    .as_ref()
                    .map(|h| command_line_of(pid, h))
                    .unwrap_or_default(),
                parent: open(ppid)
                    .filter(|_| ppid != 0)
                    .and_then(|h| image_path(&h))
                    .unwrap_or_default(),
                user: h.as_ref().and_then(user).unwrap_or_default(),
            };
            report_start(reporter, policy.as_ref(), start);
        }
        EtwProcess::Stop {
            pid,
            exited_us,
            exit_code,
        } => reporter.report_stop(pid, exited_us, exit_code),
    };
    for e in early {
        handle(&mut reporter, e);
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut dropped = 0;
    loop {
        tokio::select! {
            e = events.recv() => match e {
                Some(e) => handle(&mut reporter, e),
                None => break,
            },
            _ = tick.tick() => {
                enforcing.sync(sink);
                let now = etw::DROPPED.load(std::sync::atomic::Ordering::Relaxed);
                if now > dropped {
                    sink.warn("process", "etw", &format!("{now} process events dropped: the collector fell behind"));
                    dropped = now;
                }
            }
        }
    }
    drop(session);
    reporter
}

/// The Toolhelp poller (the degraded mode), until the task is dropped.
async fn poll_loop(reporter: Reporter, enforcing: &mut Enforcing, sink: &EventSink) -> Result<()> {
    let mut poller = Poller {
        reporter,
        policy: enforcing.policy.clone(),
        running: HashMap::new(),
        leaving: Vec::new(),
        unread: Vec::new(),
    };
    let first = snapshot().map_err(Error::io("listing processes"))?;
    // What runs already is no start.
    for e in &first {
        poller.running.insert(e.pid, None);
    }
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        enforcing.sync(sink);
        match snapshot() {
            Ok(now) => poller.compare(&now),
            Err(e) => tracing::warn!(error = %e, "listing processes failed"),
        }
    }
}

/// How long a process gone from the snapshot may still say it runs (its
/// exit not yet complete) before it is forgotten without a stop.
const LEAVING_MAX: Duration = Duration::from_secs(5);

/// The processes seen in the last snapshot, each with the handle kept
/// since its start was reported.
struct Poller {
    reporter: Reporter,
    /// For the verdict on a launch refused before it ran.
    policy: Option<Arc<PolicyState>>,
    running: HashMap<u32, Option<OwnedHandle>>,
    /// Gone from the snapshot while their handle still said "running":
    /// asked again at the next polls.
    leaving: Vec<(u32, OwnedHandle, std::time::Instant)>,
    /// Started processes whose command line could not be read yet (under
    /// Wine a new process sets it up itself, a moment after it appears):
    /// reported at the next poll, whatever is readable then.
    unread: Vec<Unread>,
}

/// A start waiting one poll for its command line.
struct Unread {
    entry: Entry,
    handle: OwnedHandle,
    parent: String,
}

impl Poller {
    fn compare(&mut self, now: &[Entry]) {
        let by_pid: HashMap<u32, &Entry> = now.iter().map(|e| (e.pid, e)).collect();
        // Starts first: a stop below may be of one of them.
        for u in std::mem::take(&mut self.unread) {
            // Read again: it was not readable a poll ago.
            let command_line = command_line_of(u.entry.pid, &u.handle);
            self.report_start(&u.entry, &u.handle, u.parent, command_line);
        }
        let gone: Vec<u32> = self
            .running
            .keys()
            .filter(|pid| !by_pid.contains_key(pid))
            .copied()
            .collect();
        for pid in gone {
            match self.running.remove(&pid).flatten() {
                Some(h) => self.leaving.push((pid, h, std::time::Instant::now())),
                None => self.reporter.forget(pid),
            }
        }
        let leaving = std::mem::take(&mut self.leaving);
        for (pid, h, since) in leaving {
            if let Some(code) = exit_code(&h) {
                let now = now_us();
                let at = times(&h)
                    .map(|(_, exit)| exit)
                    .filter(|&t| t > now - 60_000_000 && t <= now);
                self.reporter.report_stop(pid, at.unwrap_or(now), code);
            } else if since.elapsed() < LEAVING_MAX {
                self.leaving.push((pid, h, since));
            } else {
                self.reporter.forget(pid);
            }
        }
        let mut new: Vec<&Entry> = now
            .iter()
            .filter(|e| e.pid != 0 && !self.running.contains_key(&e.pid))
            .collect();
        new.sort_unstable_by_key(|e| e.pid);
        for e in new {
            let handle = self.start(e, &by_pid);
            let keep = self.running.len() < MAX_TRACKED;
            self.running.insert(e.pid, handle.filter(|_| keep));
        }
    }

    /// Reports the start of `e` (or leaves it for the next poll when its
    /// command line is not readable yet); returns the handle kept for its
    /// stop.
    fn start(&mut self, e: &Entry, by_pid: &HashMap<u32, &Entry>) -> Option<OwnedHandle> {
        let parent = parent_path(e.ppid, by_pid);
        let Some(h) = open(e.pid) else {
            // Gone already, or protected: what the snapshot said.
            let info = ProcessInfo {
                exe_path: e.name.clone(),
                ppid: e.ppid,
                ..Default::default()
            };
            self.reporter
                .report_start(e.pid, now_us(), info, parent, String::new(), |_| true);
            return None;
        };
        let command_line = command_line_of(e.pid, &h);
        if command_line.is_empty()
            && exit_code(&h).is_none()
            && let Ok(handle) = h.try_clone()
        {
            self.unread.push(Unread {
                entry: e.clone(),
                handle,
                parent,
            });
            return Some(h);
        }
        self.report_start(e, &h, parent, command_line);
        Some(h)
    }

    /// Reports `e`'s start with the `command_line` already read.
    fn report_start(&mut self, e: &Entry, h: &OwnedHandle, parent: String, command_line: String) {
        let exe_path = image_path(h).unwrap_or_else(|| e.name.clone());
        // The creation time, when it is believable (it came after the last
        // snapshot, give or take; Wine gives garbage for some processes).
        let now = now_us();
        let occurred_at_us = times(h)
            .map(|(created, _)| created)
            .filter(|&t| t > now - 60_000_000 && t <= now)
            .unwrap_or(now);
        let start = Start {
            pid: e.pid,
            ppid: e.ppid,
            occurred_at_us,
            exe_path,
            command_line,
            parent,
            user: user(h).unwrap_or_default(),
            session_id: session_of(e.pid),
        };
        report_start(&mut self.reporter, self.policy.as_ref(), start);
    }
}

/// A process start, read.
struct Start {
    pid: u32,
    ppid: u32,
    occurred_at_us: i64,
    exe_path: String,
    command_line: String,
    parent: String,
    user: String,
    session_id: u32,
}

/// Reports a start; the agent run as a blocked program's debugger is
/// reported as that program's refused launch instead.
fn report_start(reporter: &mut Reporter, policy: Option<&Arc<PolicyState>>, s: Start) {
    // Only the agent's own program (the IFEO debugger) is a refused launch:
    // anyone may run a copy named mamori-agent.exe with `blocked`. (Its
    // own path is asked only for such a command line, not on every start.)
    let own = || {
        std::env::current_exe()
            .ok()
            .is_some_and(|exe| exe.to_string_lossy().eq_ignore_ascii_case(&s.exe_path))
    };
    if let Some(program) = launch::trampoline_target(&s.command_line).filter(|_| own()) {
        let policy = policy.map(|p| p.current());
        let verdict = policy.as_ref().and_then(|p| p.check_launch(&program));
        let (reason, revision) =
            verdict.map_or_else(|| ("banned app".to_owned(), 0), |v| (v.reason, v.revision));
        let event = ProcessEvent {
            action: ProcessAction::Blocked as i32,
            session_id: s.session_id,
            pid: s.pid,
            parent_pid: s.ppid,
            exe_path: fit_str(program, max::PROCESS_EXE_PATH),
            command_line: command_line_after_trampoline(&s.command_line),
            parent_exe_path: s.parent,
            blocked_reason: format!(
                "{reason}: blocked before launch (Image File Execution Options)"
            ),
            policy_revision: revision,
            ..Default::default()
        };
        reporter.report_refused(s.occurred_at_us, s.user, event);
        return;
    }
    let info = ProcessInfo {
        exe: File::open(&s.exe_path).ok(),
        command_line: s.command_line,
        exe_path: s.exe_path,
        ppid: s.ppid,
        uid: None,
        session_id: s.session_id,
    };
    reporter.report_start(s.pid, s.occurred_at_us, info, s.parent, s.user, |pid| {
        open(pid).is_some()
    });
}

/// The logon session a process runs in (0 when it cannot be asked).
fn session_of(pid: u32) -> u32 {
    let mut session = 0;
    // SAFETY: plain out-parameter.
    if unsafe { windows_sys::Win32::System::RemoteDesktop::ProcessIdToSessionId(pid, &mut session) }
        == 0
    {
        return 0;
    }
    session
}

/// The refused program's own command line, from the trampoline's.
fn command_line_after_trampoline(line: &str) -> String {
    let marker = format!(" {} ", launch::TRAMPOLINE);
    line.find(&marker)
        .map(|at| line[at + marker.len()..].trim().to_owned())
        .unwrap_or_default()
}

/// The image path of the parent, if it still runs.
fn parent_path(ppid: u32, by_pid: &HashMap<u32, &Entry>) -> String {
    if ppid == 0 || !by_pid.contains_key(&ppid) {
        return String::new();
    }
    open(ppid)
        .and_then(|h| image_path(&h))
        .unwrap_or_else(|| by_pid[&ppid].name.clone())
}

pub(crate) mod etw;
#[cfg(test)]
mod tests;
