//! The gateway's side of the internal API: a lazily connecting channel to
//! the policy service and requests carrying the caller's signed identity.

use crate::identity::{Identity, IdentityKey, METADATA, TRACEPARENT};
use anyhow::Context;
use mamori_keywrap::Kek;
use mamori_proto::policy::v1::policy_service_client::PolicyServiceClient;
use std::sync::Arc;
use std::time::Duration;
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

#[derive(Debug, Clone)]
pub struct PolicyClient {
    api: PolicyServiceClient<Channel>,
    key: Arc<IdentityKey>,
}

impl PolicyClient {
    /// A client of the policy service at `url` (`http://` on loopback, or
    /// `https://` trusting the CA in `ca_file`). Connects on first use and
    /// reconnects by itself, so the two may start in any order.
    pub fn new(url: &str, ca_file: &str, kek: &Kek) -> anyhow::Result<Self> {
        let mut endpoint = Endpoint::from_shared(url.to_owned())
            .with_context(|| format!("MAMORI_POLICY_URL {url:?} is not a URL"))?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(60))
            .tcp_nodelay(true);
        if url.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            if !ca_file.is_empty() {
                let pem = std::fs::read(ca_file)
                    .with_context(|| format!("cannot read MAMORI_POLICY_TLS_CA {ca_file:?}"))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint.tls_config(tls)?;
        } else if !url.starts_with("http://") {
            anyhow::bail!("MAMORI_POLICY_URL {url:?} must start with http:// or https://");
        }
        Ok(Self {
            api: PolicyServiceClient::new(endpoint.connect_lazy()),
            key: Arc::new(IdentityKey::from_kek(kek)),
        })
    }

    /// The generated client (cheap to clone).
    pub fn api(&self) -> PolicyServiceClient<Channel> {
        self.api.clone()
    }

    /// `message` as a request of the call `method` (`PutPolicy`) on behalf
    /// of `identity`, in the current trace. The identity is signed for this
    /// call and this message only, once.
    pub fn request<T: prost::Message>(
        &self,
        identity: &Identity,
        method: &str,
        message: T,
    ) -> Request<T> {
        let identity = Identity {
            id: uuid::Uuid::new_v4(),
            method: crate::identity::method_path(method),
            body_sha256: crate::identity::body_digest(&message),
            ..identity.clone()
        };
        let mut req = Request::new(message);
        let signed = self.key.sign(&identity);
        req.metadata_mut().insert(
            METADATA,
            MetadataValue::try_from(signed).expect("base64url is valid metadata"),
        );
        // The call joins the gateway request's trace.
        let traceparent = mamori_telemetry::current_traceparent();
        if let Ok(v) = MetadataValue::try_from(traceparent)
            && !v.is_empty()
        {
            req.metadata_mut().insert(TRACEPARENT, v);
        }
        req
    }
}
