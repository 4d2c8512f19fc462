//! The agent end to end against an in-process fake of the ingest server:
//! enrollment (library and binary), delivery of collected events over the
//! Connect stream, acks, rejections, a revoked credential, an outage and a
//! stop while a batch is in flight.
//!
//! Events come from the logon collector reading a fake wtmp file, which lets
//! a test make exactly the events it wants.

// Runs the Linux agent (wtmp, /proc, systemd protocols).
#![cfg(target_os = "linux")]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mamori_agent::platform::linux::logon::wtmp::{self, UtmpRecord};
use mamori_agent::spool::{Spool, SpoolConfig};
use mamori_agent::{CollectorSet, EnrollOptions, RunOptions};
use mamori_proto::agent::v1::agent_service_server::{AgentService, AgentServiceServer};
use mamori_proto::agent::v1::{
    AgentMessage, BatchAck, BatchRejected, EnrollRequest, EnrollResponse, EventBatch, Hello,
    ServerMessage, agent_message, event, server_message,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status, Streaming};

const CREDENTIAL: &str = "cred-0123456789";
/// The fake server's clock runs this far ahead of the device's.
const SERVER_AHEAD_US: i64 = 10_000_000;
/// How long the fake takes to ack in [`Mode::SlowAck`]: long enough that a
/// stop right after the batch arrived would beat the ack.
const SLOW_ACK: Duration = Duration::from_millis(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Ack,
    /// Acks each batch after [`SLOW_ACK`].
    SlowAck,
    /// Takes batches and never answers.
    Silent,
    /// Refuses every stream with UNAVAILABLE (a replica that is draining,
    /// or whose Redis is gone).
    Busy,
    Reject,
    Revoked,
}

#[derive(Debug, Default)]
struct Seen {
    enrolls: Vec<EnrollRequest>,
    hellos: Vec<Hello>,
    batches: Vec<EventBatch>,
    encodings: Vec<String>,
    /// Replies handed to the stream (acks and rejections).
    replies: usize,
}

#[derive(Debug, Clone)]
struct Fake {
    mode: Arc<Mutex<Mode>>,
    seen: Arc<Mutex<Seen>>,
}

impl Fake {
    fn new(mode: Mode) -> Self {
        Fake {
            mode: Arc::new(Mutex::new(mode)),
            seen: Arc::default(),
        }
    }

    fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// The batches received, with the agent's own start and stop events
    /// left out (these tests follow the collectors' events; the lifecycle
    /// events are tested end to end by mamori's package test), and batches
    /// that held nothing else dropped.
    fn batches(&self) -> Vec<EventBatch> {
        let mut batches = self.seen.lock().unwrap().batches.clone();
        for b in &mut batches {
            b.events.retain(|e| {
                !matches!(e.kind, Some(mamori_proto::agent::v1::event::Kind::Agent(_)))
            });
        }
        batches.retain(|b| !b.events.is_empty());
        batches
    }

    fn logon_users(&self) -> Vec<String> {
        self.batches()
            .iter()
            .flat_map(|b| b.events.iter())
            .map(|e| e.os_user.clone())
            .collect()
    }
}

#[tonic::async_trait]
impl AgentService for Fake {
    async fn enroll(
        &self,
        request: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let request = request.into_inner();
        if request.enrollment_token != "good-token" {
            return Err(Status::permission_denied(
                "enrollment token unknown or expired",
            ));
        }
        let mut seen = self.seen.lock().unwrap();
        seen.enrolls.push(request);
        Ok(Response::new(EnrollResponse {
            device_id: "device-1".into(),
            tenant_id: "tenant-1".into(),
            device_credential: CREDENTIAL.into(),
            reenrolled: seen.enrolls.len() > 1,
        }))
    }

    type ConnectStream = ReceiverStream<Result<ServerMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let auth = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let mode = *self.mode.lock().unwrap();
        if auth != format!("Bearer {CREDENTIAL}") || mode == Mode::Revoked {
            return Err(Status::unauthenticated("device credential revoked"));
        }
        if mode == Mode::Busy {
            return Err(Status::unavailable("event store unavailable, retry later"));
        }
        if let Some(enc) = request.metadata().get("grpc-encoding") {
            self.seen
                .lock()
                .unwrap()
                .encodings
                .push(enc.to_str().unwrap().to_string());
        }
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let seen = self.seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                let reply = match msg.body {
                    Some(agent_message::Body::Hello(h)) => {
                        seen.lock().unwrap().hellos.push(h);
                        continue;
                    }
                    Some(agent_message::Body::Batch(b)) => {
                        let sequence = b.sequence;
                        let accepted = b.events.len() as u32;
                        seen.lock().unwrap().batches.push(b);
                        match mode {
                            Mode::Silent => continue,
                            Mode::SlowAck => {
                                tokio::time::sleep(SLOW_ACK).await;
                                server_message::Body::Ack(BatchAck {
                                    sequence,
                                    accepted,
                                    server_time_us: now_us() + SERVER_AHEAD_US,
                                })
                            }
                            Mode::Reject => server_message::Body::Rejected(BatchRejected {
                                sequence,
                                reason: "event 0: bad field".into(),
                                code: tonic::Code::InvalidArgument as i32,
                            }),
                            _ => server_message::Body::Ack(BatchAck {
                                sequence,
                                accepted,
                                server_time_us: now_us() + SERVER_AHEAD_US,
                            }),
                        }
                    }
                    Some(agent_message::Body::PolicyApplied(_)) | None => continue,
                };
                if tx
                    .send(Ok(ServerMessage { body: Some(reply) }))
                    .await
                    .is_err()
                {
                    break;
                }
                seen.lock().unwrap().replies += 1;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Serves `fake` on `addr` (port 0 for any) until the returned sender drops.
async fn serve(fake: Fake, addr: SocketAddr) -> (String, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let service = AgentServiceServer::new(fake)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Zstd);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
    });
    (url, stop_tx)
}

/// A fake server in `mode` and an agent state enrolled with it: the server's
/// URL, the handle that keeps it up, and the state.
async fn enrolled(mode: Mode) -> (Fake, String, oneshot::Sender<()>, Setup) {
    let fake = Fake::new(mode);
    let (url, server) = serve(fake.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let s = setup();
    mamori_agent::enroll(&enroll_options(&url, &s.state))
        .await
        .unwrap();
    (fake, url, server, s)
}

fn enroll_options(server: &str, state_dir: &Path) -> EnrollOptions {
    EnrollOptions {
        server: server.into(),
        token: "good-token".into(),
        state_dir: state_dir.into(),
        ca_cert: None,
        machine_id: Some("machine-under-test".into()),
    }
}

fn logon(user: &str, line: &str) -> UtmpRecord {
    UtmpRecord {
        ut_type: wtmp::USER_PROCESS,
        pid: 4242,
        line: line.into(),
        user: user.into(),
        tv_sec: (now_us() / 1_000_000) as i32,
        ..Default::default()
    }
}

fn append_wtmp(path: &Path, records: &[UtmpRecord]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for r in records {
        f.write_all(&r.encode()).unwrap();
    }
}

struct Agent {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<mamori_agent::Result<()>>,
}

impl Agent {
    /// Starts the agent and waits until the logon collector has taken its
    /// first position (at the end of wtmp: what is written before that is
    /// history, not news).
    async fn start(state_dir: &Path, wtmp: &Path) -> Agent {
        let mut opts = RunOptions::new(state_dir.into());
        opts.collectors = "logon".parse::<CollectorSet>().unwrap();
        opts.platform.wtmp_path = wtmp.into();
        // Reconnects at most 1 s apart: with the default 30 s cap, a few
        // short jittered waits during an outage can push the next attempt
        // past any reasonable deadline of a test.
        opts.reconnect_max = Duration::from_secs(1);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(mamori_agent::run(opts, async {
            let _ = stopped.await;
        }));
        let position = state_dir.join("wtmp.offset");
        eventually("the logon collector", || position.exists()).await;
        Agent { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The acked index in the spool's cursor file (read without opening the
/// spool, which the running agent holds).
fn acked_index(state_dir: &Path) -> u64 {
    std::fs::read(mamori_agent::spool_dir(state_dir).join("acked"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["acked"].as_u64())
        .unwrap_or(0)
}

/// Events the spool still holds to send, the agent's own start and stop
/// left out (a stop is spooled as the agent stops, and sent at its next
/// start; see `Fake::batches`).
fn pending(state_dir: &Path) -> u64 {
    let mut spool =
        Spool::open(mamori_agent::spool_dir(state_dir), SpoolConfig::default()).unwrap();
    let mut count = 0;
    let mut from = 0;
    while let Some(batch) = spool.read(from, u64::MAX, 1000, 1 << 30).unwrap() {
        count += batch
            .events
            .iter()
            .filter(|e| !matches!(e.kind, Some(mamori_proto::agent::v1::event::Kind::Agent(_))))
            .count() as u64;
        from = batch.end;
    }
    count
}

struct Setup {
    _dir: tempfile::TempDir,
    state: PathBuf,
    wtmp: PathBuf,
}

fn setup() -> Setup {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let wtmp = dir.path().join("wtmp");
    std::fs::File::create(&wtmp).unwrap();
    Setup {
        _dir: dir,
        state,
        wtmp,
    }
}

#[tokio::test]
async fn enroll_stores_identity_and_credential() {
    use std::os::unix::fs::PermissionsExt;
    let fake = Fake::new(Mode::Ack);
    let (url, _server) = serve(fake.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let s = setup();

    let outcome = mamori_agent::enroll(&enroll_options(&url, &s.state))
        .await
        .unwrap();
    assert_eq!(
        (
            outcome.device_id.as_str(),
            outcome.tenant_id.as_str(),
            outcome.reenrolled
        ),
        ("device-1", "tenant-1", false)
    );
    let cred = s.state.join("credential");
    assert_eq!(std::fs::read_to_string(&cred).unwrap(), CREDENTIAL);
    assert_eq!(
        std::fs::metadata(&cred).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.state.join("agent.json")).unwrap()).unwrap();
    assert_eq!(config["server"], url.as_str());
    assert_eq!(config["device_id"], "device-1");
    assert_eq!(config["tenant_id"], "tenant-1");

    let again = mamori_agent::enroll(&enroll_options(&url, &s.state))
        .await
        .unwrap();
    assert!(again.reenrolled);
    let seen = fake.seen.lock().unwrap();
    let (first, second) = (
        seen.enrolls[0].facts.clone().unwrap(),
        seen.enrolls[1].facts.clone().unwrap(),
    );
    assert_eq!(first.machine_id, "machine-under-test");
    assert_eq!(first.agent_version, env!("CARGO_PKG_VERSION"));
    assert!(!first.instance_id.is_empty());
    assert_eq!(first.instance_id, second.instance_id, "instance id is kept");
    assert_eq!(config["instance_id"], first.instance_id.as_str());
}

#[tokio::test]
async fn enroll_with_a_bad_token_reports_the_server_message() {
    let (url, _server) = serve(Fake::new(Mode::Ack), "127.0.0.1:0".parse().unwrap()).await;
    let s = setup();
    let mut opts = enroll_options(&url, &s.state);
    opts.token = "wrong".into();
    let err = mamori_agent::enroll(&opts).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("enrollment token unknown or expired"),
        "{err}"
    );
    assert!(!s.state.join("credential").exists());
}

#[tokio::test]
async fn binary_enrolls_with_json_output_and_fails_clearly() {
    let (url, _server) = serve(Fake::new(Mode::Ack), "127.0.0.1:0".parse().unwrap()).await;
    let s = setup();
    let bin = env!("CARGO_BIN_EXE_mamori-agent");
    let args = |token: &str| {
        let mut c = tokio::process::Command::new(bin);
        c.args([
            "enroll",
            "--server",
            &url,
            "--token",
            token,
            "--json",
            "--machine-id",
            "m-1",
        ])
        .arg("--state-dir")
        .arg(&s.state);
        c
    };
    let out = args("good-token").output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"device_id": "device-1", "tenant_id": "tenant-1", "reenrolled": false})
    );

    let out = args("wrong").output().await.unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("enrollment token unknown or expired"),
        "{stderr}"
    );
}

#[tokio::test]
async fn run_delivers_events_and_learns_the_clock_offset() {
    let (fake, _, _server, s) = enrolled(Mode::Ack).await;

    let agent = Agent::start(&s.state, &s.wtmp).await;
    append_wtmp(&s.wtmp, &[logon("alice", "pts/1")]);
    eventually("the first event", || fake.logon_users() == ["alice"]).await;
    // The first ack taught the agent the server's clock; events created
    // after it carry the offset.
    append_wtmp(&s.wtmp, &[logon("bob", "pts/2")]);
    eventually("the second event", || {
        fake.logon_users() == ["alice", "bob"]
    })
    .await;
    // Every batch's ack is on its way before the agent is told to stop
    // (a stopping agent waits for acks in flight; one the server has not
    // sent yet it may rightly keep for the next start).
    eventually("the acks", || {
        let seen = fake.seen.lock().unwrap();
        seen.replies == seen.batches.len()
    })
    .await;
    agent.stop().await;

    let batches = fake.batches();
    let first = &batches[0].events[0];
    let second = &batches.last().unwrap().events[0];
    assert_eq!(first.id.len(), 16);
    // The agent's own start is the first event it creates, before any ack.
    let very_first = fake.seen.lock().unwrap().batches[0].events[0].clone();
    assert!(matches!(very_first.kind, Some(event::Kind::Agent(_))));
    assert_eq!(
        very_first.clock_offset_ms, 0,
        "no ack yet when it was created"
    );
    assert!(
        (second.clock_offset_ms - SERVER_AHEAD_US / 1000).abs() < 2_000,
        "offset {}",
        second.clock_offset_ms
    );
    assert!(matches!(first.kind, Some(event::Kind::Logon(_))));
    assert!(batches.windows(2).all(|w| w[0].sequence < w[1].sequence));
    assert!(
        batches
            .iter()
            .all(|b| b.sequence > 0 && b.device_id == "device-1")
    );
    let seen = fake.seen.lock().unwrap();
    assert_eq!(seen.hellos[0].agent_version, env!("CARGO_PKG_VERSION"));
    assert!(
        seen.encodings.iter().all(|e| e == "zstd"),
        "{:?}",
        seen.encodings
    );
    drop(seen);
    assert_eq!(pending(&s.state), 0, "acked events leave the spool");
}

#[tokio::test]
async fn revoked_device_keeps_spooling_and_delivers_after_reinstatement() {
    let (fake, _, _server, s) = enrolled(Mode::Ack).await;
    fake.set_mode(Mode::Revoked);

    let agent = Agent::start(&s.state, &s.wtmp).await;
    append_wtmp(&s.wtmp, &[logon("carol", "pts/3"), logon("dave", "pts/4")]);
    eventually("events spooled", || {
        std::fs::read_to_string(s.state.join("wtmp.offset"))
            .is_ok_and(|p| p.contains("\"offset\":768"))
    })
    .await;
    agent.stop().await;
    assert!(fake.batches().is_empty());
    assert_eq!(pending(&s.state), 2, "kept while the device is refused");

    fake.set_mode(Mode::Ack);
    let agent = Agent::start(&s.state, &s.wtmp).await;
    eventually("the backlog", || fake.logon_users() == ["carol", "dave"]).await;
    agent.stop().await;
    assert_eq!(
        fake.seen
            .lock()
            .unwrap()
            .hellos
            .last()
            .unwrap()
            .spool_pending_events,
        // The two logons, the agent's first start and stop, and this
        // start's own event.
        5
    );
    assert_eq!(pending(&s.state), 0);
}

#[tokio::test]
async fn rejected_batches_are_dropped() {
    let (fake, _, _server, s) = enrolled(Mode::Reject).await;

    let agent = Agent::start(&s.state, &s.wtmp).await;
    append_wtmp(&s.wtmp, &[logon("erin", "pts/5")]);
    eventually("the batch", || !fake.batches().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    agent.stop().await;
    assert_eq!(pending(&s.state), 0, "a rejected batch is not kept");
    assert_eq!(fake.batches().len(), 1, "and not sent again");
}

#[tokio::test]
async fn events_from_an_outage_arrive_when_the_server_returns() {
    let (fake, url, server, s) = enrolled(Mode::Ack).await;
    let addr: SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    drop(server);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let agent = Agent::start(&s.state, &s.wtmp).await;
    append_wtmp(&s.wtmp, &[logon("frank", "pts/6")]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, _server) = serve(fake.clone(), addr).await;
    eventually("the event after the outage", || {
        fake.logon_users() == ["frank"]
    })
    .await;
    // The server has the batch; wait until its ack is in the durable cursor
    // before stopping (the shutdown drain is tested on its own below).
    eventually("the ack to reach the spool cursor", || {
        acked_index(&s.state) >= 1
    })
    .await;
    agent.stop().await;
    assert_eq!(pending(&s.state), 0);
    assert_eq!(fake.logon_users(), ["frank"], "sent once");
}

#[tokio::test]
async fn stopping_waits_for_the_ack_of_a_batch_in_flight() {
    let (fake, _, _server, s) = enrolled(Mode::SlowAck).await;

    let agent = Agent::start(&s.state, &s.wtmp).await;
    append_wtmp(&s.wtmp, &[logon("ivan", "pts/9")]);
    // The ack is still on its way when the stop is asked for.
    eventually("the batch", || !fake.batches().is_empty()).await;
    agent.stop().await;
    assert_eq!(
        pending(&s.state),
        0,
        "the ack was awaited: nothing to resend at the next start"
    );
    assert_eq!(fake.batches().len(), 1);
}

#[tokio::test]
async fn a_server_that_never_acks_does_not_hold_up_the_stop() {
    let (fake, _, _server, s) = enrolled(Mode::Silent).await;

    let agent = Agent::start(&s.state, &s.wtmp).await;
    append_wtmp(&s.wtmp, &[logon("judy", "pts/10")]);
    eventually("the batch", || !fake.batches().is_empty()).await;
    let asked = std::time::Instant::now();
    agent.stop().await;
    let took = asked.elapsed();
    // The grace period is 2 s; the rest is slack for a loaded machine.
    assert!(took < Duration::from_secs(4), "the stop took {took:?}");
    assert_eq!(pending(&s.state), 1, "the unacked event is kept");
}

#[tokio::test]
async fn run_without_enrollment_fails() {
    let s = setup();
    let err = mamori_agent::run(RunOptions::new(s.state.clone()), async {})
        .await
        .unwrap_err();
    assert!(matches!(err, mamori_agent::Error::NotEnrolled(_)), "{err}");
}

#[tokio::test]
async fn a_reconnect_cap_out_of_range_is_refused_with_its_name() {
    let (_fake, _, _server, s) = enrolled(Mode::Ack).await;
    for bad in [Duration::from_millis(999), Duration::from_secs(3601)] {
        let mut opts = RunOptions::new(s.state.clone());
        opts.reconnect_max = bad;
        let err = mamori_agent::run(opts, async {}).await.unwrap_err();
        assert!(
            matches!(&err, mamori_agent::Error::InvalidOption(m) if m.contains("reconnect-max-s")),
            "{err}"
        );
    }
}

#[tokio::test]
async fn events_survive_kill_9_of_the_agent() {
    // Enrolled against a server that is gone: the events stay in the spool.
    let fake = Fake::new(Mode::Ack);
    let (url, server) = serve(fake, "127.0.0.1:0".parse().unwrap()).await;
    let s = setup();
    mamori_agent::enroll(&enroll_options(&url, &s.state))
        .await
        .unwrap();
    drop(server);

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mamori-agent"))
        .args(["run", "--collectors", "logon", "--wtmp"])
        .arg(&s.wtmp)
        .arg("--state-dir")
        .arg(&s.state)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let position = s.state.join("wtmp.offset");
    eventually("the logon collector", || position.exists()).await;
    append_wtmp(&s.wtmp, &[logon("gina", "pts/7"), logon("hugo", "pts/8")]);
    eventually("events spooled", || {
        std::fs::read_to_string(&position).is_ok_and(|p| p.contains("\"offset\":768"))
    })
    .await;
    child.start_kill().unwrap(); // SIGKILL: no flush, no clean shutdown
    child.wait().await.unwrap();

    let mut spool = Spool::open(mamori_agent::spool_dir(&s.state), SpoolConfig::default()).unwrap();
    let batch = spool.read(0, u64::MAX, 100, 1 << 20).unwrap().unwrap();
    let users: Vec<&str> = batch
        .events
        .iter()
        .filter(|e| !matches!(e.kind, Some(event::Kind::Agent(_))))
        .map(|e| e.os_user.as_str())
        .collect();
    assert_eq!(users, ["gina", "hugo"]);
}

#[tokio::test]
async fn a_server_that_answers_only_retry_later_is_left_for_the_next() {
    let busy = Fake::new(Mode::Busy);
    let (busy_url, _busy_server) = serve(busy.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let good = Fake::new(Mode::Ack);
    let (good_url, _good_server) = serve(good.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let s = setup();
    // Both are reachable; the first refuses every stream.
    mamori_agent::enroll(&enroll_options(&format!("{busy_url},{good_url}"), &s.state))
        .await
        .unwrap();
    let agent = Agent::start(&s.state, &s.wtmp).await;
    append_wtmp(&s.wtmp, &[logon("kim", "pts/11")]);
    eventually("the event through the second server", || {
        good.logon_users() == ["kim"]
    })
    .await;
    agent.stop().await;
    assert!(busy.batches().is_empty());
}
