//! What /proc tells about a process, read as soon as its exec is seen (a
//! short-lived process may already be gone; whatever could be read is
//! reported), and the pid listing the polling fallback compares.

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use mamori_proto::schema::{fit_str, max};

use crate::collector::process::ProcessInfo;

/// A view of a /proc file system (another root in tests).
#[derive(Debug, Clone)]
pub(crate) struct Procfs {
    root: PathBuf,
}

impl Default for Procfs {
    fn default() -> Self {
        Procfs {
            root: PathBuf::from("/proc"),
        }
    }
}

impl Procfs {
    fn path(&self, pid: u32, file: &str) -> PathBuf {
        self.root.join(pid.to_string()).join(file)
    }

    pub(crate) fn inspect(&self, pid: u32) -> ProcessInfo {
        // The executable first: it is what vanishes with the process.
        let exe = File::open(self.path(pid, "exe")).ok();
        let (ppid, uid) = self.status(pid);
        ProcessInfo {
            exe,
            exe_path: self.exe_path(pid).unwrap_or_default(),
            command_line: self.command_line(pid),
            ppid: ppid.unwrap_or(0),
            uid,
            session_id: 0,
        }
    }

    pub(crate) fn exe_path(&self, pid: u32) -> Option<String> {
        let target = std::fs::read_link(self.path(pid, "exe")).ok()?;
        Some(fit_str(
            target.to_string_lossy().into_owned(),
            max::PROCESS_EXE_PATH,
        ))
    }

    fn command_line(&self, pid: u32) -> String {
        let mut raw = Vec::new();
        let read = File::open(self.path(pid, "cmdline")).and_then(|f| {
            f.take(max::PROCESS_COMMAND_LINE as u64 + 4)
                .read_to_end(&mut raw)
        });
        if read.is_err() {
            return String::new();
        }
        while raw.last() == Some(&0) {
            raw.pop();
        }
        for b in &mut raw {
            if *b == 0 {
                *b = b' ';
            }
        }
        fit_str(
            String::from_utf8_lossy(&raw).into_owned(),
            max::PROCESS_COMMAND_LINE,
        )
    }

    /// Parent pid and real uid from `/proc/PID/status`.
    fn status(&self, pid: u32) -> (Option<u32>, Option<u32>) {
        let Ok(text) = std::fs::read_to_string(self.path(pid, "status")) else {
            return (None, None);
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse::<u32>().ok())
        };
        (field("PPid:"), field("Uid:"))
    }

    /// The real uid of `pid`, from `/proc/PID/status` alone.
    pub(crate) fn uid(&self, pid: u32) -> Option<u32> {
        self.status(pid).1
    }

    /// The pids of all processes (thread group leaders).
    pub(crate) fn pids(&self) -> std::io::Result<HashSet<u32>> {
        let mut pids = HashSet::new();
        for entry in std::fs::read_dir(&self.root)? {
            if let Some(pid) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) {
                pids.insert(pid);
            }
        }
        Ok(pids)
    }

    pub(crate) fn exists(&self, pid: u32) -> bool {
        Path::new(&self.root).join(pid.to_string()).exists()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let proc = Procfs::default();
        let me = std::process::id();
        let info = proc.inspect(me);
        let exe = std::env::current_exe().unwrap();
        assert_eq!(info.exe_path, exe.to_string_lossy());
        assert!(info.exe.is_some());
        assert_eq!(info.uid, Some(nix::unistd::getuid().as_raw()));
        assert_eq!(info.ppid, nix::unistd::getppid().as_raw() as u32);
        assert!(
            info.command_line.starts_with(&*exe.to_string_lossy()),
            "{}",
            info.command_line
        );
        assert!(proc.pids().unwrap().contains(&me));
    }

    #[test]
    fn gone_process_gives_what_there_is() {
        let info = Procfs::default().inspect(u32::MAX - 1);
        assert!(info.exe.is_none() && info.exe_path.is_empty() && info.uid.is_none());
    }

    #[test]
    fn command_line_nuls_become_spaces_and_length_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("7")).unwrap();
        let mut cmdline = b"/bin/echo\0hello\0w\xc3\xb6rld\0".to_vec();
        std::fs::write(dir.path().join("7/cmdline"), &cmdline).unwrap();
        let proc = Procfs {
            root: dir.path().into(),
        };
        assert_eq!(proc.command_line(7), "/bin/echo hello wörld");
        cmdline = "é".repeat(max::PROCESS_COMMAND_LINE).into_bytes();
        std::fs::write(dir.path().join("7/cmdline"), &cmdline).unwrap();
        let long = proc.command_line(7);
        assert_eq!(long.len(), max::PROCESS_COMMAND_LINE);
        assert!(long.chars().all(|c| c == 'é'));
    }
}
