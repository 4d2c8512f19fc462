//! The uninstall code: removing the agent from a PC needs the code whose
//! SHA-256 the tenant's policy carries (issued in the console; the code
//! itself never reaches the PC before the administrator types it). The
//! check works offline, against the policy the agent last stored. A tenant
//! that has issued no code does not protect removal.

use std::path::Path;

use prost::Message;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use mamori_proto::agent::v1::PolicyUpdate;

/// Whether removal may go ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uninstall {
    /// The code given is the tenant's.
    Allowed,
    /// The tenant has issued no code (or the agent has no policy yet).
    Unprotected,
    /// No code, or the wrong one.
    Refused(&'static str),
}

/// Checks `code` against the policy stored in `state_dir`.
pub fn check(state_dir: &Path, code: Option<&str>) -> Result<Uninstall> {
    let path = crate::state::StateDir::new(state_dir).policy_path();
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Uninstall::Unprotected),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()))(e)),
    };
    let policy = PolicyUpdate::decode(bytes.as_slice())
        .map_err(|e| Error::InvalidOption(format!("the stored policy is unreadable: {e}")))?;
    Ok(verdict(&policy.uninstall_code_sha256, code))
}

fn verdict(expected: &[u8], code: Option<&str>) -> Uninstall {
    if expected.is_empty() {
        return Uninstall::Unprotected;
    }
    let Some(code) = code.map(str::trim).filter(|c| !c.is_empty()) else {
        return Uninstall::Refused(
            "removing or stopping the Mamori agent needs its uninstall code",
        );
    };
    let given = Sha256::digest(code.as_bytes());
    // Compared in full whatever differs first.
    let differs = given
        .iter()
        .zip(expected)
        .fold(expected.len() ^ given.len(), |acc, (a, b)| {
            acc | usize::from(a ^ b)
        });
    if differs == 0 {
        Uninstall::Allowed
    } else {
        Uninstall::Refused("that is not this tenant's uninstall code")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_code_whose_hash_the_policy_carries_allows_removal() {
        let hash = Sha256::digest(b"mmu_right").to_vec();
        assert_eq!(verdict(&hash, Some("mmu_right")), Uninstall::Allowed);
        assert_eq!(verdict(&hash, Some(" mmu_right\n")), Uninstall::Allowed);
        assert!(matches!(
            verdict(&hash, Some("mmu_wrong")),
            Uninstall::Refused(_)
        ));
        assert!(matches!(verdict(&hash, None), Uninstall::Refused(_)));
        assert!(matches!(verdict(&hash, Some("")), Uninstall::Refused(_)));
        assert_eq!(verdict(&[], None), Uninstall::Unprotected);
    }

    #[test]
    fn the_stored_policy_is_what_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(check(dir.path(), None).unwrap(), Uninstall::Unprotected);
        let policy = PolicyUpdate {
            revision: 3,
            uninstall_code_sha256: Sha256::digest(b"mmu_x").to_vec(),
            ..Default::default()
        };
        std::fs::write(dir.path().join("policy.pb"), policy.encode_to_vec()).unwrap();
        assert_eq!(
            check(dir.path(), Some("mmu_x")).unwrap(),
            Uninstall::Allowed
        );
        assert!(matches!(
            check(dir.path(), None).unwrap(),
            Uninstall::Refused(_)
        ));
    }
}

/// Where `uninstall-check` records attempts for the running agent to report.
const ATTEMPTS: &str = "uninstall-attempts";

/// Records a removal attempt in `state_dir` (one line; the running agent
/// turns it into an event). Skipped where the agent was never enrolled.
pub fn record_attempt(state_dir: &Path, allowed: bool, detail: &str) -> Result<()> {
    use std::io::Write;
    if !state_dir.is_dir() {
        return Ok(());
    }
    let detail: String = detail
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    let line = format!(
        "{}\t{}\t{detail}\n",
        crate::clock::now_us(),
        u8::from(allowed)
    );
    let path = state_dir.join(ATTEMPTS);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(Error::io(format!(
            "recording the attempt in {}",
            path.display()
        )))
}

/// Hands each attempt recorded since the last call to `report`, oldest
/// first (when, allowed, detail), and forgets them only afterwards. The
/// file is renamed before it is read, so a line appended meanwhile waits for
/// the next call; a file left by a crash mid-report is reported again.
pub(crate) fn take_attempts(state_dir: &Path, mut report: impl FnMut(i64, bool, String)) {
    let path = state_dir.join(ATTEMPTS);
    let reading = state_dir.join(format!("{ATTEMPTS}.reading"));
    if !reading.exists() && std::fs::rename(&path, &reading).is_err() {
        return;
    }
    let text = match std::fs::read_to_string(&reading) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the recorded removal attempts");
            return;
        }
    };
    for l in text.lines() {
        let mut f = l.splitn(3, '\t');
        let (Some(at), Some(allowed)) = (f.next().and_then(|a| a.parse().ok()), f.next()) else {
            continue;
        };
        report(at, allowed == "1", f.next().unwrap_or_default().to_owned());
    }
    let _ = std::fs::remove_file(&reading);
}

#[cfg(test)]
mod attempt_tests {
    use super::*;

    fn collect(dir: &Path) -> Vec<(i64, bool, String)> {
        let mut out = Vec::new();
        take_attempts(dir, |at, allowed, detail| out.push((at, allowed, detail)));
        out
    }

    #[test]
    fn recorded_attempts_are_taken_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        record_attempt(dir.path(), false, "no\tcode\ngiven").unwrap();
        record_attempt(dir.path(), true, "the uninstall code was given").unwrap();
        let taken = collect(dir.path());
        assert_eq!(taken.len(), 2);
        assert!(!taken[0].1 && taken[1].1);
        assert_eq!(taken[0].2, "no code given");
        assert!(collect(dir.path()).is_empty(), "each is reported once");
        // Not enrolled: nothing to record into.
        record_attempt(&dir.path().join("absent"), false, "x").unwrap();
        assert!(!dir.path().join("absent").exists());
    }
}
