//! `mamori-agent enroll`: trades an enrollment token and the machine's facts
//! for a device id and credential, and leaves them in the state directory for
//! `run`.

use std::path::PathBuf;
use std::time::Duration;

use mamori_proto::agent::v1::EnrollRequest;
use secrecy::SecretString;
use serde::Serialize;

use crate::channel;
use crate::error::{Error, Result};
use crate::facts;
use crate::state::{AgentConfig, StateDir};

/// What `enroll` needs.
#[derive(Clone)]
pub struct EnrollOptions {
    /// `https://host:port` (or `http://` for tests and labs).
    pub server: String,
    /// The tenant's enrollment token.
    pub token: String,
    pub state_dir: PathBuf,
    /// PEM file of the CA that signed the server's certificate.
    pub ca_cert: Option<PathBuf>,
    /// Replaces /etc/machine-id (tests enroll several machines from one host).
    pub machine_id: Option<String>,
}

impl std::fmt::Debug for EnrollOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollOptions")
            .field("server", &self.server)
            .field("token", &"[REDACTED]")
            .field("state_dir", &self.state_dir)
            .field("ca_cert", &self.ca_cert)
            .field("machine_id", &self.machine_id)
            .finish()
    }
}

/// What the server answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnrollOutcome {
    pub device_id: String,
    pub tenant_id: String,
    /// The machine was already enrolled in the tenant; its device came back.
    pub reenrolled: bool,
}

/// How long enrollment may take end to end.
const ENROLL_TIMEOUT: Duration = Duration::from_secs(30);

/// Enrolls the machine and stores the device credential (0600) and
/// `agent.json` in the state directory.
pub async fn enroll(opts: &EnrollOptions) -> Result<EnrollOutcome> {
    let token = opts.token.trim();
    if token.is_empty() {
        return Err(Error::InvalidOption("the enrollment token is empty".into()));
    }
    // An absolute path, so `run` finds it whatever its working directory.
    let ca_cert = opts
        .ca_cert
        .as_ref()
        .map(|p| {
            std::fs::canonicalize(p)
                .map_err(Error::io(format!("reading CA certificate {}", p.display())))
        })
        .transpose()?;
    let endpoints = channel::endpoints(&opts.server, ca_cert.as_deref())?;

    let state = StateDir::new(&opts.state_dir);
    state.create()?;
    let instance_id = state.instance_id()?;
    let facts = facts::gather(opts.machine_id.as_deref(), instance_id.clone())?;
    tracing::info!(server = %opts.server, machine_id = %facts.machine_id, hostname = %facts.hostname, "enrolling");

    // The first server that answers; an answer that refuses (a bad token)
    // is final, a server that cannot be reached is not.
    let mut unreachable = None;
    let mut response = None;
    for (server, endpoint) in &endpoints {
        let mut client = match channel::client(endpoint).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%server, error = %e, "cannot reach this server; trying the next");
                unreachable = Some(e);
                continue;
            }
        };
        let mut request = tonic::Request::new(EnrollRequest {
            enrollment_token: token.to_string(),
            facts: Some(facts.clone()),
        });
        request.set_timeout(ENROLL_TIMEOUT);
        match client.enroll(request).await {
            Ok(r) => {
                response = Some(r.into_inner());
                break;
            }
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                ) =>
            {
                tracing::warn!(%server, error = %s, "this server is unavailable; trying the next");
                unreachable = Some(s.into());
            }
            Err(s) => return Err(s.into()),
        }
    }
    let Some(response) = response else {
        return Err(unreachable.expect("at least one server was tried"));
    };
    if response.device_id.is_empty() || response.device_credential.is_empty() {
        return Err(tonic::Status::internal("the server sent no device id or credential").into());
    }

    // A policy stored under an earlier enrollment (perhaps of another
    // tenant, whose revisions mean nothing here) goes: the server sends the
    // device's policy at the first hello.
    match std::fs::remove_file(state.policy_path()) {
        Ok(()) => tracing::info!("removed the policy of the previous enrollment"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("removing the previous enrollment's policy")(e)),
    }
    // The credential first: an agent.json without its credential would look
    // enrolled and fail at every connect.
    state.save_credential(&SecretString::from(response.device_credential))?;
    state.save_config(&AgentConfig {
        server: opts.server.clone(),
        ca_cert,
        device_id: response.device_id.clone(),
        tenant_id: response.tenant_id.clone(),
        instance_id,
    })?;
    tracing::info!(device_id = %response.device_id, tenant_id = %response.tenant_id, reenrolled = response.reenrolled, "enrolled");
    Ok(EnrollOutcome {
        device_id: response.device_id,
        tenant_id: response.tenant_id,
        reenrolled: response.reenrolled,
    })
}
