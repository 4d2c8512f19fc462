//! User names for uids, from /etc/passwd, cached.
//!
//! Every process event carries the user name; looking it up through NSS on
//! each exec would be slow and would load NSS modules into the agent, so the
//! agent reads the local passwd file and keeps the map, reloading it only
//! when an unknown uid shows up and the file has changed. Directory users
//! (LDAP, AD) that are not in /etc/passwd are reported by number.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::SystemTime;

#[derive(Debug)]
pub(crate) struct Users {
    path: PathBuf,
    names: HashMap<u32, String>,
    loaded_mtime: Option<SystemTime>,
}

impl Users {
    pub(crate) fn new(path: impl Into<PathBuf>) -> Self {
        let mut users = Users {
            path: path.into(),
            names: HashMap::new(),
            loaded_mtime: None,
        };
        users.reload();
        users
    }

    /// The user name of `uid`, or the number as text when unknown.
    pub(crate) fn name(&mut self, uid: u32) -> String {
        if let Some(name) = self.names.get(&uid) {
            return name.clone();
        }
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if mtime != self.loaded_mtime {
            self.reload();
            if let Some(name) = self.names.get(&uid) {
                return name.clone();
            }
        }
        uid.to_string()
    }

    fn reload(&mut self) {
        self.loaded_mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        self.names = std::fs::read_to_string(&self.path)
            .map(|text| parse_passwd(&text))
            .unwrap_or_default();
    }
}

fn parse_passwd(text: &str) -> HashMap<u32, String> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let uid = fields.nth(1)?.parse().ok()?;
            (!name.is_empty() && !name.starts_with('#')).then(|| (uid, name.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_passwd_and_numbers_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        std::fs::write(&path, "root:x:0:0:root:/root:/bin/bash\n# comment\nalice:x:1000:1000::/home/alice:/bin/sh\nbroken\n").unwrap();
        let mut users = Users::new(&path);
        assert_eq!(users.name(0), "root");
        assert_eq!(users.name(1000), "alice");
        assert_eq!(users.name(4242), "4242");
    }
}
