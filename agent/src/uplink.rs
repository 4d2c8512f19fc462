//! The uplink: one long-lived `AgentService.Connect` stream that carries the
//! spooled events to the server and takes its acks.
//!
//! A session sends `Hello`, then batches. Up to [`WINDOW`] batches are in
//! flight at once; an ack (or a rejection) settles its batch in the spool, and
//! only then are its events deleted. A rejected batch would be rejected again
//! forever, so it is dropped, counted and logged.
//!
//! At the start of a session everything unacked in the spool is backlog: it is
//! resent (the server dedupes by event id) at no more than the drain rate.
//! Events spooled after that are live and go out as soon as a batch is full,
//! its oldest event has waited [`BATCH_WAIT`], or an urgent event (an
//! enforcement, a policy hit) was spooled. Live batches go first, so a long
//! backlog does not delay what is happening now.
//!
//! When the stream ends: a refused credential (UNAUTHENTICATED,
//! PERMISSION_DENIED: the device was revoked) is retried every minute,
//! anything else (server away, overloaded, stream broken) after an exponential
//! backoff with full jitter. Collectors keep spooling all along.
//!
//! On shutdown what the spool holds by then (the agent's own stop event, and
//! a removal attempt just recorded, among it) is sent once more, as far as
//! the window allows, and the acks of the batches in flight are awaited for
//! up to [`SHUTDOWN_GRACE`]: otherwise a service stop would leave them
//! pending until the next start, and a removal would lose them.

mod backoff;
mod throttle;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mamori_proto::agent::v1::{
    AgentMessage, EventBatch, Hello, PolicyApplied, PolicyUpdate, ServerMessage, agent_message,
    server_message,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};
use tracing::Instrument;

use crate::channel;
use crate::clock::{ClockOffset, OffsetEstimator, now_us};
use crate::error::Error;
use crate::policy::PolicyState;
use crate::sink::{SharedSpool, Wake, lock};
use crate::spool::Batch;
use crate::state::{AgentConfig, StateDir};
use backoff::Backoff;
use throttle::TokenBucket;

/// Batches sent and not yet acked, at most.
pub(crate) const WINDOW: usize = 8;
/// Room in the outgoing channel for policy reports beside the batches.
const POLICY_REPORTS: usize = 4;
/// How long a live event may wait for its batch to fill.
pub(crate) const BATCH_WAIT: Duration = Duration::from_secs(1);
/// Encoded events per batch, at most: well under the server's 4 MiB message
/// limit, small enough that a slow link still gets acks often.
const MAX_BATCH_BYTES: usize = (1 << 20) - 4096;
/// Delay before trying a refused credential again.
const REFUSED_RETRY: Duration = Duration::from_secs(60);
/// A session that lasted this long was healthy: the next reconnect starts the
/// backoff from its first step.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);
/// How long a stopping agent waits for the acks of its batches in flight.
/// An ack normally comes within milliseconds, so this only bounds a slow or
/// silent server; it is short because a service manager waits for the stop
/// (and what is not acked in time is kept in the spool and resent anyway).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Settings of the uplink.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UplinkOptions {
    pub batch_max_events: usize,
    /// Backlog events per second; 0 for no limit.
    pub drain_rate: u32,
    /// The cap of the reconnect backoff.
    pub reconnect_max: Duration,
}

/// Why a session ended.
#[derive(Debug)]
enum SessionEnd {
    /// The server refused the device: retry slowly.
    Refused(String),
    /// The server or the network failed: retry soon.
    Transient(String),
    /// Shutdown was asked for: do not retry.
    Stopped,
}

impl From<tonic::Status> for SessionEnd {
    fn from(status: tonic::Status) -> Self {
        match status.code() {
            Code::Unauthenticated | Code::PermissionDenied => {
                SessionEnd::Refused(format!("{:?}: {}", status.code(), status.message()))
            }
            code => SessionEnd::Transient(format!("{code:?}: {}", status.message())),
        }
    }
}

/// A batch on its way.
#[derive(Debug)]
struct InFlight {
    sequence: u64,
    first: u64,
    end: u64,
    events: usize,
}

/// The uplink task's state.
#[derive(Debug)]
pub(crate) struct Uplink {
    state: StateDir,
    spool: SharedSpool,
    wake: Arc<Wake>,
    clock: Arc<ClockOffset>,
    policy: Arc<PolicyState>,
    estimator: OffsetEstimator,
    opts: UplinkOptions,
    rejected_batches: u64,
    rejected_events: u64,
    /// Which of the configured servers the next connection tries: it moves
    /// on after a session that failed before it was healthy (the server
    /// could not be reached, refused with "retry later", or broke the
    /// stream).
    turn: std::sync::atomic::AtomicUsize,
}

impl Uplink {
    pub(crate) fn new(
        state: StateDir,
        spool: SharedSpool,
        wake: Arc<Wake>,
        clock: Arc<ClockOffset>,
        policy: Arc<PolicyState>,
        opts: UplinkOptions,
    ) -> Self {
        Uplink {
            state,
            spool,
            wake,
            clock,
            policy,
            estimator: OffsetEstimator::default(),
            opts,
            rejected_batches: 0,
            rejected_events: 0,
            turn: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Keeps a session up until `shutdown` resolves.
    pub(crate) async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut backoff = Backoff::new(Duration::from_millis(500), self.opts.reconnect_max);
        loop {
            // Read on every attempt, so a re-enrollment takes effect without a
            // restart.
            let enrolled = self
                .state
                .load_config()
                .and_then(|c| Ok((c, self.state.load_credential()?)));
            let span = match &enrolled {
                Ok((c, _)) => {
                    tracing::info_span!("uplink", device_id = %c.device_id, tenant_id = %c.tenant_id)
                }
                Err(_) => tracing::info_span!("uplink"),
            };
            let stopped = async {
                let started = Instant::now();
                let end = self
                    .session(enrolled, &mut backoff, shutdown.as_mut())
                    .await;
                let healthy = started.elapsed() >= HEALTHY_SESSION;
                if healthy {
                    backoff.reset();
                }
                let delay = match end {
                    SessionEnd::Stopped => return true,
                    SessionEnd::Refused(reason) => {
                        tracing::error!(%reason, retry_in_s = REFUSED_RETRY.as_secs(), "server refused the device (revoked?); events are kept in the spool");
                        REFUSED_RETRY
                    }
                    SessionEnd::Transient(reason) => {
                        // A server that could not be reached, or whose
                        // stream broke before it was healthy: the next
                        // attempt goes to the next configured server.
                        if !healthy {
                            self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        let delay = backoff.next_delay();
                        tracing::warn!(%reason, retry_in_ms = delay.as_millis() as u64, "connection to the server lost");
                        delay
                    }
                };
                tokio::select! {
                    () = &mut shutdown => true,
                    () = tokio::time::sleep(delay) => false,
                }
            }
            .instrument(span)
            .await;
            if stopped {
                return;
            }
        }
    }

    /// One connection: connect, stream until it breaks or `shutdown`
    /// resolves.
    async fn session<F: Future<Output = ()>>(
        &mut self,
        enrolled: Result<(AgentConfig, SecretString), Error>,
        backoff: &mut Backoff,
        mut shutdown: Pin<&mut F>,
    ) -> SessionEnd {
        let (tx, mut inbound, mut st) = tokio::select! {
            () = shutdown.as_mut() => return SessionEnd::Stopped,
            connected = self.connect(enrolled) => match connected {
                Ok(c) => c,
                Err(end) => return end,
            },
        };
        loop {
            let wake_at = match self.pump(&mut st, &tx) {
                Ok(at) => at,
                Err(end) => return end,
            };
            let sleep = tokio::time::sleep_until(wake_at.unwrap_or_else(far_future));
            tokio::select! {
                () = shutdown.as_mut() => {
                    // The stop event was spooled as the shutdown resolved.
                    if let Err(end) = self.pump(&mut st, &tx) {
                        tracing::debug!(?end, "the last send before stopping failed");
                    }
                    // `tx` lives until the drain is over: closing the
                    // outgoing stream could make the server end the call
                    // before it has acked.
                    self.drain(&mut st, &mut inbound).await;
                    return SessionEnd::Stopped;
                }
                msg = inbound.next() => match msg {
                    Some(Ok(ServerMessage { body: Some(server_message::Body::Policy(update)) })) => {
                        if let Err(end) = self.on_policy(update, &tx) {
                            return end;
                        }
                    }
                    Some(Ok(msg)) => {
                        if self.on_message(msg, &mut st) {
                            backoff.reset();
                        }
                    }
                    Some(Err(status)) => return status.into(),
                    None => return SessionEnd::Transient("the server closed the stream".into()),
                },
                () = self.wake.notified() => {}
                () = sleep => {}
            }
        }
    }

    /// Opens the stream and sends `Hello`; returns the outgoing side, the
    /// incoming side and the positions of the new session.
    async fn connect(
        &self,
        enrolled: Result<(AgentConfig, SecretString), Error>,
    ) -> Result<
        (
            mpsc::Sender<AgentMessage>,
            Streaming<ServerMessage>,
            SessionState,
        ),
        SessionEnd,
    > {
        let (config, credential) = enrolled.map_err(|e| SessionEnd::Refused(e.to_string()))?;
        let endpoints = channel::endpoints(&config.server, config.ca_cert.as_deref())
            .map_err(|e| SessionEnd::Refused(e.to_string()))?;
        let turn = self.turn.load(std::sync::atomic::Ordering::Relaxed) % endpoints.len();
        let (server, endpoint) = &endpoints[turn];
        let mut client = channel::client(endpoint).await.map_err(|e| match e {
            Error::Connect(e) => {
                SessionEnd::Transient(format!("cannot connect to {server}: {}", error_chain(&e)))
            }
            e => SessionEnd::Transient(e.to_string()),
        })?;

        // Room for a second hello (a source turning degraded) too.
        let (tx, rx) = mpsc::channel(WINDOW + 2 + POLICY_REPORTS);
        let (hello, degraded_seen) = self.hello();
        let _ = tx.try_send(AgentMessage {
            body: Some(agent_message::Body::Hello(hello)),
        });
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        let bearer = format!("Bearer {}", credential.expose_secret())
            .parse()
            .map_err(|_| {
                SessionEnd::Refused("the stored credential is not valid metadata".into())
            })?;
        request.metadata_mut().insert("authorization", bearer);
        let inbound = client.connect(request).await?.into_inner();

        let st = {
            let spool = lock(&self.spool);
            tracing::info!(
                %server,
                backlog = spool.pending(),
                dropped_total = spool.dropped_total(),
                "connected"
            );
            SessionState::new(
                spool.acked_index(),
                spool.next_index(),
                &self.opts,
                config.device_id.clone(),
                degraded_seen,
            )
        };
        Ok((tx, inbound, st))
    }

    /// A hello as things are now, and the degraded-mode changes it says.
    fn hello(&self) -> (Hello, u64) {
        let (degraded, changes) = self.wake.degraded();
        let spool = lock(&self.spool);
        let hello = Hello {
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            spool_dropped_total: spool.dropped_total(),
            spool_pending_events: spool.pending(),
            policy_revision: self.policy.revision(),
            degraded,
        };
        (hello, changes)
    }

    /// After shutdown: sends nothing more, but takes the acks (and
    /// rejections) of the batches in flight until none is left, the stream
    /// ends or [`SHUTDOWN_GRACE`] has passed.
    async fn drain(&mut self, st: &mut SessionState, inbound: &mut Streaming<ServerMessage>) {
        if st.in_flight.is_empty() {
            return;
        }
        tracing::info!(
            batches = st.in_flight.len(),
            "stopping: waiting for the acks of the batches in flight"
        );
        let settle = async {
            while !st.in_flight.is_empty() {
                match inbound.next().await {
                    Some(Ok(msg)) => {
                        self.on_message(msg, st);
                    }
                    Some(Err(_)) | None => return,
                }
            }
        };
        // Timing out is the point of the grace period, not an error.
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, settle).await;
        if !st.in_flight.is_empty() {
            tracing::warn!(
                batches = st.in_flight.len(),
                grace_ms = SHUTDOWN_GRACE.as_millis() as u64,
                "stopping without the acks of some batches; they stay in the spool and are resent at the next start"
            );
        }
    }

    /// Sends what may be sent now; returns when to look again (besides new
    /// events and acks, which wake the session anyway).
    fn pump(
        &mut self,
        st: &mut SessionState,
        tx: &mpsc::Sender<AgentMessage>,
    ) -> Result<Option<Instant>, SessionEnd> {
        // A source turned degraded (or recovered) since the last hello:
        // another hello says so. (Full channel: the next pump tries again.)
        if self.wake.degraded_changes() != st.degraded_told {
            let (hello, changes) = self.hello();
            if tx
                .try_send(AgentMessage {
                    body: Some(agent_message::Body::Hello(hello)),
                })
                .is_ok()
            {
                st.degraded_told = changes;
            }
        }
        let mut wake_at: Option<Instant> = None;
        let mut earliest = |at: Instant| {
            wake_at = Some(wake_at.map_or(at, |w| w.min(at)));
        };
        while st.in_flight.len() < WINDOW {
            let now = Instant::now();
            let mut spool = lock(&self.spool);
            let read = |spool: &mut crate::spool::Spool, from, limit, max| {
                spool
                    .read(from, limit, max, MAX_BATCH_BYTES)
                    .map_err(|e| SessionEnd::Transient(format!("reading the spool: {e}")))
            };

            // Live events first.
            let unsent = spool.next_index().saturating_sub(st.live_next);
            if unsent > 0 {
                let since = *st.live_waiting_since.get_or_insert(now);
                if unsent >= self.opts.batch_max_events as u64
                    || now >= since + BATCH_WAIT
                    || self.wake.take_urgent()
                {
                    let batch = read(
                        &mut spool,
                        st.live_next,
                        u64::MAX,
                        self.opts.batch_max_events,
                    )?;
                    match batch {
                        Some(batch) => {
                            st.live_next = batch.end;
                            if st.live_next >= spool.next_index() {
                                st.live_waiting_since = None;
                            }
                            drop(spool);
                            self.send(st, tx, batch)?;
                            continue;
                        }
                        None => {
                            st.live_next = spool.next_index();
                            st.live_waiting_since = None;
                        }
                    }
                } else {
                    earliest(since + BATCH_WAIT);
                }
            }

            // Then the backlog, at the drain rate.
            if st.backlog_next < st.live_from {
                let left = usize::try_from(st.live_from - st.backlog_next).unwrap_or(usize::MAX);
                let want = st.backlog_batch.min(left);
                if let Some(at) = st.bucket.ready_at(want, now) {
                    earliest(at);
                    break;
                }
                match read(&mut spool, st.backlog_next, st.live_from, want)? {
                    Some(batch) => {
                        st.backlog_next = batch.end;
                        st.bucket.take(batch.events.len());
                        drop(spool);
                        self.send(st, tx, batch)?;
                        if st.backlog_next >= st.live_from {
                            tracing::info!("backlog sent");
                        }
                        continue;
                    }
                    None => st.backlog_next = st.live_from,
                }
            }
            break;
        }
        Ok(wake_at)
    }

    fn send(
        &mut self,
        st: &mut SessionState,
        tx: &mpsc::Sender<AgentMessage>,
        batch: Batch,
    ) -> Result<(), SessionEnd> {
        if batch.events.is_empty() {
            // Only damaged spool records in this range: nothing to send.
            lock(&self.spool).ack(batch.first, batch.end);
            return Ok(());
        }
        let in_flight = InFlight {
            sequence: batch.sequence(),
            first: batch.first,
            end: batch.end,
            events: batch.events.len(),
        };
        let msg = AgentMessage {
            body: Some(agent_message::Body::Batch(EventBatch {
                sequence: in_flight.sequence,
                events: batch.events,
                traceparent: new_traceparent(),
                device_id: st.device_id.clone(),
            })),
        };
        // The channel holds Hello, at most WINDOW batches and a few policy
        // reports, so a batch never finds it full; a closed one means the
        // stream is gone.
        tx.try_send(msg)
            .map_err(|_| SessionEnd::Transient("the outgoing stream closed".into()))?;
        tracing::debug!(
            sequence = in_flight.sequence,
            events = in_flight.events,
            "batch sent"
        );
        st.in_flight.push_back(in_flight);
        Ok(())
    }

    /// Stores and enforces a policy from the server and says so (or why
    /// not: the previous policy stays in force).
    fn on_policy(
        &self,
        update: PolicyUpdate,
        tx: &mpsc::Sender<AgentMessage>,
    ) -> Result<(), SessionEnd> {
        let revision = update.revision;
        let error = match self.policy.apply(update) {
            Ok(_) => {
                tracing::info!(revision, "policy applied");
                String::new()
            }
            Err(e) => {
                tracing::error!(revision, error = %e, "policy not applied; the previous one stays in force");
                e.to_string()
            }
        };
        let applied = AgentMessage {
            body: Some(agent_message::Body::PolicyApplied(PolicyApplied {
                revision,
                error,
            })),
        };
        // The channel has room for a few reports beyond the batches; a
        // stream too clogged for one is reconnected, and the hello reports
        // the revision then.
        tx.try_send(applied).map_err(|_| {
            SessionEnd::Transient("cannot report the applied policy: stream is full".into())
        })
    }

    /// Settles a batch; true on an ack (the connection works).
    fn on_message(&mut self, msg: ServerMessage, st: &mut SessionState) -> bool {
        match msg.body {
            Some(server_message::Body::Ack(ack)) => {
                let Some(batch) = st.take(ack.sequence) else {
                    tracing::debug!(sequence = ack.sequence, "ack for a batch not in flight");
                    return true;
                };
                lock(&self.spool).ack(batch.first, batch.end);
                self.estimator
                    .observe(ack.server_time_us, now_us(), &self.clock);
                tracing::debug!(
                    sequence = ack.sequence,
                    events = batch.events,
                    accepted = ack.accepted,
                    clock_offset_ms = self.clock.get_ms(),
                    "batch acked"
                );
                true
            }
            Some(server_message::Body::Rejected(rejected)) => {
                let Some(batch) = st.take(rejected.sequence) else {
                    tracing::debug!(
                        sequence = rejected.sequence,
                        "rejection of a batch not in flight"
                    );
                    return false;
                };
                lock(&self.spool).ack(batch.first, batch.end);
                self.rejected_batches += 1;
                self.rejected_events += batch.events as u64;
                tracing::warn!(
                    sequence = rejected.sequence,
                    reason = %rejected.reason,
                    code = ?Code::from_i32(rejected.code),
                    events = batch.events,
                    rejected_batches_total = self.rejected_batches,
                    rejected_events_total = self.rejected_events,
                    "server rejected a batch; dropping it"
                );
                false
            }
            // Handled by the session loop before it gets here.
            Some(server_message::Body::Policy(_)) | None => false,
        }
    }
}

/// Positions of one session.
#[derive(Debug)]
struct SessionState {
    in_flight: VecDeque<InFlight>,
    /// Next backlog index to send; the backlog ends at `live_from`.
    backlog_next: u64,
    live_from: u64,
    live_next: u64,
    /// When the oldest unsent live event was first seen.
    live_waiting_since: Option<Instant>,
    backlog_batch: usize,
    bucket: TokenBucket,
    /// Named in each batch, so the server refuses batches sent with the
    /// credential of another device instead of filing them under it.
    device_id: String,
    /// The degraded-mode changes the last hello told.
    degraded_told: u64,
}

impl SessionState {
    fn new(
        acked: u64,
        next_index: u64,
        opts: &UplinkOptions,
        device_id: String,
        degraded_told: u64,
    ) -> Self {
        let backlog_batch = match opts.drain_rate {
            0 => opts.batch_max_events,
            rate => opts.batch_max_events.min(rate as usize).max(1),
        };
        SessionState {
            in_flight: VecDeque::with_capacity(WINDOW),
            backlog_next: acked,
            live_from: next_index,
            live_next: next_index,
            live_waiting_since: None,
            backlog_batch,
            bucket: TokenBucket::new(opts.drain_rate, backlog_batch, Instant::now()),
            device_id,
            degraded_told,
        }
    }

    fn take(&mut self, sequence: u64) -> Option<InFlight> {
        let i = self.in_flight.iter().position(|b| b.sequence == sequence)?;
        self.in_flight.remove(i)
    }
}

/// A fresh W3C trace context for one batch: the trace starts here, and
/// ingest's and the writer's spans join it, so one trace shows the batch's
/// whole path. (The agent exports no spans itself; it only names the trace.)
fn new_traceparent() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let trace: u128 = rng.random::<u128>() | 1;
    let span: u64 = rng.random::<u64>() | 1;
    format!("00-{trace:032x}-{span:016x}-01")
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

/// A transport error with its causes ("transport error: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
