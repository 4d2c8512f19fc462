//! Refusing a banned app before it runs, on Windows, without a driver.
//!
//! **What Windows offers.** A kernel driver (a process-creation callback)
//! refuses any launch, by path or hash; it is not built (it needs
//! Microsoft's signature). Without one:
//! - AppLocker and WDAC refuse by path and hash, but AppLocker enforces
//!   only on Enterprise and Education editions, and WDAC policies are
//!   compiled, signed-or-rebooted deployments: neither follows a policy
//!   that changes from the console within seconds.
//! - **Image File Execution Options** (chosen): the loader runs the
//!   `Debugger` named under `HKLM\…\Image File Execution Options\<image
//!   name>` instead of any program with that file name, on every edition,
//!   from the next launch on. It matches by *file name* only, so only
//!   `block` rules by name are enforced this way; a `block` rule by path or
//!   hash (and a renamed copy of a blocked program) falls back to kill on
//!   start, as `kill` rules do.
//!
//! The debugger is the agent itself, `mamori-agent.exe blocked <the
//! program's command line>`: it runs nothing, exits with status 1, and
//! lingers a second so that the process collector's snapshot sees it; the
//! collector reports the refusal as a blocked start of the program (see
//! [`trampoline_target`]).
//!
//! **Ownership.** Each key the agent writes carries `MamoriBlock` = the
//! agent's state directory; the agent removes only the values it wrote,
//! and leaves alone a program that already has a `Debugger` of someone
//! else's. An allowed removal of the agent (`uninstall-check` with the
//! code) removes them, so nothing stays blocked by a missing debugger.
//!
//! Wine's loader ignores Image File Execution Options: under Wine the tests
//! see the keys written and removed and the refusal reported from the
//! trampoline run by hand; the loader honouring the key needs a real PC.

use std::collections::BTreeSet;
use std::path::Path;

use windows_sys::Win32::System::Registry::HKEY_LOCAL_MACHINE;

use super::win;
use crate::policy::Compiled;

/// Where Windows reads Image File Execution Options.
pub(crate) const IFEO_KEY: &str =
    r"SOFTWARE\Microsoft\Windows NT\CurrentVersion\Image File Execution Options";
/// The value that marks a key's `Debugger` as this agent's.
pub(crate) const MARKER: &str = "MamoriBlock";
/// The subcommand the debugger runs.
pub const TRAMPOLINE: &str = "blocked";

/// Names never blocked before launch, whatever a rule says: the agent
/// itself (the debugger would run itself without end, and the service
/// could not start; its own file name is checked too), the programs
/// Windows needs to boot, log on and elevate, and the installer (the
/// agent's own removal runs in it). A blocked one would make the PC
/// unusable for everyone; a rule naming one is left to kill on start.
pub(crate) const NEVER_BLOCKED: &[&str] = &[
    "mamori-agent",
    "conhost",
    "consent",
    "csrss",
    "ctfmon",
    "dwm",
    "explorer",
    "fontdrvhost",
    "logonui",
    "lsass",
    "msiexec",
    "services",
    "sihost",
    "smss",
    "svchost",
    "taskhostw",
    "userinit",
    "wininit",
    "winlogon",
];

/// The image names (`winny.exe`) `policy` refuses before launch; never
/// `own` (the agent's own file name, without `.exe`).
pub(crate) fn blocked_images(policy: &Compiled, own: &str) -> BTreeSet<String> {
    policy
        .blocked_names()
        .into_iter()
        .filter(|n| !n.is_empty() && !n.contains(['\\', '/']))
        .filter(|n| !NEVER_BLOCKED.contains(&n.as_str()) && n != own)
        .map(|n| format!("{n}.exe"))
        .collect()
}

/// Whether the agent at `exe` may be a blocked program's debugger: only
/// from below `Program Files`, which only administrators can change (a
/// copy a user could replace would run for every blocked launch, under
/// any account).
pub(crate) fn may_be_debugger(exe: &Path, program_files: &Path) -> bool {
    super::files::within(exe, program_files)
}

/// The `Debugger` value that runs the agent at `agent_exe` instead.
pub(crate) fn debugger_command(agent_exe: &Path) -> String {
    format!("\"{}\" {TRAMPOLINE}", agent_exe.display())
}

/// The program a refused launch was for, from the trampoline's command
/// line (`"C:\…\mamori-agent.exe" blocked "C:\P2P\winny.exe" -x`): none
/// for any other command line.
pub(crate) fn trampoline_target(command_line: &str) -> Option<String> {
    let (first, rest) = split_first(command_line)?;
    if mamori_proto::app_name(&first) != "mamori-agent" {
        return None;
    }
    let (sub, rest) = split_first(rest)?;
    if sub != TRAMPOLINE {
        return None;
    }
    let (program, _) = split_first(rest)?;
    Some(program)
}

/// The first argument of a Windows command line (quoted or not) and the
/// rest.
fn split_first(line: &str) -> Option<(String, &str)> {
    let line = line.trim_start();
    if line.is_empty() {
        return None;
    }
    if let Some(quoted) = line.strip_prefix('"') {
        let end = quoted.find('"').unwrap_or(quoted.len());
        let rest = quoted.get(end + 1..).unwrap_or("");
        Some((quoted[..end].to_owned(), rest))
    } else {
        let end = line.find([' ', '\t']).unwrap_or(line.len());
        Some((line[..end].to_owned(), &line[end..]))
    }
}

/// Keeps the Image File Execution Options keys in line with the policy.
#[derive(Debug)]
pub(crate) struct LaunchGuard {
    /// [`IFEO_KEY`] (another in tests).
    key: String,
    debugger: String,
    /// This agent's mark (its state directory).
    owner: String,
    /// The revision last applied.
    applied: Option<u64>,
    /// The agent's own file name (never blocked).
    own: String,
}

impl LaunchGuard {
    pub(crate) fn new(key: &str, agent_exe: &Path, state_dir: &Path) -> Self {
        LaunchGuard {
            key: key.to_owned(),
            debugger: debugger_command(agent_exe),
            owner: state_dir.display().to_string(),
            applied: None,
            own: mamori_proto::app_name(&agent_exe.to_string_lossy()),
        }
    }

    /// Writes and removes keys for `policy` when its revision is new;
    /// returns the images it could not block (someone else's debugger, a
    /// failed write), to report.
    pub(crate) fn sync(&mut self, policy: &Compiled) -> Vec<String> {
        if self.applied == Some(policy.revision) {
            return Vec::new();
        }
        self.applied = Some(policy.revision);
        self.apply(&blocked_images(policy, &self.own))
    }

    /// Makes exactly `wanted` blocked by this agent.
    pub(crate) fn apply(&self, wanted: &BTreeSet<String>) -> Vec<String> {
        let mut failed = Vec::new();
        for image in self.owned() {
            if !wanted.iter().any(|w| w.eq_ignore_ascii_case(&image)) {
                let key = format!(r"{}\{image}", self.key);
                // The debugger first: a marker left alone is harmless.
                match win::reg_delete_value(HKEY_LOCAL_MACHINE, &key, "Debugger")
                    .and_then(|()| win::reg_delete_value(HKEY_LOCAL_MACHINE, &key, MARKER))
                {
                    Ok(()) => tracing::info!(%image, "launch block lifted"),
                    Err(status) => {
                        tracing::warn!(%image, status, "cannot lift the launch block");
                        failed.push(format!("{image}: lifting it failed (error {status})"));
                    }
                }
            }
        }
        for image in wanted {
            let key = format!(r"{}\{image}", self.key);
            let mine = win::reg_string(HKEY_LOCAL_MACHINE, &key, MARKER).as_deref()
                == Some(self.owner.as_str());
            let theirs = win::reg_string(HKEY_LOCAL_MACHINE, &key, "Debugger").is_some();
            if theirs && !mine {
                tracing::warn!(%image, "another debugger is set for it: killed on start instead");
                failed.push(format!("{image}: another Debugger is set"));
                continue;
            }
            let written = win::reg_set_string(HKEY_LOCAL_MACHINE, &key, MARKER, &self.owner)
                .and_then(|()| {
                    win::reg_set_string(HKEY_LOCAL_MACHINE, &key, "Debugger", &self.debugger)
                });
            match written {
                Ok(()) => tracing::info!(%image, "blocked before launch"),
                Err(status) => {
                    tracing::warn!(%image, status, "cannot write the launch block");
                    failed.push(format!("{image}: error {status}"));
                }
            }
        }
        failed
    }

    /// The images this agent blocks now.
    fn owned(&self) -> Vec<String> {
        win::reg_subkeys(HKEY_LOCAL_MACHINE, &self.key)
            .into_iter()
            .filter(|image| {
                win::reg_string(
                    HKEY_LOCAL_MACHINE,
                    &format!(r"{}\{image}", self.key),
                    MARKER,
                )
                .as_deref()
                    == Some(self.owner.as_str())
            })
            .collect()
    }
}

/// Lifts every launch block the agent with `state_dir` wrote (its
/// allowed removal); what could not be lifted.
pub(crate) fn lift_all(state_dir: &Path) -> Vec<String> {
    let guard = LaunchGuard::new(IFEO_KEY, Path::new(""), state_dir);
    guard.apply(&BTreeSet::new());
    // What is still there was not removed (the remover lacks the rights).
    guard.owned()
}

#[cfg(test)]
mod tests;
