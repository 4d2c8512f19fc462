//! PostgreSQL crashing under the writer, in the middle of a stream: the
//! transaction in flight is lost, a commit may have happened without the
//! writer hearing of it, and every connection drops. The writer must keep
//! the stream entries it could not confirm pending, write them again once
//! PostgreSQL is back (skipping what a lost reply had committed), and store
//! every event exactly once.
//!
//! The test crashes a PostgreSQL cluster of its own (the shared one serves
//! the other tests) by killing one of its processes with SIGKILL: the
//! postmaster then ends every session and recovers from the WAL, as after
//! any crash of PostgreSQL while the machine stays up.

use crate::support::*;
use mamori_proto::agent::v1::StreamBatch;
use mamori_streams::{BATCH_FIELD, shard_of, stream_key};
use mamori_tenancy::{Db, DeviceId};
use mamori_test_support::TestEnv;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use prost::Message;
use sqlx::{Connection, PgConnection};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A PostgreSQL cluster of the test's own on a loopback port, removed on
/// drop. As root it runs as the `postgres` system user (PostgreSQL refuses
/// root), like scripts/servers.sh.
struct OwnPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

fn pg_bindir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed under /usr/lib/postgresql (scripts/test.sh does)")
        .map(|e| e.unwrap().path().join("bin"))
        .filter(|d| d.join("initdb").exists())
        .collect();
    dirs.sort_by_key(|d| {
        let v = d.parent().unwrap().file_name().unwrap().to_string_lossy();
        v.parse::<u32>().unwrap_or(0)
    });
    dirs.pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl OwnPostgres {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let pg = Self {
            dir,
            bin: pg_bindir(),
            port,
        };
        if is_root() {
            run(Command::new("chown").arg("postgres:").arg(pg.dir.path()));
        }
        let data = pg.data();
        run(pg
            .as_owner("initdb")
            .args(["-U", "mamori", "--auth=trust", "-E", "UTF8"])
            .arg("-D")
            .arg(&data));
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={} -c autovacuum=off -c fsync=on -c synchronous_commit=on",
            pg.dir.path().display()
        );
        run(pg
            .as_owner("pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(pg.dir.path().join("pg.log"))
            .args(["-w", "-t", "60", "start", "-o", &opts]));
        let mut admin = PgConnection::connect(&pg.url("postgres")).await.unwrap();
        sqlx::query("CREATE DATABASE mamori")
            .execute(&mut admin)
            .await
            .unwrap();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn as_owner(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://mamori@127.0.0.1:{}/{db}", self.port)
    }

    /// The process ids of the background processes of `types`, or None
    /// while PostgreSQL is down or recovering.
    async fn background(&self, types: &[&str]) -> Option<Vec<i32>> {
        let mut c = PgConnection::connect(&self.url("mamori")).await.ok()?;
        sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE backend_type = ANY($1)")
            .bind(types)
            .fetch_all(&mut c)
            .await
            .ok()
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = self
            .as_owner("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

fn kill(pids: &[i32]) {
    for pid in pids {
        nix::sys::signal::kill(Pid::from_raw(*pid), Signal::SIGKILL).unwrap();
    }
}

/// Events stored, or None while PostgreSQL is down or recovering.
async fn stored(url: &str) -> Option<(i64, i64)> {
    let mut c = PgConnection::connect(url).await.ok()?;
    sqlx::query_as("SELECT count(*), count(DISTINCT id) FROM events")
        .fetch_one(&mut c)
        .await
        .ok()
}

#[tokio::test]
async fn postgres_crashing_mid_stream_loses_and_doubles_no_event() {
    let pg = OwnPostgres::start().await;
    let url = pg.url("mamori");
    Db::migrate(&url).await.expect("migrate");
    // The shared servers give this test its own Redis database.
    let env = TestEnv::new().await;
    let mut cfg = writer_config(&env);
    cfg.stores.database_url = url.clone();
    cfg.writer_read_count = 2;
    let writer = mamori_writer::start(cfg.clone()).await.unwrap();

    // 200 batches of 20 events: 50 stored before the crash, the rest
    // appended while PostgreSQL crashes and recovers.
    const BATCHES: u64 = 200;
    const BEFORE: u64 = 50;
    const EVENTS: i64 = BATCHES as i64 * 20;
    let redis = env.redis().await;
    let (tenant, device) = (uuid::Uuid::new_v4(), DeviceId::new());
    let key = stream_key(shard_of(device, cfg.streams.stream_shards));
    let append = move |seqs: std::ops::RangeInclusive<u64>| {
        let (mut redis, key) = (redis.clone(), key.clone());
        async move {
            for seq in seqs {
                let entry = StreamBatch {
                    tenant_id: tenant.to_string(),
                    device_id: device.to_string(),
                    sequence: seq,
                    received_at: Some(prost_types::Timestamp {
                        seconds: chrono::Utc::now().timestamp(),
                        nanos: 0,
                    }),
                    traceparent: String::new(),
                    events: (0..20)
                        .map(|i| process_event(&format!("/bin/p{seq}-{i}")))
                        .collect(),
                };
                let _: String = redis::cmd("XADD")
                    .arg(&key)
                    .arg("*")
                    .arg(BATCH_FIELD)
                    .arg(entry.encode_to_vec())
                    .query_async(&mut redis)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    append(1..=BEFORE).await;
    wait_for(
        "the first events stored",
        Duration::from_secs(20),
        || async { stored(&url).await.filter(|(n, _)| *n == BEFORE as i64 * 20) },
    )
    .await;

    // Hold the writer's next transaction in flight: it waits for a lock
    // this session holds when PostgreSQL crashes.
    let mut blocker = PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut blocker).await.unwrap();
    sqlx::query("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut blocker)
        .await
        .unwrap();
    let producer = tokio::spawn(append(BEFORE + 1..=BATCHES));
    wait_for(
        "the writer to wait on the lock",
        Duration::from_secs(20),
        || async {
            let mut c = PgConnection::connect(&url).await.ok()?;
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO events%'",
            )
            .fetch_one(&mut c)
            .await
            .ok()?;
            (waiting > 0).then_some(())
        },
    )
    .await;

    // Crash.
    let victims = pg.background(&["walwriter"]).await.unwrap();
    assert_eq!(victims.len(), 1, "found {victims:?}");
    kill(&victims);
    wait_for("PostgreSQL to recover", Duration::from_secs(60), || async {
        let now = pg.background(&["walwriter"]).await?;
        (!now.is_empty() && !now.iter().any(|p| victims.contains(p))).then_some(())
    })
    .await;
    drop(blocker);
    producer.await.unwrap();

    wait_for("every event stored", Duration::from_secs(60), || async {
        stored(&url).await.filter(|(n, _)| *n >= EVENTS)
    })
    .await;
    wait_for("every entry acked", Duration::from_secs(30), || async {
        (writer_pending(&env.redis_url, cfg.streams.stream_shards).await == 0).then_some(())
    })
    .await;
    writer.shutdown().await;
    assert_eq!(
        stored(&url).await,
        Some((EVENTS, EVENTS)),
        "(rows, distinct ids)"
    );
    let mut redis = env.redis().await;
    let dead: u64 = redis::cmd("XLEN")
        .arg(mamori_streams::DEAD_LETTER_STREAM)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(dead, 0, "entries given up as dead letters");
}
