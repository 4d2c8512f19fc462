//! Change notices: after a change commits, the changer publishes the tenant
//! on a Redis channel; every ingest process listens and pushes the new
//! effective policy to the tenant's agents it holds. Pub/sub is
//! fire-and-forget, so listeners also compare revisions periodically
//! ([`revisions`]) to catch a notice lost while they reconnected.

use futures::StreamExt;
use mamori_tenancy::{Db, TenantId};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The channel the notices go to.
pub const CHANNEL: &str = "mamori:policy-changed";

/// Publishes that `tenant`'s policies changed, on the first node of
/// `target` that answers within `within` (in a cluster a classic PUBLISH
/// reaches every node).
pub async fn publish_to(target: &mamori_streams::RedisTarget, tenant: TenantId, within: Duration) {
    for client in target.pubsub_clients() {
        match tokio::time::timeout(within, client.get_multiplexed_async_connection()).await {
            Ok(Ok(mut conn)) => return publish(&mut conn, tenant).await,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot reach Redis for the policy notice");
            }
            Err(_) => tracing::warn!("Redis did not answer in time for the policy notice"),
        }
    }
    tracing::warn!(tenant_id = %tenant, "no Redis node took the policy notice; agents get the change on ingest's next sweep");
}

/// Publishes that `tenant`'s policies changed. Failure is logged, not
/// returned: the change is committed, and listeners' periodic comparison
/// delivers it a little later.
pub async fn publish(conn: &mut impl redis::aio::ConnectionLike, tenant: TenantId) {
    let res: redis::RedisResult<i64> = redis::cmd("PUBLISH")
        .arg(CHANNEL)
        .arg(tenant.to_string())
        .query_async(conn)
        .await;
    if let Err(e) = res {
        tracing::warn!(tenant_id = %tenant, error = %e, "cannot publish the policy change notice; agents get it on the next revision sweep");
    }
}

/// Listens for notices until `stop`, re-subscribing after a failure, and
/// sends each changed tenant to `out`. After every (re)subscription it sends
/// `None`: "notices may have been missed, compare everything".
pub async fn listen(
    target: mamori_streams::RedisTarget,
    out: mpsc::Sender<Option<TenantId>>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    // In a cluster, any node will do: after a failure, the next one.
    let clients = target.pubsub_clients();
    if clients.is_empty() {
        tracing::error!(redis = %target, "no Redis node to subscribe to policy notices on; agents get changes on the revision sweep only");
        return;
    }
    let mut turn = 0usize;
    loop {
        let client = clients[turn % clients.len()].clone();
        turn += 1;
        let session = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(CHANNEL).await?;
            if out.send(None).await.is_err() {
                return Ok(());
            }
            let mut messages = pubsub.on_message();
            while let Some(msg) = messages.next().await {
                let Ok(text) = msg.get_payload::<String>() else {
                    continue;
                };
                let Ok(id) = text.parse::<Uuid>() else {
                    tracing::warn!(payload = %text.chars().take(64).collect::<String>(), "ignoring a malformed policy notice");
                    continue;
                };
                if out.send(Some(TenantId::from_uuid(id))).await.is_err() {
                    return Ok(());
                }
            }
            Err::<(), redis::RedisError>(redis::RedisError::from((
                redis::ErrorKind::Io,
                "policy notice subscription ended",
            )))
        };
        let res = tokio::select! {
            _ = stop.cancelled() => return,
            r = session => r,
        };
        match res {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, retry_ms = backoff.as_millis() as u64, "policy notice subscription lost; resubscribing");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The current policy revision of each of `tenants`.
pub async fn revisions(db: &Db, tenants: &[TenantId]) -> crate::Result<HashMap<TenantId, i64>> {
    let ids: Vec<Uuid> = tenants.iter().map(|t| t.as_uuid()).collect();
    let rows: Vec<(Uuid, i64)> = sqlx::query_as("SELECT * FROM mamori_policy_revisions($1)")
        .bind(&ids)
        .fetch_all(db.pool())
        .await?;
    Ok(rows
        .into_iter()
        .map(|(t, r)| (TenantId::from_uuid(t), r))
        .collect())
}
