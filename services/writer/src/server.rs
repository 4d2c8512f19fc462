//! Start-up of the writer: one consumer task per shard plus maintenance.

use crate::config::Config;
use crate::consume::Writer;
use anyhow::Context;
use chrono::{Duration as Days, Utc};
use mamori_streams::{GroupSpec, WRITER_GROUP, spawn_group, stream_keys};
use mamori_telemetry::Supervisor;
use mamori_tenancy::Db;
use std::net::SocketAddr;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
pub struct Running {
    pub ops_addr: SocketAddr,
    pub consumer: String,
    stop: CancellationToken,
    tasks: JoinSet<()>,
    supervisor: Supervisor,
}

/// Dropped without [`Running::shutdown`] (a test's end), the tasks end as
/// on a stop, not as failures.
impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Running {
    /// Stops reading; entries already read (a batch being written, a read
    /// in flight) are written and acked first.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Resolves when one of the writer's tasks has failed (the writer is
    /// then unready and should be restarted), with why.
    pub async fn failed(&self) -> String {
        self.supervisor.failed().await
    }

    #[doc(hidden)]
    pub fn abort_task(&self, name: &str) -> bool {
        self.supervisor.abort_task(name)
    }

    pub fn stopper(&self) -> CancellationToken {
        self.stop.clone()
    }
}

pub async fn start(config: Config) -> anyhow::Result<Running> {
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid writer config: {e}"))?;
    let db = Db::connect(
        &config.stores.database_url,
        config.stores.db_max_connections,
    )
    .await
    .context("writer cannot use the database (MAMORI_DATABASE_URL)")?;
    let today = Utc::now().date_naive();
    crate::ensure_partitions(&db, today - Days::days(1), today + Days::days(7))
        .await
        .context("cannot create event partitions")?;
    let (target, conn) = mamori_streams::connect(&config.stores.redis_url)
        .await
        .map_err(anyhow::Error::msg)?;
    mamori_streams::check_shards(&mut conn.clone(), config.streams.stream_shards)
        .await
        .map_err(anyhow::Error::msg)?;
    let consumer = mamori_streams::consumer_name(&config.writer_consumer);
    let stop = CancellationToken::new();
    let supervisor = Supervisor::new("writer", stop.clone());
    let mut tasks = JoinSet::new();
    let spec = GroupSpec {
        shards: config.streams.stream_shards,
        key_of: mamori_streams::stream_key,
        group: WRITER_GROUP,
        consumer: consumer.clone(),
        read_count: config.writer_read_count,
        claim_idle_ms: config.writer_claim_idle_ms,
        dead_letters: true,
        delete_acked: false,
    };
    let writer_db = db.clone();
    spawn_group(
        &target,
        &conn,
        &spec,
        |key| Writer {
            key: key.to_owned(),
            db: writer_db.clone(),
        },
        &supervisor,
        &mut tasks,
        &stop,
    )
    .await
    .context("cannot create the writer's consumer group")?;
    supervisor.spawn(
        &mut tasks,
        "stream trimmer",
        crate::trim::run(
            stream_keys(config.streams.stream_shards),
            conn.clone(),
            stop.clone(),
        ),
    );
    supervisor.spawn(
        &mut tasks,
        "partition maintenance",
        crate::partitions::maintain(db.clone(), stop.clone()),
    );

    let ready = supervisor.readiness(mamori_streams::readiness(db.clone(), conn.clone()));
    let ops_addr = mamori_telemetry::serve_ops(&config.writer_ops_addr, ready).await?;
    tracing::info!(%consumer, shards = config.streams.stream_shards, %ops_addr, "writer started");
    Ok(Running {
        ops_addr,
        consumer,
        stop,
        tasks,
        supervisor,
    })
}
