//! Windows: a Toolhelp process poller with `TerminateProcess`,
//! `ReadDirectoryChangesW`, the registry, `%ProgramData%`, access lists.
//! Each module says what only a real Windows PC exercises.

#![allow(unsafe_code)]

pub(crate) mod devices;
pub mod environment;
pub(crate) mod etw;
pub(crate) mod facts;
pub(crate) mod files;
pub(crate) mod files_etw;
pub(crate) mod fs;
pub mod launch;
pub mod print;
pub mod process;
pub mod security;
pub mod service;
pub mod session;
pub mod software;
pub(crate) mod web;
pub(crate) mod win;

use std::fs::{File, Metadata};
use std::io;
use std::os::windows::io::AsRawHandle;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use windows_sys::Win32::Foundation::{HLOCAL, LocalFree};
use windows_sys::Win32::Security::Authorization::{GetNamedSecurityInfoW, SE_FILE_OBJECT};
use windows_sys::Win32::Security::{OWNER_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, PSID};
use windows_sys::Win32::Storage::FileSystem::{
    BY_HANDLE_FILE_INFORMATION, GetDriveTypeW, GetFileInformationByHandle, GetLogicalDrives,
};

use super::{FileId, Medium};
use crate::collector::Collector;
use crate::collector::devices::DeviceCollector;
use crate::collector::environment::EnvironmentCollector;
use crate::collector::files::{FileCollector, FileOs, FileSource};
use crate::collector::security::SecurityCollector;
use crate::collector::web::WebCollector;
use crate::policy::PolicyState;
use crate::run::RunOptions;
use crate::state::StateDir;

/// Nothing to set yet: Windows's sources read no files of their own.
#[derive(Debug, Clone, Default)]
pub struct PlatformOptions {}

/// `mamori-agent run`'s Windows arguments (none yet).
#[derive(Debug, clap::Args)]
pub struct PlatformArgs {}

impl PlatformArgs {
    pub fn options(self) -> PlatformOptions {
        PlatformOptions {}
    }
}

/// Windows compares paths regardless of case.
pub(crate) const PATH_CASE: mamori_pathglob::Case = mamori_pathglob::Case::Insensitive;

/// `C:\Users` (the profiles' folder).
fn profiles_dir() -> PathBuf {
    win::known_folder(&windows_sys::Win32::UI::Shell::FOLDERID_UserProfiles)
        .unwrap_or_else(|| PathBuf::from(r"C:\Users"))
}

pub(crate) fn default_watch_dirs() -> Vec<PathBuf> {
    vec![profiles_dir()]
}

pub(crate) fn default_browser_homes() -> Vec<PathBuf> {
    vec![profiles_dir()]
}

/// The browsers whose history is read: name, profile directory below a
/// user's profile, history file in each browser profile.
pub(crate) const BROWSERS: &[(&str, &str, &str)] = &[
    ("chromium", r"AppData\Local\Chromium\User Data", "History"),
    (
        "chrome",
        r"AppData\Local\Google\Chrome\User Data",
        "History",
    ),
    ("edge", r"AppData\Local\Microsoft\Edge\User Data", "History"),
    (
        "firefox",
        r"AppData\Roaming\Mozilla\Firefox\Profiles",
        "places.sqlite",
    ),
];

/// Browsers take their policies from the registry on Windows (see
/// [`write_browser_policies`]): no policy files.
pub(crate) const DEFAULT_CHROMIUM_POLICY_DIRS: &[&str] = &[];
pub(crate) const DEFAULT_FIREFOX_POLICY_DIRS: &[&str] = &[];

/// Writes the web block list into the browsers' registry policies;
/// whether it was (a failure is logged, and tried again).
pub(crate) fn write_browser_policies(
    blocklist: &[String],
    allowlist: &[String],
    firefox: &[String],
) -> bool {
    match web::write("", blocklist, allowlist, firefox) {
        Ok(()) => {
            tracing::info!(
                hosts = blocklist.len(),
                "web block list written to the browsers' policies"
            );
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot write the web block list; trying again at the next look");
            false
        }
    }
}

/// What separates a path's components.
pub(crate) const SEPARATORS: &[char] = &['/', '\\'];

/// Volume serial number and file index.
pub(crate) fn file_id(file: &File, _meta: &Metadata) -> Option<FileId> {
    // SAFETY: zeroed is a valid BY_HANDLE_FILE_INFORMATION to fill.
    let mut info: BY_HANDLE_FILE_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: a valid file handle for the duration of the call.
    let ok = unsafe { GetFileInformationByHandle(file.as_raw_handle() as _, &mut info) };
    (ok != 0).then(|| FileId {
        volume: u64::from(info.dwVolumeSerialNumber),
        file: (u64::from(info.nFileIndexHigh) << 32) | u64::from(info.nFileIndexLow),
    })
}

/// The account that owns a file, as `DOMAIN\name`.
pub(crate) fn file_owner(path: &Path) -> Option<String> {
    let wide = win::wide_path(path);
    let mut owner: PSID = std::ptr::null_mut();
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: the path is NUL-terminated; `owner` points into `sd`, which
    // is LocalAlloc'd and freed below.
    let status = unsafe {
        GetNamedSecurityInfoW(
            wide.as_ptr(),
            SE_FILE_OBJECT,
            OWNER_SECURITY_INFORMATION,
            &mut owner,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut sd,
        )
    };
    if status != 0 {
        return None;
    }
    // SAFETY: `owner` is valid while `sd` lives.
    let name = unsafe { win::account_name(owner) };
    // SAFETY: allocated by the call.
    unsafe { LocalFree(sd as HLOCAL) };
    name
}

/// Who owns files, by name.
#[derive(Debug)]
pub(crate) struct Owners;

impl Owners {
    pub(crate) fn new() -> Self {
        Owners
    }

    pub(crate) fn of(&mut self, path: &Path) -> Option<String> {
        file_owner(path)
    }
}

/// The drives (`C:\`) whose `GetDriveTypeW` is one of `kinds`.
pub(crate) fn drives_of_type(kinds: &[u32]) -> Vec<String> {
    // SAFETY: plain call.
    let mask = unsafe { GetLogicalDrives() };
    (0..26u8)
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| format!("{}:\\", char::from(b'A' + i)))
        .filter(|root| {
            let wide = win::wide(root);
            // SAFETY: a NUL-terminated root path.
            kinds.contains(&unsafe { GetDriveTypeW(wide.as_ptr()) })
        })
        .collect()
}

/// The removable drives (USB sticks, card readers, floppies), by letter.
/// Their vendor, product and serial need SetupAPI, which is not used yet.
pub(crate) fn removable_drives() -> Vec<Medium> {
    // DRIVE_REMOVABLE and DRIVE_CDROM.
    drives_of_type(&[2, 5])
        .into_iter()
        .map(|root| Medium {
            mount_point: PathBuf::from(root),
            vendor_id: String::new(),
            product_id: String::new(),
            serial: String::new(),
        })
        .collect()
}

/// What the file collector needs of Windows.
#[derive(Debug)]
struct WindowsFiles;

impl FileOs for WindowsFiles {
    /// ETW's Kernel-File provider when it delivers; else
    /// `ReadDirectoryChangesW`, the degraded mode.
    fn open_source(&self) -> io::Result<Box<dyn FileSource>> {
        match files_etw::EtwFiles::open() {
            Ok(source) => {
                tracing::info!("file operations from ETW");
                Ok(Box::new(source))
            }
            Err(e) => Ok(Box::new(files::DirectoryChanges::instead_of_etw(
                e.to_string(),
            ))),
        }
    }

    fn removable_media(&self) -> Vec<Medium> {
        removable_drives()
    }

    fn program(&self, pid: u32) -> Option<String> {
        process::open(pid).and_then(|h| process::image_path(&h))
    }

    fn user(&self, pid: u32) -> Option<String> {
        process::open(pid).and_then(|h| process::user(&h))
    }

    fn owner(&self, path: &Path) -> Option<String> {
        file_owner(path)
    }
}

/// Windows's collectors for `opts`.
pub(crate) fn collectors(
    opts: &RunOptions,
    state: &StateDir,
    policy: &Arc<PolicyState>,
) -> Vec<Box<dyn Collector>> {
    let mut list: Vec<Box<dyn Collector>> = Vec::new();
    let c = &opts.collectors;
    if c.process {
        list.push(Box::new(
            process::ProcessCollector::new()
                .enforcing(Arc::clone(policy))
                .blocking_launches(&opts.state_dir),
        ));
    }
    if c.files {
        list.push(Box::new(FileCollector::new(
            opts.watch_dirs.clone(),
            Arc::clone(policy),
            Arc::new(WindowsFiles),
        )));
    }
    if c.web {
        list.push(Box::new(WebCollector::for_run(opts, state, policy)));
    }
    if c.devices {
        list.push(Box::new(DeviceCollector::new(
            Box::new(devices::SetupApiDevices::default()),
            Box::new(devices::DevNodeEnforcer::new(devices::POLICY_KEY)),
            Arc::clone(policy),
        )));
    }
    if c.logon {
        list.push(Box::new(session::SessionCollector::new(
            state.file("boot.json"),
        )));
    }
    if c.print {
        list.push(Box::new(print::PrintCollector::new(
            state.file("print.json"),
        )));
    }
    if c.environment {
        list.push(Box::new(EnvironmentCollector::new(
            Box::new(environment::WindowsProbe),
            state.file("environment.json"),
            opts.environment_poll,
        )));
    }
    if c.security {
        list.push(Box::new(SecurityCollector::new(
            Box::new(security::WindowsSecurityProbe),
            state.file("security.json"),
            opts.security_poll,
        )));
    }
    if c.software {
        list.push(Box::new(software::SoftwareCollector::new(
            state.file("software.json"),
            opts.software_poll,
        )));
    }
    list
}
