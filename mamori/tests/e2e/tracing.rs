//! One trace shows a batch's whole path: the agent names the trace in the
//! batch, ingest's span joins it and travels in the stream entry, and the
//! writer's span joins it too. A gateway request and the policy service
//! call it makes are one trace as well. Spans reach a real OTLP/gRPC
//! receiver.

use crate::support::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A span as received, ids in hex.
#[derive(Debug, Clone)]
struct SpanSeen {
    trace: String,
    name: String,
    parent: String,
    id: String,
}

#[derive(Default, Clone)]
struct Receiver {
    spans: Arc<Mutex<Vec<SpanSeen>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                for s in ss.spans {
                    spans.push(SpanSeen {
                        trace: hex(&s.trace_id),
                        name: s.name,
                        parent: hex(&s.parent_span_id),
                        id: hex(&s.span_id),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test]
async fn a_batch_is_one_trace_from_agent_through_ingest_to_writer() {
    let env = mamori_test_support::TestEnv::new().await;
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let mut child = Proc(
        Command::new(env!("CARGO_BIN_EXE_mamori"))
            .arg("all")
            .env("MAMORI_DATABASE_URL", &env.database_url)
            .env("MAMORI_REDIS_URL", &env.redis_url)
            .env("MAMORI_INGEST_ADDR", "127.0.0.1:0")
            .env("MAMORI_INGEST_OPS_ADDR", "127.0.0.1:0")
            .env("MAMORI_WRITER_OPS_ADDR", "127.0.0.1:0")
            .env("MAMORI_GATEWAY_ADDR", "127.0.0.1:0")
            .env("MAMORI_GATEWAY_OPS_ADDR", "127.0.0.1:0")
            .env("MAMORI_POLICY_ADDR", "127.0.0.1:0")
            .env("MAMORI_POLICY_OPS_ADDR", "127.0.0.1:0")
            .env("MAMORI_ALERTING_OPS_ADDR", "127.0.0.1:0")
            .env(
                "MAMORI_KEY_ENCRYPTION_KEY",
                mamori_gateway::Kek::generate_base64(),
            )
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env_remove("MAMORI_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("ingest gRPC on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no ingest address in {line:?}"))
        .to_owned();

    let tenant = mamori_registry::create_tenant(&env.db, "Trace Co")
        .await
        .unwrap();
    let token = mamori_registry::create_token(&env.db, tenant, None, None)
        .await
        .unwrap();
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client =
        mamori_proto::agent::v1::agent_service_client::AgentServiceClient::new(channel);
    let cred = client
        .enroll(mamori_proto::agent::v1::EnrollRequest {
            enrollment_token: token.token.expose().to_owned(),
            facts: Some(mamori_proto::agent::v1::MachineFacts {
                machine_id: "trace".into(),
                instance_id: "trace".into(),
                hostname: "trace".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .device_credential;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("authorization", format!("Bearer {cred}").parse().unwrap());
    let inbound = client.connect(req).await.unwrap().into_inner();
    let mut st = AgentStream { tx, inbound };
    let trace_id = format!("{:032x}", uuid::Uuid::new_v4().as_u128());
    let agent_span = "00f067aa0ba902b7";
    let mut b = batch(1, vec![process_event("/traced")]);
    b.traceparent = format!("00-{trace_id}-{agent_span}-01");
    st.send(b).await.unwrap();

    let spans = wait_for(
        "ingest and writer spans in the trace",
        Duration::from_secs(20),
        || async {
            let spans: Vec<_> = receiver
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.trace == trace_id)
                .cloned()
                .collect();
            let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
            (names.contains(&"append_batch") && names.contains(&"batch_committed")).then_some(spans)
        },
    )
    .await;
    let ingest = spans.iter().find(|s| s.name == "append_batch").unwrap();
    let writer = spans.iter().find(|s| s.name == "batch_committed").unwrap();
    assert_eq!(
        ingest.parent, agent_span,
        "ingest's span is a child of the agent's"
    );
    assert_eq!(
        writer.parent, ingest.id,
        "the writer's span is a child of ingest's"
    );

    // A policy change through the gateway: the policy service's span joins
    // the gateway request's trace over the internal gRPC call.
    let gateway = line
        .split("gateway http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no gateway address in {line:?}"))
        .to_owned();
    let http = reqwest::Client::new();
    let signup: serde_json::Value = http
        .post(format!("http://{gateway}/api/v1/signup"))
        .json(&serde_json::json!({
            "email": "trace@trace.example.com",
            "password": crate::gw::PASSWORD,
            "company": "Trace Policy KK",
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let put = http
        .put(format!("http://{gateway}/api/v1/policies/tenant"))
        .bearer_auth(signup["access_token"].as_str().unwrap())
        .json(&serde_json::json!({"banned_apps": [{"name": "winny", "action": "kill"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), reqwest::StatusCode::OK);
    let (request, call, handler) = wait_for(
        "the policy service's spans in the gateway request's trace",
        Duration::from_secs(20),
        || async {
            let spans = receiver.spans.lock().unwrap().clone();
            let handler = spans.iter().find(|s| s.name == "put_policy")?;
            let call = spans.iter().find(|s| s.id == handler.parent)?;
            let request = spans.iter().find(|s| s.id == call.parent)?;
            Some((request.clone(), call.clone(), handler.clone()))
        },
    )
    .await;
    assert_eq!(call.name, "policy_call");
    assert_eq!(
        request.name, "http",
        "the policy call is a child of the gateway request"
    );
    assert_eq!(request.trace, handler.trace, "one trace");
}
