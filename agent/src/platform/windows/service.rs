//! Windows's service manager: the agent as the `MamoriAgent` service
//! (`scm`), where it keeps its state (`%ProgramData%\Mamori`, resolved with
//! `SHGetKnownFolderPath`, never from the environment) and the signals that
//! stop it at a console.

#![allow(unsafe_code)]

mod scm;

use std::path::PathBuf;

pub use scm::{SERVICE_NAME, SETTINGS_KEY, run_service};

use windows_sys::Win32::UI::Shell::FOLDERID_ProgramData;

/// How an administrator removes the agent with the uninstall code.
pub const REMOVE_WITH_CODE: &str = "msiexec /x mamori-agent.msi UNINSTALL_CODE=CODE";

/// How an administrator stops the agent with the uninstall code.
pub const STOP_WITH_CODE: &str = "mamori-agent.exe stop --code CODE";

/// `%ProgramData%\Mamori` (normally `C:\ProgramData\Mamori`).
pub fn state_dir() -> PathBuf {
    super::win::known_folder(&FOLDERID_ProgramData)
        .unwrap_or_else(|| PathBuf::from(r"C:\ProgramData"))
        .join("Mamori")
}

/// Enables the service: on Windows the installer (MSI) does it.
pub fn enable(state_dir: &std::path::Path) -> anyhow::Result<String> {
    Ok(format!(
        "enrolled into {}: install the Mamori agent MSI to run it as a service",
        state_dir.display()
    ))
}

/// Resolves when the agent is told to stop (Ctrl+C or Ctrl+Break, the
/// console closing, the system shutting down).
pub async fn shutdown_signal() -> std::io::Result<()> {
    let mut brk = tokio::signal::windows::ctrl_break()?;
    let mut close = tokio::signal::windows::ctrl_close()?;
    let mut shutdown = tokio::signal::windows::ctrl_shutdown()?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = brk.recv() => {}
        _ = close.recv() => {}
        _ = shutdown.recv() => {}
    }
    tracing::info!("stop requested");
    Ok(())
}

/// The service manager's readiness protocol is systemd's: nothing to send
/// on Windows (the service control handler reports its state).
pub fn notify(_state: &str) {}

/// No watchdog on Windows (the service's recovery actions restart a
/// crashed agent).
pub async fn keep_watchdog() {}

/// Before the agent is removed: stops the service and waits (up to 30 s)
/// for its process to end, so that it sets nothing again and the installer
/// finds the program no longer in use (Wine's installer does not wait for a
/// stop); then undoes what the agent set outside its own files: the launch
/// blocks (a blocked program would otherwise fail for ever on the missing
/// debugger), the removable-storage policy and the browsers' block lists.
/// A failure (the remover lacks the rights) fails the removal.
pub fn before_removal(state_dir: &std::path::Path) -> anyhow::Result<()> {
    stop_service()?;
    let left = super::launch::lift_all(state_dir);
    if !left.is_empty() {
        anyhow::bail!(
            "cannot lift the launch blocks of {} (run the removal elevated)",
            left.join(", ")
        );
    }
    super::devices::DevNodeEnforcer::new(super::devices::POLICY_KEY)
        .clear()
        .map_err(|e| anyhow::anyhow!("{e} (run the removal elevated)"))?;
    super::web::write("", &[], &[], &[])
        .map_err(|e| anyhow::anyhow!("{e} (run the removal elevated)"))?;
    Ok(())
}

/// Stops the MamoriAgent service and waits (up to 30 s) for its process.
/// The service manager does not refuse `sc stop` from an administrator;
/// this is the stop that is recorded as one with the code.
pub fn stop_service() -> anyhow::Result<()> {
    stop_and_wait(std::time::Duration::from_secs(30))
        .map_err(|e| anyhow::anyhow!("cannot stop the MamoriAgent service: {e:#}"))
}

/// Stops the service, if it runs, and waits for its process to exit.
fn stop_and_wait(timeout: std::time::Duration) -> anyhow::Result<()> {
    use windows_service::service::{ServiceAccess, ServiceState};
    use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
    use windows_sys::Win32::System::Threading::{
        OpenProcess, PROCESS_SYNCHRONIZE, WaitForSingleObject,
    };
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)?;
    let service = manager.open_service(
        SERVICE_NAME,
        ServiceAccess::QUERY_STATUS | ServiceAccess::STOP,
    )?;
    let status = service.query_status()?;
    if status.current_state == ServiceState::Stopped {
        return Ok(());
    }
    // A handle on the process before it is told to stop, to wait on.
    // SAFETY: plain call; the handle is owned below.
    let process = status
        .process_id
        .and_then(|pid| super::win::owned(unsafe { OpenProcess(PROCESS_SYNCHRONIZE, 0, pid) }));
    service.stop()?;
    if let Some(p) = process {
        // SAFETY: a process handle with SYNCHRONIZE.
        unsafe {
            WaitForSingleObject(
                std::os::windows::io::AsRawHandle::as_raw_handle(&p) as _,
                u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            )
        };
    }
    Ok(())
}
