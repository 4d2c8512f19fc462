//! The agent's state directory: what enrollment leaves for `run`.
//!
//! * `agent.json` — server url, CA certificate path, device and tenant ids,
//!   instance id (see [`AgentConfig`]).
//! * `credential` — the device credential, mode 0600, replaced atomically.
//! * `instance-id` — a random id made once per installation, kept even when
//!   enrollment fails so every attempt presents the same one.
//! * `spool/` — the event spool; `wtmp.offset` and `print.offset` — the
//!   logon and print collectors' places; `environment.json` — the PC as
//!   the environment collector last saw it; `software.json` — the
//!   installed packages as last reported; `web/` — the web collector's
//!   place in each browser history (`web.json`) and its copies of them;
//!   `security.json` — the security status last reported.
//! * `policy.pb` — the policy last received, enforced from start-up.
//! * `lock` — held by a running agent so two never share a spool.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil;

/// What `enroll` learned and `run` needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AgentConfig {
    pub server: String,
    pub ca_cert: Option<PathBuf>,
    pub device_id: String,
    pub tenant_id: String,
    pub instance_id: String,
}

/// Paths inside one state directory.
#[derive(Debug, Clone)]
pub(crate) struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub(crate) fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    pub(crate) fn create(&self) -> Result<()> {
        fsutil::create_private_dir(&self.root)
    }

    pub(crate) fn spool_dir(&self) -> PathBuf {
        self.root.join("spool")
    }

    /// The last policy received from the server (protobuf).
    pub(crate) fn policy_path(&self) -> PathBuf {
        self.root.join("policy.pb")
    }

    /// A collector's file (its place in a log, its last snapshot), named
    /// by the platform that runs the collector.
    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub(crate) fn web_dir(&self) -> PathBuf {
        self.root.join("web")
    }

    fn config_path(&self) -> PathBuf {
        self.root.join("agent.json")
    }

    fn credential_path(&self) -> PathBuf {
        self.root.join("credential")
    }

    /// Takes the directory's lock for the life of the returned handle.
    pub(crate) fn lock(&self) -> Result<File> {
        let path = self.root.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Error::io(format!("opening {}", path.display())))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked(self.root.clone())),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(Error::io(format!("locking {}", path.display()))(e))
            }
        }
    }

    /// The installation's instance id, made on first use.
    pub(crate) fn instance_id(&self) -> Result<String> {
        let path = self.root.join("instance-id");
        match std::fs::read_to_string(&path) {
            Ok(s) if uuid::Uuid::parse_str(s.trim()).is_ok() => return Ok(s.trim().to_string()),
            Ok(_) => tracing::warn!(path = %path.display(), "invalid instance id replaced"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("reading {}", path.display()))(e)),
        }
        let id = uuid::Uuid::new_v4().to_string();
        fsutil::write_atomic(&path, id.as_bytes(), 0o600)?;
        Ok(id)
    }

    pub(crate) fn load_config(&self) -> Result<AgentConfig> {
        let path = self.config_path();
        let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotEnrolled(path.clone()),
            _ => Error::io(format!("reading {}", path.display()))(e),
        })?;
        serde_json::from_slice(&bytes).map_err(|source| Error::State { path, source })
    }

    pub(crate) fn save_config(&self, config: &AgentConfig) -> Result<()> {
        let path = self.config_path();
        let mut json = serde_json::to_vec_pretty(config).map_err(|source| Error::State {
            path: path.clone(),
            source,
        })?;
        json.push(b'\n');
        fsutil::write_atomic(&path, &json, 0o600)
    }

    pub(crate) fn load_credential(&self) -> Result<SecretString> {
        let path = self.credential_path();
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotEnrolled(path.clone()),
            _ => Error::io(format!("reading {}", path.display()))(e),
        })?;
        Ok(SecretString::from(text.trim().to_string()))
    }

    pub(crate) fn save_credential(&self, credential: &SecretString) -> Result<()> {
        fsutil::write_atomic(
            &self.credential_path(),
            credential.expose_secret().as_bytes(),
            0o600,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_is_kept_and_instance_id_too() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("state"));
        state.create().unwrap();
        state
            .save_credential(&SecretString::from("s3cret"))
            .unwrap();
        assert_eq!(state.load_credential().unwrap().expose_secret(), "s3cret");
        let id = state.instance_id().unwrap();
        assert_eq!(state.instance_id().unwrap(), id);
        assert!(matches!(state.load_config(), Err(Error::NotEnrolled(_))));
    }

    #[test]
    fn second_lock_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let _held = state.lock().unwrap();
        assert!(matches!(state.lock(), Err(Error::Locked(_))));
    }
}
