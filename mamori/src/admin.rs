//! The operator's admin commands: tenants, users, enrollment tokens,
//! devices, signing keys, all through the registry (the same domain layer
//! the REST API uses). Changes to a tenant are in its audit log with the
//! actor `operator USER@HOST`. With `--json` each prints exactly one JSON
//! object on stdout.

use anyhow::Context;
use clap::Subcommand;
use mamori_registry::manage::Change;
use mamori_registry::signing_keys;
use mamori_tenancy::audit::Actor;
use mamori_tenancy::{Db, DeviceId, TenantId, TokenId};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub database_url: String,
    /// The gateways' key-encryption key, for `mamori keys rotate`.
    #[serde(flatten)]
    pub kek: mamori_config::KeyEncryption,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: "postgres://mamori@127.0.0.1:5432/mamori".into(),
            kek: mamori_config::KeyEncryption::default(),
        }
    }
}

/// Who runs the command, as the audit log names the operator.
fn operator() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let who: String = format!("operator {user}@{host}")
        .chars()
        .take(200)
        .collect();
    who
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Creates a tenant and prints its id.
    Create {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Sets a tenant's device licence cap.
    SetLimit {
        tenant: TenantId,
        limit: i32,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Creates a user of a tenant; reads the password from the first line
    /// of standard input (so it is not in the process list).
    Create {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long)]
        email: String,
        /// tenant_admin or auditor.
        #[arg(long, default_value = "tenant_admin")]
        role: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Lists the gateway's JWT signing keys.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Adds a new signing key; tokens signed by older keys stay valid
    /// until those keys are retired.
    Rotate {
        #[arg(long)]
        json: bool,
    },
    /// Retires a key: every token it signed stops working.
    Retire {
        kid: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Creates an enrollment token and prints it (shown only this once).
    Create {
        #[arg(long)]
        tenant: TenantId,
        /// How long the token stays valid (e.g. 7d, 12h); no expiry if absent.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<std::time::Duration>,
        /// How many enrollments the token allows; unlimited if absent.
        #[arg(long)]
        max_uses: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Lists a tenant's enrollment tokens (never their secrets).
    List {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long)]
        json: bool,
    },
    /// Revokes an enrollment token by id.
    Revoke {
        token_id: TokenId,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Lists a tenant's devices.
    List {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long)]
        json: bool,
    },
    /// Revokes a device: its credential stops working and its stream is cut.
    Revoke {
        device_id: DeviceId,
        #[arg(long)]
        json: bool,
    },
}

async fn connect(cfg: &Config) -> anyhow::Result<Db> {
    Db::connect(&cfg.database_url, 2)
        .await
        .context("cannot use the database (MAMORI_DATABASE_URL)")
}

pub async fn tenant(cfg: Config, cmd: TenantCommand) -> anyhow::Result<()> {
    let db = connect(&cfg).await?;
    match cmd {
        TenantCommand::Create { name, json } => {
            let id = mamori_registry::create_tenant(&db, &name).await?;
            if json {
                println!("{}", json!({ "id": id, "name": name.trim() }));
            } else {
                println!("{id}");
            }
        }
        TenantCommand::SetLimit {
            tenant,
            limit,
            json,
        } => {
            mamori_registry::set_device_limit(&db, tenant, limit).await?;
            if json {
                println!("{}", json!({ "id": tenant, "device_limit": limit }));
            } else {
                println!("tenant {tenant}: device licence cap {limit}");
            }
        }
    }
    Ok(())
}

pub async fn user(cfg: Config, cmd: UserCommand) -> anyhow::Result<()> {
    let db = connect(&cfg).await?;
    match cmd {
        UserCommand::Create {
            tenant,
            email,
            role,
            json,
        } => {
            let role = mamori_registry::users::TenantRole::parse(&role)?;
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("cannot read the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']).to_owned();
            let who = operator();
            let id = mamori_registry::users::create_tenant_user(
                &db,
                tenant,
                &email,
                password,
                role,
                &Actor::operator(&who),
            )
            .await?;
            if json {
                println!(
                    "{}",
                    json!({ "id": id, "tenant_id": tenant, "email": email.trim().to_lowercase(), "role": role.as_str() })
                );
            } else {
                println!("{id}");
            }
        }
    }
    Ok(())
}

pub async fn keys(cfg: Config, cmd: KeysCommand) -> anyhow::Result<()> {
    let db = Db::connect(&cfg.database_url, 2)
        .await
        .context("cannot use the database (MAMORI_DATABASE_URL)")?;
    match cmd {
        KeysCommand::List { json } => {
            let keys = signing_keys::list_keys(&db).await?;
            if json {
                println!("{}", json!({ "keys": keys }));
            } else {
                for k in keys {
                    println!(
                        "{}  created {}  {}",
                        k.kid,
                        k.created_at.to_rfc3339(),
                        match (k.signing, k.retired_at) {
                            (true, _) => "signing".to_owned(),
                            (false, None) => "verifying".to_owned(),
                            (false, Some(at)) => format!("retired {}", at.to_rfc3339()),
                        }
                    );
                }
            }
        }
        KeysCommand::Rotate { json } => {
            let kek = if cfg.kek.key_encryption_key.is_empty() {
                if cfg.kek.key_encryption_key_file.is_empty() {
                    anyhow::bail!(
                        "set MAMORI_KEY_ENCRYPTION_KEY or MAMORI_KEY_ENCRYPTION_KEY_FILE (the gateways' key-encryption key)"
                    );
                }
                mamori_keywrap::Kek::from_file(&cfg.kek.key_encryption_key_file)?
            } else {
                mamori_keywrap::Kek::from_base64(&cfg.kek.key_encryption_key)?
            };
            let kid = signing_keys::add_key(&db, &kek).await?;
            if json {
                println!("{}", json!({ "kid": kid }));
            } else {
                println!("new signing key {kid}; gateways pick it up within key_reload_s");
            }
        }
        KeysCommand::Retire { kid, json } => {
            if !signing_keys::retire_key(&db, &kid).await? {
                anyhow::bail!("no unretired signing key {kid:?}");
            }
            if json {
                println!("{}", json!({ "kid": kid, "retired": true }));
            } else {
                println!("key {kid} retired: tokens it signed no longer work");
            }
        }
    }
    Ok(())
}

pub async fn token(cfg: Config, cmd: TokenCommand) -> anyhow::Result<()> {
    let db = connect(&cfg).await?;
    match cmd {
        TokenCommand::Create {
            tenant,
            expires,
            max_uses,
            json,
        } => {
            let t = mamori_registry::create_token(&db, tenant, expires, max_uses).await?;
            if json {
                println!(
                    "{}",
                    json!({ "id": t.id, "token": t.token.expose(), "tenant_id": tenant, "expires_at": t.expires_at, "max_uses": max_uses })
                );
            } else {
                println!("{}", t.token.expose());
                eprintln!("token id {} (keep it to revoke the token)", t.id);
            }
        }
        TokenCommand::List { tenant, json } => {
            let tokens = mamori_registry::list_tokens(&db, tenant).await?;
            if json {
                println!("{}", json!({ "tokens": tokens }));
            } else {
                for t in tokens {
                    println!(
                        "{}  uses {}/{}  expires {}  {}",
                        t.id,
                        t.uses,
                        t.max_uses.map_or("-".into(), |m| m.to_string()),
                        t.expires_at.map_or("never".into(), |e| e.to_rfc3339()),
                        if t.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "active"
                        }
                    );
                }
            }
        }
        TokenCommand::Revoke { token_id, json } => {
            let who = operator();
            mamori_registry::manage::apply(
                &db,
                Change::RevokeToken(token_id),
                &Actor::operator(&who),
            )
            .await?;
            if json {
                println!("{}", json!({ "id": token_id, "revoked": true }));
            } else {
                println!("token {token_id} revoked");
            }
        }
    }
    Ok(())
}

pub async fn device(cfg: Config, cmd: DeviceCommand) -> anyhow::Result<()> {
    let db = connect(&cfg).await?;
    match cmd {
        DeviceCommand::List { tenant, json } => {
            let devices = mamori_registry::list_devices(&db, tenant).await?;
            if json {
                println!("{}", json!({ "devices": devices }));
            } else {
                for d in devices {
                    println!(
                        "{}  {:<24} {} {}  last seen {}  {}{}",
                        d.id,
                        d.hostname,
                        d.os_name,
                        d.os_version,
                        d.last_seen_at.map_or("never".into(), |t| t.to_rfc3339()),
                        if d.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "active"
                        },
                        d.clone_of
                            .map(|c| format!("  CLONE of {c}"))
                            .unwrap_or_default()
                    );
                }
            }
        }
        DeviceCommand::Revoke { device_id, json } => {
            let who = operator();
            let tenant = mamori_registry::manage::apply(
                &db,
                Change::RevokeDevice(device_id),
                &Actor::operator(&who),
            )
            .await?;
            if json {
                println!(
                    "{}",
                    json!({ "id": device_id, "tenant_id": tenant, "revoked": true })
                );
            } else {
                println!("device {device_id} revoked");
            }
        }
    }
    Ok(())
}
