//! Installed programs on Windows: the Uninstall registry keys (64-bit and
//! 32-bit views) that Settings → Apps lists, read every 10 s (the run
//! options' software poll; a few hundred registry reads: milliseconds);
//! what changed is reported by the shared
//! [`report`](crate::collector::software::report). Entries Windows hides
//! from that list (system components, updates of another program, no
//! display name) are left out.

#![allow(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use windows_sys::Win32::System::Registry::{
    HKEY_LOCAL_MACHINE, KEY_WOW64_32KEY, KEY_WOW64_64KEY, RRF_SUBKEY_WOW6432KEY,
    RRF_SUBKEY_WOW6464KEY,
};

use super::win::{reg_dword_in, reg_string_in, reg_subkeys_in};
use crate::collector::software::{Packages, report};
use crate::collector::{Collector, EventSink, poll_every};
use crate::error::{Error, Result};

/// The keys Settings → Apps lists (besides each user's own).
pub(crate) const UNINSTALL: &str = r"SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall";
/// Entries read per view, at most.
const MAX_ENTRIES: usize = 20_000;

/// The programs Settings → Apps would list, by display name.
pub(crate) fn installed() -> Result<Packages> {
    let mut out = Packages::new();
    for (view, values) in [
        (KEY_WOW64_64KEY, RRF_SUBKEY_WOW6464KEY),
        (KEY_WOW64_32KEY, RRF_SUBKEY_WOW6432KEY),
    ] {
        // A view that cannot be read fails the whole look: reporting its
        // programs as removed would be false. One that does not exist (no
        // 32-bit programs at all) is empty.
        let keys = match reg_subkeys_in(HKEY_LOCAL_MACHINE, UNINSTALL, view, MAX_ENTRIES) {
            Ok(keys) => keys,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io(format!(r"reading HKLM\{UNINSTALL}"))(e)),
        };
        for k in keys {
            let path = format!(r"{UNINSTALL}\{k}");
            let get = |v| reg_string_in(HKEY_LOCAL_MACHINE, &path, v, values);
            let Some(name) = get("DisplayName") else {
                continue;
            };
            let hidden = reg_dword_in(HKEY_LOCAL_MACHINE, &path, "SystemComponent", values)
                == Some(1)
                || get("ParentKeyName").is_some();
            if hidden {
                continue;
            }
            out.insert(
                name,
                (
                    get("DisplayVersion").unwrap_or_default(),
                    get("Publisher").unwrap_or_default(),
                ),
            );
        }
    }
    Ok(out)
}

/// The installed-programs collector.
#[derive(Debug, Clone)]
pub struct SoftwareCollector {
    saved_path: PathBuf,
    poll: Duration,
}

impl SoftwareCollector {
    pub fn new(saved_path: impl Into<PathBuf>, poll: Duration) -> Self {
        Self {
            saved_path: saved_path.into(),
            poll,
        }
    }
}

impl Collector for SoftwareCollector {
    fn name(&self) -> &'static str {
        "software"
    }

    fn run(self: Box<Self>, sink: EventSink) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let source = format!(r"HKLM\{UNINSTALL}");
            let check_sink = sink.clone();
            poll_every(self.poll, &sink, "software", &source, move || {
                let n = report(&installed()?, &self.saved_path, &check_sink)?;
                if n > 0 {
                    tracing::info!(changes = n, "installed software changed");
                }
                Ok(())
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::windows::win::wide;
    use windows_sys::Win32::System::Registry::{
        REG_DWORD, REG_SZ, RegDeleteTreeW, RegSetKeyValueW,
    };

    /// Sets a value under HKLM (64-bit view), creating the key.
    fn set(key: &str, name: &str, value: &[u8], kind: u32) {
        let (key, name) = (wide(key), wide(name));
        // SAFETY: NUL-terminated names; `value` is as long as said.
        let status = unsafe {
            RegSetKeyValueW(
                HKEY_LOCAL_MACHINE,
                key.as_ptr(),
                name.as_ptr(),
                kind,
                value.as_ptr().cast(),
                value.len() as u32,
            )
        };
        assert_eq!(status, 0, "setting a registry value");
    }

    fn set_str(key: &str, name: &str, value: &str) {
        let bytes: Vec<u8> = wide(value).iter().flat_map(|c| c.to_le_bytes()).collect();
        set(key, name, &bytes, REG_SZ);
    }

    fn delete(key: &str) {
        let key = wide(key);
        // SAFETY: a NUL-terminated name.
        unsafe { RegDeleteTreeW(HKEY_LOCAL_MACHINE, key.as_ptr()) };
    }

    #[test]
    fn installed_programs_are_listed_and_hidden_ones_are_not() {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let shown = format!(r"{UNINSTALL}\MamoriTest{id}");
        let hidden = format!(r"{UNINSTALL}\MamoriHidden{id}");
        let name = format!("Mamori Test {id}");
        let hidden_name = format!("Mamori Hidden {id}");
        set_str(&shown, "DisplayName", &name);
        set_str(&shown, "DisplayVersion", "1.2.3");
        set_str(&shown, "Publisher", "Mamori KK");
        set_str(&hidden, "DisplayName", &hidden_name);
        set(&hidden, "SystemComponent", &1u32.to_le_bytes(), REG_DWORD);
        let found = installed();
        delete(&shown);
        delete(&hidden);
        let found = found.unwrap();
        assert_eq!(
            found.get(&name),
            Some(&("1.2.3".to_owned(), "Mamori KK".to_owned())),
            "{found:?}"
        );
        assert!(!found.contains_key(&hidden_name));
        assert!(
            !installed().unwrap().contains_key(&name),
            "gone once removed"
        );
    }
}
