//! The Connect stream: acked batches land in PostgreSQL exactly once; bad
//! input is refused with a precise status and writes nothing.

use crate::support::*;
use mamori_proto::agent::v1::{Event, WebEvent, event::Kind, server_message::Body};
use std::time::Duration;
use tonic::Code;

fn acked(
    reply: Result<mamori_proto::agent::v1::ServerMessage, tonic::Status>,
    sequence: u64,
) -> u32 {
    match reply.expect("a reply").body {
        Some(Body::Ack(a)) => {
            assert_eq!(a.sequence, sequence);
            assert!(a.server_time_us > 0);
            a.accepted
        }
        other => panic!("expected an ack of {sequence}, got {other:?}"),
    }
}

fn rejected(
    reply: Result<mamori_proto::agent::v1::ServerMessage, tonic::Status>,
) -> (Code, String) {
    match reply.expect("a reply").body {
        Some(Body::Rejected(r)) => (Code::from_i32(r.code), r.reason),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn acked_batches_land_in_postgres_once_even_when_replayed() {
    let s = Stack::start().await;
    let (tenant, token) = s.tenant_with_token().await;
    let dev = s.new_device(&token).await;
    let mut stream = s.open(&dev.device_credential).await.unwrap();
    let mut web = Event {
        kind: Some(Kind::Web(WebEvent {
            url_host: "example.org".into(),
            url: "https://example.org/a".into(),
            title: "Example".into(),
            browser: "firefox".into(),
            summarized: 0,
        })),
        ..process_event("")
    };
    web.clock_offset_ms = 1500;
    let events = vec![
        process_event("/usr/bin/vim"),
        process_event("/usr/bin/ssh"),
        web.clone(),
    ];
    assert_eq!(acked(stream.send(batch(1, events.clone())).await, 1), 3);
    // The agent did not see the ack and sends the same batch again.
    assert_eq!(acked(stream.send(batch(2, events)).await, 2), 3);

    let rows: Vec<(uuid::Uuid, i16, String, String, chrono::DateTime<chrono::Utc>)> = wait_for(
        "3 event rows",
        Duration::from_secs(10),
        || async {
            let rows: Vec<(uuid::Uuid, i16, String, String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
                "SELECT device_id, kind, os_user, subject, ts FROM events WHERE tenant_id = $1 ORDER BY subject",
            )
            .bind(tenant.as_uuid())
            .fetch_all(&s.env.owner)
            .await
            .unwrap();
            (rows.len() >= 3).then_some(rows)
        },
    )
    .await;
    // Give a duplicate the time to show up if it were going to.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        s.count_events(tenant).await,
        3,
        "replayed batch stored once"
    );
    // The writer got past the replay (a writer stuck on it would hold back
    // everything after it on the device's stream).
    assert_eq!(
        acked(
            stream
                .send(batch(3, vec![process_event("/usr/bin/top")]))
                .await,
            3
        ),
        1
    );
    wait_for(
        "the event after the replay",
        Duration::from_secs(10),
        || async { (s.count_events(tenant).await == 4).then_some(()) },
    )
    .await;
    let device: uuid::Uuid = dev.device_id.parse().unwrap();
    assert!(rows.iter().all(|r| r.0 == device && r.2 == "alice"));
    let subjects: Vec<&str> = rows.iter().map(|r| r.3.as_str()).collect();
    assert_eq!(
        subjects,
        vec!["/usr/bin/ssh", "/usr/bin/vim", "example.org"]
    );
    assert_eq!(rows[2].1, mamori_proto::EventKind::WebAccess.code());
    // The clock offset corrected the stored time.
    let device_time = chrono::DateTime::from_timestamp_micros(web.occurred_at_us).unwrap();
    assert_eq!(
        rows[2].4 - device_time,
        chrono::Duration::milliseconds(1500)
    );
}

#[tokio::test]
async fn bad_batches_are_refused_precisely_and_write_nothing() {
    let s = Stack::start().await;
    let (tenant, token) = s.tenant_with_token().await;
    let dev = s.new_device(&token).await;
    let mut stream = s.open(&dev.device_credential).await.unwrap();

    let (code, why) = rejected(
        stream
            .send(batch(1, (0..1001).map(|_| process_event("/x")).collect()))
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        why.contains("1001 events") && why.contains("at most 1000"),
        "{why}"
    );

    let mut bad = process_event("/x");
    bad.id = vec![1, 2, 3];
    let (code, why) = rejected(stream.send(batch(2, vec![process_event("/ok"), bad])).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(why.contains("event 1") && why.contains("16 bytes"), "{why}");

    let long = process_event(&"a".repeat(5000));
    let (_, why) = rejected(stream.send(batch(3, vec![long])).await);
    assert!(
        why.contains("exe_path") && why.contains("at most 4096"),
        "{why}"
    );

    let mut future = process_event("/x");
    future.occurred_at_us += 3 * 24 * 3600 * 1_000_000;
    let (_, why) = rejected(stream.send(batch(4, vec![future])).await);
    assert!(why.contains("future"), "{why}");

    let no_kind = Event {
        kind: None,
        ..process_event("/x")
    };
    let (_, why) = rejected(stream.send(batch(5, vec![no_kind])).await);
    assert!(why.contains("no kind"), "{why}");

    // A batch that claims another tenant's device is refused.
    let (_, other_token) = s.tenant_with_token().await;
    let other = s.new_device(&other_token).await;
    let mut claim = batch(6, vec![process_event("/x")]);
    claim.device_id = other.device_id.clone();
    let (code, why) = rejected(stream.send(claim).await);
    assert_eq!(code, Code::PermissionDenied);
    assert!(why.contains(&other.device_id), "{why}");

    // The stream is still usable after refusals.
    assert_eq!(
        acked(stream.send(batch(7, vec![process_event("/fine")])).await, 7),
        1
    );

    // An oversized message ends the stream with a clear status.
    let huge: Vec<_> = (0..900)
        .map(|_| {
            let mut e = process_event(&"p".repeat(4000));
            if let Some(Kind::Process(p)) = &mut e.kind {
                p.command_line = "c".repeat(8000);
            }
            e
        })
        .collect();
    let err = stream
        .send(batch(8, huge))
        .await
        .expect_err("oversized message ends the stream");
    assert!(
        matches!(
            err.code(),
            Code::OutOfRange | Code::ResourceExhausted | Code::Internal
        ),
        "{err:?}"
    );
    assert!(
        err.message().contains("message length too large") || err.message().contains("larger than"),
        "{err:?}"
    );

    s.assert_only_written(tenant, 1).await;
}

/// An `AgentMessage` whose batch is given as bytes: what a broken or
/// hostile client sends, and no generated client can.
#[derive(Clone, PartialEq, prost::Message)]
struct RawBatchMessage {
    #[prost(bytes = "vec", tag = "1")]
    batch: Vec<u8>,
}

/// An encoded `EventBatch` of already encoded events.
fn raw_batch(sequence: u64, events: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::uint64::encode(1, &sequence, &mut out);
    for e in events {
        prost::encoding::bytes::encode(2, e, &mut out);
    }
    out
}

#[tokio::test]
async fn malformed_events_are_refused_by_name_and_the_stream_goes_on() {
    use prost::Message;
    use tokio_stream::wrappers::ReceiverStream;
    let s = Stack::start().await;
    let (tenant, token) = s.tenant_with_token().await;
    let dev = s.new_device(&token).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<RawBatchMessage>(4);
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", dev.device_credential).parse().unwrap(),
    );
    let channel = tonic::transport::Channel::from_shared(s.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec =
        tonic_prost::ProstCodec::<RawBatchMessage, mamori_proto::agent::v1::ServerMessage>::default(
        );
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/mamori.agent.v1.AgentService/Connect",
    );
    let mut replies = grpc.streaming(req, path, codec).await.unwrap().into_inner();
    let mut send = async |sequence: u64, events: &[Vec<u8>]| {
        tx.send(RawBatchMessage {
            batch: raw_batch(sequence, events),
        })
        .await
        .unwrap();
        tokio::time::timeout(Duration::from_secs(10), replies.message())
            .await
            .expect("a reply within 10 s")
            .transpose()
            .expect("the stream goes on")
    };

    let good = || process_event("/usr/bin/AAAA").encode_to_vec();
    // exe_path (and the command line) with bytes that are not UTF-8.
    let mut not_utf8 = good();
    let at = not_utf8.windows(4).position(|w| w == b"AAAA").unwrap();
    not_utf8[at..at + 4].copy_from_slice(&[0xff, 0xfe, 0xfd, 0xfc]);
    // A field Event does not define (5, a varint).
    let unknown = [good(), vec![0x28, 0x01]].concat();
    // A second body: a file event after the process event.
    let two_kinds = [good(), vec![0x62, 0x02, 0x08, 0x01]].concat();
    let cases = [
        (not_utf8, "batch 1 event 1: exe_path is not valid UTF-8"),
        (unknown, "batch 2 event 1: event has field 5"),
        (two_kinds, "batch 3 event 1: event has more than one kind"),
    ];
    for (sequence, (bad, expect)) in (1..).zip(cases) {
        let (code, why) = rejected(send(sequence, &[good(), bad]).await);
        assert_eq!(code, Code::InvalidArgument);
        assert!(why.contains(expect), "{expect}: {why}");
    }
    assert_eq!(acked(send(4, &[good(), good()]).await, 4), 2);

    // A batch that is not an EventBatch at all ends the stream, naming why.
    tx.send(RawBatchMessage { batch: vec![0x08] })
        .await
        .unwrap();
    let err = replies
        .message()
        .await
        .expect_err("a broken batch ends the stream");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("event batch is malformed"),
        "{err:?}"
    );

    s.assert_only_written(tenant, 2).await;
}

#[tokio::test]
async fn wrong_or_missing_credentials_are_refused() {
    let s = Stack::start().await;
    let err = s
        .open(mamori_registry::DeviceCredential::generate().expose())
        .await
        .err()
        .expect("unknown credential");
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = s.open("garbage").await.err().expect("malformed credential");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        err.message().contains("device credential"),
        "{}",
        err.message()
    );
    let (_tenant, token) = s.tenant_with_token().await;
    // An enrollment token is not a device credential.
    let err = s
        .open(&token)
        .await
        .err()
        .expect("token is not a credential");
    assert_eq!(err.code(), Code::Unauthenticated);
}
