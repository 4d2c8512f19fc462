//! Start-up of the policy service (`mamori policy`): the internal gRPC API
//! with health and reflection, and its ops endpoint.

use crate::api::PolicyApi;
use crate::config::Config;
use crate::identity::IdentityKey;
use anyhow::Context;
use mamori_keywrap::Kek;
use mamori_proto::policy::v1::policy_service_server::PolicyServiceServer;
use mamori_tenancy::Db;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Largest request accepted (a policy document is far smaller).
const MAX_MESSAGE_BYTES: usize = 4 << 20;

#[derive(Debug)]
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub ops_addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub fn stopper(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Stops taking calls; calls in progress finish first.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await?
    }
}

pub async fn start(config: Config) -> anyhow::Result<Running> {
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid policy config: {e}"))?;
    let bound = mamori_grpc_server::bind(&mamori_grpc_server::Listen {
        what: "the policy service",
        addr: &config.policy_addr,
        addr_var: "MAMORI_POLICY_ADDR",
        tls_cert: &config.policy_tls_cert,
        tls_key: &config.policy_tls_key,
        tls_var: "MAMORI_POLICY_TLS",
    })
    .await?;
    let kek = Kek::load(
        &config.kek.key_encryption_key,
        &config.kek.key_encryption_key_file,
    )?;
    let db = Db::connect(
        &config.stores.database_url,
        config.stores.db_max_connections,
    )
    .await
    .context("the policy service cannot use the database (MAMORI_DATABASE_URL)")?;
    let redis =
        mamori_streams::RedisTarget::parse(&config.stores.redis_url).map_err(anyhow::Error::msg)?;

    let ready: mamori_telemetry::Readiness = {
        let db = db.clone();
        Arc::new(move || {
            let db = db.clone();
            Box::pin(async move {
                sqlx::query("SELECT 1")
                    .execute(db.pool())
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("postgres: {e}"))
            })
        })
    };
    let ops_addr = mamori_telemetry::serve_ops(&config.policy_ops_addr, ready).await?;

    let api = PolicyApi {
        db,
        redis,
        key: Arc::new(IdentityKey::from_kek(&kek)),
        replays: Arc::default(),
    };
    let service = PolicyServiceServer::new(api).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let (health_service, reflection) =
        mamori_grpc_server::health_and_reflection::<PolicyServiceServer<PolicyApi>>().await?;
    let grpc_addr = bound.addr;
    let incoming = bound.incoming;
    // Each call gets a span in the caller's trace (the gateway sends its
    // request's `traceparent`); the handlers' spans are its children.
    let mut builder = bound
        .builder
        .timeout(Duration::from_secs(60))
        .trace_fn(|req| {
            let span = tracing::info_span!("policy_call", path = %req.uri().path());
            if let Some(tp) = req
                .headers()
                .get(crate::identity::TRACEPARENT)
                .and_then(|v| v.to_str().ok())
            {
                mamori_telemetry::set_parent_from_traceparent(&span, tp);
            }
            span
        })
        // The identity check compares the call's path with the one the
        // identity was signed for.
        .layer(tower::util::MapRequestLayer::new(
            |mut req: http::Request<tonic::body::Body>| {
                let path = crate::api::CallPath(req.uri().path().to_owned());
                req.extensions_mut().insert(path);
                req
            },
        ));
    let router = builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(service);
    let stop = CancellationToken::new();
    let shutdown = stop.clone();
    let task = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await
            .context("policy gRPC server failed")
    });
    tracing::info!(%grpc_addr, %ops_addr, tls = bound.tls, "policy service listening");
    Ok(Running {
        grpc_addr,
        ops_addr,
        stop,
        task,
    })
}
