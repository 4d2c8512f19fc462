//! A single `redis-server` process a test owns.

use std::process::{Child, Command};
use std::time::Duration;

/// A throw-away `redis-server` of a test's own (no persistence), to kill,
/// freeze or restart.
#[derive(Debug)]
pub struct RedisProc {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    tls: bool,
}

/// A throw-away redis-server on `port`, no persistence.
fn spawn_redis(port: u16, dir: &std::path::Path, extra: &[&str]) -> Child {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server is installed (scripts/test.sh installs it)");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

impl RedisProc {
    pub fn start(extra: &[&str]) -> Self {
        Self::spawn(false, |_| extra.iter().map(|a| (*a).to_owned()).collect())
    }

    /// A Redis that speaks TLS only, with `server.crt` and `server.key` of
    /// `tls_dir` (clients are not asked for certificates).
    pub fn start_tls(tls_dir: &std::path::Path) -> Self {
        let file = |name: &str| tls_dir.join(name).display().to_string();
        Self::spawn(true, |port| {
            vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                file("server.crt"),
                "--tls-key-file".into(),
                file("server.key"),
                "--tls-ca-cert-file".into(),
                file("ca.crt"),
                "--tls-auth-clients".into(),
                "no".into(),
            ]
        })
    }

    /// A server on a free loopback port with the options `extra(port)`
    /// gives, in a directory of its own.
    fn spawn(tls: bool, extra: impl FnOnce(u16) -> Vec<String>) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let extra = extra(port);
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        Self {
            child: spawn_redis(port, dir.path(), &extra),
            port,
            dir,
            tls,
        }
    }

    /// Kills it (as a crash would).
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Starts a new, empty Redis on the same port.
    pub fn restart(&mut self) {
        self.child = spawn_redis(self.port, self.dir.path(), &[]);
    }

    /// The server's process id (to stop and continue it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
