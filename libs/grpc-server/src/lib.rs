//! What every Mamori gRPC server does the same way: parse its listen
//! address, refuse to serve plain HTTP/2 beyond loopback, load its TLS
//! certificate, bind, and offer gRPC health and reflection beside its own
//! service.

use anyhow::{Context, bail};
use std::net::SocketAddr;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::server::NamedService;
use tonic::transport::{Identity, Server, ServerTlsConfig};

/// A server's listen settings and the names of the settings (for errors).
#[derive(Debug, Clone, Copy)]
pub struct Listen<'a> {
    /// `ingest`, `the policy service`: what the messages call it.
    pub what: &'a str,
    pub addr: &'a str,
    /// The environment variable of the address, e.g. `MAMORI_INGEST_ADDR`.
    pub addr_var: &'a str,
    /// PEM files; both empty for plain HTTP/2.
    pub tls_cert: &'a str,
    pub tls_key: &'a str,
    /// The prefix of the TLS variables, e.g. `MAMORI_INGEST_TLS`
    /// (`_CERT`, `_KEY`).
    pub tls_var: &'a str,
}

/// A bound listener and a server builder with TLS set up when configured.
#[derive(Debug)]
pub struct Bound {
    pub addr: SocketAddr,
    pub incoming: TcpListenerStream,
    pub builder: Server,
    pub tls: bool,
}

/// Checks the settings and binds.
pub async fn bind(listen: &Listen<'_>) -> anyhow::Result<Bound> {
    let Listen {
        what,
        addr,
        addr_var,
        tls_cert,
        tls_key,
        tls_var,
    } = *listen;
    let parsed: SocketAddr = addr
        .parse()
        .with_context(|| format!("{addr_var} {addr:?} is not an address like 127.0.0.1:50051"))?;
    let tls = !tls_cert.is_empty() || !tls_key.is_empty();
    if !tls && !parsed.ip().is_loopback() {
        bail!(
            "{what} would listen on {parsed} without TLS: set {tls_var}_CERT and {tls_var}_KEY, or listen on a loopback address"
        );
    }
    let mut builder = Server::builder().tcp_nodelay(true);
    if tls {
        let cert = std::fs::read(tls_cert)
            .with_context(|| format!("cannot read {tls_var}_CERT {tls_cert:?}"))?;
        let key = std::fs::read(tls_key)
            .with_context(|| format!("cannot read {tls_var}_KEY {tls_key:?}"))?;
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
            .with_context(|| format!("{tls_var}_CERT / {tls_var}_KEY are not a usable PEM pair"))?;
    }
    let listener = tokio::net::TcpListener::bind(parsed)
        .await
        .with_context(|| format!("cannot listen on {addr_var} {parsed}"))?;
    Ok(Bound {
        addr: listener.local_addr()?,
        incoming: TcpListenerStream::new(listener),
        builder,
        tls,
    })
}

/// gRPC health (reporting `S` as serving) and reflection over every
/// Mamori proto.
pub async fn health_and_reflection<S: NamedService>() -> anyhow::Result<(
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
)> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<S>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(mamori_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    Ok((health, reflection))
}
