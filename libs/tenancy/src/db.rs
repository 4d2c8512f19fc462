//! The PostgreSQL pool of the services, switched to the application role.

use crate::{Error, Result, TenantId};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool, Postgres, Transaction};
use std::collections::HashSet;
use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::time::Duration;

/// The schema migrations (the `migrations/` folder of the repository).
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// Every service query runs as `mamori_app`, created by the first migration.
const SET_ROLE: &str = "SET ROLE mamori_app";

/// A pool whose connections run as `mamori_app`, under row-level security.
#[derive(Clone, Debug)]
pub struct Db {
    pool: PgPool,
}

impl Db {
    /// Connects, switches every connection to the application role and
    /// refuses an unmigrated database with a message saying so.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        Self::connect_with(url, max_connections, "mamori", None).await
    }

    /// [`Db::connect`], naming the connections `application_name` (what
    /// `pg_stat_activity` shows), and with `statement_timeout` PostgreSQL
    /// cancels any statement running longer (a request given up on does
    /// not leave its query behind).
    pub async fn connect_with(
        url: &str,
        max_connections: u32,
        application_name: &str,
        statement_timeout: Option<Duration>,
    ) -> Result<Self> {
        let mut opts = PgConnectOptions::from_str(url)?.application_name(application_name);
        if let Some(t) = statement_timeout {
            opts = opts.options([("statement_timeout", format!("{}ms", t.as_millis().max(1)))]);
        }
        // Check as the connecting (owner) user first: the application role
        // cannot read the migration table, and does not exist before the
        // first migration.
        let mut owner = PgConnection::connect_with(&opts).await?;
        let applied = applied_versions(&mut owner).await.unwrap_or_default();
        let _ = owner.close().await;
        check_migrated(&applied)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute(SET_ROLE).await?;
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        Ok(Self { pool })
    }

    /// Applies every pending migration, connected as the owner (the URL's
    /// user). Returns how many were applied.
    pub async fn migrate(url: &str) -> Result<usize> {
        let opts = PgConnectOptions::from_str(url)?.application_name("mamori-migrate");
        let mut conn = PgConnection::connect_with(&opts).await?;
        let before = applied_versions(&mut conn).await.unwrap_or_default();
        MIGRATOR.run(&mut conn).await?;
        let after = applied_versions(&mut conn).await?;
        let _ = conn.close().await;
        Ok(after.len().saturating_sub(before.len()))
    }

    /// Opens a transaction in which only `tenant`'s rows exist.
    pub async fn begin_tenant(&self, tenant: TenantId) -> Result<TenantTx> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT set_config('mamori.tenant_id', $1, true)")
            .bind(tenant.to_string())
            .execute(&mut *tx)
            .await?;
        Ok(TenantTx { tx, tenant })
    }

    /// Opens a transaction outside any one tenant (signup, login, MSP
    /// organisation work) with the acting organisation and user named for
    /// the row policies that look at them.
    pub async fn begin_actor(
        &self,
        org: Option<uuid::Uuid>,
        user: Option<uuid::Uuid>,
    ) -> Result<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        name_actor(&mut tx, org, user).await?;
        Ok(tx)
    }

    /// The pool itself, for calls that involve no tenant rows (the
    /// SECURITY DEFINER authentication functions, health checks).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn applied_versions(conn: &mut PgConnection) -> Result<HashSet<i64>> {
    let rows: Vec<(i64,)> = sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(|(v,)| v).collect())
}

/// Refuses a database that lacks any of this build's migrations.
fn check_migrated(applied: &HashSet<i64>) -> Result<()> {
    let missing: Vec<_> = MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
        .collect();
    if let Some(first) = missing.first() {
        return Err(Error::NotMigrated {
            missing: missing.len(),
            first: format!("{}_{}", first.version, first.description),
        });
    }
    Ok(())
}

/// A transaction bound to one tenant. Derefs to the connection for queries;
/// nothing is kept unless [`TenantTx::commit`] is called.
#[derive(Debug)]
pub struct TenantTx {
    tx: Transaction<'static, Postgres>,
    tenant: TenantId,
}

impl TenantTx {
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// Switches the same transaction to another tenant (the writer commits
    /// several tenants' events in one transaction).
    pub async fn switch_tenant(&mut self, tenant: TenantId) -> Result<()> {
        sqlx::query("SELECT set_config('mamori.tenant_id', $1, true)")
            .bind(tenant.to_string())
            .execute(&mut *self.tx)
            .await?;
        self.tenant = tenant;
        Ok(())
    }

    /// Names the acting organisation and user for the row policies that
    /// look at them (MSP access, the user's own rows).
    pub async fn set_actor(
        &mut self,
        org: Option<uuid::Uuid>,
        user: Option<uuid::Uuid>,
    ) -> Result<()> {
        name_actor(&mut self.tx, org, user).await
    }

    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

impl Deref for TenantTx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for TenantTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

/// Sets `mamori.org_id` and `mamori.user_id` for the transaction (empty for
/// none).
async fn name_actor(
    conn: &mut PgConnection,
    org: Option<uuid::Uuid>,
    user: Option<uuid::Uuid>,
) -> Result<()> {
    let text = |id: Option<uuid::Uuid>| id.map(|u| u.to_string()).unwrap_or_default();
    sqlx::query(
        "SELECT set_config('mamori.org_id', $1, true), set_config('mamori.user_id', $2, true)",
    )
    .bind(text(org))
    .bind(text(user))
    .execute(conn)
    .await?;
    Ok(())
}
