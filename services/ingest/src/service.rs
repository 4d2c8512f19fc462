//! The `AgentService` handlers: `Enroll` and the `Connect` stream.

use crate::auth::bearer_credential;
use crate::connections::{Connections, PolicyInbox};
use crate::error::registry_status;
use crate::grpc::{Inbound, InboundBody};
use crate::limits::{Buckets, EventLimits};
use crate::policy::Pusher;
use crate::seen::{MAX_DEGRADED_CHARS, Reported, Seen};
use crate::sink::Sink;
use mamori_policy::store::AppliedReport;
use mamori_proto::agent::v1::{
    BatchAck, BatchRejected, EnrollRequest, EnrollResponse, Hello, PolicyApplied, ServerMessage,
    server_message,
};
use mamori_proto::validate::{BatchView, Limits, Rejection, read_batch, validate_batch};
use mamori_registry::{AuthenticatedDevice, EnrollmentToken, MachineFacts};
use mamori_tenancy::{Db, DeviceId};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

#[derive(Debug)]
pub(crate) struct Ingest {
    pub(crate) db: Db,
    pub(crate) sink: Sink,
    pub(crate) connections: Arc<Connections>,
    pub(crate) pusher: Pusher,
    pub(crate) event_limits: Arc<EventLimits>,
    /// Streams a device may open (one live at a time; reconnects back off).
    pub(crate) connect_limits: Arc<Buckets<DeviceId>>,
    /// Failed authentications (enrollment token or device credential) per
    /// client address: each costs a database lookup.
    pub(crate) auth_failures: Arc<Buckets<std::net::IpAddr>>,
    pub(crate) seen: Arc<Seen>,
    pub(crate) limits: Limits,
    /// Cancelled when the server shuts down: open streams end with
    /// UNAVAILABLE so agents reconnect to another replica.
    pub(crate) shutdown: CancellationToken,
}

pub(crate) type ConnectStream = Pin<Box<dyn Stream<Item = Result<ServerMessage, Status>> + Send>>;

/// `AgentService`'s two methods (routed by `crate::grpc`).
impl Ingest {
    /// Refuses a client address that failed authentication too often.
    fn admit_address(&self, ip: Option<std::net::IpAddr>) -> Result<(), Status> {
        match ip {
            Some(ip) if !self.auth_failures.has_token(ip) => {
                metrics::counter!("mamori_ingest_auth_refusals_total").increment(1);
                Err(Status::resource_exhausted(
                    "too many failed authentications from this address, wait",
                ))
            }
            _ => Ok(()),
        }
    }

    fn count_failure(&self, ip: Option<std::net::IpAddr>) {
        if let Some(ip) = ip {
            let _ = self.auth_failures.take(ip, 1);
        }
    }

    pub(crate) async fn enroll(
        &self,
        request: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let ip = request.remote_addr().map(|a| a.ip());
        self.admit_address(ip)?;
        let req = request.into_inner();
        let token = EnrollmentToken::parse(&req.enrollment_token).map_err(registry_status)?;
        let f = req
            .facts
            .ok_or_else(|| Status::invalid_argument("facts are required"))?;
        let facts = MachineFacts {
            machine_id: f.machine_id,
            instance_id: f.instance_id,
            hostname: f.hostname,
            os_name: f.os_name,
            os_version: f.os_version,
            agent_version: f.agent_version,
        };
        let result = mamori_registry::enroll(&self.db, &token, &facts).await;
        let label = match &result {
            Ok(_) => "ok",
            Err(mamori_registry::Error::InvalidInput { .. }) => "invalid",
            Err(mamori_registry::Error::Tenancy(_)) => "error",
            Err(_) => "refused",
        };
        metrics::counter!("mamori_ingest_enrollments_total", "result" => label).increment(1);
        if label == "refused" {
            self.count_failure(ip);
        }
        let enrolled = result.map_err(registry_status)?;
        tracing::info!(
            tenant_id = %enrolled.tenant,
            device_id = %enrolled.device,
            hostname = %facts.hostname,
            reenrolled = enrolled.reenrolled,
            "device enrolled"
        );
        Ok(Response::new(EnrollResponse {
            device_id: enrolled.device.to_string(),
            tenant_id: enrolled.tenant.to_string(),
            device_credential: enrolled.credential.expose().to_owned(),
            reenrolled: enrolled.reenrolled,
        }))
    }

    pub(crate) async fn connect(
        &self,
        request: Request<Streaming<Inbound>>,
    ) -> Result<Response<ConnectStream>, Status> {
        let ip = request.remote_addr().map(|a| a.ip());
        self.admit_address(ip)?;
        let credential =
            bearer_credential(request.metadata()).inspect_err(|_| self.count_failure(ip))?;
        let device = self
            .connections
            .credentials
            .authenticate(&self.db, &credential)
            .await
            .map_err(|e| {
                if !matches!(e, mamori_registry::Error::Tenancy(_)) {
                    self.count_failure(ip);
                }
                registry_status(e)
            })?;
        if !self.connect_limits.try_take(device.device) {
            return Err(Status::resource_exhausted(
                "this device opens streams too often, retry later",
            ));
        }
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(32);
        let span = tracing::info_span!(
            "agent_stream",
            tenant_id = %device.tenant,
            device_id = %device.device,
        );
        let stream = DeviceStream {
            device,
            sink: self.sink.clone(),
            connections: Arc::clone(&self.connections),
            pusher: self.pusher.clone(),
            event_limits: Arc::clone(&self.event_limits),
            seen: Arc::clone(&self.seen),
            limits: self.limits,
            shutdown: self.shutdown.clone(),
        };
        tokio::spawn(stream.run(inbound, tx).instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// One agent's open stream.
struct DeviceStream {
    device: AuthenticatedDevice,
    sink: Sink,
    connections: Arc<Connections>,
    pusher: Pusher,
    event_limits: Arc<EventLimits>,
    seen: Arc<Seen>,
    limits: Limits,
    shutdown: CancellationToken,
}

/// What a Hello or PolicyApplied takes from the device's budget, in events:
/// a hello makes ingest compute the device's policy, a report queues a
/// database write.
const CONTROL_COST: u32 = 10;

impl DeviceStream {
    async fn run(
        mut self,
        mut inbound: Streaming<Inbound>,
        tx: mpsc::Sender<Result<ServerMessage, Status>>,
    ) {
        let (registration, mut inbox) = self
            .connections
            .register(self.device.tenant, self.device.device);
        tracing::debug!("agent connected");
        self.record_seen(None);
        loop {
            let msg = tokio::select! {
                Ok(()) = inbox.updates.changed() => {
                    let update = inbox.updates.borrow_and_update().clone();
                    if let Some(update) = update {
                        tracing::debug!(revision = update.revision, "sending policy");
                        let m = ServerMessage { body: Some(server_message::Body::Policy((*update).clone())) };
                        if tx.send(Ok(m)).await.is_err() {
                            break;
                        }
                    }
                    continue;
                }
                _ = registration.cancelled.cancelled() => {
                    let _ = tx.send(Err(Status::permission_denied("device has been revoked"))).await;
                    break;
                }
                _ = registration.superseded.cancelled() => {
                    tracing::info!("a newer stream of the device took over; closing this one");
                    let _ = tx.send(Err(Status::aborted("a newer stream of this device replaced this one"))).await;
                    break;
                }
                _ = self.shutdown.cancelled() => {
                    let _ = tx.send(Err(Status::unavailable("ingest is shutting down, reconnect"))).await;
                    break;
                }
                msg = inbound.message() => msg,
            };
            let msg = match msg {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(status) => {
                    tracing::debug!(%status, "agent stream ended with an error");
                    // Tell the agent when its message was refused (too large,
                    // undecodable); a broken connection has no one to tell.
                    let _ = tx.send(Err(status)).await;
                    break;
                }
            };
            if matches!(
                msg.body,
                Some(InboundBody::Hello(_) | InboundBody::PolicyApplied(_))
            ) && let Err(status) = self.take_tokens(CONTROL_COST).await
            {
                let _ = tx.send(Err(status)).await;
                break;
            }
            let reply = match msg.body {
                Some(InboundBody::Batch(batch)) => self.handle_batch(&batch).await,
                Some(InboundBody::Hello(hello)) => {
                    if !self.on_hello_policy(&hello, &inbox, &tx).await {
                        break;
                    }
                    tracing::info!(
                        agent_version = %hello.agent_version.chars().take(64).collect::<String>(),
                        spool_dropped_total = hello.spool_dropped_total,
                        spool_pending_events = hello.spool_pending_events,
                        "agent hello"
                    );
                    let clean = |s: &str, max: usize| -> String {
                        s.chars().filter(|c| !c.is_control()).take(max).collect()
                    };
                    if !hello.degraded.is_empty() {
                        tracing::warn!(
                            degraded = %clean(&hello.degraded, 256),
                            "agent reports sources in a degraded mode"
                        );
                    }
                    self.record_seen(Some(Reported {
                        agent_version: clean(&hello.agent_version, 64),
                        degraded: clean(&hello.degraded, MAX_DEGRADED_CHARS),
                    }));
                    if hello.spool_dropped_total > 0 {
                        tracing::warn!(
                            spool_dropped_total = hello.spool_dropped_total,
                            "agent reports events dropped from its full spool"
                        );
                    }
                    continue;
                }
                Some(InboundBody::PolicyApplied(applied)) => {
                    self.on_policy_applied(applied, &inbox);
                    continue;
                }
                None => Err(Status::invalid_argument("agent message has no body")),
            };
            match reply {
                Ok(m) => {
                    if tx.send(Ok(m)).await.is_err() {
                        break;
                    }
                }
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    break;
                }
            }
        }
        self.record_seen(None);
        tracing::debug!("agent disconnected");
    }

    /// Sends the device's effective policy when the agent enforces another
    /// revision. False when the stream is gone.
    async fn on_hello_policy(
        &self,
        hello: &Hello,
        inbox: &PolicyInbox,
        tx: &mpsc::Sender<Result<ServerMessage, Status>>,
    ) -> bool {
        inbox
            .known_revision
            .fetch_max(hello.policy_revision, std::sync::atomic::Ordering::Relaxed);
        let update = match self
            .pusher
            .for_device(self.device.tenant, self.device.device)
            .await
        {
            Ok(u) => u,
            Err(e) => {
                // The sweep sends it later; the agent enforces what it has.
                tracing::warn!(error = %e, "cannot compute the device's policy");
                return true;
            }
        };
        if update.revision == hello.policy_revision {
            return true;
        }
        inbox
            .known_revision
            .fetch_max(update.revision, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(
            agent_revision = hello.policy_revision,
            revision = update.revision,
            "sending policy"
        );
        let m = ServerMessage {
            body: Some(server_message::Body::Policy(update)),
        };
        tx.send(Ok(m)).await.is_ok()
    }

    /// Records the revision the agent applied (or why it could not), off the
    /// stream's path: the pusher writes reports in batches.
    fn on_policy_applied(&self, applied: PolicyApplied, inbox: &PolicyInbox) {
        let error: Option<String> = (!applied.error.is_empty()).then(|| {
            applied
                .error
                .chars()
                .filter(|c| !c.is_control())
                .take(500)
                .collect()
        });
        match &error {
            None => {
                tracing::info!(revision = applied.revision, "agent applied policy");
                inbox
                    .known_revision
                    .fetch_max(applied.revision, std::sync::atomic::Ordering::Relaxed);
            }
            Some(e) => {
                tracing::warn!(revision = applied.revision, error = %e, "agent could not apply policy")
            }
        }
        let Ok(revision) = i64::try_from(applied.revision) else {
            return;
        };
        self.pusher.record_applied(
            self.device.tenant,
            AppliedReport {
                device: self.device.device.as_uuid(),
                revision,
                error,
            },
        );
    }

    /// Marks the device seen now (and what its hello reported), written
    /// with the others within a second (see [`Seen`]).
    fn record_seen(&self, reported: Option<Reported>) {
        self.seen
            .touch(self.device.tenant, self.device.device, reported);
    }

    /// Takes `n` events' worth from the device's and the tenant's budgets,
    /// waiting a little when they are short; past that, the agent is told
    /// to retry later.
    async fn take_tokens(&self, n: u32) -> Result<(), Status> {
        let wait = self
            .event_limits
            .take(self.device.tenant, self.device.device, n)
            .await?;
        if !wait.is_zero() {
            metrics::counter!("mamori_ingest_rate_limited_batches_total").increment(1);
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// Accepts (acks) or refuses one batch, given as encoded. `Err` ends
    /// the stream: a retryable status (the agent keeps the batch and sends
    /// it again), or a message too broken to name its batch.
    async fn handle_batch(&mut self, encoded: &[u8]) -> Result<ServerMessage, Status> {
        let batch = read_batch(encoded).map_err(Status::invalid_argument)?;
        let sequence = batch.sequence;
        let now = chrono::Utc::now();
        let checked = validate_batch(&batch, self.limits, now.timestamp_micros())
            .and_then(|()| self.check_claimed_device(&batch));
        if let Err(r) = checked {
            tracing::warn!(sequence, code = ?r.code, reason = %r.reason, "batch refused");
            metrics::counter!("mamori_ingest_events_rejected_total", "reason" => r.label)
                .increment(batch.events.len() as u64);
            return Ok(ServerMessage {
                body: Some(server_message::Body::Rejected(BatchRejected {
                    sequence,
                    reason: r.reason,
                    code: r.code as i32,
                })),
            });
        }
        let n = batch.events.len() as u32;
        self.take_tokens(n).await?;
        self.sink.admit_penalised(self.device.tenant).await?;
        let span = tracing::info_span!("append_batch", sequence, events = n);
        mamori_telemetry::set_parent_from_traceparent(&span, batch.traceparent);
        // The tenant and device come from the credential; the events are
        // the agent's bytes, checked above.
        let entry = mamori_proto::wire::encode_stream_batch(
            &self.device.tenant.to_string(),
            &self.device.device.to_string(),
            sequence,
            &prost_types_timestamp(now),
            &span.in_scope(mamori_telemetry::current_traceparent),
            &batch.events,
        );
        self.sink
            .append(self.device.device, entry)
            .instrument(span)
            .await?;
        self.record_seen(None);
        metrics::counter!("mamori_ingest_events_accepted_total").increment(u64::from(n));
        metrics::counter!("mamori_ingest_batches_accepted_total").increment(1);
        Ok(ServerMessage {
            body: Some(server_message::Body::Ack(BatchAck {
                sequence,
                accepted: n,
                server_time_us: chrono::Utc::now().timestamp_micros(),
            })),
        })
    }

    /// A batch may name its device; it must be the credential's.
    fn check_claimed_device(&self, batch: &BatchView<'_>) -> Result<(), Rejection> {
        if batch.device_id.is_empty() || batch.device_id == self.device.device.to_string() {
            return Ok(());
        }
        Err(Rejection {
            code: tonic::Code::PermissionDenied,
            reason: format!(
                "batch {} names device {:?}, but the credential belongs to another device",
                batch.sequence,
                batch.device_id.chars().take(64).collect::<String>()
            ),
            label: "foreign_device",
        })
    }
}

fn prost_types_timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}
