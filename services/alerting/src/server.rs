//! Start-up of the alerting service: one consumer per shard in the
//! `alerting` group and one per shard's overflow lane, the policy-notice
//! listener, the notifier and the pruning of old rule state.

use crate::config::Config;
use crate::consume::{Alerting, Fairness, Overflow, Throttle};
use crate::outbox::Notifier;
use anyhow::Context;
use mamori_keywrap::Kek;
use mamori_mail::Mailer;
use mamori_policy::PolicyCache;
use mamori_streams::{ALERTING_GROUP, GroupSpec, spawn_group};
use mamori_telemetry::Supervisor;
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
    /// Resolves when one of the service's tasks has failed (it is then
    /// unready and should be restarted), with why.
    pub async fn failed(&self) -> String {
        self.supervisor.failed().await
    }

    #[doc(hidden)]
    pub fn abort_task(&self, name: &str) -> bool {
        self.supervisor.abort_task(name)
    }

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
    let kek = Kek::load(
        &config.kek.key_encryption_key,
        &config.kek.key_encryption_key_file,
    )?;
    let mailer = Mailer::new(&config.smtp_url, &config.mail_dir, &config.mail_from)?;
    let db = Db::connect(
        &config.stores.database_url,
        config.stores.db_max_connections,
    )
    .await
    .context("alerting cannot use the database (MAMORI_DATABASE_URL)")?;
    let (target, conn) = mamori_streams::connect(&config.stores.redis_url)
        .await
        .map_err(anyhow::Error::msg)?;
    mamori_streams::check_shards(&mut conn.clone(), config.streams.stream_shards)
        .await
        .map_err(anyhow::Error::msg)?;
    let stop = CancellationToken::new();
    let supervisor = Supervisor::new("alerting", stop.clone());
    let mut tasks = JoinSet::new();

    let cache = Arc::new(PolicyCache::new(db.clone()));
    let (notices_tx, mut notices) = mpsc::channel(1024);
    supervisor.spawn(
        &mut tasks,
        "policy notice listener",
        mamori_policy::notify::listen(target.clone(), notices_tx, stop.clone()),
    );
    supervisor.spawn(&mut tasks, "policy cache invalidation", {
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
        settings: crate::store::Settings {
            window: Duration::from_secs(config.alarm_window_s),
            digest_every: Duration::from_secs(config.digest_interval_s),
            learning: Duration::from_secs(config.new_app_learning_s),
            mail_quota: config.mail_daily_quota,
        },
        known_apps: Arc::default(),
        outbox: Arc::clone(&outbox),
        overflow: None,
        throttle: Arc::new(Throttle::new(
            f64::from(config.alerting_overflow_cpu_percent) / 100.0,
        )),
    };
    let consumer = mamori_streams::consumer_name(&config.alerting_consumer);
    let spec = GroupSpec {
        shards: config.streams.stream_shards,
        key_of: mamori_streams::stream_key,
        group: ALERTING_GROUP,
        consumer: consumer.clone(),
        read_count: config.alerting_read_count,
        claim_idle_ms: config.alerting_claim_idle_ms,
        // The writer keeps the dead letters.
        dead_letters: false,
        delete_acked: false,
    };
    let fairness = Arc::new(Fairness::new(
        Duration::from_millis(config.alerting_tenant_budget_ms),
        Duration::from_secs(config.alerting_overflow_s),
    ));
    spawn_group(
        &target,
        &conn,
        &spec,
        |key| Alerting {
            overflow: Some(Overflow {
                key: mamori_streams::overflow_key(
                    mamori_streams::shard_of_key(key).expect("a shard's stream key"),
                ),
                conn: conn.clone(),
                fairness: Arc::clone(&fairness),
            }),
            ..handler.clone()
        },
        &supervisor,
        &mut tasks,
        &stop,
    )
    .await
    .context("cannot create the alerting consumer group")?;
    // The overflow lanes: read by this group only, so deleted once acked;
    // one entry at a time, so that a read waiting for its CPU share never
    // holds entries long enough for another replica to claim them.
    let overflow = GroupSpec {
        key_of: mamori_streams::overflow_key,
        delete_acked: true,
        read_count: 1,
        ..spec
    };
    spawn_group(
        &target,
        &conn,
        &overflow,
        |_| handler.clone(),
        &supervisor,
        &mut tasks,
        &stop,
    )
    .await
    .context("cannot create the alerting overflow group")?;

    let resolver = mamori_policy::webhook::Resolver::new(
        config.webhook_allow_private,
        &config.webhook_dns_server,
    )
    .map_err(anyhow::Error::msg)?;
    // Webhook hosts are resolved, vetted and connected to in one step: the
    // client connects only to the addresses the resolver let through.
    let http =
        mamori_policy::webhook::client(resolver, Duration::from_millis(config.webhook_timeout_ms))?;
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
    supervisor.spawn(
        &mut tasks,
        "notifier",
        notifier.run(
            outbox,
            Duration::from_millis(config.notify_poll_ms),
            stop.clone(),
        ),
    );
    supervisor.spawn(
        &mut tasks,
        "rule state pruning",
        prune(db.clone(), stop.clone()),
    );

    let ready = supervisor.readiness(mamori_streams::readiness(db.clone(), conn.clone()));
    let ops_addr = mamori_telemetry::serve_ops(&config.alerting_ops_addr, ready).await?;
    tracing::info!(%consumer, shards = config.streams.stream_shards, %ops_addr, "alerting started");
    Ok(Running {
        ops_addr,
        stop,
        tasks,
        supervisor,
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
