//! Linux's service manager, systemd: the signal that stops the agent
//! (SIGTERM, or SIGINT at a terminal), and telling it how the agent is:
//! `READY=1` once started,
//! `WATCHDOG=1` while the event loop turns (systemd's notify protocol: one
//! datagram to the socket `$NOTIFY_SOCKET` names). Outside systemd, or
//! without `WatchdogSec`, nothing is sent.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// How an administrator removes the agent with the uninstall code.
pub const REMOVE_WITH_CODE: &str = "sudo MAMORI_UNINSTALL_CODE=CODE dpkg -r mamori-agent";

/// How an administrator stops the agent with the uninstall code.
pub const STOP_WITH_CODE: &str = "sudo MAMORI_UNINSTALL_CODE=CODE mamori-agent stop";

/// The package's unit.
const UNIT: &str = "mamori-agent.service";

/// A runtime drop-in that lifts the unit's `RefuseManualStop=yes` for one
/// stop (the package's postinst writes the same one for an upgrade's
/// restart). Under /run, so a crash between writing and removing it leaves
/// the agent stoppable only until the next boot.
const ALLOW_STOP: &str = "/run/systemd/system/mamori-agent.service.d/50-allow-stop.conf";

fn systemd_running() -> bool {
    std::path::Path::new("/run/systemd/system").exists()
}

fn systemctl(args: &[&str]) -> anyhow::Result<()> {
    use anyhow::Context;
    let status = std::process::Command::new("systemctl")
        .args(args)
        .status()
        .context("running systemctl")?;
    anyhow::ensure!(
        status.success(),
        "`systemctl {}` failed ({status})",
        args.join(" ")
    );
    Ok(())
}

/// Where the package's service keeps its state.
pub fn state_dir() -> std::path::PathBuf {
    std::path::PathBuf::from("/var/lib/mamori-agent")
}

/// Enables and starts the package's service, which runs with
/// [`state_dir`]; says what was done, or what the admin must do where it
/// cannot be done here (no systemd, another state directory).
pub fn enable(state_dir: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context;
    if !systemd_running() {
        return Ok(format!(
            "systemd is not running on this machine: start `/usr/bin/mamori-agent run --state-dir {}` with its init system",
            state_dir.display()
        ));
    }
    if state_dir != self::state_dir() {
        return Ok(format!(
            "the mamori-agent service runs with {}; start `mamori-agent run --state-dir {}` yourself",
            self::state_dir().display(),
            state_dir.display()
        ));
    }
    systemctl(&["enable", "--now", UNIT]).context("is the mamori-agent package installed?")?;
    Ok("the mamori-agent service is enabled and running".to_owned())
}

/// `mamori-agent service` is Windows's: systemd runs `mamori-agent run`.
pub fn run_service(_opts: crate::RunOptions) -> anyhow::Result<()> {
    anyhow::bail!(
        "`mamori-agent service` is for Windows's service manager; on Linux the package's systemd unit runs `mamori-agent run`"
    )
}

/// Resolves when the agent is told to stop (SIGTERM or SIGINT).
pub async fn shutdown_signal() -> std::io::Result<()> {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
    Ok(())
}

/// Sends `state` (`READY=1`, `WATCHDOG=1`, `STOPPING=1`) to the service
/// manager, if there is one. Errors are logged, not returned: the agent
/// runs the same without a manager.
pub fn notify(state: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET")
        && let Err(e) = notify_to(&path, state)
    {
        tracing::warn!(error = %e, state, "cannot notify the service manager");
    }
}

/// Sends `state` to the socket `path` (a file, or `@name` in the abstract
/// namespace).
fn notify_to(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    if let Some(name) = path.as_encoded_bytes().strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        socket.send_to(state.as_bytes(), path)?;
    }
    Ok(())
}

/// Half the watchdog interval the manager asked for this process, or None.
pub fn watchdog_interval() -> Option<Duration> {
    interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// `$WATCHDOG_USEC` halved, when `$WATCHDOG_PID` (if set) is `me`.
fn interval_from(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.parse().ok()?;
    if let Some(pid) = pid
        && pid.parse::<u32>().ok() != Some(me)
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Pings the watchdog until the process ends. It runs on the agent's one
/// event-loop thread: a loop that hangs stops the pings, and systemd
/// restarts the agent.
pub async fn keep_watchdog() {
    let Some(every) = watchdog_interval() else {
        return;
    };
    loop {
        notify("WATCHDOG=1");
        tokio::time::sleep(every).await;
    }
}

/// Stops the package's service, whose unit refuses a manual stop
/// (`RefuseManualStop=yes`: `systemctl stop` alone is refused), by lifting
/// that for this one stop; returns once the agent has exited (it sends what
/// it holds first, within the unit's stop timeout).
pub fn stop_service() -> anyhow::Result<()> {
    use anyhow::Context;
    anyhow::ensure!(
        systemd_running(),
        "systemd is not running on this machine: stop `mamori-agent run` with its init system"
    );
    // Not running (or the unit is gone): nothing to stop, and a stop of an
    // unknown unit would fail the removal for good. A pending restart
    // ("activating") is stopped like a running agent.
    let shown = std::process::Command::new("systemctl")
        .args(["show", "-p", "LoadState,ActiveState", UNIT])
        .output()
        .context("running systemctl")?;
    let shown = String::from_utf8_lossy(&shown.stdout);
    if shown.lines().any(|l| {
        matches!(
            l,
            "LoadState=not-found" | "ActiveState=inactive" | "ActiveState=failed"
        )
    }) {
        return Ok(());
    }
    let allow = std::path::Path::new(ALLOW_STOP);
    if let Some(dir) = allow.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(allow, "[Unit]\nRefuseManualStop=no\n")
        .with_context(|| format!("writing {ALLOW_STOP}"))?;
    let stopped = systemctl(&["daemon-reload"]).and_then(|()| systemctl(&["stop", UNIT]));
    let _ = std::fs::remove_file(allow);
    if let Err(e) = systemctl(&["daemon-reload"]) {
        tracing::warn!(error = %e, "the agent's service may be stopped without the code until the next boot");
    }
    stopped
}

/// Before the package's agent (with [`state_dir`]) is removed: stops its
/// service (the unit refuses a plain stop, see [`stop_service`]). Nothing
/// else to undo on Linux: the launch guard and device control end with the
/// agent.
pub fn before_removal(_state_dir: &std::path::Path) -> anyhow::Result<()> {
    if systemd_running() {
        stop_service()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_reaches_the_socket_the_manager_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let manager = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        let name = format!("@mamori-test-{}", std::process::id());
        let abstract_manager = {
            use std::os::linux::net::SocketAddrExt;
            let addr =
                std::os::unix::net::SocketAddr::from_abstract_name(&name.as_bytes()[1..]).unwrap();
            UnixDatagram::bind_addr(&addr).unwrap()
        };
        notify_to(std::ffi::OsStr::new(&name), "WATCHDOG=1").unwrap();
        let n = abstract_manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }

    #[test]
    fn the_watchdog_pings_at_half_its_interval_and_only_for_its_process() {
        assert_eq!(
            interval_from(Some("60000000"), None, 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            interval_from(Some("60000000"), Some("7"), 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(interval_from(Some("60000000"), Some("8"), 7), None);
        assert_eq!(interval_from(None, None, 7), None);
        assert_eq!(interval_from(Some("0"), None, 7), None);
    }
}
