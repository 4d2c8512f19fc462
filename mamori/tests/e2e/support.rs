//! Shared helpers: an in-process stack (ingest + writer on port 0), raw gRPC
//! clients, event builders and polling.

use mamori_proto::agent::v1::agent_service_client::AgentServiceClient;
use mamori_proto::agent::v1::{
    AgentMessage, EnrollRequest, EnrollResponse, Event, EventBatch, MachineFacts, ProcessEvent,
    ServerMessage, agent_message, event::Kind, process_event,
};
use mamori_tenancy::TenantId;
use mamori_test_support::TestEnv;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

pub struct Stack {
    pub env: TestEnv,
    pub ingest: mamori_ingest::Running,
    pub _writer: Option<mamori_writer::Running>,
}

pub fn ingest_config(env: &TestEnv) -> mamori_ingest::Config {
    mamori_ingest::Config {
        stores: mamori_config::Stores {
            database_url: env.database_url.clone(),
            redis_url: env.redis_url.clone(),
            db_max_connections: 4,
        },
        ingest_addr: "127.0.0.1:0".into(),
        ingest_ops_addr: "127.0.0.1:0".into(),
        revocation_check_ms: 200,
        ..Default::default()
    }
}

pub fn writer_config(env: &TestEnv) -> mamori_writer::Config {
    mamori_writer::Config {
        stores: mamori_config::Stores {
            database_url: env.database_url.clone(),
            redis_url: env.redis_url.clone(),
            db_max_connections: 6,
        },
        writer_ops_addr: "127.0.0.1:0".into(),
        writer_claim_idle_ms: 1000,
        ..Default::default()
    }
}

impl Stack {
    pub async fn start() -> Self {
        let env = TestEnv::new().await;
        let writer = mamori_writer::start(writer_config(&env))
            .await
            .expect("writer starts");
        let ingest = mamori_ingest::start(ingest_config(&env))
            .await
            .expect("ingest starts");
        Self {
            env,
            ingest,
            _writer: Some(writer),
        }
    }

    /// Ingest alone (no writer), its config adjusted by `tweak`.
    pub async fn ingest_only(tweak: impl FnOnce(&mut mamori_ingest::Config)) -> Self {
        let env = TestEnv::new().await;
        let mut cfg = ingest_config(&env);
        tweak(&mut cfg);
        let ingest = mamori_ingest::start(cfg).await.expect("ingest starts");
        Self {
            env,
            ingest,
            _writer: None,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.ingest.grpc_addr)
    }

    pub async fn client(&self) -> AgentServiceClient<Channel> {
        let channel = Channel::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        AgentServiceClient::new(channel)
    }

    /// A new tenant and an unlimited, non-expiring token for it.
    pub async fn tenant_with_token(&self) -> (TenantId, String) {
        let tenant = mamori_registry::create_tenant(&self.env.db, "Test Co")
            .await
            .unwrap();
        let token = mamori_registry::create_token(&self.env.db, tenant, None, None)
            .await
            .unwrap();
        (tenant, token.token.expose().to_owned())
    }

    pub async fn enroll(
        &self,
        token: &str,
        machine_id: &str,
        instance_id: &str,
    ) -> Result<EnrollResponse, Status> {
        self.client()
            .await
            .enroll(EnrollRequest {
                enrollment_token: token.to_owned(),
                facts: Some(MachineFacts {
                    machine_id: machine_id.to_owned(),
                    hostname: format!("host-{machine_id}"),
                    os_name: "Debian".into(),
                    os_version: "12".into(),
                    agent_version: "test".into(),
                    instance_id: instance_id.to_owned(),
                }),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Enrolls a fresh machine and returns its enrollment response.
    pub async fn new_device(&self, token: &str) -> EnrollResponse {
        let m = uuid::Uuid::new_v4().to_string();
        self.enroll(token, &m, &m).await.expect("enroll")
    }

    /// Opens an authenticated stream.
    pub async fn open(&self, credential: &str) -> Result<AgentStream, Status> {
        let (tx, rx) = mpsc::channel(16);
        let mut req = tonic::Request::new(ReceiverStream::new(rx));
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {credential}").parse().unwrap(),
        );
        let inbound = self.client().await.connect(req).await?.into_inner();
        Ok(AgentStream { tx, inbound })
    }

    pub async fn count_events(&self, tenant: TenantId) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events WHERE tenant_id = $1")
            .bind(tenant.as_uuid())
            .fetch_one(&self.env.owner)
            .await
            .unwrap()
    }

    /// Waits until `tenant` has `n` events stored, then a second more, and
    /// asserts there are still exactly `n`: the refused input wrote nothing.
    pub async fn assert_only_written(&self, tenant: TenantId, n: i64) {
        wait_for("the accepted events", Duration::from_secs(10), || async {
            (self.count_events(tenant).await == n).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(
            self.count_events(tenant).await,
            n,
            "only the accepted batches were written"
        );
    }
}

pub struct AgentStream {
    pub tx: mpsc::Sender<AgentMessage>,
    pub inbound: Streaming<ServerMessage>,
}

impl AgentStream {
    pub async fn send(&mut self, batch: EventBatch) -> Result<ServerMessage, Status> {
        self.tx
            .send(AgentMessage {
                body: Some(agent_message::Body::Batch(batch)),
            })
            .await
            .map_err(|_| Status::unavailable("stream closed"))?;
        self.next().await
    }

    pub async fn next(&mut self) -> Result<ServerMessage, Status> {
        match tokio::time::timeout(Duration::from_secs(10), self.inbound.message()).await {
            Err(_) => panic!("no reply from ingest within 10 s"),
            Ok(Ok(Some(m))) => Ok(m),
            Ok(Ok(None)) => Err(Status::unavailable("stream ended")),
            Ok(Err(s)) => Err(s),
        }
    }
}

pub fn process_event(exe: &str) -> Event {
    Event {
        id: uuid::Uuid::now_v7().as_bytes().to_vec(),
        occurred_at_us: chrono::Utc::now().timestamp_micros(),
        clock_offset_ms: 0,
        os_user: "alice".into(),
        kind: Some(Kind::Process(ProcessEvent {
            action: process_event::Action::Start as i32,
            pid: 4242,
            exe_path: exe.to_owned(),
            command_line: format!("{exe} --flag"),
            exe_sha256: vec![7; 32],
            ..Default::default()
        })),
    }
}

pub fn batch(sequence: u64, events: Vec<Event>) -> EventBatch {
    EventBatch {
        sequence,
        events,
        ..Default::default()
    }
}

/// Polls `check` until it returns Some, or panics naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A loopback port nothing listens on (yet).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `mamori ROLE` as a child process with the test's database and Redis,
/// `env` on top, its log appended to `log`.
pub fn spawn_mamori(
    role: &str,
    env: &TestEnv,
    vars: &[(&str, &str)],
    log: &std::path::Path,
) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mamori"));
    cmd.arg(role)
        .env("MAMORI_DATABASE_URL", &env.database_url)
        .env("MAMORI_REDIS_URL", &env.redis_url)
        .env_remove("MAMORI_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(log);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    Proc(cmd.spawn().unwrap())
}

/// A child process that is killed when the test ends, even by a panic, so a
/// failed run leaves no server or agent behind.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Entries the writer's consumer group has read and not yet acked, over
/// every one of `shards` streams.
pub async fn writer_pending(redis_url: &str, shards: u32) -> u64 {
    let client = redis::Client::open(redis_url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut pending = 0;
    for key in mamori_streams::stream_keys(shards) {
        for g in mamori_streams::groups(&mut conn, &key).await.unwrap() {
            if g.name == mamori_streams::WRITER_GROUP {
                pending += g.pending;
            }
        }
    }
    pending
}

/// An authenticated stream to the ingest at `url` (any replica), or None
/// when it cannot be reached or refuses.
pub async fn open_at(url: &str, credential: &str) -> Option<AgentStream> {
    let channel = Channel::from_shared(url.to_owned())
        .ok()?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .ok()?;
    let (tx, rx) = mpsc::channel(16);
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {credential}").parse().ok()?,
    );
    let inbound = AgentServiceClient::new(channel)
        .connect(req)
        .await
        .ok()?
        .into_inner();
    Some(AgentStream { tx, inbound })
}

/// Waits until `tenant` has as many events stored as `acked` names, then
/// asserts that each acked event is stored and no event twice (every
/// batch sent was retried until acked, so nothing else was stored).
pub async fn assert_stored_exactly_once(env: &TestEnv, tenant: TenantId, acked: &[Vec<u8>]) {
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE tenant_id = $1")
            .bind(tenant.as_uuid())
            .fetch_one(&env.owner)
            .await
            .unwrap()
    };
    let ids: Vec<uuid::Uuid> = acked
        .iter()
        .map(|b| uuid::Uuid::from_slice(b).unwrap())
        .collect();
    let started = Instant::now();
    let stored = loop {
        let n = count().await;
        if n >= acked.len() as i64 {
            break n;
        }
        if started.elapsed() > Duration::from_secs(90) {
            let missing: Vec<uuid::Uuid> = sqlx::query_scalar(
                "SELECT i FROM unnest($2::uuid[]) AS i \
                 WHERE NOT EXISTS (SELECT 1 FROM events WHERE tenant_id = $1 AND id = i) LIMIT 10",
            )
            .bind(tenant.as_uuid())
            .bind(&ids)
            .fetch_all(&env.owner)
            .await
            .unwrap();
            panic!(
                "after 90 s {n} of the {} acked events are stored; some missing: {missing:?}",
                acked.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let found: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT id) FROM events WHERE tenant_id = $1 AND id = ANY($2)",
    )
    .bind(tenant.as_uuid())
    .bind(&ids)
    .fetch_one(&env.owner)
    .await
    .unwrap();
    assert_eq!(found, acked.len() as i64, "every acked event is stored");
    assert_eq!(stored, acked.len() as i64, "and each exactly once");
}
