//! Linux: the kernel process connector and fanotify, wtmp, sysfs and
//! uevents, CUPS's page log, dpkg, /etc/passwd, systemd.

pub mod devices;
pub mod environment;
pub(crate) mod facts;
pub(crate) mod fanotify;
pub(crate) mod fs;
pub mod logon;
pub(crate) mod mounts;
pub(crate) mod netlink;
pub mod print;
pub mod process;
pub mod security;
pub mod service;
pub mod software;
mod tail;
pub(crate) mod users;

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
use process::procfs::Procfs;
use users::Users;

/// The paths Linux's sources read: the real ones, or a fake tree in tests.
#[derive(Debug, Clone)]
pub struct PlatformOptions {
    /// The wtmp file the logon collector reads.
    pub wtmp_path: PathBuf,
    /// Where sysfs is (USB devices, block devices) and the mount table the
    /// device collector reads.
    pub sysfs_root: PathBuf,
    pub mount_table: PathBuf,
    /// CUPS's page log, which the print collector reads.
    pub cups_page_log: PathBuf,
    /// dpkg's status database, which the software collector reads.
    pub dpkg_status: PathBuf,
}

impl Default for PlatformOptions {
    /// /var/log/wtmp, /sys, /proc/self/mounts, /var/log/cups/page_log,
    /// /var/lib/dpkg/status.
    fn default() -> Self {
        PlatformOptions {
            wtmp_path: PathBuf::from(logon::DEFAULT_WTMP),
            sysfs_root: PathBuf::from("/sys"),
            mount_table: PathBuf::from(mounts::SYSTEM),
            cups_page_log: PathBuf::from(print::DEFAULT_PAGE_LOG),
            dpkg_status: PathBuf::from(software::DEFAULT_DPKG_STATUS),
        }
    }
}

/// `mamori-agent run`'s Linux arguments.
#[derive(Debug, clap::Args)]
pub struct PlatformArgs {
    /// The wtmp file to watch for logons.
    #[arg(long, default_value = logon::DEFAULT_WTMP)]
    wtmp: PathBuf,
    /// Where sysfs is mounted (USB and block devices).
    #[arg(long, default_value = "/sys")]
    sysfs_root: PathBuf,
    /// The mount table (to remount read-only media).
    #[arg(long, default_value = mounts::SYSTEM)]
    mount_table: PathBuf,
    /// CUPS's page log (print jobs).
    #[arg(long, default_value = print::DEFAULT_PAGE_LOG)]
    cups_page_log: PathBuf,
    /// dpkg's status database (installed software).
    #[arg(long, default_value = software::DEFAULT_DPKG_STATUS)]
    dpkg_status: PathBuf,
}

impl PlatformArgs {
    pub fn options(self) -> PlatformOptions {
        PlatformOptions {
            wtmp_path: self.wtmp,
            sysfs_root: self.sysfs_root,
            mount_table: self.mount_table,
            cups_page_log: self.cups_page_log,
            dpkg_status: self.dpkg_status,
        }
    }
}

/// The directories watched for file operations and searched for browser
/// histories by default: users' homes.
pub(crate) fn default_watch_dirs() -> Vec<PathBuf> {
    vec![PathBuf::from("/home")]
}

pub(crate) fn default_browser_homes() -> Vec<PathBuf> {
    vec![PathBuf::from("/home"), PathBuf::from("/root")]
}

/// The browsers whose history is read: name, profile directory below a
/// home, history file in each profile.
pub(crate) const BROWSERS: &[(&str, &str, &str)] = &[
    ("chromium", ".config/chromium", "History"),
    ("chrome", ".config/google-chrome", "History"),
    ("edge", ".config/microsoft-edge", "History"),
    ("firefox", ".mozilla/firefox", "places.sqlite"),
];

/// Where the web block list is written by default: each Chromium-based
/// browser's managed-policy directory, and Firefox's policies.json.
pub(crate) const DEFAULT_CHROMIUM_POLICY_DIRS: &[&str] = &[
    "/etc/chromium/policies/managed",
    "/etc/opt/chrome/policies/managed",
    "/etc/opt/edge/policies/managed",
];
pub(crate) const DEFAULT_FIREFOX_POLICY_DIRS: &[&str] = &["/etc/firefox/policies"];

/// Browsers read their policies from files on Linux (the policy
/// directories the web collector writes): nothing else to write.
pub(crate) fn write_browser_policies(
    _blocklist: &[String],
    _allowlist: &[String],
    _firefox: &[String],
) -> bool {
    true
}

/// Paths are compared as they are.
pub(crate) const PATH_CASE: mamori_pathglob::Case = mamori_pathglob::Case::Sensitive;

/// What separates a path's components.
pub(crate) const SEPARATORS: &[char] = &['/'];

/// Device and inode.
pub(crate) fn file_id(_file: &File, meta: &Metadata) -> Option<FileId> {
    Some(FileId {
        volume: meta.dev(),
        file: meta.ino(),
    })
}

/// Who owns files, by name (from /etc/passwd).
#[derive(Debug)]
pub(crate) struct Owners(Users);

impl Owners {
    pub(crate) fn new() -> Self {
        Owners(Users::new("/etc/passwd"))
    }

    pub(crate) fn of(&mut self, path: &Path) -> Option<String> {
        let uid = std::fs::metadata(path).ok()?.uid();
        Some(self.0.name(uid))
    }
}

/// What the file collector needs of Linux: fanotify, /proc, /etc/passwd,
/// and the removable media from sysfs and the mount table.
#[derive(Debug)]
struct LinuxFiles {
    sysfs: PathBuf,
    mounts: PathBuf,
    procfs: Procfs,
    users: Mutex<Users>,
}

impl FileOs for LinuxFiles {
    fn open_source(&self) -> io::Result<Box<dyn FileSource>> {
        fanotify::Fanotify::open()
            .map(|f| Box::new(f) as Box<dyn FileSource>)
            .map_err(|e| io::Error::new(e.kind(), format!("{e} (fanotify needs root)")))
    }

    fn removable_media(&self) -> Vec<Medium> {
        devices::removable_media(&self.sysfs, &self.mounts)
    }

    fn program(&self, pid: u32) -> Option<String> {
        self.procfs.exe_path(pid)
    }

    fn user(&self, pid: u32) -> Option<String> {
        let uid = self.procfs.uid(pid)?;
        Some(
            self.users
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .name(uid),
        )
    }

    fn owner(&self, path: &Path) -> Option<String> {
        let uid = std::fs::metadata(path).ok()?.uid();
        Some(
            self.users
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .name(uid),
        )
    }
}

/// The file collector's view of Linux, with sysfs and the mount table at
/// these paths.
pub(crate) fn file_os(sysfs: &Path, mounts: &Path) -> Arc<dyn FileOs> {
    Arc::new(LinuxFiles {
        sysfs: sysfs.to_owned(),
        mounts: mounts.to_owned(),
        procfs: Procfs::default(),
        users: Mutex::new(Users::new("/etc/passwd")),
    })
}

/// Linux's collectors for `opts`.
pub(crate) fn collectors(
    opts: &RunOptions,
    state: &StateDir,
    policy: &Arc<PolicyState>,
) -> Vec<Box<dyn Collector>> {
    let p = &opts.platform;
    let mut list: Vec<Box<dyn Collector>> = Vec::new();
    if opts.collectors.process {
        list.push(Box::new(
            process::ProcessCollector::new().enforcing(Arc::clone(policy)),
        ));
    }
    if opts.collectors.devices {
        list.push(Box::new(DeviceCollector::new(
            Box::new(devices::SysfsDevices::new(p.sysfs_root.clone())),
            Box::new(devices::SysfsEnforcer::new(
                p.sysfs_root.clone(),
                p.mount_table.clone(),
            )),
            Arc::clone(policy),
        )));
    }
    if opts.collectors.logon {
        list.push(Box::new(logon::LogonCollector::new(
            &p.wtmp_path,
            state.file("wtmp.offset"),
        )));
    }
    if opts.collectors.environment {
        list.push(Box::new(EnvironmentCollector::new(
            Box::new(environment::LinuxProbe::new(&p.sysfs_root)),
            state.file("environment.json"),
            opts.environment_poll,
        )));
    }
    if opts.collectors.software {
        list.push(Box::new(
            software::SoftwareCollector::new(&p.dpkg_status, state.file("software.json"))
                .with_poll_interval(opts.software_poll),
        ));
    }
    if opts.collectors.files {
        list.push(Box::new(FileCollector::new(
            opts.watch_dirs.clone(),
            Arc::clone(policy),
            file_os(&p.sysfs_root, &p.mount_table),
        )));
    }
    if opts.collectors.web {
        list.push(Box::new(WebCollector::for_run(opts, state, policy)));
    }
    if opts.collectors.security {
        list.push(Box::new(SecurityCollector::new(
            Box::new(security::LinuxSecurityProbe::new(
                &p.sysfs_root,
                &p.mount_table,
            )),
            state.file("security.json"),
            opts.security_poll,
        )));
    }
    if opts.collectors.print {
        list.push(Box::new(print::PrintCollector::new(
            &p.cups_page_log,
            state.file("print.offset"),
        )));
    }
    list
}
