//! Start-up of the writer: one consumer task per shard plus maintenance.

use crate::config::Config;
use crate::consume::Shard;
use anyhow::Context;
use chrono::{Duration as Days, Utc};
use mamori_streams::{WRITER_GROUP, ensure_group, stream_keys};
use mamori_tenancy::Db;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
pub struct Running {
    pub ops_addr: SocketAddr,
    pub consumer: String,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl Running {
    /// Stops reading; a batch being written is finished and acked first.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }

    pub fn stopper(&self) -> CancellationToken {
        self.stop.clone()
    }
}

pub async fn start(config: Config) -> anyhow::Result<Running> {
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid writer config: {e}"))?;
    let db = Db::connect(&config.database_url, config.db_max_connections)
        .await
        .context("writer cannot use the database (MAMORI_DATABASE_URL)")?;
    let today = Utc::now().date_naive();
    crate::ensure_partitions(&db, today - Days::days(1), today + Days::days(7))
        .await
        .context("cannot create event partitions")?;
    let client = redis::Client::open(config.redis_url.as_str()).with_context(|| {
        format!(
            "MAMORI_REDIS_URL {:?} is not a valid Redis URL",
            config.redis_url
        )
    })?;
    let manager_cfg = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(10)));
    let mut conn = redis::aio::ConnectionManager::new_with_config(client.clone(), manager_cfg)
        .await
        .with_context(|| format!("cannot reach Redis at {}", config.redis_url))?;
    ensure_group(&mut conn, config.stream_shards, WRITER_GROUP).await?;

    let consumer = config.consumer_name();
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    for key in stream_keys(config.stream_shards) {
        // A blocking XREADGROUP holds its connection: each shard reads on
        // its own, and acks on the shared manager.
        let reader = client
            .get_multiplexed_async_connection_with_config(
                &redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Some(Duration::from_secs(10))),
            )
            .await?;
        let shard = Shard {
            key,
            consumer: consumer.clone(),
            read_count: config.writer_read_count,
            claim_idle_ms: config.writer_claim_idle_ms,
            db: db.clone(),
            conn: conn.clone(),
        };
        tasks.spawn(shard.run(reader, stop.clone()));
    }
    tasks.spawn(crate::trim::run(
        stream_keys(config.stream_shards),
        conn.clone(),
        stop.clone(),
    ));
    tasks.spawn(crate::partitions::maintain(db.clone(), stop.clone()));

    let ready: mamori_telemetry::Readiness = {
        let db = db.clone();
        let conn = conn.clone();
        Arc::new(move || {
            let db = db.clone();
            let mut conn = conn.clone();
            Box::pin(async move {
                sqlx::query("SELECT 1")
                    .execute(db.pool())
                    .await
                    .map_err(|e| format!("postgres: {e}"))?;
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .map(drop)
                    .map_err(|e| format!("redis: {e}"))
            })
        })
    };
    let ops_addr = mamori_telemetry::serve_ops(&config.writer_ops_addr, ready).await?;
    tracing::info!(%consumer, shards = config.stream_shards, %ops_addr, "writer started");
    Ok(Running {
        ops_addr,
        consumer,
        stop,
        tasks,
    })
}
