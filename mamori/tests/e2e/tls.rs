//! The roles' connections to PostgreSQL and Redis over TLS, verified
//! against the deployment's CA: `sslmode=verify-full&sslrootcert=…` in
//! the database URL, and `rediss://` verified against the system's trust
//! store or the bundle `SSL_CERT_FILE` names. The test's PostgreSQL and
//! Redis use a CA made by scripts/servers.sh (MAMORI_TEST_TLS_DIR).

use crate::support::*;
use mamori_test_support::{RedisProc, TestEnv};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn tls_dir() -> PathBuf {
    PathBuf::from(
        std::env::var("MAMORI_TEST_TLS_DIR")
            .expect("MAMORI_TEST_TLS_DIR is not set: run the tests with scripts/test.sh"),
    )
}

/// `mamori SUBCOMMAND` with TLS to both servers; `trust_ca` puts the CA
/// in the process's trust store.
fn role(
    sub: &str,
    env: &TestEnv,
    redis: &RedisProc,
    trust_ca: bool,
    extra: &[(&str, String)],
) -> Command {
    let ca = tls_dir().join("ca.crt");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mamori"));
    cmd.arg(sub)
        .env_remove("MAMORI_CONFIG")
        .env_remove("SSL_CERT_FILE")
        .env(
            "MAMORI_DATABASE_URL",
            format!(
                "{}?sslmode=verify-full&sslrootcert={}",
                env.database_url,
                ca.display()
            ),
        )
        .env("MAMORI_REDIS_URL", redis.url())
        .stdout(Stdio::null());
    if trust_ca {
        cmd.env("SSL_CERT_FILE", &ca);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd
}

#[tokio::test]
async fn events_flow_over_tls_to_postgresql_and_redis() {
    let env = TestEnv::new().await;
    let redis = RedisProc::start_tls(&tls_dir());
    let logs = tempfile::tempdir().unwrap();
    let log = |name: &str| std::fs::File::create(logs.path().join(name)).unwrap();

    // A CA the process does not trust: Redis's certificate is refused, and
    // the role says so and stops.
    let refused = role(
        "writer",
        &env,
        &redis,
        false,
        &[("MAMORI_WRITER_OPS_ADDR", "127.0.0.1:0".into())],
    )
    .stderr(Stdio::piped())
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot reach Redis") && stderr.to_lowercase().contains("certificate"),
        "{stderr}"
    );

    let ingest_port = free_port();
    let _writer = Proc(
        role(
            "writer",
            &env,
            &redis,
            true,
            &[("MAMORI_WRITER_OPS_ADDR", "127.0.0.1:0".into())],
        )
        .stderr(log("writer.log"))
        .spawn()
        .unwrap(),
    );
    let _ingest = Proc(
        role(
            "ingest",
            &env,
            &redis,
            true,
            &[
                ("MAMORI_INGEST_ADDR", format!("127.0.0.1:{ingest_port}")),
                ("MAMORI_INGEST_OPS_ADDR", "127.0.0.1:0".into()),
            ],
        )
        .stderr(log("ingest.log"))
        .spawn()
        .unwrap(),
    );
    let url = format!("http://127.0.0.1:{ingest_port}");
    let tenant = mamori_registry::create_tenant(&env.db, "TLS KK")
        .await
        .unwrap();
    let token = mamori_registry::create_token(&env.db, tenant, None, None)
        .await
        .unwrap();
    let enrolled = wait_for("ingest over TLS", Duration::from_secs(30), || async {
        let channel = tonic::transport::Channel::from_shared(url.clone())
            .ok()?
            .connect()
            .await
            .ok()?;
        mamori_proto::agent::v1::agent_service_client::AgentServiceClient::new(channel)
            .enroll(mamori_proto::agent::v1::EnrollRequest {
                enrollment_token: token.token.expose().to_owned(),
                facts: Some(mamori_proto::agent::v1::MachineFacts {
                    machine_id: "tls-pc".into(),
                    hostname: "tls-pc".into(),
                    os_name: "Debian".into(),
                    os_version: "13".into(),
                    agent_version: "test".into(),
                    instance_id: "tls-pc".into(),
                }),
            })
            .await
            .ok()
            .map(tonic::Response::into_inner)
    })
    .await;
    let mut st = open_at(&url, &enrolled.device_credential)
        .await
        .expect("a stream");
    let acked = vec![process_event("/usr/bin/over-tls")];
    let ids = vec![acked[0].id.clone()];
    st.send(batch(1, acked))
        .await
        .expect("acked through TLS Redis");
    assert_stored_exactly_once(&env, tenant, &ids).await;

    // The database's certificate is verified too: trusting anything but the
    // CA that signed it (here the server's own certificate), the role
    // refuses to start.
    let wrong = role(
        "writer",
        &env,
        &redis,
        true,
        &[
            ("MAMORI_WRITER_OPS_ADDR", "127.0.0.1:0".into()),
            (
                "MAMORI_DATABASE_URL",
                format!(
                    "{}?sslmode=verify-full&sslrootcert=/etc/ssl/certs/ca-certificates.crt",
                    env.database_url
                ),
            ),
        ],
    )
    .stderr(Stdio::piped())
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success(), "{stderr}");
    assert!(
        stderr.contains("MAMORI_DATABASE_URL") && stderr.to_lowercase().contains("certificate"),
        "{stderr}"
    );
}
