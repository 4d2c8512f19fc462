//! The agent as a Debian package: built by scripts/agent-deb.sh (from the
//! debug binary), installed with dpkg on this machine, enrolled with
//! `mamori-agent install`, run as its systemd unit's ExecStart says (this
//! machine has no systemd to run it), its events reach PostgreSQL; once
//! the tenant has issued an uninstall code, `dpkg -r` is refused without
//! it, and with it a purge takes everything away. Needs root, as dpkg does.

use crate::agent::{marker_program, rows_for};
use crate::crash::bin;
use crate::gw::Gw;
use crate::support::*;
use reqwest::StatusCode;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const UNIT: &str = "/lib/systemd/system/mamori-agent.service";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the command runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_package_installs_enrolls_runs_its_unit_and_purges() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "installing a package needs root (scripts/test.sh runs as root in CI)"
    );
    // What an earlier, interrupted run may have left: its enrollment's
    // policy (which would protect the removal) first, then the package.
    let _ = std::fs::remove_file("/var/lib/mamori-agent/policy.pb");
    let _ = Command::new("dpkg")
        .args(["--purge", "mamori-agent"])
        .output();
    let _ = std::fs::remove_dir_all("/var/lib/mamori-agent");

    let g = Gw::start().await;
    let s = &g.stack;
    let admin = g.signup("Package KK", "tenant").await;
    crate::gateway::verify(&g, &admin).await;
    let token = admin.enrollment_token.clone().unwrap();
    let out = tempfile::tempdir().unwrap();
    // The runner's CARGO_MANIFEST_DIR first (see proto's fuzz test).
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(
            || env!("CARGO_MANIFEST_DIR").into(),
            std::path::PathBuf::from,
        )
        .join("..");
    let built = run(Command::new(root.join("scripts/agent-deb.sh"))
        .arg(out.path())
        .env("MAMORI_AGENT_BIN", bin("mamori-agent")));
    let deb = built.lines().last().unwrap().trim().to_owned();
    assert!(deb.ends_with("_amd64.deb"), "{built}");
    let fields = run(Command::new("dpkg-deb").args(["--field", &deb]));
    assert!(fields.contains("Package: mamori-agent"), "{fields}");

    let installed = run(Command::new("dpkg").args(["-i", &deb]));
    assert!(
        installed.contains("mamori-agent install --server URL --token TOKEN"),
        "the package says how to enroll:\n{installed}"
    );
    assert!(Path::new("/usr/bin/mamori-agent").exists());
    let unit = std::fs::read_to_string(UNIT).expect("the unit is installed");
    if Path::new("/usr/bin/systemd-analyze").exists() {
        // Unit syntax and the ExecStart binary are checked offline; an
        // unknown or misspelt setting is only a warning there.
        let verified = run(Command::new("systemd-analyze").args(["verify", UNIT]));
        assert!(
            !verified.contains("ignoring") && !verified.contains("Unknown"),
            "{verified}"
        );
    }

    let enrolled = run(Command::new("/usr/bin/mamori-agent")
        .args(["install", "--server", &s.url()])
        .env("MAMORI_ENROLLMENT_TOKEN", &token));
    assert!(enrolled.contains("enrolled as device"), "{enrolled}");
    assert!(Path::new("/var/lib/mamori-agent/agent.json").exists());

    // What systemd would start.
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart");
    let mut words = exec.split_whitespace();
    let logs = tempfile::tempdir().unwrap();
    let mut agent = Proc(
        Command::new(words.next().unwrap())
            .args(words)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(logs.path().join("agent.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let dir = tempfile::tempdir().unwrap();
    let exe = marker_program(
        dir.path(),
        &format!("mamori-pkg-{}", uuid::Uuid::new_v4().simple()),
    );
    Command::new(&exe).arg("0.3").status().unwrap();
    wait_for(
        "the packaged agent's event",
        Duration::from_secs(30),
        || async { (!rows_for(&s.env, &exe).await.is_empty()).then_some(()) },
    )
    .await;
    // The administrator issues an uninstall code; the running agent gets
    // its hash with the policy.
    let (status, issued) = g
        .post(
            &admin,
            "/api/v1/tenant/uninstall-code",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let code = issued["code"].as_str().unwrap().to_owned();
    wait_for(
        "the uninstall code's hash on the PC",
        Duration::from_secs(30),
        || async {
            use prost::Message;
            use sha2::Digest;
            let stored = std::fs::read("/var/lib/mamori-agent/policy.pb").ok()?;
            let policy = mamori_proto::agent::v1::PolicyUpdate::decode(stored.as_slice()).ok()?;
            (policy.uninstall_code_sha256 == sha2::Sha256::digest(code.as_bytes()).to_vec())
                .then_some(())
        },
    )
    .await;
    // Without the code, or with another, removal is refused and nothing
    // goes; the policy is on the PC, so this holds offline too.
    for attempt in [None, Some("mmu_not-the-code")] {
        let mut remove = Command::new("dpkg");
        remove
            .args(["-r", "mamori-agent"])
            .env_remove("MAMORI_UNINSTALL_CODE");
        if let Some(c) = attempt {
            remove.env("MAMORI_UNINSTALL_CODE", c);
        }
        let out = remove.output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "removal without the code: {text}");
        assert!(text.contains("uninstall code"), "{text}");
        assert!(Path::new("/usr/bin/mamori-agent").exists());
    }

    // The running agent reports both attempts, and its own start.
    let tenant: uuid::Uuid = admin.tenant_id.as_deref().unwrap().parse().unwrap();
    let count = |kind: mamori_proto::EventKind| async move {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM events WHERE tenant_id = $1 AND kind = $2",
        )
        .bind(tenant)
        .bind(kind.code())
        .fetch_one(&s.env.owner)
        .await
        .unwrap()
    };
    wait_for(
        "the refused removals as events",
        Duration::from_secs(30),
        || async { (count(mamori_proto::EventKind::UninstallRefused).await == 2).then_some(()) },
    )
    .await;
    assert_eq!(count(mamori_proto::EventKind::AgentStarted).await, 1);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = agent.0.wait().unwrap();
    assert!(
        status.success(),
        "the agent stops cleanly on SIGTERM: {status}"
    );

    run(Command::new("dpkg")
        .args(["--purge", "mamori-agent"])
        .env("MAMORI_UNINSTALL_CODE", &code));
    assert!(!Path::new("/usr/bin/mamori-agent").exists());
    assert!(!Path::new(UNIT).exists());
    assert!(
        !Path::new("/var/lib/mamori-agent").exists(),
        "purge forgets the enrollment"
    );
}
