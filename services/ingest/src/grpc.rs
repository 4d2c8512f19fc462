//! `mamori.agent.v1.AgentService` as ingest serves it.
//!
//! The generated server would decode every event of a batch into structs,
//! only for ingest to check them and encode them again for the stream. This
//! one routes the same two methods with the same codec settings, but reads
//! an agent's messages as [`Inbound`]: a batch arrives still encoded, is
//! checked field by field (`validate`) and its events are copied into the
//! stream entry as they are. Clients see the same service: the wire format
//! of [`Inbound`] is `AgentMessage`'s.

use crate::service::Ingest;
use mamori_proto::agent::v1::{
    EnrollRequest, EnrollResponse, Hello, PolicyApplied, ServerMessage,
    agent_service_server::SERVICE_NAME,
};
use std::convert::Infallible;
use std::sync::Arc;
use tonic::codec::{CompressionEncoding, EnabledCompressionEncodings};
use tonic::codegen::{Body, BoxFuture, Context, Poll, Service, StdError, http};
use tonic::server::{Grpc, NamedService, StreamingService, UnaryService};
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

/// An `AgentMessage` from an agent, with a batch left encoded.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Inbound {
    #[prost(oneof = "InboundBody", tags = "1, 2, 3")]
    pub(crate) body: Option<InboundBody>,
}

/// `AgentMessage.body`, field for field.
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum InboundBody {
    /// An `EventBatch`, as encoded (a slice of the received message, not
    /// a copy).
    #[prost(bytes = "bytes", tag = "1")]
    Batch(bytes::Bytes),
    #[prost(message, tag = "2")]
    Hello(Hello),
    #[prost(message, tag = "3")]
    PolicyApplied(PolicyApplied),
}

const ENROLL: &str = "/mamori.agent.v1.AgentService/Enroll";
const CONNECT: &str = "/mamori.agent.v1.AgentService/Connect";

/// The service, ready for a tonic router.
#[derive(Debug, Clone)]
pub(crate) struct AgentServer {
    ingest: Arc<Ingest>,
    max_message_bytes: usize,
}

impl AgentServer {
    pub(crate) fn new(ingest: Ingest, max_message_bytes: usize) -> Self {
        Self {
            ingest: Arc::new(ingest),
            max_message_bytes,
        }
    }

    /// A gRPC handler for one call: zstd (what the agent sends) and gzip
    /// accepted; replies are a few bytes and go uncompressed.
    fn grpc<T, U>(&self) -> Grpc<ProstCodec<T, U>>
    where
        T: prost::Message + Send + 'static,
        U: prost::Message + Default + Send + 'static,
    {
        let mut accept = EnabledCompressionEncodings::default();
        accept.enable(CompressionEncoding::Zstd);
        accept.enable(CompressionEncoding::Gzip);
        Grpc::new(ProstCodec::default())
            .apply_compression_config(accept, EnabledCompressionEncodings::default())
            .apply_max_message_size_config(Some(self.max_message_bytes), None)
    }
}

impl NamedService for AgentServer {
    const NAME: &'static str = SERVICE_NAME;
}

struct EnrollCall(Arc<Ingest>);

impl UnaryService<EnrollRequest> for EnrollCall {
    type Response = EnrollResponse;
    type Future = BoxFuture<Response<EnrollResponse>, Status>;

    fn call(&mut self, request: Request<EnrollRequest>) -> Self::Future {
        let ingest = Arc::clone(&self.0);
        Box::pin(async move { ingest.enroll(request).await })
    }
}

struct ConnectCall(Arc<Ingest>);

impl StreamingService<Inbound> for ConnectCall {
    type Response = ServerMessage;
    type ResponseStream = crate::service::ConnectStream;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<Inbound>>) -> Self::Future {
        let ingest = Arc::clone(&self.0);
        Box::pin(async move { ingest.connect(request).await })
    }
}

impl<B> Service<http::Request<B>> for AgentServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match req.uri().path() {
            ENROLL => {
                let mut grpc = self.grpc::<EnrollResponse, EnrollRequest>();
                let call = EnrollCall(Arc::clone(&self.ingest));
                Box::pin(async move { Ok(grpc.unary(call, req).await) })
            }
            CONNECT => {
                let mut grpc = self.grpc::<ServerMessage, Inbound>();
                let call = ConnectCall(Arc::clone(&self.ingest));
                Box::pin(async move { Ok(grpc.streaming(call, req).await) })
            }
            _ => Box::pin(async move {
                Ok(Status::unimplemented(format!(
                    "{SERVICE_NAME} has no method at {}",
                    req.uri().path()
                ))
                .into_http())
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mamori_proto::agent::v1::{AgentMessage, Event, EventBatch, agent_message};
    use prost::Message;

    #[test]
    fn an_agent_message_reads_as_inbound_with_its_batch_still_encoded() {
        let batch = EventBatch {
            sequence: 3,
            events: vec![Event {
                id: vec![1; 16],
                os_user: "alice".into(),
                ..Default::default()
            }],
            traceparent: "00-x".into(),
            device_id: String::new(),
        };
        let sent = AgentMessage {
            body: Some(agent_message::Body::Batch(batch.clone())),
        };
        let got = Inbound::decode(&sent.encode_to_vec()[..]).unwrap();
        assert_eq!(
            got.body,
            Some(InboundBody::Batch(batch.encode_to_vec().into()))
        );
        let hello = Hello {
            agent_version: "1.2".into(),
            policy_revision: 4,
            ..Default::default()
        };
        let sent = AgentMessage {
            body: Some(agent_message::Body::Hello(hello.clone())),
        };
        let got = Inbound::decode(&sent.encode_to_vec()[..]).unwrap();
        assert_eq!(got.body, Some(InboundBody::Hello(hello)));
        assert_eq!(Inbound::decode(&[][..]).unwrap().body, None);
    }
}
