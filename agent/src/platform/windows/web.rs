//! The web block list on Windows: browsers read their enterprise policies
//! from the registry. Chrome, Edge and Chromium take `URLBlocklist` and
//! `URLAllowlist` (values `1`, `2`, …) under their policy keys; Firefox
//! takes `WebsiteFilter\Block` under its own. The agent owns these list
//! keys: it rewrites them whole when the list changes and deletes them
//! when it is empty (so they must not also come from Group Policy).

use windows_sys::Win32::System::Registry::HKEY_LOCAL_MACHINE;

use super::win;

/// Each browser's policy key under HKLM.
pub(crate) const CHROMIUM_KEYS: &[&str] = &[
    r"SOFTWARE\Policies\Google\Chrome",
    r"SOFTWARE\Policies\Microsoft\Edge",
    r"SOFTWARE\Policies\Chromium",
];
pub(crate) const FIREFOX_KEY: &str = r"SOFTWARE\Policies\Mozilla\Firefox\WebsiteFilter";

/// The lists as registry values: (key, value name, data) for every entry
/// to write; `root` is the policies' parent (HKLM's `SOFTWARE\Policies`
/// keys, or a test key).
pub(crate) fn values(
    root: &str,
    blocklist: &[String],
    allowlist: &[String],
    firefox: &[String],
) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut list = |key: String, items: &[String]| {
        for (i, item) in items.iter().enumerate() {
            out.push((key.clone(), (i + 1).to_string(), item.clone()));
        }
    };
    for browser in CHROMIUM_KEYS {
        list(format!(r"{root}{browser}\URLBlocklist"), blocklist);
        list(format!(r"{root}{browser}\URLAllowlist"), allowlist);
    }
    list(format!(r"{root}{FIREFOX_KEY}\Block"), firefox);
    out
}

/// Rewrites the lists under `root` (`""` for the real policies); the
/// first failure.
pub(crate) fn write(
    root: &str,
    blocklist: &[String],
    allowlist: &[String],
    firefox: &[String],
) -> Result<(), String> {
    let mut keys: Vec<String> = CHROMIUM_KEYS
        .iter()
        .flat_map(|b| {
            [
                format!(r"{root}{b}\URLBlocklist"),
                format!(r"{root}{b}\URLAllowlist"),
            ]
        })
        .collect();
    keys.push(format!(r"{root}{FIREFOX_KEY}\Block"));
    for key in &keys {
        win::reg_delete_tree(HKEY_LOCAL_MACHINE, key)
            .map_err(|status| format!(r"cannot clear HKLM\{key} (error {status})"))?;
    }
    for (key, name, data) in values(root, blocklist, allowlist, firefox) {
        win::reg_set_string(HKEY_LOCAL_MACHINE, &key, &name, &data)
            .map_err(|status| format!(r"cannot write HKLM\{key}\{name} (error {status})"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_lists_become_numbered_values_per_browser() {
        let v = values(
            "",
            &strings(&["p2p.example", "games.example"]),
            &strings(&[".games.example"]),
            &strings(&["*://p2p.example/*"]),
        );
        assert!(v.contains(&(
            r"SOFTWARE\Policies\Google\Chrome\URLBlocklist".into(),
            "2".into(),
            "games.example".into()
        )));
        assert!(v.contains(&(
            r"SOFTWARE\Policies\Microsoft\Edge\URLAllowlist".into(),
            "1".into(),
            ".games.example".into()
        )));
        assert!(v.contains(&(
            r"SOFTWARE\Policies\Mozilla\Firefox\WebsiteFilter\Block".into(),
            "1".into(),
            "*://p2p.example/*".into()
        )));
        // Three Chromium browsers × (2 blocked + 1 allowed) + 1 Firefox.
        assert_eq!(v.len(), 10);
    }

    /// In a test key of Wine's registry.
    #[test]
    fn a_shorter_list_leaves_no_stale_entries() {
        let root = format!(r"SOFTWARE\MamoriTest\{}\", uuid::Uuid::new_v4());
        let chrome = format!(r"{root}SOFTWARE\Policies\Google\Chrome\URLBlocklist");
        write(&root, &strings(&["a.example", "b.example"]), &[], &[]).unwrap();
        assert_eq!(
            win::reg_string(HKEY_LOCAL_MACHINE, &chrome, "2").as_deref(),
            Some("b.example")
        );
        write(&root, &strings(&["c.example"]), &[], &[]).unwrap();
        assert_eq!(
            win::reg_string(HKEY_LOCAL_MACHINE, &chrome, "1").as_deref(),
            Some("c.example")
        );
        assert_eq!(win::reg_string(HKEY_LOCAL_MACHINE, &chrome, "2"), None);
        write(&root, &[], &[], &[]).unwrap();
        assert_eq!(
            win::reg_subkeys(
                HKEY_LOCAL_MACHINE,
                &format!(r"{root}SOFTWARE\Policies\Google\Chrome")
            ),
            Vec::<String>::new()
        );
    }
}
