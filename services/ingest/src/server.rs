//! Start-up: configuration checks, connections, the gRPC server and its
//! background tasks.

use crate::config::Config;
use crate::connections::Connections;
use crate::grpc::AgentServer;
use crate::limits::{Buckets, EventLimits};
use crate::policy::Pusher;
use crate::service::Ingest;
use crate::sink::{BacklogLimits, Sink};
use anyhow::Context;
use mamori_proto::validate::Limits;
use mamori_ratelimit::Limit;
use mamori_telemetry::Supervisor;
use mamori_tenancy::Db;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// A started ingest server.
#[derive(Debug)]
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub ops_addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

/// Dropped, the server stops: its background tasks then end as on a stop,
/// not as failures (a test's stack dropped at its end logged them so).
impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Running {
    /// Stops accepting, closes streams and waits for the server to end.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop.cancel();
        (&mut self.task).await?
    }

    /// Waits until the server ends on its own (an error) or `stop` fires.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        (&mut self.task).await?
    }

    pub fn stopper(&self) -> CancellationToken {
        self.stop.clone()
    }
}

/// Binds and starts the ingest server.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid ingest config: {e}"))?;
    // Bound before anything else starts, so a bad address or certificate
    // stops start-up at once.
    let bound = mamori_grpc_server::bind(&mamori_grpc_server::Listen {
        what: "ingest",
        addr: &config.ingest_addr,
        addr_var: "MAMORI_INGEST_ADDR",
        tls_cert: &config.ingest_tls_cert,
        tls_key: &config.ingest_tls_key,
        tls_var: "MAMORI_INGEST_TLS",
    })
    .await?;
    let db = Db::connect(
        &config.stores.database_url,
        config.stores.db_max_connections,
    )
    .await
    .context("ingest cannot use the database (MAMORI_DATABASE_URL)")?;
    let redis =
        mamori_streams::RedisTarget::parse(&config.stores.redis_url).map_err(anyhow::Error::msg)?;
    let sink = Sink::connect(
        &redis,
        config.streams.stream_shards,
        mamori_streams::Replication {
            replicas: config.redis_wait_replicas,
            timeout: Duration::from_millis(config.redis_wait_timeout_ms),
        },
        BacklogLimits {
            max_entries: config.max_stream_backlog,
            max_behind: Duration::from_millis(config.max_backlog_ms),
            max_wait: Duration::from_millis(config.backpressure_wait_ms),
            max_overflow: config.max_alerting_overflow,
        },
    )
    .await?;
    let stop = CancellationToken::new();
    let supervisor = Supervisor::new("ingest", stop.clone());
    let mut tasks = JoinSet::new();
    let connections = Arc::new(Connections::default());
    supervisor.spawn(&mut tasks, "revocation sweep", {
        let connections = Arc::clone(&connections);
        let db = db.clone();
        let stop = stop.clone();
        let every = Duration::from_millis(config.revocation_check_ms);
        async move { connections.sweep_revocations(db, every, stop).await }
    });
    supervisor.spawn(
        &mut tasks,
        "backlog measurement",
        sink.clone().watch_backlog(stop.clone()),
    );

    let ready: mamori_telemetry::Readiness = {
        let db = db.clone();
        let sink = sink.clone();
        Arc::new(move || {
            let db = db.clone();
            let sink = sink.clone();
            Box::pin(async move {
                sqlx::query("SELECT 1")
                    .execute(db.pool())
                    .await
                    .map_err(|e| format!("postgres: {e}"))?;
                sink.ping().await
            })
        })
    };
    let ops_addr =
        mamori_telemetry::serve_ops(&config.ingest_ops_addr, supervisor.readiness(ready)).await?;

    let seen = Arc::new(crate::seen::Seen::default());
    supervisor.spawn(&mut tasks, "last-seen writer", {
        let seen = Arc::clone(&seen);
        let db = db.clone();
        let stop = stop.clone();
        let connections = Arc::clone(&connections);
        async move {
            seen.run(
                db,
                Duration::from_secs(1),
                move || connections.devices(),
                Duration::from_secs(60),
                stop,
            )
            .await
        }
    });
    let (applied_tx, applied_rx) = tokio::sync::mpsc::channel(crate::policy::APPLIED_QUEUE);
    supervisor.spawn(
        &mut tasks,
        "applied-policy writer",
        crate::policy::write_applied(db.clone(), applied_rx),
    );
    let pusher = Pusher {
        db: db.clone(),
        connections: Arc::clone(&connections),
        cache: Arc::new(mamori_policy::PolicyCache::new(db.clone())),
        applied: applied_tx,
    };
    supervisor.spawn(
        &mut tasks,
        "policy pusher",
        pusher.clone().run(
            redis.clone(),
            Duration::from_millis(config.policy_sweep_ms),
            stop.clone(),
        ),
    );
    let shared_limits = if config.shared_rate_limits {
        // A connection of its own: a limit check never queues behind an
        // append waiting for its replicas.
        let conn = redis
            .connect(Duration::from_secs(2))
            .await
            .map_err(anyhow::Error::msg)?;
        Some(mamori_ratelimit::Shared::new(
            conn,
            "ingest",
            Duration::from_millis(250),
        ))
    } else {
        None
    };
    let ingest = Ingest {
        db,
        sink,
        connections,
        pusher,
        event_limits: Arc::new(EventLimits::new(
            shared_limits,
            Limit {
                rate: config.device_rate,
                burst: config.device_burst,
            },
            Limit {
                rate: config.tenant_rate,
                burst: config.tenant_burst,
            },
        )),
        // A reconnecting agent backs off from half a second: a stream a
        // second, ten at once, is room enough.
        connect_limits: Arc::new(Buckets::new(1, 10)),
        auth_failures: Arc::new(Buckets::new(
            config.auth_failure_rate,
            config.auth_failure_burst,
        )),
        seen,
        limits: Limits {
            max_events: config.max_batch_events as usize,
        },
        shutdown: stop.clone(),
    };
    let service = AgentServer::new(ingest, config.max_message_bytes as usize);
    let (health_service, reflection) =
        mamori_grpc_server::health_and_reflection::<AgentServer>().await?;
    let grpc_addr = bound.addr;
    let incoming = bound.incoming;
    let mut builder = bound
        .builder
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    if config.max_connection_age_s > 0 {
        // Agents hold one stream for hours: a connection that ends now and
        // then lets them spread again over the replicas behind a load
        // balancer (after a scale-out, or a replica's restart). The agent
        // reconnects with its jittered backoff; its spool keeps the rest.
        builder = builder
            .max_connection_age(Duration::from_secs(config.max_connection_age_s))
            .max_connection_age_grace(Duration::from_secs(30));
    }
    let router = builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(service);
    let shutdown = stop.clone();
    let task = tokio::spawn(async move {
        let mut tasks = tasks;
        // Dropped first (declared last): the runtime's end cancels the
        // stop before the tasks go, so they do not count as failures.
        let _stopping = shutdown.clone().drop_guard();
        let mut serve = Box::pin(
            router.serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned()),
        );
        let result = tokio::select! {
            r = &mut serve => r.context("ingest gRPC server failed"),
            why = supervisor.failed() => {
                // Drain the streams, then end with the reason.
                shutdown.cancel();
                let _ = (&mut serve).await;
                Err(anyhow::anyhow!("ingest failed: {why}"))
            }
        };
        // Stopped (also when the server itself failed): the background
        // tasks finish their last round (the last-seen and applied-policy
        // writes), for a few seconds at most.
        shutdown.cancel();
        drop(serve);
        let drained = tokio::time::timeout(Duration::from_secs(5), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("ingest's background tasks did not finish within 5 s of the stop");
        }
        result
    });
    tracing::info!(%grpc_addr, %ops_addr, tls = bound.tls, "ingest listening");
    Ok(Running {
        grpc_addr,
        ops_addr,
        stop,
        task,
    })
}
