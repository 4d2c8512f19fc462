//! Typed configuration for every Mamori role.
//!
//! Each service has its own `Config` struct (serde, `deny_unknown_fields`,
//! `Default` giving values that work on a fresh machine). [`load`] layers, in
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
