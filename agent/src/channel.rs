//! The gRPC channel to the server, for both enrollment and the event stream.
//!
//! TLS is on for `https://` urls: verified against `--ca-cert` when given (a
//! private CA of the deployment), else against the OS trust store. HTTP/2
//! keep-alives notice a dead connection (NAT dropped it, server gone) within a
//! minute even when no events flow, so the agent reconnects instead of
//! waiting on a stream that will never answer.

use std::path::Path;
use std::time::Duration;

use mamori_proto::agent::v1::agent_service_client::AgentServiceClient;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::error::{Error, Result};

/// The server's limit on one message; batches stay well under it.
const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// The server URLs of a `--server` value: one, or several separated by
/// commas (ingest replicas without a load balancer in front), tried in turn.
/// A DNS name with several addresses needs no list: each address is tried
/// when connecting.
pub(crate) fn servers(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Checks every url of `list` and prepares their endpoints (no network).
pub(crate) fn endpoints(list: &str, ca_cert: Option<&Path>) -> Result<Vec<(String, Endpoint)>> {
    let servers = servers(list);
    if servers.is_empty() {
        return Err(Error::InvalidServerUrl {
            url: list.to_string(),
            reason: "no server url given".into(),
        });
    }
    servers
        .into_iter()
        .map(|s| Ok((s.to_string(), endpoint(s, ca_cert)?)))
        .collect()
}

/// Checks the url and prepares the endpoint (no network yet).
pub(crate) fn endpoint(server: &str, ca_cert: Option<&Path>) -> Result<Endpoint> {
    let bad = |reason: &str| Error::InvalidServerUrl {
        url: server.to_string(),
        reason: reason.to_string(),
    };
    let https = if server.starts_with("https://") {
        true
    } else if server.starts_with("http://") {
        false
    } else {
        return Err(bad("it must start with https:// or http://"));
    };
    let mut endpoint = Endpoint::from_shared(server.to_string())
        .map_err(|e| bad(&e.to_string()))?
        .connect_timeout(Duration::from_secs(10))
        .tcp_keepalive(Some(Duration::from_secs(60)))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    match (https, ca_cert) {
        (true, ca) => {
            let tls = match ca {
                Some(path) => {
                    let pem = std::fs::read(path).map_err(Error::io(format!(
                        "reading CA certificate {}",
                        path.display()
                    )))?;
                    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))
                }
                None => ClientTlsConfig::new().with_native_roots(),
            };
            endpoint = endpoint.tls_config(tls).map_err(|e| bad(&e.to_string()))?;
        }
        (false, Some(_)) => {
            return Err(Error::InvalidOption(
                "--ca-cert needs an https:// server url".into(),
            ));
        }
        (false, None) => {}
    }
    Ok(endpoint)
}

/// Connects and wraps the channel in a client that compresses its batches
/// with zstd (a fraction of gzip's CPU for a similar ratio on event data).
pub(crate) async fn client(endpoint: &Endpoint) -> Result<AgentServiceClient<Channel>> {
    let channel = endpoint.connect().await.map_err(Error::Connect)?;
    Ok(AgentServiceClient::new(channel)
        .send_compressed(CompressionEncoding::Zstd)
        .accept_compressed(CompressionEncoding::Zstd)
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(endpoint("http://localhost:50051", None).is_ok());
        assert!(endpoint("https://ingest.example.com", None).is_ok());
        assert!(matches!(
            endpoint("localhost:50051", None),
            Err(Error::InvalidServerUrl { .. })
        ));
        assert!(matches!(
            endpoint("http://localhost:1", Some(Path::new("/nonexistent.pem"))),
            Err(Error::InvalidOption(_))
        ));
        assert!(matches!(
            endpoint("https://localhost:1", Some(Path::new("/nonexistent.pem"))),
            Err(Error::Io { .. })
        ));
        let list = endpoints("http://10.0.0.1:50051, http://10.0.0.2:50051,", None).unwrap();
        assert_eq!(
            list.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(),
            ["http://10.0.0.1:50051", "http://10.0.0.2:50051"]
        );
        assert!(matches!(
            endpoints("http://10.0.0.1:50051,10.0.0.2:50051", None),
            Err(Error::InvalidServerUrl { url, .. }) if url == "10.0.0.2:50051"
        ));
        assert!(matches!(
            endpoints(" , ", None),
            Err(Error::InvalidServerUrl { .. })
        ));
    }
}
