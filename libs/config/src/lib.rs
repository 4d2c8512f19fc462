//! Typed configuration for every Mamori role.
//!
//! Each service has its own `Config` struct (serde, `Default` giving values
//! that work on a fresh machine), with the settings the roles share
//! ([`Stores`], [`KeyEncryption`], [`Streams`]) flattened in; [`load`]
//! refuses keys the struct does not have. It layers, in
//! order: the defaults, the service's `[section]` of an optional TOML file,
//! then `MAMORI_<KEY>` environment variables. The environment is a parameter
//! so tests never touch the process environment. Every error names the key
//! (and the file or variable) that is wrong.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::path::Path;

/// A configuration problem, naming the bad key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Parse { path: String, message: String },
    #[error("config file: [{section}] must be a table")]
    NotATable { section: String },
    #[error("environment variable {var}: {reason}, got {value:?}")]
    Env {
        var: String,
        value: String,
        reason: &'static str,
    },
    #[error("config [{section}]: {message}")]
    Invalid { section: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A parsed config file: one table per service section.
#[derive(Debug, Clone, Default)]
pub struct File(toml::Table);

impl File {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        text.parse::<toml::Table>()
            .map(Self)
            .map_err(|e| Error::Parse {
                path: origin.to_owned(),
                message: e.message().to_owned(),
            })
    }
}

impl File {
    /// Refuses top-level keys and sections that no service knows, naming
    /// the first. `known` lists each section with its keys.
    pub fn check_known(&self, known: &[(&str, Vec<String>)]) -> Result<()> {
        for (k, v) in &self.0 {
            let ok = if v.is_table() {
                known.iter().any(|(s, _)| s == k)
            } else {
                known.iter().any(|(_, keys)| keys.contains(k))
            };
            if !ok {
                return Err(Error::Invalid {
                    section: "top level".into(),
                    message: format!("unknown key or section `{k}`"),
                });
            }
        }
        Ok(())
    }
}

/// Where a role finds PostgreSQL and Redis: the settings every role has.
/// Each role's config flattens it (`#[serde(flatten)] stores`), so it is
/// one set of keys for all: top-level in the file (or in a role's section,
/// for that role), `MAMORI_DATABASE_URL`, `MAMORI_REDIS_URL` and
/// `MAMORI_DB_MAX_CONNECTIONS` in the environment.
#[derive(Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Stores {
    /// PostgreSQL (`?sslmode=verify-full&sslrootcert=FILE` for TLS).
    pub database_url: String,
    /// One Redis URL; several, comma-separated, or one
    /// `redis+cluster://seed` for a Redis Cluster (`rediss` for TLS).
    pub redis_url: String,
    /// The role's PostgreSQL connection pool.
    pub db_max_connections: u32,
}

/// The URLs without their passwords (`user:***@host`).
impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("database_url", &without_password(&self.database_url))
            .field("redis_url", &without_password(&self.redis_url))
            .field("db_max_connections", &self.db_max_connections)
            .finish()
    }
}

/// `url` (or several, comma-separated) with each `user:password@` made
/// `user:***@`.
fn without_password(url: &str) -> String {
    url.split(',')
        .map(|u| match (u.find("://"), u.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let user_info = &u[scheme + 3..at];
                match user_info.split_once(':') {
                    Some((user, _)) => format!("{}{user}:***{}", &u[..scheme + 3], &u[at..]),
                    None => u.to_owned(),
                }
            }
            _ => u.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Default for Stores {
    fn default() -> Self {
        Self {
            database_url: "postgres://mamori@127.0.0.1:5432/mamori".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            db_max_connections: 8,
        }
    }
}

impl Stores {
    /// The defaults with a pool of `n` connections (each role's own).
    pub fn with_pool(n: u32) -> Self {
        Self {
            db_max_connections: n,
            ..Self::default()
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.db_max_connections == 0 {
            return Err("db_max_connections must be positive".into());
        }
        Ok(())
    }
}

/// The key-encryption key (KEK) under which the roles that keep secrets
/// (gateway, policy, alerting) seal them: 32 bytes in base64, or a file
/// holding them. The same key for every such role.
#[derive(Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct KeyEncryption {
    /// The key, base64.
    pub key_encryption_key: String,
    /// ...or a file holding it, created with a fresh key by the first role
    /// that finds it missing: every role must see the same file (or set the
    /// key itself).
    pub key_encryption_key_file: String,
}

impl std::fmt::Debug for KeyEncryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEncryption")
            .field(
                "key_encryption_key",
                &if self.key_encryption_key.is_empty() {
                    ""
                } else {
                    "***"
                },
            )
            .field("key_encryption_key_file", &self.key_encryption_key_file)
            .finish()
    }
}

impl KeyEncryption {
    /// Refuses a missing key; `why` says what the role seals with it.
    pub fn validate(&self, why: &str) -> Result<(), String> {
        if self.key_encryption_key.is_empty() && self.key_encryption_key_file.is_empty() {
            return Err(format!(
                "set key_encryption_key (MAMORI_KEY_ENCRYPTION_KEY, 32 bytes base64) or key_encryption_key_file (MAMORI_KEY_ENCRYPTION_KEY_FILE), the same for every role: {why}"
            ));
        }
        Ok(())
    }
}

/// How many Redis streams the events are sharded over: ingest appends to
/// them, the writer and alerting read them. The count must be the same in
/// all three; the first to start records it in Redis and the others refuse
/// another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Streams {
    pub stream_shards: u32,
}

impl Default for Streams {
    fn default() -> Self {
        Self { stream_shards: 4 }
    }
}

impl Streams {
    pub fn validate(&self) -> Result<(), String> {
        if self.stream_shards == 0 || self.stream_shards > 1024 {
            return Err("stream_shards must be 1..=1024".into());
        }
        Ok(())
    }
}

/// The keys a config type has (for [`File::check_known`]).
pub fn keys_of<T: Serialize + Default>() -> Vec<String> {
    toml::Table::try_from(T::default())
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

/// Builds a service's config from its defaults, the `[section]` of `file`
/// and `MAMORI_*` variables in `env`.
pub fn load<T>(section: &str, file: Option<&File>, env: &HashMap<String, String>) -> Result<T>
where
    T: Serialize + DeserializeOwned + Default,
{
    let invalid = |message: String| Error::Invalid {
        section: section.to_owned(),
        message,
    };
    let mut table = toml::Table::try_from(T::default()).map_err(|e| invalid(e.to_string()))?;
    // Top-level keys (such as database_url) apply to every section that has
    // them; a section's own keys win.
    if let Some(File(file)) = file {
        for (k, v) in file {
            if !v.is_table() && table.contains_key(k) {
                table.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(File(file)) = file
        && let Some(value) = file.get(section)
    {
        let overrides = value.as_table().ok_or_else(|| Error::NotATable {
            section: section.to_owned(),
        })?;
        for (k, v) in overrides {
            // Instead of serde's `deny_unknown_fields`, which the shared
            // settings' `flatten` rules out.
            if !table.contains_key(k) {
                return Err(invalid(format!("unknown key `{k}`")));
            }
            table.insert(k.clone(), v.clone());
        }
    }
    let keys: Vec<(String, toml::Value)> =
        table.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for (key, current) in keys {
        let var = format!("MAMORI_{}", key.to_uppercase());
        let Some(raw) = env.get(&var) else { continue };
        let bad = |reason| Error::Env {
            var: var.clone(),
            value: raw.clone(),
            reason,
        };
        let value = match current {
            toml::Value::Integer(_) => toml::Value::Integer(
                raw.trim()
                    .replace('_', "")
                    .parse()
                    .map_err(|_| bad("expected an integer"))?,
            ),
            toml::Value::Boolean(_) => toml::Value::Boolean(match raw.trim() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => return Err(bad("expected true or false")),
            }),
            toml::Value::Float(_) => {
                toml::Value::Float(raw.trim().parse().map_err(|_| bad("expected a number"))?)
            }
            _ => toml::Value::String(raw.clone()),
        };
        table.insert(key, value);
    }
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| invalid(e.message().to_owned()))
}

/// The process environment as a map, for [`load`] in `main`.
pub fn process_env() -> HashMap<String, String> {
    std::env::vars().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Demo {
        addr: String,
        shards: u32,
        tls: bool,
    }

    impl Default for Demo {
        fn default() -> Self {
            Self {
                addr: "127.0.0.1:1".into(),
                shards: 4,
                tls: false,
            }
        }
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn layers_defaults_file_then_env() {
        let file = File::parse("[demo]\nshards = 8\naddr = \"0.0.0.0:2\"\n", "t.toml").unwrap();
        let c: Demo = load(
            "demo",
            Some(&file),
            &env(&[("MAMORI_ADDR", "127.0.0.1:3"), ("MAMORI_TLS", "true")]),
        )
        .unwrap();
        assert_eq!(
            c,
            Demo {
                addr: "127.0.0.1:3".into(),
                shards: 8,
                tls: true
            }
        );
    }

    /// A role's config as the five are: the shared settings flattened in.
    #[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
    #[serde(default)]
    struct Role {
        #[serde(flatten)]
        stores: Stores,
        #[serde(flatten)]
        kek: KeyEncryption,
        #[serde(flatten)]
        streams: Streams,
        role_addr: String,
    }

    impl Default for Role {
        fn default() -> Self {
            Self {
                stores: Stores::with_pool(3),
                kek: KeyEncryption::default(),
                streams: Streams::default(),
                role_addr: "127.0.0.1:1".into(),
            }
        }
    }

    #[test]
    fn the_shared_settings_are_one_set_of_keys_for_every_role() {
        assert_eq!(
            keys_of::<Role>(),
            [
                "database_url",
                "db_max_connections",
                "key_encryption_key",
                "key_encryption_key_file",
                "redis_url",
                "role_addr",
                "stream_shards"
            ]
        );
        let file = File::parse(
            "database_url = \"postgres://db/m\"\nstream_shards = 8\n[role]\ndb_max_connections = 5\n",
            "t.toml",
        )
        .unwrap();
        let c: Role = load(
            "role",
            Some(&file),
            &env(&[
                ("MAMORI_REDIS_URL", "redis://r:1"),
                ("MAMORI_KEY_ENCRYPTION_KEY", "k"),
            ]),
        )
        .unwrap();
        assert_eq!(c.stores.database_url, "postgres://db/m");
        assert_eq!(c.stores.redis_url, "redis://r:1");
        assert_eq!(c.stores.db_max_connections, 5);
        assert_eq!(c.streams.stream_shards, 8);
        assert_eq!(c.kek.key_encryption_key, "k");
        assert!(
            !format!("{c:?}").contains("\"k\""),
            "the key is not in Debug output"
        );
        // The role's own default pool, and a typo refused by name.
        assert_eq!(
            load::<Role>("role", None, &env(&[]))
                .unwrap()
                .stores
                .db_max_connections,
            3
        );
        let typo = File::parse("[role]\nredis_ulr = \"redis://x\"\n", "t.toml").unwrap();
        let err = load::<Role>("role", Some(&typo), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown key `redis_ulr`"), "{err}");
        let err = load::<Role>("role", None, &env(&[("MAMORI_STREAM_SHARDS", "x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("MAMORI_STREAM_SHARDS"), "{err}");
        assert!(Streams { stream_shards: 0 }.validate().is_err());
        assert!(
            KeyEncryption::default()
                .validate("x")
                .unwrap_err()
                .contains("MAMORI_KEY_ENCRYPTION_KEY")
        );
    }

    #[test]
    fn errors_name_the_bad_key() {
        let err = load::<Demo>("demo", None, &env(&[("MAMORI_SHARDS", "many")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("MAMORI_SHARDS") && err.contains("integer"),
            "{err}"
        );
        let file = File::parse("[demo]\nshardz = 8\n", "t.toml").unwrap();
        let err = load::<Demo>("demo", Some(&file), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("shardz"), "{err}");
        let err = load::<Demo>("demo", None, &env(&[("MAMORI_SHARDS", "-1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("demo"), "{err}");
    }
}
