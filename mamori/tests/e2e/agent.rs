//! The real agent against the real stack: a process started on this machine
//! becomes a row in PostgreSQL; TLS with a pinned CA.

use crate::support::*;
use mamori_agent::{CollectorSet, EnrollOptions, RunOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A uniquely named copy of /bin/sleep, so its events are recognisable.
/// (Sleep, not true: the process connector reports an exec after the fact,
/// and the agent reads the executable and command line from /proc; a
/// program that exits within a millisecond can be gone by then. Callers
/// let it live a second, so a loaded test machine does not lose the race.)
pub fn marker_program(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::copy("/bin/sleep", &path).unwrap();
    path
}

/// Event rows (tenant-wide) whose subject is `exe`.
pub async fn rows_for(s: &mamori_test_support::TestEnv, exe: &Path) -> Vec<Vec<u8>> {
    sqlx::query_scalar("SELECT payload FROM events WHERE subject = $1 AND kind = $2")
        .bind(exe.to_str().unwrap())
        .bind(mamori_proto::EventKind::ProcessStart.code())
        .fetch_all(&s.owner)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_started_on_this_machine_reaches_postgres() {
    let s = Stack::start().await;
    let (tenant, token) = s.tenant_with_token().await;
    let state = tempfile::tempdir().unwrap();
    let outcome = mamori_agent::enroll(&EnrollOptions {
        server: s.url(),
        token,
        state_dir: state.path().to_owned(),
        ca_cert: None,
        machine_id: Some(format!("agent-test-{}", uuid::Uuid::new_v4())),
    })
    .await
    .expect("agent enrolls");
    assert_eq!(outcome.tenant_id, tenant.to_string());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(state.path().join("credential"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "credential file is private");

    let mut opts = RunOptions::new(state.path().to_owned());
    opts.collectors = "process".parse::<CollectorSet>().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(mamori_agent::run(opts, async {
        let _ = stop_rx.await;
    }));
    // Let the collector subscribe before starting the program.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let bin = tempfile::tempdir().unwrap();
    let exe = marker_program(
        bin.path(),
        &format!("mamori-e2e-{}", uuid::Uuid::new_v4().simple()),
    );
    // Asynchronously: the agent shares this test's thread.
    let status = tokio::process::Command::new(&exe)
        .args(["1", "0.0042"])
        .status()
        .await
        .unwrap();
    assert!(status.success());

    let payloads = wait_for(
        "the process event in PostgreSQL",
        Duration::from_secs(60),
        || async {
            let rows = rows_for(&s.env, &exe).await;
            (!rows.is_empty()).then_some(rows)
        },
    )
    .await;
    assert_eq!(payloads.len(), 1);
    let event =
        <mamori_proto::agent::v1::Event as prost::Message>::decode(payloads[0].as_slice()).unwrap();
    let Some(mamori_proto::agent::v1::event::Kind::Process(p)) = event.kind else {
        panic!("not a process event: {event:?}");
    };
    assert!(p.command_line.contains("0.0042"), "{p:?}");
    assert_eq!(p.exe_sha256.len(), 32, "the executable was hashed");
    let device: uuid::Uuid = sqlx::query_scalar("SELECT device_id FROM events WHERE subject = $1")
        .bind(exe.to_str().unwrap())
        .fetch_one(&s.env.owner)
        .await
        .unwrap();
    assert_eq!(device.to_string(), outcome.device_id);

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .expect("agent stops")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn tls_with_a_pinned_ca_works_and_a_wrong_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, cert_pem, key_pem) = test_pki();
    let other_ca = test_pki().0;
    std::fs::write(dir.path().join("ca.pem"), &ca_pem).unwrap();
    std::fs::write(dir.path().join("other-ca.pem"), &other_ca).unwrap();
    std::fs::write(dir.path().join("cert.pem"), &cert_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), &key_pem).unwrap();
    let s = Stack::ingest_only(|cfg| {
        cfg.ingest_tls_cert = dir.path().join("cert.pem").display().to_string();
        cfg.ingest_tls_key = dir.path().join("key.pem").display().to_string();
    })
    .await;
    let (_tenant, token) = s.tenant_with_token().await;
    let url = format!("https://localhost:{}", s.ingest.grpc_addr.port());

    let wrong = tempfile::tempdir().unwrap();
    let err = mamori_agent::enroll(&EnrollOptions {
        server: url.clone(),
        token: token.clone(),
        state_dir: wrong.path().to_owned(),
        ca_cert: Some(dir.path().join("other-ca.pem")),
        machine_id: Some("tls-machine".into()),
    })
    .await
    .expect_err("a server not signed by the pinned CA is refused");
    assert!(!wrong.path().join("credential").exists(), "{err}");

    let good = tempfile::tempdir().unwrap();
    mamori_agent::enroll(&EnrollOptions {
        server: url,
        token,
        state_dir: good.path().to_owned(),
        ca_cert: Some(dir.path().join("ca.pem")),
        machine_id: Some("tls-machine".into()),
    })
    .await
    .expect("enrolls over TLS with the pinned CA");
    assert!(good.path().join("credential").exists());
}

/// A CA and a server certificate for localhost signed by it (PEM).
pub(crate) fn test_pki() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// The agent given two ingest replicas: enrolled and streaming through the
/// first, it carries on through the second when the first is killed -9.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_fails_over_to_the_next_server_when_its_ingest_dies() {
    let s = Stack::start().await;
    let (_tenant, token) = s.tenant_with_token().await;
    let first_port = free_port();
    let logs = tempfile::tempdir().unwrap();
    let mut first = spawn_mamori(
        "ingest",
        &s.env,
        &[
            ("MAMORI_INGEST_ADDR", &format!("127.0.0.1:{first_port}")),
            ("MAMORI_INGEST_OPS_ADDR", "127.0.0.1:0"),
        ],
        &logs.path().join("ingest.log"),
    );
    wait_for(
        "the first ingest listens",
        Duration::from_secs(20),
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", first_port))
                .await
                .ok()
        },
    )
    .await;
    let state = tempfile::tempdir().unwrap();
    mamori_agent::enroll(&mamori_agent::EnrollOptions {
        server: format!("http://127.0.0.1:{first_port}, {}", s.url()),
        token,
        state_dir: state.path().to_owned(),
        ca_cert: None,
        machine_id: Some(format!("failover-{}", uuid::Uuid::new_v4())),
    })
    .await
    .expect("enrolled through the first server");
    let _agent = crate::crash::spawn_agent(state.path(), &logs.path().join("agent.log"));
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str| {
        let exe = marker_program(dir.path(), name);
        std::process::Command::new(&exe)
            .arg("0.5")
            .status()
            .unwrap();
        exe
    };
    // Wait for the agent's stream (through the first) before the first marker.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = run(&format!("mamori-before-{}", uuid::Uuid::new_v4().simple()));
    wait_for(
        "the event sent through the first ingest",
        Duration::from_secs(20),
        || async { (!rows_for(&s.env, &before).await.is_empty()).then_some(()) },
    )
    .await;

    crate::crash::kill9(&mut first);
    let after = run(&format!("mamori-after-{}", uuid::Uuid::new_v4().simple()));
    wait_for(
        "the event sent through the second ingest",
        Duration::from_secs(30),
        || async { (!rows_for(&s.env, &after).await.is_empty()).then_some(()) },
    )
    .await;
    let log = std::fs::read_to_string(logs.path().join("agent.log")).unwrap();
    let connected_to = |url: String| {
        log.lines()
            .any(|l| l.contains(" connected") && l.contains(&url))
    };
    assert!(
        connected_to(format!("http://127.0.0.1:{first_port}")) && connected_to(s.url()),
        "connected to both servers in turn:\n{log}"
    );
}
