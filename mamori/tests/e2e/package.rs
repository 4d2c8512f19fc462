//! The agent as a Debian package: built by scripts/agent-deb.sh (from the
//! debug binary), installed with dpkg on this machine, enrolled with
//! `mamori-agent install`, run as its systemd unit's ExecStart says (this
//! machine has no systemd to run it), its events reach PostgreSQL, and a
//! purge takes everything away again. Needs root, as dpkg does.

use crate::agent::{marker_program, rows_for};
use crate::crash::bin;
use crate::support::*;
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
    let s = Stack::start().await;
    let (_tenant, token) = s.tenant_with_token().await;
    let out = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
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

    run(Command::new("dpkg").args(["--purge", "mamori-agent"]));
    assert!(!Path::new("/usr/bin/mamori-agent").exists());
    assert!(!Path::new(UNIT).exists());
    assert!(
        !Path::new("/var/lib/mamori-agent").exists(),
        "purge forgets the enrollment"
    );
}
