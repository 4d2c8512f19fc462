//! The security status of a Linux PC:
//!
//! - **Updates**: `apt-get -s upgrade` (a simulation: it changes nothing
//!   and takes no lock) lists what would be installed; an update from a
//!   `-security` suite is a security update. Without apt, none are known.
//!   It costs about 2 s of CPU, so it runs again only when apt's package
//!   lists or dpkg's status changed, or a day has passed.
//! - **Antivirus**: ClamAV, where its signature databases are
//!   (`/var/lib/clamav/daily.c[lv]d`): their version and the days since
//!   they were updated; enabled when `clamd` runs.
//! - **Firewall**: ufw when `/etc/ufw/ufw.conf` says `ENABLED=yes`, else
//!   nftables when its ruleset has an input hook.
//! - **Disk encryption**: the root file system on a dm-crypt device
//!   (`/sys/block/dm-*/dm/uuid` starting `CRYPT-`).
//! - **Patch level**: the distribution (`/etc/os-release`) and kernel.
//!
//! Every path is under a root (`/` on a PC, a tree in tests), and the
//! programs it runs can be changed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use mamori_proto::agent::v1::SecurityStatusEvent;

use crate::collector::security::SecurityProbe;

/// Reads the PC (or a tree standing in for it).
#[derive(Debug, Clone)]
pub struct LinuxSecurityProbe {
    root: PathBuf,
    sysfs: PathBuf,
    mount_table: PathBuf,
    /// `apt-get -s upgrade`, or another program printing its output.
    apt: Vec<String>,
    /// `nft list ruleset`.
    nft: Vec<String>,
    /// The last count of updates, and what it depended on.
    apt_cache: std::sync::Arc<std::sync::Mutex<Option<AptCounts>>>,
}

/// What apt's answer depends on: its lists, dpkg's status, the day.
type AptKey = (Option<SystemTime>, Option<SystemTime>, u64);
/// Updates and security updates, and what they were counted for.
type AptCounts = (AptKey, (u32, u32));

impl LinuxSecurityProbe {
    pub fn new(sysfs: impl Into<PathBuf>, mount_table: impl Into<PathBuf>) -> Self {
        Self {
            root: PathBuf::from("/"),
            sysfs: sysfs.into(),
            mount_table: mount_table.into(),
            apt: ["apt-get", "-s", "-o", "Debug::NoLocking=1", "upgrade"]
                .map(String::from)
                .to_vec(),
            nft: ["nft", "list", "ruleset"].map(String::from).to_vec(),
            apt_cache: Default::default(),
        }
    }

    /// Pending updates and security updates, from apt when what they
    /// depend on changed.
    fn pending(&self) -> (u32, u32) {
        let mtime = |p: &str| {
            std::fs::metadata(self.path(p))
                .and_then(|m| m.modified())
                .ok()
        };
        let day = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() / 86_400);
        let key = (
            mtime("/var/lib/apt/lists"),
            mtime("/var/lib/dpkg/status"),
            day,
        );
        let mut cache = self.apt_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, counts)) = *cache
            && k == key
        {
            return counts;
        }
        let counts = run(&self.apt).map_or((0, 0), |out| pending_updates(&out));
        *cache = Some((key, counts));
        counts
    }

    /// Reads files under `root` and runs `apt` and `nft` instead (tests).
    pub fn with_root(
        mut self,
        root: impl Into<PathBuf>,
        apt: Vec<String>,
        nft: Vec<String>,
    ) -> Self {
        self.root = root.into();
        self.apt = apt;
        self.nft = nft;
        self
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }
}

impl SecurityProbe for LinuxSecurityProbe {
    fn status(&self) -> SecurityStatusEvent {
        let (pending, security) = self.pending();
        let mut s = SecurityStatusEvent {
            patch_level: patch_level(&self.path("/etc/os-release")),
            pending_updates: pending,
            pending_security_updates: security,
            ..Default::default()
        };
        let clamav = self.path("/var/lib/clamav");
        if let Some((version, age_days)) = clamav_signatures(&clamav) {
            s.antivirus_product = "ClamAV".into();
            s.antivirus_signature_version = version;
            s.antivirus_signature_age_days = age_days;
            s.antivirus_enabled = process_running(&self.path("/proc"), "clamd");
        }
        s.firewall = firewall(&self.path("/etc/ufw/ufw.conf"), &self.nft);
        s.firewall_active = !s.firewall.is_empty();
        s.disk_encryption = root_encryption(&self.mount_table, &self.sysfs);
        s.disk_encrypted = !s.disk_encryption.is_empty();
        s
    }
}

/// A program's standard output, when it ran and succeeded.
fn run(cmd: &[String]) -> Option<String> {
    let (program, args) = cmd.split_first()?;
    let out = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Updates and security updates in `apt-get -s upgrade`'s output (one
/// `Inst` line each; the suite in parentheses).
fn pending_updates(out: &str) -> (u32, u32) {
    let mut all = 0u32;
    let mut security = 0u32;
    for line in out.lines().filter(|l| l.starts_with("Inst ")) {
        all += 1;
        if line.contains("-security") || line.contains("Debian-Security") {
            security += 1;
        }
    }
    (all, security)
}

fn patch_level(os_release: &Path) -> String {
    let text = std::fs::read_to_string(os_release).unwrap_or_default();
    let name = text
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_default();
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{name}, Linux {kernel}")
        .trim_matches([',', ' '])
        .to_owned()
}

/// ClamAV's newest signature database: its version and its age in days.
fn clamav_signatures(dir: &Path) -> Option<(String, u32)> {
    let newest = ["daily.cld", "daily.cvd", "main.cld", "main.cvd"]
        .iter()
        .map(|f| dir.join(f))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max_by_key(|(t, _)| *t)?;
    let age = SystemTime::now()
        .duration_since(newest.0)
        .map_or(0, |d| d.as_secs() / 86_400);
    // The header: "ClamAV-VDB:date:version:signatures:...".
    let mut header = [0u8; 512];
    let n = std::fs::File::open(&newest.1)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut header))
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&header[..n]);
    let version = text
        .strip_prefix("ClamAV-VDB:")
        .and_then(|h| h.split(':').nth(1))
        .unwrap_or("")
        .to_owned();
    let name = newest.1.file_stem()?.to_string_lossy().into_owned();
    let version = if version.is_empty() {
        name
    } else {
        format!("{name} {version}")
    };
    Some((version, u32::try_from(age).unwrap_or(u32::MAX)))
}

fn process_running(proc: &Path, name: &str) -> bool {
    std::fs::read_dir(proc).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == name))
    })
}

/// The active firewall: ufw when enabled, else nftables with an input hook.
fn firewall(ufw_conf: &Path, nft: &[String]) -> String {
    let ufw = std::fs::read_to_string(ufw_conf).unwrap_or_default();
    if ufw
        .lines()
        .any(|l| l.trim().eq_ignore_ascii_case("ENABLED=yes"))
    {
        return "ufw".into();
    }
    if run(nft).is_some_and(|r| r.contains("hook input")) {
        return "nftables".into();
    }
    String::new()
}

/// How the root file system is encrypted, or "".
fn root_encryption(mount_table: &Path, sysfs: &Path) -> String {
    let Some(root) = crate::platform::linux::mounts::read(mount_table)
        .into_iter()
        .rev()
        .find(|m| m.target == Path::new("/"))
    else {
        return String::new();
    };
    let source = root.source;
    // /dev/dm-N, or /dev/mapper/NAME (the dm device whose dm/name is NAME).
    let dm = if let Some(n) = source
        .strip_prefix("/dev/")
        .filter(|n| n.starts_with("dm-"))
    {
        Some(n.to_owned())
    } else if let Some(name) = source.strip_prefix("/dev/mapper/") {
        std::fs::read_dir(sysfs.join("block"))
            .ok()
            .and_then(|entries| {
                entries.flatten().find_map(|e| {
                    let dev = e.file_name().to_string_lossy().into_owned();
                    let n = std::fs::read_to_string(e.path().join("dm/name")).ok()?;
                    (n.trim() == name).then_some(dev)
                })
            })
    } else {
        None
    };
    let Some(dm) = dm else {
        return String::new();
    };
    let uuid =
        std::fs::read_to_string(sysfs.join("block").join(&dm).join("dm/uuid")).unwrap_or_default();
    if uuid.starts_with("CRYPT-LUKS") {
        "LUKS (dm-crypt) on /".into()
    } else if uuid.starts_with("CRYPT-") {
        "dm-crypt on /".into()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn a_tree_reads_as_its_status() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        write(
            &root.join("etc/os-release"),
            "PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\n",
        );
        write(&root.join("etc/ufw/ufw.conf"), "# ufw\nENABLED=yes\n");
        let daily = root.join("var/lib/clamav/daily.cld");
        write(
            &daily,
            "ClamAV-VDB:04 Dec 2026 09-12 +0000:27480:2070000:90:X:X:raynman:1733000000\n",
        );
        let three_days_ago = SystemTime::now() - std::time::Duration::from_secs(3 * 86_400 + 60);
        std::fs::File::options()
            .write(true)
            .open(&daily)
            .unwrap()
            .set_modified(three_days_ago)
            .unwrap();
        write(&root.join("proc/4242/comm"), "clamd\n");
        let sysfs = dir.path().join("sys");
        write(&sysfs.join("block/dm-0/dm/name"), "cryptroot\n");
        write(
            &sysfs.join("block/dm-0/dm/uuid"),
            "CRYPT-LUKS2-0123-cryptroot\n",
        );
        let mounts = dir.path().join("mounts");
        write(
            &mounts,
            "proc /proc proc rw 0 0\n/dev/mapper/cryptroot / ext4 rw 0 0\n",
        );
        let apt = dir.path().join("apt.sh");
        write(
            &apt,
            "#!/bin/sh\necho run >> \"$0.runs\"\ncat <<'E'\nReading package lists...\n\
             Inst libssl3 [3.0.15-1] (3.0.17-1~deb12u2 Debian-Security:12/stable-security [amd64])\n\
             Inst vim [2:9.0.1378-2] (2:9.0.1378-2+deb12u2 Debian:12.11/stable [amd64])\n\
             Conf libssl3 (3.0.17-1~deb12u2 Debian-Security:12/stable-security [amd64])\nE\n",
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&apt, std::fs::Permissions::from_mode(0o755)).unwrap();
        let probe = LinuxSecurityProbe::new(&sysfs, &mounts).with_root(
            &root,
            vec![apt.to_string_lossy().into_owned()],
            vec!["/bin/false".into()],
        );
        let s = probe.status();
        assert_eq!((s.pending_updates, s.pending_security_updates), (2, 1));
        assert!(
            s.patch_level
                .starts_with("Debian GNU/Linux 13 (trixie), Linux "),
            "{}",
            s.patch_level
        );
        assert_eq!(s.antivirus_product, "ClamAV");
        assert_eq!(s.antivirus_signature_version, "daily 27480");
        assert_eq!(s.antivirus_signature_age_days, 3);
        assert!(s.antivirus_enabled);
        assert_eq!((s.firewall_active, s.firewall.as_str()), (true, "ufw"));
        assert_eq!(
            (s.disk_encrypted, s.disk_encryption.as_str()),
            (true, "LUKS (dm-crypt) on /")
        );
        // apt runs again only when its lists or dpkg's status change.
        probe.status();
        let runs = || {
            std::fs::read_to_string(dir.path().join("apt.sh.runs"))
                .unwrap()
                .lines()
                .count()
        };
        assert_eq!(runs(), 1);
        write(&root.join("var/lib/dpkg/status"), "Package: vim\n");
        probe.status();
        assert_eq!(runs(), 2);

        // Nothing of it: no updates known, no antivirus, no firewall, no
        // encryption.
        let bare = dir.path().join("bare");
        std::fs::create_dir_all(&bare).unwrap();
        write(&mounts, "/dev/vda1 / ext4 rw 0 0\n");
        let s = LinuxSecurityProbe::new(&sysfs, &mounts)
            .with_root(&bare, vec!["/bin/false".into()], vec!["/bin/false".into()])
            .status();
        assert_eq!((s.pending_updates, s.antivirus_product.as_str()), (0, ""));
        assert!(!s.firewall_active && !s.disk_encrypted && !s.antivirus_enabled);
    }
}
