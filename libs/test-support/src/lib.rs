//! Test fixtures against the real PostgreSQL and Redis that
//! `scripts/test.sh` starts (`MAMORI_TEST_DATABASE_URL`,
//! `MAMORI_TEST_REDIS_URL`).
//!
//! Each [`TestEnv`] gets its own database, cloned from a migrated template
//! (fast: no migrations per test), and its own Redis logical database, so
//! tests run in parallel without seeing each other's rows or streams.
//! Database names in the DDL below are generated here (uuid, migration
//! version), never taken from input: hence the `AssertSqlSafe`.

pub mod cluster;
mod redis_proc;

pub use redis_proc::RedisProc;

use mamori_tenancy::{Db, MIGRATOR};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use std::time::Duration;

/// A fresh database and Redis database for one test.
#[derive(Debug)]
pub struct TestEnv {
    /// The test database, as the owner (what services are configured with).
    pub database_url: String,
    /// The test's Redis logical database.
    pub redis_url: String,
    /// The services' view: application role, row-level security.
    pub db: Db,
    /// The owner's view, for assertions across tenants.
    pub owner: PgPool,
}

fn env_url(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test.sh, which starts PostgreSQL and Redis")
    })
}

fn with_database(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("database URL has a path");
    format!("{base}/{db}")
}

impl TestEnv {
    pub async fn new() -> Self {
        let server = env_url("MAMORI_TEST_DATABASE_URL");
        let redis_base = env_url("MAMORI_TEST_REDIS_URL");
        let template = ensure_template(&server).await;
        let name = format!("mamori_t_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&with_database(&server, "postgres"))
            .await
            .expect("connect to the test PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {name} TEMPLATE {template}"
        )))
        .execute(&mut admin)
        .await
        .expect("create test database");
        let database_url = with_database(&server, &name);
        // A copy does not inherit the template's database privileges: take
        // temporary tables away from the services' role as the migration did.
        let mut copy = PgConnection::connect(&database_url)
            .await
            .expect("connect to the test database");
        sqlx::query("SELECT mamori_revoke_temp()")
            .execute(&mut copy)
            .await
            .expect("revoke temporary tables");
        let _ = copy.close().await;
        let db = Db::connect(&database_url, 8)
            .await
            .expect("connect as the application role");
        let owner = PgPoolOptions::new()
            .max_connections(4)
            .connect(&database_url)
            .await
            .expect("connect as owner");

        let client = redis::Client::open(redis_base.as_str()).expect("redis url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test Redis");
        let n: u64 = redis::cmd("INCR")
            .arg("mamori:test:next-db")
            .query_async(&mut conn)
            .await
            .expect("INCR");
        let index = 1 + n % 255;
        let redis_url = format!("{}/{index}", redis_base.trim_end_matches('/'));
        let mut conn = redis::Client::open(redis_url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.unwrap();
        Self {
            database_url,
            redis_url,
            db,
            owner,
        }
    }

    /// A Redis connection to this test's database.
    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis_url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

/// Creates (once per migration set) a migrated template database.
async fn ensure_template(server: &str) -> String {
    // Named by the migrations' checksums, so an edited migration gets a
    // fresh template instead of a stale one.
    let mut digest: u64 = 0xcbf2_9ce4_8422_2325;
    for m in MIGRATOR.iter() {
        for b in m.checksum.iter() {
            digest = (digest ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    let template = format!("mamori_tpl_{}_{digest:016x}", MIGRATOR.iter().count());
    let mut admin = PgConnection::connect(&with_database(server, "postgres"))
        .await
        .expect("connect to the test PostgreSQL");
    // One test process builds the template; the others wait for it.
    sqlx::query("SELECT pg_advisory_lock(4242)")
        .execute(&mut admin)
        .await
        .unwrap();
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&template)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    if !exists {
        let building = format!("{template}_building");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {building}"
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {building}")))
            .execute(&mut admin)
            .await
            .unwrap();
        Db::migrate(&with_database(server, &building))
            .await
            .expect("migrate the template database");
        // Let connections of the migration close before the rename.
        tokio::time::sleep(Duration::from_millis(50)).await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE {building} RENAME TO {template}"
        )))
        .execute(&mut admin)
        .await
        .unwrap();
    }
    sqlx::query("SELECT pg_advisory_unlock(4242)")
        .execute(&mut admin)
        .await
        .unwrap();
    template
}
