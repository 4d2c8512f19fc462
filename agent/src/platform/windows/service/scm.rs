//! The agent as a Windows service: what the service control manager starts
//! (`mamori-agent.exe service`, installed by the MSI). It reports to the
//! manager, sets its own recovery (restart on failure), enrolls with the
//! settings the MSI left in the registry and deletes the token once
//! enrolled, logs to `agent.log` in its state directory, and runs the agent
//! until the manager stops it or the system shuts down.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use windows_service::service::{
    PowerEventParam, ServiceAccess, ServiceAction, ServiceActionType, ServiceControl,
    ServiceControlAccept, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
    ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{
    self, ServiceControlHandlerResult, ServiceStatusHandle,
};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_service::{define_windows_service, service_dispatcher};
use windows_sys::Win32::System::Registry::HKEY_LOCAL_MACHINE;

use crate::RunOptions;
use crate::platform::windows::session::{self, Notice};
use crate::platform::windows::win;

/// The service's name (what `sc query` and the MSI use).
pub const SERVICE_NAME: &str = "MamoriAgent";
/// Where the MSI leaves `Server` and `EnrollmentToken` (and `CaCert`).
pub const SETTINGS_KEY: &str = r"SOFTWARE\Mamori\Agent";
/// The log is started afresh past this size (the old one kept as .1).
const LOG_MAX_BYTES: u64 = 10 << 20;

static OPTIONS: OnceLock<RunOptions> = OnceLock::new();

define_windows_service!(ffi_service_main, service_main);

/// Runs as the service the manager started; returns when it stopped.
pub fn run_service(opts: RunOptions) -> anyhow::Result<()> {
    init_log(&opts.state_dir)?;
    let _ = OPTIONS.set(opts);
    service_dispatcher::start(SERVICE_NAME, ffi_service_main).context(
        "not started by the service manager (`mamori-agent service` is what the MamoriAgent service runs; use `mamori-agent run` at a console)",
    )?;
    Ok(())
}

fn init_log(state_dir: &Path) -> anyhow::Result<()> {
    crate::fsutil::create_private_dir(state_dir)?;
    let path = state_dir.join("agent.log");
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > LOG_MAX_BYTES) {
        let _ = std::fs::rename(&path, state_dir.join("agent.log.1"));
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .init();
    Ok(())
}

fn service_main(_args: Vec<OsString>) {
    if let Err(e) = serve() {
        tracing::error!(error = format!("{e:#}"), "the service failed");
    }
}

fn status(state: ServiceState, accept: ServiceControlAccept, code: u32) -> ServiceStatus {
    ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted: accept,
        exit_code: ServiceExitCode::Win32(code),
        checkpoint: 0,
        wait_hint: Duration::from_secs(10),
        process_id: None,
    }
}

fn serve() -> anyhow::Result<()> {
    let opts = OPTIONS.get().cloned().context("no options")?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // The handler reports "stop pending" itself, before it tells the agent
    // to stop; the lock (held while the final "stopped" is reported, which
    // sets the flag) keeps it from coming after "stopped".
    let status_handle: Arc<OnceLock<ServiceStatusHandle>> = Arc::default();
    let stopped: Arc<std::sync::Mutex<bool>> = Arc::default();
    let (pending, pending_stopped) = (Arc::clone(&status_handle), Arc::clone(&stopped));
    let handler = move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown | ServiceControl::Preshutdown => {
            tracing::info!(?control, "the service manager stops the agent");
            let done = pending_stopped.lock().unwrap_or_else(|e| e.into_inner());
            if let (Some(h), false) = (pending.get(), *done) {
                // The uplink drains its batch in flight meanwhile.
                let _ = h.set_service_status(status(
                    ServiceState::StopPending,
                    ServiceControlAccept::empty(),
                    0,
                ));
            }
            drop(done);
            if control != ServiceControl::Stop {
                session::shutting_down(Duration::from_secs(3));
            }
            let _ = stop_tx.send(true);
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::SessionChange(change) => {
            session::notify(Notice::Session {
                reason: change.reason.to_raw(),
                session_id: change.notification.session_id,
            });
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::PowerEvent(event) => {
            match event {
                PowerEventParam::Suspend => {
                    session::notify(Notice::Suspend);
                }
                PowerEventParam::ResumeAutomatic | PowerEventParam::ResumeSuspend => {
                    session::notify(Notice::Resume);
                }
                _ => {}
            }
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let handle = service_control_handler::register(SERVICE_NAME, handler)?;
    let _ = status_handle.set(handle);
    handle.set_service_status(status(
        ServiceState::Running,
        ServiceControlAccept::STOP
            | ServiceControlAccept::SHUTDOWN
            | ServiceControlAccept::SESSION_CHANGE
            | ServiceControlAccept::POWER_EVENT,
        0,
    ))?;
    if let Err(e) = set_recovery() {
        tracing::warn!(error = %e, "cannot set the service's recovery actions");
    }
    let result = run_until_stopped(opts, stop_rx);
    // Not enrolled and no token to enroll with: restarting would not
    // help, so the service stops cleanly (no recovery restarts) and says
    // what to do.
    let not_enrolled = result.as_ref().err().is_some_and(|e| {
        matches!(
            e.downcast_ref::<crate::Error>(),
            Some(crate::Error::NotEnrolled(_))
        )
    });
    match &result {
        Err(_) if not_enrolled => tracing::error!(
            "not enrolled and no enrollment token: the service stays stopped until the MSI is installed again with SERVER=… TOKEN=…"
        ),
        Err(e) => tracing::error!(error = format!("{e:#}"), "the agent stopped with an error"),
        Ok(()) => {}
    }
    // Whatever happened, the manager hears that the service stopped; a
    // non-zero exit code makes it apply the recovery actions.
    let mut done = stopped.lock().unwrap_or_else(|e| e.into_inner());
    *done = true;
    handle.set_service_status(status(
        ServiceState::Stopped,
        ServiceControlAccept::empty(),
        u32::from(result.is_err() && !not_enrolled),
    ))?;
    drop(done);
    if not_enrolled { Ok(()) } else { result }
}

/// Enrolls if the installer left a token, then runs the agent until the
/// manager says stop.
fn run_until_stopped(
    opts: RunOptions,
    stop_rx: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()?;
    runtime.block_on(async {
        let mut stop = stop_rx.clone();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tokio::select! {
            r = enroll_from_settings(&opts.state_dir) => r?,
            () = stopped => return Ok(()),
        }
        let mut stop = stop_rx;
        crate::run(opts, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
        .map_err(anyhow::Error::from)
    })
}

/// Restart after 5 s, 10 s, then a minute; the count resets after a day.
fn set_recovery() -> windows_service::Result<()> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)?;
    let service = manager.open_service(SERVICE_NAME, ServiceAccess::CHANGE_CONFIG)?;
    let restart = |s| ServiceAction {
        action_type: ServiceActionType::Restart,
        delay: Duration::from_secs(s),
    };
    service.update_failure_actions(ServiceFailureActions {
        reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(86_400)),
        reboot_msg: None,
        command: None,
        actions: Some(vec![restart(5), restart(10), restart(60)]),
    })?;
    service.set_failure_actions_on_non_crash_failures(true)
}

/// Enrolls with the server and token the MSI wrote, when there is a token
/// (every install with TOKEN=… enrolls, as `mamori-agent install` does),
/// retrying until it works; then deletes the token. Nothing to do when
/// none is there.
async fn enroll_from_settings(state_dir: &Path) -> anyhow::Result<()> {
    let get = |name| win::reg_string(HKEY_LOCAL_MACHINE, SETTINGS_KEY, name);
    let Some(token) = get("EnrollmentToken") else {
        return Ok(());
    };
    let server = get("Server").context(format!(
        r"HKLM\{SETTINGS_KEY} has an EnrollmentToken but no Server: reinstall with SERVER=… TOKEN=…"
    ))?;
    let options = crate::EnrollOptions {
        server,
        token,
        state_dir: state_dir.to_owned(),
        ca_cert: get("CaCert").map(PathBuf::from),
        machine_id: None,
    };
    let mut wait = Duration::from_secs(1);
    loop {
        match crate::enroll(&options).await {
            Ok(outcome) => {
                tracing::info!(device_id = %outcome.device_id, "enrolled with the installer's token");
                break;
            }
            // A refused token stays refused: say so and stop.
            Err(crate::Error::Server(status))
                if matches!(
                    status.code(),
                    tonic::Code::Unauthenticated
                        | tonic::Code::PermissionDenied
                        | tonic::Code::InvalidArgument
                ) =>
            {
                let e = crate::Error::Server(status);
                forget_token();
                return Err(e.into());
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_s = wait.as_secs(), "enrollment failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(60));
            }
        }
    }
    forget_token();
    Ok(())
}

/// Deletes the installer's enrollment token (used, or refused).
fn forget_token() {
    if let Err(status) = win::reg_delete_value(HKEY_LOCAL_MACHINE, SETTINGS_KEY, "EnrollmentToken")
    {
        tracing::warn!(
            status,
            r"cannot delete the enrollment token from HKLM\{SETTINGS_KEY}"
        );
    }
}
