//! The mount table (`/proc/self/mounts`): what is mounted where, read by
//! the device collector (media to remount read-only, media files are
//! on), the launch guard and the file collector (mounts to mark).

use std::path::{Path, PathBuf};

/// File systems no program is started from and no person's file lives on.
const PSEUDO: &[&str] = &[
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devpts",
    "mqueue",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "autofs",
    "fusectl",
    "configfs",
    "hugetlbfs",
    "binfmt_misc",
    "nsfs",
    "rpc_pipefs",
    "efivarfs",
    "selinuxfs",
    "devtmpfs",
];

/// The system's mount table.
pub(crate) const SYSTEM: &str = "/proc/self/mounts";

/// Tells when something is mounted or unmounted: the mount table, open,
/// polls as a priority event (`POLLPRI`) once per change since the last
/// poll. Watchers add it to their `poll` instead of reading the table
/// every few seconds to find out.
#[derive(Debug)]
pub(crate) struct MountWatch(std::fs::File);

impl MountWatch {
    pub(crate) fn open() -> Option<Self> {
        std::fs::File::open(SYSTEM).ok().map(Self)
    }

    /// Whether `revents` of this watch's poll entry say the table changed.
    pub(crate) fn fired(revents: i16) -> bool {
        revents & (libc::POLLPRI | libc::POLLERR) != 0
    }
}

impl std::os::fd::AsFd for MountWatch {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    /// What is mounted (`/dev/sdb1`, `tmpfs`).
    pub(crate) source: String,
    /// Where, unescaped.
    pub(crate) target: PathBuf,
    pub(crate) fstype: String,
}

impl Mount {
    /// Whether it is a pseudo file system (proc, sysfs, cgroup...).
    pub(crate) fn is_pseudo(&self) -> bool {
        PSEUDO.contains(&self.fstype.as_str())
    }
}

/// Calls `mark` for every mount of a real file system (not a pseudo one)
/// that is not in `marked` yet, and adds those it marked; returns how many
/// are marked in all. The fanotify groups that watch every mount (the
/// exec witness, the launch guard, the file collector's execs) share it;
/// a mount gone takes its mark, so they empty `marked` when a
/// [`MountWatch`] fires.
pub(crate) fn mark_new(
    marked: &mut std::collections::HashSet<PathBuf>,
    mut mark: impl FnMut(&Path) -> std::io::Result<()>,
) -> usize {
    for mount in read(Path::new(SYSTEM)) {
        if mount.is_pseudo() || marked.contains(&mount.target) {
            continue;
        }
        match mark(&mount.target) {
            Ok(()) => {
                marked.insert(mount.target);
            }
            Err(e) => {
                tracing::debug!(mount = %mount.target.display(), error = %e, "mount not marked")
            }
        }
    }
    marked.len()
}

/// The mounts listed in `table` (a file in the format of
/// `/proc/self/mounts`); none when it cannot be read.
pub(crate) fn read(table: &Path) -> Vec<Mount> {
    let text = std::fs::read_to_string(table).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            Some(Mount {
                source: unescape(fields.next()?),
                target: PathBuf::from(unescape(fields.next()?)),
                fstype: fields.next()?.to_owned(),
            })
        })
        .collect()
}

/// The table escapes spaces and the like as octal (`\040`).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_read_and_unescaped() {
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path().join("mounts");
        std::fs::write(
            &table,
            "/dev/sdb1 /media/My\\040Stick vfat rw 0 0\nproc /proc proc rw 0 0\nbroken\n",
        )
        .unwrap();
        let mounts = read(&table);
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].target, Path::new("/media/My Stick"));
        assert_eq!(mounts[0].source, "/dev/sdb1");
        assert!(!mounts[0].is_pseudo() && mounts[1].is_pseudo());
        assert_eq!(unescape("/plain"), "/plain");
        assert!(read(&dir.path().join("missing")).is_empty());
    }
}
