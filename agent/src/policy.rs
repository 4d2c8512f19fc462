//! The policy the agent enforces: received from the server, stored in the
//! state directory (`policy.pb`) so it is enforced from the first moment
//! after a restart and while offline, and compiled into matchers the
//! collectors consult.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use mamori_pathglob::PathGlobs;

use crate::platform::os::PATH_CASE;
use mamori_proto::agent::v1::{
    PolicyUpdate, banned_app::Action as BanAction, device_class_rule::Access,
};
use mamori_proto::app_name;
use prost::Message;

use crate::error::{Error, Result};
use crate::fsutil;

/// What to do with a starting process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub action: BanAction,
    /// The rule, for the event: `banned app "winny" (name winny)`.
    pub reason: String,
    pub revision: u64,
}

#[derive(Debug)]
enum Matcher {
    /// Lower-case file name without `.exe`.
    Name(String),
    /// The glob as written, and its index in [`Compiled::paths`].
    Path(String, usize),
    Sha256([u8; 32]),
}

#[derive(Debug)]
struct Ban {
    matcher: Matcher,
    action: BanAction,
    label: String,
}

/// A policy ready to match against.
#[derive(Debug, Default)]
pub struct Compiled {
    pub revision: u64,
    bans: Vec<Ban>,
    /// The path globs of the bans, compiled together: one pass over an
    /// executable's path tries them all, in time linear in the path.
    paths: PathGlobs,
    has_hash_bans: bool,
    /// The confidential folders.
    folders: PathGlobs,
    pub update: PolicyUpdate,
}

impl Compiled {
    /// Checks and compiles an update; the error names the bad rule (the
    /// server validated it, so this guards against a newer server's rules).
    pub fn compile(update: PolicyUpdate) -> Result<Self> {
        let mut bans = Vec::with_capacity(update.banned_apps.len());
        let mut globs = Vec::new();
        for (i, b) in update.banned_apps.iter().enumerate() {
            let matcher = if !b.name.is_empty() {
                Matcher::Name(app_name(&b.name))
            } else if !b.path_glob.is_empty() {
                mamori_pathglob::check(&b.path_glob).map_err(|e| {
                    Error::InvalidOption(format!(
                        "banned app {i}: path glob {:?}: {e}",
                        b.path_glob
                    ))
                })?;
                globs.push(b.path_glob.as_str());
                Matcher::Path(b.path_glob.clone(), globs.len() - 1)
            } else if let Ok(h) = <[u8; 32]>::try_from(b.sha256.as_slice()) {
                Matcher::Sha256(h)
            } else {
                return Err(Error::InvalidOption(format!(
                    "banned app {i} has no name, path or 32-byte hash"
                )));
            };
            let action = match b.action() {
                BanAction::Unspecified => BanAction::Log,
                a => a,
            };
            bans.push(Ban {
                matcher,
                action,
                label: b.label.clone(),
            });
        }
        let paths = PathGlobs::new(globs, PATH_CASE)
            .map_err(|e| Error::InvalidOption(format!("banned app path globs: {e}")))?;
        let folders = PathGlobs::new(
            update.confidential_folders.iter().map(String::as_str),
            PATH_CASE,
        )
        .map_err(|e| Error::InvalidOption(format!("confidential folders: {e}")))?;
        Ok(Compiled {
            revision: update.revision,
            paths,
            folders,
            has_hash_bans: bans.iter().any(|b| matches!(b.matcher, Matcher::Sha256(_))),
            bans,
            update,
        })
    }

    /// Whether `path` is in a confidential folder.
    pub fn is_confidential(&self, path: &str) -> bool {
        self.folders.is_match(path)
    }

    /// The directories the confidential folders are in: each glob's part
    /// before its first wildcard, to the last separator (`/srv/hr/**` →
    /// `/srv/hr`, `C:\Secret\**` → `C:\Secret`).
    pub fn confidential_roots(&self) -> Vec<PathBuf> {
        self.update
            .confidential_folders
            .iter()
            .filter_map(|g| {
                let literal = &g[..g.find(['*', '?', '[', '{']).unwrap_or(g.len())];
                let cut = literal.rfind(crate::platform::os::SEPARATORS)?;
                let dir = &literal[..cut];
                Some(PathBuf::from(if dir.is_empty() || dir.ends_with(':') {
                    &literal[..=cut]
                } else {
                    dir
                }))
            })
            .collect()
    }

    /// The strongest matching rule for an executable by name and path.
    pub fn check_path(&self, exe_path: &str) -> Option<Verdict> {
        if self.bans.is_empty() || exe_path.is_empty() {
            return None;
        }
        let name = app_name(exe_path);
        let by_path = self.paths.matches(exe_path);
        self.strongest(|m| match m {
            Matcher::Name(n) => *n == name,
            Matcher::Path(_, k) => by_path.binary_search(k).is_ok(),
            Matcher::Sha256(_) => false,
        })
    }

    /// The strongest rule matching the executable's hash.
    pub fn check_hash(&self, sha256: &[u8]) -> Option<Verdict> {
        if !self.has_hash_bans {
            return None;
        }
        self.strongest(|m| matches!(m, Matcher::Sha256(h) if h.as_slice() == sha256))
    }

    pub fn has_hash_bans(&self) -> bool {
        self.has_hash_bans
    }

    /// Whether any rule blocks a launch by name or path (what the launch
    /// guard can decide before the exec; hash rules are checked after it).
    pub fn blocks_launches(&self) -> bool {
        self.bans
            .iter()
            .any(|b| b.action == BanAction::Block && !matches!(b.matcher, Matcher::Sha256(_)))
    }

    /// The lower-case names (without `.exe`) of the apps a rule blocks by
    /// name: what Windows can refuse before launch, by image name.
    pub fn blocked_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .bans
            .iter()
            .filter(|b| b.action == BanAction::Block)
            .filter_map(|b| match &b.matcher {
                Matcher::Name(n) => Some(n.clone()),
                _ => None,
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The rule that blocks launching `exe_path`, if any.
    pub fn check_launch(&self, exe_path: &str) -> Option<Verdict> {
        self.check_path(exe_path)
            .filter(|v| v.action == BanAction::Block)
    }

    fn strongest(&self, hit: impl Fn(&Matcher) -> bool) -> Option<Verdict> {
        let matching = self.bans.iter().filter(|b| hit(&b.matcher));
        mamori_proto::strongest_ban(matching.map(|b| (b, b.action))).map(|b| {
            let how = match &b.matcher {
                Matcher::Name(n) => format!("name {n}"),
                Matcher::Path(p, _) => format!("path {p}"),
                Matcher::Sha256(h) => format!("sha256 {}", hex::encode(h)),
            };
            Verdict {
                action: b.action,
                reason: format!("banned app {:?} ({how})", b.label),
                revision: self.revision,
            }
        })
    }

    /// The access rule for a device class (allow when none is set).
    pub fn device_access(&self, class: i32) -> Access {
        self.update
            .device_classes
            .iter()
            .find(|r| r.device_class == class)
            .map(|r| r.access())
            .filter(|a| *a != Access::Unspecified)
            .unwrap_or(Access::Allow)
    }
}

/// The current policy, shared by the uplink (which replaces it) and the
/// collectors and enforcers (which read it).
#[derive(Debug)]
pub struct PolicyState {
    path: PathBuf,
    current: RwLock<Arc<Compiled>>,
}

impl PolicyState {
    /// Loads the stored policy from `path`; none (or an unreadable one,
    /// reported) means nothing is enforced until the server sends one.
    pub fn load(path: PathBuf) -> Self {
        let compiled = match std::fs::read(&path) {
            Ok(bytes) => match PolicyUpdate::decode(bytes.as_slice())
                .map_err(|e| Error::InvalidOption(e.to_string()))
                .and_then(Compiled::compile)
            {
                Ok(c) => {
                    tracing::info!(revision = c.revision, "enforcing the stored policy");
                    c
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "stored policy unreadable; enforcing none until the server sends one");
                    Compiled::default()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Compiled::default(),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read the stored policy");
                Compiled::default()
            }
        };
        PolicyState {
            path,
            current: RwLock::new(Arc::new(compiled)),
        }
    }

    /// A policy that is not stored anywhere (tests, tools).
    pub fn in_memory(update: PolicyUpdate) -> Result<Self> {
        Ok(PolicyState {
            path: PathBuf::new(),
            current: RwLock::new(Arc::new(Compiled::compile(update)?)),
        })
    }

    pub fn current(&self) -> Arc<Compiled> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn revision(&self) -> u64 {
        self.current().revision
    }

    /// Compiles, stores (atomically, before it takes effect, so a crash
    /// never loses an applied policy) and switches to `update`.
    pub fn apply(&self, update: PolicyUpdate) -> Result<u64> {
        let bytes = update.encode_to_vec();
        let compiled = Compiled::compile(update)?;
        if !self.path.as_os_str().is_empty() {
            fsutil::write_atomic(&self.path, &bytes, 0o600)?;
        }
        let revision = compiled.revision;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(compiled);
        Ok(revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mamori_proto::agent::v1::BannedApp;

    fn ban(name: &str, path: &str, sha: &[u8], action: BanAction) -> BannedApp {
        BannedApp {
            name: name.into(),
            path_glob: path.into(),
            sha256: sha.to_vec(),
            action: action as i32,
            label: if name.is_empty() {
                path.into()
            } else {
                name.into()
            },
        }
    }

    #[test]
    fn bans_match_by_name_path_and_hash_strongest_first() {
        let update = PolicyUpdate {
            revision: 3,
            banned_apps: vec![
                ban("Winny.exe", "", &[], BanAction::Log),
                ban("winny", "", &[], BanAction::Kill),
                ban("", "/opt/p2p/**", &[], BanAction::Block),
                ban("", "", &[7; 32], BanAction::Kill),
            ],
            ..Default::default()
        };
        let c = Compiled::compile(update).unwrap();
        let v = c.check_path("/usr/local/bin/winny").unwrap();
        assert_eq!(v.action, BanAction::Kill);
        assert!(v.reason.contains("winny"), "{}", v.reason);
        assert_eq!(v.revision, 3);
        assert_eq!(
            c.check_path("C:\\Apps\\WINNY.EXE").unwrap().action,
            BanAction::Kill
        );
        assert_eq!(
            c.check_path("/opt/p2p/bin/share").unwrap().action,
            BanAction::Block
        );
        assert!(c.check_path("/usr/bin/winnyx").is_none());
        // Two equally strong rules: the first listed names the verdict, as
        // the alerting service names it in the alarm.
        let folders = Compiled::compile(PolicyUpdate {
            confidential_folders: vec!["/srv/hr/**".into(), "/home/*/給与/*.xlsx".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(folders.is_confidential("/srv/hr/2026/pay.xlsx"));
        assert!(!folders.is_confidential("/srv/other.xlsx"));
        assert_eq!(
            folders.confidential_roots(),
            [PathBuf::from("/srv/hr"), PathBuf::from("/home")]
        );
        let two = Compiled::compile(PolicyUpdate {
            revision: 4,
            banned_apps: vec![
                ban("", "/opt/p2p/**", &[], BanAction::Kill),
                ban("", "/opt/**", &[], BanAction::Kill),
            ],
            ..Default::default()
        })
        .unwrap();
        let v = two.check_path("/opt/p2p/winny").unwrap();
        assert!(v.reason.contains("/opt/p2p/**"), "{}", v.reason);
        assert!(c.check_hash(&[7; 32]).is_some());
        assert!(c.check_hash(&[8; 32]).is_none());
    }

    #[test]
    fn applied_policy_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.pb");
        let state = PolicyState::load(path.clone());
        assert_eq!(state.revision(), 0);
        state
            .apply(PolicyUpdate {
                revision: 9,
                banned_apps: vec![ban("winny", "", &[], BanAction::Kill)],
                ..Default::default()
            })
            .unwrap();
        let again = PolicyState::load(path);
        assert_eq!(again.revision(), 9);
        assert!(again.current().check_path("/x/winny").is_some());
    }

    #[cfg(windows)]
    #[test]
    fn windows_confidential_roots_end_at_a_backslash() {
        let c = Compiled::compile(PolicyUpdate {
            confidential_folders: vec![r"C:\Secret\HR\**".into(), r"D:\*.xlsx".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            c.confidential_roots(),
            [PathBuf::from(r"C:\Secret\HR"), PathBuf::from(r"D:\")]
        );
        assert!(c.is_confidential(r"C:\Secret\HR\pay.xlsx"));
    }

    /// Windows compares paths regardless of case, and so does its agent.
    #[cfg(windows)]
    #[test]
    fn windows_paths_match_regardless_of_case() {
        let c = Compiled::compile(PolicyUpdate {
            confidential_folders: vec![r"C:\Secret\**".into()],
            banned_apps: vec![ban("", r"C:\Tools\**", &[], BanAction::Kill)],
            ..Default::default()
        })
        .unwrap();
        assert!(c.is_confidential(r"c:\SECRET\pay.xlsx"));
        assert!(c.check_path(r"c:\tools\Winny.exe").is_some());
        assert!(c.check_path(r"C:\Windows\notepad.exe").is_none());
    }
}
