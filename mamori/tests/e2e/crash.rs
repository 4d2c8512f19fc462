//! Crash safety: kill -9 the writer and the agent in the middle of a stream,
//! restart them, and every event the agent generated is in PostgreSQL
//! exactly once.

use crate::agent::{marker_program, rows_for};
use crate::support::*;
use mamori_proto::agent::v1::{Event, event::Kind};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn bin(name: &str) -> PathBuf {
    let mamori = PathBuf::from(env!("CARGO_BIN_EXE_mamori"));
    let path = mamori.with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace binaries first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// The log file a child's stderr goes to; restarts append to it.
fn append_to(log: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap()
}

fn spawn_writer(env: &mamori_test_support::TestEnv, log: &Path) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_mamori"))
            .arg("writer")
            .env("MAMORI_DATABASE_URL", &env.database_url)
            .env("MAMORI_REDIS_URL", &env.redis_url)
            .env("MAMORI_WRITER_OPS_ADDR", "127.0.0.1:0")
            .env("MAMORI_WRITER_CLAIM_IDLE_MS", "1000")
            .env("MAMORI_WRITER_READ_COUNT", "2")
            .env_remove("MAMORI_CONFIG")
            .stdout(Stdio::null())
            .stderr(append_to(log))
            .spawn()
            .unwrap(),
    )
}

pub(crate) fn spawn_agent(state: &Path, log: &Path) -> Proc {
    Proc(
        Command::new(bin("mamori-agent"))
            .args([
                "run",
                "--collectors",
                "process",
                "--batch-max-events",
                "5",
                "--state-dir",
            ])
            .arg(state)
            .stdout(Stdio::null())
            .stderr(append_to(log))
            .spawn()
            .unwrap(),
    )
}

pub fn kill9(Proc(child): &mut Proc) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
}

/// The marker index of each stored event of `exe` (its first argument).
fn marker_counts(payloads: &[Vec<u8>]) -> HashMap<u32, usize> {
    let mut counts = HashMap::new();
    for p in payloads {
        let e = <Event as prost::Message>::decode(p.as_slice()).unwrap();
        if let Some(Kind::Process(p)) = e.kind
            && let Some(i) = p
                .command_line
                .split_whitespace()
                .nth(2)
                .and_then(|a| a.strip_prefix("0."))
                .and_then(|a| a.parse().ok())
        {
            *counts.entry(i).or_insert(0) += 1;
        }
    }
    counts
}

#[tokio::test]
async fn kill_9_of_writer_and_agent_loses_and_duplicates_nothing() {
    let s = Stack::ingest_only(|_| {}).await;
    let logs = tempfile::tempdir().unwrap();
    let writer_log = logs.path().join("writer.log");
    let agent_log = logs.path().join("agent.log");
    let (_tenant, token) = s.tenant_with_token().await;
    let state = tempfile::tempdir().unwrap();
    mamori_agent::enroll(&mamori_agent::EnrollOptions {
        server: s.url(),
        token,
        state_dir: state.path().to_owned(),
        ca_cert: None,
        machine_id: Some(format!("crash-{}", uuid::Uuid::new_v4())),
    })
    .await
    .unwrap();

    let mut writer = spawn_writer(&s.env, &writer_log);
    let mut agent = spawn_agent(state.path(), &agent_log);
    tokio::time::sleep(Duration::from_millis(800)).await;

    let dir = tempfile::tempdir().unwrap();
    let exe = marker_program(
        dir.path(),
        &format!("mamori-crash-{}", uuid::Uuid::new_v4().simple()),
    );
    // Each marker lives 1 s (see marker_program); its second argument
    // encodes its index and adds at most 0.1 ms.
    let mut running = Vec::new();
    let mut run_marker = |i: u32| {
        running.push(
            Command::new(&exe)
                .args(["1".to_owned(), format!("0.{i:07}")])
                .spawn()
                .unwrap(),
        );
    };

    // Markers are certain to have been generated when they ran well before
    // the agent was killed, or well after it was back.
    let margin = Duration::from_millis(700);
    let mut expected = Vec::new();
    let mut started_at = HashMap::new();
    for i in 0..60u32 {
        started_at.insert(i, Instant::now());
        run_marker(i);
        if i == 20 {
            kill9(&mut writer);
        }
        if i == 35 {
            writer = spawn_writer(&s.env, &writer_log);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let agent_killed = Instant::now();
    kill9(&mut agent);
    for i in 0..60u32 {
        if agent_killed.duration_since(started_at[&i]) > margin {
            expected.push(i);
        }
    }
    // While the agent is down nothing is generated (markers 60..70).
    for i in 60..70u32 {
        run_marker(i);
    }
    let _agent = spawn_agent(state.path(), &agent_log);
    let restarted = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 70..100u32 {
        run_marker(i);
        if i == 80 {
            kill9(&mut writer);
            writer = spawn_writer(&s.env, &writer_log);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    expected.extend(70..100);
    assert!(restarted.elapsed() > Duration::from_millis(1500));
    assert!(
        expected.len() > 60,
        "most markers are certain: {}",
        expected.len()
    );

    for mut c in running {
        assert!(c.wait().unwrap().success());
    }
    let counts = wait_for(
        "every expected marker in PostgreSQL",
        Duration::from_secs(40),
        || async {
            let counts = marker_counts(&rows_for(&s.env, &exe).await);
            expected
                .iter()
                .all(|i| counts.contains_key(i))
                .then_some(counts)
        },
    )
    .await;
    // Allow late replays to land before checking for duplicates.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let counts_after = marker_counts(&rows_for(&s.env, &exe).await);
    assert!(counts.len() <= counts_after.len(), "rows never disappear");
    let duplicated: Vec<_> = counts_after.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicated.is_empty(),
        "markers stored more than once: {duplicated:?}"
    );
    let missing: Vec<_> = expected
        .iter()
        .filter(|i| !counts_after.contains_key(i))
        .collect();
    assert!(missing.is_empty(), "markers lost: {missing:?}");
}
