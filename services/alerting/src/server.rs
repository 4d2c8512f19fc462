//! Start-up of the alerting service: one consumer per shard in the
//! `alerting` group, the policy-notice listener, the notifier and the
//! pruning of old rule state.

use crate::config::Config;
use crate::consume::Alerting;
use crate::outbox::Notifier;
use anyhow::Context;
use mamori_keywrap::Kek;
use mamori_mail::Mailer;
use mamori_policy::PolicyCache;
use mamori_streams::{ALERTING_GROUP, GroupSpec, spawn_group};
use mamori_tenancy::Db;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Rule state is kept this long (the longest print window is a week).
const KEEP_HITS: chrono::TimeDelta = chrono::TimeDelta::days(8);

#[derive(Debug)]
pub struct Running {
    pub ops_addr: SocketAddr,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl Running {
    /// Stops reading and sending; work in progress is finished first.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

pub async fn start(config: Config) -> anyhow::Result<Running> {
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid alerting config: {e}"))?;
    let kek = Kek::load(&config.key_encryption_key, &config.key_encryption_key_file)?;
    let mailer = Mailer::new(&config.smtp_url, &config.mail_dir, &config.mail_from)?;
    let db = Db::connect(&config.database_url, config.db_max_connections)
        .await
        .context("alerting cannot use the database (MAMORI_DATABASE_URL)")?;
    let (client, conn) = mamori_streams::connect(&config.redis_url)
        .await
        .map_err(anyhow::Error::msg)?;
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();

    let cache = Arc::new(PolicyCache::new(db.clone()));
    let (notices_tx, mut notices) = mpsc::channel(1024);
    tasks.spawn(mamori_policy::notify::listen(
        client.clone(),
        notices_tx,
        stop.clone(),
    ));
    tasks.spawn({
        let cache = Arc::clone(&cache);
        async move {
            while let Some(tenant) = notices.recv().await {
                cache.invalidate(tenant);
            }
        }
    });

    let outbox = Arc::new(Notify::new());
    let handler = Alerting {
        db: db.clone(),
        cache,
        window: Duration::from_secs(config.alarm_window_s),
        digest_every: Duration::from_secs(config.digest_interval_s),
        learning: Duration::from_secs(config.new_app_learning_s),
        known_apps: Arc::default(),
        outbox: Arc::clone(&outbox),
    };
    let consumer = mamori_streams::consumer_name(&config.alerting_consumer);
    let spec = GroupSpec {
        shards: config.stream_shards,
        group: ALERTING_GROUP,
        consumer: consumer.clone(),
        read_count: config.alerting_read_count,
        claim_idle_ms: config.alerting_claim_idle_ms,
        // The writer keeps the dead letters.
        dead_letters: false,
    };
    spawn_group(
        &client,
        &conn,
        &spec,
        |_| handler.clone(),
        &mut tasks,
        &stop,
    )
    .await
    .context("cannot create the alerting consumer group")?;

    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(config.webhook_timeout_ms))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let notifier = Notifier {
        db: db.clone(),
        mailer,
        http,
        kek: Arc::new(kek),
        max_attempts: config.notify_max_attempts,
        lease_s: config.notify_lease_s,
        allow_private: config.webhook_allow_private,
        public_url: config.public_url.clone(),
    };
    tasks.spawn(notifier.run(
        outbox,
        Duration::from_millis(config.notify_poll_ms),
        stop.clone(),
    ));
    tasks.spawn(prune(db.clone(), stop.clone()));

    let ready = mamori_streams::readiness(db.clone(), conn.clone());
    let ops_addr = mamori_telemetry::serve_ops(&config.alerting_ops_addr, ready).await?;
    tracing::info!(%consumer, shards = config.stream_shards, %ops_addr, "alerting started");
    Ok(Running {
        ops_addr,
        stop,
        tasks,
    })
}

/// Deletes rule state older than [`KEEP_HITS`], hourly, in bounded steps.
async fn prune(db: Db, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        loop {
            let gone: Result<i64, sqlx::Error> =
                sqlx::query_scalar("SELECT mamori_prune_alert_hits($1, 10000)")
                    .bind(chrono::Utc::now() - KEEP_HITS)
                    .fetch_one(db.pool())
                    .await;
            match gone {
                Ok(n) if n >= 10_000 => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot prune old alert state");
                    break;
                }
            }
        }
    }
}
