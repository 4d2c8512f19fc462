//! Turning stream batches into `events` rows and inserting them.
//!
//! COPY cannot be used: PostgreSQL refuses `COPY FROM` into a table with
//! row-level security for a role it applies to. One `INSERT .. SELECT
//! unnest(arrays)` per tenant sends each column as one array parameter,
//! which is nearly as compact on the wire and plans once.
//!
//! Replays (an agent resending a batch whose ack it lost, a claimed entry
//! written again) must not create duplicates, but `ON CONFLICT DO NOTHING`
//! costs every row a second index descent and a speculative-insertion lock:
//! a quarter of PostgreSQL's time in the spine benchmark. So a batch is
//! first inserted plainly, and only when that hits the primary key is the
//! whole transaction redone skipping duplicates. `unnest` in the select
//! list streams the arrays row by row; `FROM UNNEST(..)` would copy them
//! into a tuple store first.

use chrono::{DateTime, NaiveDate, Utc};
use mamori_proto::schema;
use mamori_proto::wire::{self, EVENT_BODIES, WireError, next_field};
use mamori_tenancy::{Db, TenantId};
use prost::encoding::WireType;
use sqlx::encode::IsNull;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo};
use sqlx::{Encode, PgConnection, Postgres, Type};
use std::collections::BTreeMap;
use uuid::Uuid;

macro_rules! insert_events {
    ($tail:literal) => {
        concat!(
            "INSERT INTO events (tenant_id, ts, id, device_id, kind, os_user, subject, received_at, payload)
     SELECT $1, unnest($2::timestamptz[]), unnest($3::uuid[]), unnest($4::uuid[]), unnest($5::int2[]),
            unnest($6::text[]), unnest($7::text[]), unnest($8::timestamptz[]), unnest($9::bytea[])",
            $tail
        )
    };
}
const INSERT: &str = insert_events!("");
const INSERT_SKIPPING_DUPLICATES: &str = insert_events!(" ON CONFLICT DO NOTHING");
/// The file events' rows of the file trace (an empty hash is none). A
/// replay may meet its rows; they are skipped (file events are few beside
/// the rest, so the conflict check costs little).
const INSERT_FILE_TRACE: &str =
    "INSERT INTO file_trace (tenant_id, ts, event_id, device_id, kind, path, target, sha256)
     SELECT $1, unnest($2::timestamptz[]), unnest($3::uuid[]), unnest($4::uuid[]), unnest($5::int2[]),
            unnest($6::text[]), unnest($7::text[]), NULLIF(unnest($8::bytea[]), ''::bytea)
     ON CONFLICT DO NOTHING";

/// What an insert does with a row whose event is already stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duplicates {
    /// Fail the statement (and its transaction): the fast path.
    Fail,
    /// Skip the row.
    Skip,
}

/// The element type of an [`ArrayColumn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Elem {
    Timestamptz,
    Uuid,
    Int2,
    Text,
    Bytea,
}

impl Elem {
    /// PostgreSQL's built-in type OIDs (fixed in `pg_type.dat`).
    fn oid(self) -> u32 {
        match self {
            Elem::Timestamptz => 1184,
            Elem::Uuid => 2950,
            Elem::Int2 => 21,
            Elem::Text => 25,
            Elem::Bytea => 17,
        }
    }

    fn array_type(self) -> PgTypeInfo {
        match self {
            Elem::Timestamptz => <Vec<DateTime<Utc>> as Type<Postgres>>::type_info(),
            Elem::Uuid => <Vec<Uuid> as Type<Postgres>>::type_info(),
            Elem::Int2 => <Vec<i16> as Type<Postgres>>::type_info(),
            Elem::Text => <Vec<String> as Type<Postgres>>::type_info(),
            Elem::Bytea => <Vec<Vec<u8>> as Type<Postgres>>::type_info(),
        }
    }
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// One column of rows, kept as the elements of PostgreSQL's binary array
/// format (each a 4-byte length and the value) as rows are added: the rows
/// are never separate allocations, and binding the column copies one
/// buffer.
#[derive(Debug, Clone)]
pub struct ArrayColumn {
    elem: Elem,
    count: usize,
    data: Vec<u8>,
}

impl ArrayColumn {
    fn new(elem: Elem) -> Self {
        Self {
            elem,
            count: 0,
            data: Vec::new(),
        }
    }

    fn push(&mut self, value: &[u8]) {
        let len = i32::try_from(value.len()).expect("values are bounded far below 2 GiB");
        self.data.extend_from_slice(&len.to_be_bytes());
        self.data.extend_from_slice(value);
        self.count += 1;
    }

    fn push_time(&mut self, t: DateTime<Utc>) {
        self.push(&(t.timestamp_micros() - PG_EPOCH_US).to_be_bytes());
    }

    fn mark(&self) -> (usize, usize) {
        (self.count, self.data.len())
    }

    fn truncate(&mut self, (count, len): (usize, usize)) {
        self.count = count;
        self.data.truncate(len);
    }
}

impl Type<Postgres> for ArrayColumn {
    fn type_info() -> PgTypeInfo {
        // Every column says its real type in `produces`.
        <Vec<Vec<u8>> as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for ArrayColumn {
    fn encode_by_ref(
        &self,
        buf: &mut PgArgumentBuffer,
    ) -> Result<IsNull, Box<dyn std::error::Error + Send + Sync>> {
        let count = i32::try_from(self.count)
            .map_err(|_| format!("{} rows do not fit one array", self.count))?;
        buf.reserve(20 + self.data.len());
        buf.extend_from_slice(&1_i32.to_be_bytes()); // dimensions
        buf.extend_from_slice(&0_i32.to_be_bytes()); // flags: no nulls
        buf.extend_from_slice(&self.elem.oid().to_be_bytes());
        buf.extend_from_slice(&count.to_be_bytes());
        buf.extend_from_slice(&1_i32.to_be_bytes()); // lower bound
        buf.extend_from_slice(&self.data);
        Ok(IsNull::No)
    }

    fn produces(&self) -> Option<PgTypeInfo> {
        Some(self.elem.array_type())
    }

    fn size_hint(&self) -> usize {
        20 + self.data.len()
    }
}

/// Column arrays of one tenant's events.
#[derive(Debug, Clone)]
pub struct Rows {
    ts: ArrayColumn,
    id: ArrayColumn,
    device: ArrayColumn,
    kind: ArrayColumn,
    os_user: ArrayColumn,
    subject: ArrayColumn,
    received_at: ArrayColumn,
    payload: ArrayColumn,
    /// The file trace's rows of the file events among them.
    trace: TraceRows,
}

/// Column arrays of `file_trace` rows.
#[derive(Debug, Clone)]
struct TraceRows {
    ts: ArrayColumn,
    id: ArrayColumn,
    device: ArrayColumn,
    kind: ArrayColumn,
    path: ArrayColumn,
    target: ArrayColumn,
    sha256: ArrayColumn,
}

impl Default for TraceRows {
    fn default() -> Self {
        Self {
            ts: ArrayColumn::new(Elem::Timestamptz),
            id: ArrayColumn::new(Elem::Uuid),
            device: ArrayColumn::new(Elem::Uuid),
            kind: ArrayColumn::new(Elem::Int2),
            path: ArrayColumn::new(Elem::Text),
            target: ArrayColumn::new(Elem::Text),
            sha256: ArrayColumn::new(Elem::Bytea),
        }
    }
}

impl Default for Rows {
    fn default() -> Self {
        Self {
            ts: ArrayColumn::new(Elem::Timestamptz),
            id: ArrayColumn::new(Elem::Uuid),
            device: ArrayColumn::new(Elem::Uuid),
            kind: ArrayColumn::new(Elem::Int2),
            os_user: ArrayColumn::new(Elem::Text),
            subject: ArrayColumn::new(Elem::Text),
            received_at: ArrayColumn::new(Elem::Timestamptz),
            payload: ArrayColumn::new(Elem::Bytea),
            trace: TraceRows::default(),
        }
    }
}

type Mark = [(usize, usize); 15];

impl Rows {
    pub fn len(&self) -> usize {
        self.id.count
    }

    pub fn is_empty(&self) -> bool {
        self.id.count == 0
    }

    fn columns_mut(&mut self) -> [&mut ArrayColumn; 15] {
        let t = &mut self.trace;
        [
            &mut self.ts,
            &mut self.id,
            &mut self.device,
            &mut self.kind,
            &mut self.os_user,
            &mut self.subject,
            &mut self.received_at,
            &mut self.payload,
            &mut t.ts,
            &mut t.id,
            &mut t.device,
            &mut t.kind,
            &mut t.path,
            &mut t.target,
            &mut t.sha256,
        ]
    }

    fn mark(&mut self) -> Mark {
        self.columns_mut().map(|c| c.mark())
    }

    fn truncate(&mut self, mark: Mark) {
        for (c, m) in self.columns_mut().into_iter().zip(mark) {
            c.truncate(m);
        }
    }
}

/// Events of many tenants, grouped by tenant.
#[derive(Debug, Default)]
pub struct Batch {
    pub tenants: BTreeMap<TenantId, Rows>,
    /// The first and last day any event falls on.
    days: Option<(NaiveDate, NaiveDate)>,
}

/// Why a stream entry can never be written (it goes to the dead letters).
#[derive(Debug, thiserror::Error)]
pub enum BadEntry {
    #[error("entry is not a StreamBatch: {0}")]
    Malformed(#[from] WireError),
    #[error("entry has an invalid {0}")]
    Field(&'static str),
}

use mamori_proto::schema::field::{
    CLOCK_OFFSET_MS as EVENT_CLOCK_OFFSET, ID as EVENT_ID, OCCURRED_AT_US as EVENT_OCCURRED_AT,
    OS_USER as EVENT_OS_USER,
};

impl Batch {
    /// Adds one stream entry's events and returns the entry's trace context
    /// ("" when none). Ingest validated the events already; this only
    /// re-checks what would break the insert. An entry is added whole or
    /// not at all.
    ///
    /// The entry is read field by field rather than decoded: an event's
    /// payload is its own encoding without the fields stored in columns (id,
    /// time, user, and the body's subject field), copied as it is, and the
    /// kind and subject are read from the body in place. Decoding every
    /// event (every string an allocation) and encoding it again took half
    /// of the writer's time.
    pub fn add_entry(&mut self, bytes: &[u8]) -> Result<String, BadEntry> {
        let batch = wire::read_stream_batch(bytes)?;
        let tenant: TenantId = batch
            .tenant_id
            .parse()
            .map_err(|_| BadEntry::Field("tenant_id"))?;
        let device: Uuid = batch
            .device_id
            .parse()
            .map_err(|_| BadEntry::Field("device_id"))?;
        let received = batch
            .received_at
            .and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.try_into().ok()?))
            .ok_or(BadEntry::Field("received_at"))?;
        let traceparent = batch.traceparent;
        let events = batch.events;
        let rows = self.tenants.entry(tenant).or_default();
        let mark = rows.mark();
        let mut days = self.days;
        let added = events.into_iter().try_for_each(|e| {
            let day = add_event(rows, e, device, received)?;
            days = Some(days.map_or((day, day), |(lo, hi)| (lo.min(day), hi.max(day))));
            Ok(())
        });
        if let Err(e) = added {
            rows.truncate(mark);
            if rows.is_empty() {
                self.tenants.remove(&tenant);
            }
            return Err(e);
        }
        self.days = days;
        Ok(traceparent.to_owned())
    }

    pub fn events(&self) -> usize {
        self.tenants.values().map(Rows::len).sum()
    }

    /// The first and last day any event falls on.
    pub fn day_range(&self) -> Option<(NaiveDate, NaiveDate)> {
        self.days
    }
}

/// Adds one encoded `Event` to `rows`; returns the day it falls on.
fn add_event(
    rows: &mut Rows,
    mut buf: &[u8],
    device: Uuid,
    received: DateTime<Utc>,
) -> Result<NaiveDate, BadEntry> {
    let (mut id, mut occurred_us, mut offset_ms, mut os_user) = (&[][..], 0, 0, "");
    let mut body = None;
    let mut file = None;
    let payload_start = rows.payload.data.len();
    rows.payload.data.extend_from_slice(&[0; 4]);
    while !buf.is_empty() {
        let f = next_field(&mut buf)?;
        match (f.tag, f.wire_type) {
            (EVENT_ID, WireType::LengthDelimited) => id = f.bytes,
            (EVENT_OCCURRED_AT, WireType::Varint) => occurred_us = f.varint as i64,
            (EVENT_OS_USER, WireType::LengthDelimited) => {
                os_user = f.text().map_err(|_| BadEntry::Field("os_user"))?;
            }
            (tag, WireType::LengthDelimited) if EVENT_BODIES.contains(&tag) => {
                // The body goes into the payload without its subject, which
                // is stored in its column only (the gateway puts it back).
                let split = wire::split_subject(tag, f.bytes)?;
                let rest = split.map_or([f.bytes, &[][..]], |b| b.rest);
                wire::encode_body(tag, rest, &mut rows.payload.data);
                body = split.map(|b| (b.kind, b.subject));
                if tag == schema::field::FILE {
                    file = Some(file_trace_fields(f.bytes)?);
                }
            }
            (tag, wire_type) => {
                if tag == EVENT_CLOCK_OFFSET && wire_type == WireType::Varint {
                    offset_ms = f.varint as i64;
                }
                // The payload keeps everything else but the id, the time
                // and the user (the clock offset stays: `ts - clock_offset`
                // gives the device time).
                rows.payload.data.extend_from_slice(f.encoded);
            }
        }
    }
    let id = Uuid::from_slice(id).map_err(|_| BadEntry::Field("event id"))?;
    let (kind, subject) = body.ok_or(BadEntry::Field("event kind"))?;
    let ts = occurred_us
        .checked_add(offset_ms.saturating_mul(1000))
        .and_then(DateTime::from_timestamp_micros)
        .ok_or(BadEntry::Field("event time"))?;
    let payload_len = i32::try_from(rows.payload.data.len() - payload_start - 4)
        .map_err(|_| BadEntry::Field("event size"))?;
    rows.payload.data[payload_start..payload_start + 4].copy_from_slice(&payload_len.to_be_bytes());
    rows.payload.count += 1;
    rows.ts.push_time(ts);
    rows.id.push(id.as_bytes());
    rows.device.push(device.as_bytes());
    rows.kind.push(&kind.code().to_be_bytes());
    rows.os_user.push(os_user.as_bytes());
    rows.subject.push(subject.as_bytes());
    rows.received_at.push_time(received);
    if let Some((target, sha256)) = file {
        let t = &mut rows.trace;
        t.ts.push_time(ts);
        t.id.push(id.as_bytes());
        t.device.push(device.as_bytes());
        t.kind.push(&kind.code().to_be_bytes());
        t.path.push(subject.as_bytes());
        t.target.push(target.as_bytes());
        t.sha256.push(sha256);
    }
    Ok(ts.date_naive())
}

/// The target path and content hash of an encoded `FileEvent` (the last
/// of each, as a decoder reads; a hash of the wrong length is none).
fn file_trace_fields(body: &[u8]) -> Result<(&str, &[u8]), BadEntry> {
    use mamori_proto::schema::body::file::{SHA256, TARGET_PATH};
    let (mut target, mut sha256) = ("", &[][..]);
    let mut buf = body;
    while !buf.is_empty() {
        let f = next_field(&mut buf)?;
        if f.is_bytes() && f.tag == TARGET_PATH {
            target = f.text()?;
        } else if f.is_bytes() && f.tag == SHA256 {
            sha256 = f.bytes;
        }
    }
    Ok((target, if sha256.len() == 32 { sha256 } else { &[] }))
}

/// Inserts one tenant's rows on a connection whose transaction is already
/// set to that tenant. Returns the rows actually inserted (replays are 0
/// with [`Duplicates::Skip`]; with [`Duplicates::Fail`] one fails it all).
pub async fn insert_rows(
    conn: &mut PgConnection,
    tenant: TenantId,
    rows: &Rows,
    duplicates: Duplicates,
) -> Result<u64, sqlx::Error> {
    let sql = match duplicates {
        Duplicates::Fail => INSERT,
        Duplicates::Skip => INSERT_SKIPPING_DUPLICATES,
    };
    let done = sqlx::query(sql)
        .bind(tenant.as_uuid())
        .bind(&rows.ts)
        .bind(&rows.id)
        .bind(&rows.device)
        .bind(&rows.kind)
        .bind(&rows.os_user)
        .bind(&rows.subject)
        .bind(&rows.received_at)
        .bind(&rows.payload)
        .execute(&mut *conn)
        .await?;
    let t = &rows.trace;
    if t.id.count > 0 {
        sqlx::query(INSERT_FILE_TRACE)
            .bind(tenant.as_uuid())
            .bind(&t.ts)
            .bind(&t.id)
            .bind(&t.device)
            .bind(&t.kind)
            .bind(&t.path)
            .bind(&t.target)
            .bind(&t.sha256)
            .execute(conn)
            .await?;
    }
    Ok(done.rows_affected())
}

/// Writes a whole batch in one transaction, exactly once: plainly, and if
/// some event of it is stored already, again skipping those. Returns new
/// rows inserted.
pub async fn write(db: &Db, batch: &Batch) -> Result<u64, mamori_tenancy::Error> {
    match write_with(db, batch, Duplicates::Fail).await {
        Err(e) if is_duplicate(&e) => {
            metrics::counter!("mamori_writer_duplicate_retries_total").increment(1);
            write_with(db, batch, Duplicates::Skip).await
        }
        other => other,
    }
}

async fn write_with(
    db: &Db,
    batch: &Batch,
    duplicates: Duplicates,
) -> Result<u64, mamori_tenancy::Error> {
    let mut tenants = batch.tenants.iter();
    let Some((first, rows)) = tenants.next() else {
        return Ok(0);
    };
    let mut tx = db.begin_tenant(*first).await?;
    let mut inserted = insert_rows(&mut tx, *first, rows, duplicates).await?;
    for (tenant, rows) in tenants {
        tx.switch_tenant(*tenant).await?;
        inserted += insert_rows(&mut tx, *tenant, rows, duplicates).await?;
    }
    tx.commit().await?;
    Ok(inserted)
}

/// True when the error is a primary-key clash: an event stored already.
fn is_duplicate(e: &mamori_tenancy::Error) -> bool {
    matches!(e, mamori_tenancy::Error::Database(sqlx::Error::Database(d))
        if d.code().as_deref() == Some("23505"))
}

/// True when the error says an event's day has no partition yet.
pub fn is_missing_partition(e: &mamori_tenancy::Error) -> bool {
    matches!(e, mamori_tenancy::Error::Database(sqlx::Error::Database(d))
        if d.message().contains("no partition of relation"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mamori_proto::agent::v1::{Event, ProcessEvent, StreamBatch, event::Kind, process_event};
    use prost::Message;

    fn event(user: &str, path: &str) -> Event {
        Event {
            id: Uuid::now_v7().as_bytes().to_vec(),
            occurred_at_us: 1_764_000_000_000_000,
            clock_offset_ms: -1500,
            os_user: user.into(),
            kind: Some(Kind::Process(ProcessEvent {
                action: process_event::Action::Start as i32,
                exe_path: path.into(),
                pid: 42,
                ..Default::default()
            })),
        }
    }

    fn entry(tenant: &str, events: Vec<Event>) -> Vec<u8> {
        StreamBatch {
            tenant_id: tenant.into(),
            device_id: Uuid::now_v7().to_string(),
            sequence: 1,
            received_at: Some(prost_types::Timestamp {
                seconds: 1_764_000_001,
                nanos: 0,
            }),
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            events,
        }
        .encode_to_vec()
    }

    /// Splits a column back into its elements.
    fn elements(c: &ArrayColumn) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut rest = &c.data[..];
        while !rest.is_empty() {
            let len = i32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            out.push(&rest[4..4 + len]);
            rest = &rest[4 + len..];
        }
        assert_eq!(out.len(), c.count);
        out
    }

    #[test]
    fn an_entry_becomes_columns_and_a_payload_without_the_column_fields() {
        let tenant = TenantId::new();
        let e = event("alice", "/usr/bin/winny");
        let mut batch = Batch::default();
        let tp = batch
            .add_entry(&entry(
                &tenant.to_string(),
                vec![e.clone(), event("", "/bin/ls")],
            ))
            .unwrap();
        assert_eq!(
            tp,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        assert_eq!(batch.events(), 2);
        let rows = &batch.tenants[&tenant];
        assert_eq!(elements(&rows.id)[0], &e.id[..]);
        assert_eq!(elements(&rows.os_user), vec![&b"alice"[..], b""]);
        assert_eq!(
            elements(&rows.subject),
            vec![&b"/usr/bin/winny"[..], b"/bin/ls"]
        );
        let start = mamori_proto::EventKind::ProcessStart.code().to_be_bytes();
        assert_eq!(elements(&rows.kind), vec![&start[..], &start[..]]);
        // Corrected time: occurred + offset, as microseconds since 2000-01-01.
        let ts = 1_764_000_000_000_000 - 1_500_000 - PG_EPOCH_US;
        assert_eq!(elements(&rows.ts)[0], &ts.to_be_bytes()[..]);
        let payload = elements(&rows.payload)[0];
        let stored = Event {
            id: vec![],
            occurred_at_us: 0,
            os_user: String::new(),
            ..e
        };
        // The subject is in its column only, and put back on reading.
        let mut without_subject = stored.clone();
        match &mut without_subject.kind {
            Some(Kind::Process(p)) => p.exe_path.clear(),
            other => panic!("not a process event: {other:?}"),
        }
        assert_eq!(Event::decode(payload).unwrap(), without_subject);
        let restored = wire::restore_subject(payload, "/usr/bin/winny").unwrap();
        assert_eq!(Event::decode(&restored[..]).unwrap(), stored);
        let day = DateTime::from_timestamp_micros(1_764_000_000_000_000 - 1_500_000)
            .unwrap()
            .date_naive();
        assert_eq!(batch.day_range(), Some((day, day)));
    }

    #[test]
    fn a_bad_event_leaves_nothing_of_its_entry() {
        let tenant = TenantId::new();
        let mut batch = Batch::default();
        batch
            .add_entry(&entry(&tenant.to_string(), vec![event("a", "/bin/a")]))
            .unwrap();
        let before = batch.tenants[&tenant].clone();
        let mut bad = event("b", "/bin/b");
        bad.id = vec![1, 2, 3];
        let err = batch
            .add_entry(&entry(&tenant.to_string(), vec![event("c", "/bin/c"), bad]))
            .unwrap_err();
        assert_eq!(err.to_string(), "entry has an invalid event id");
        let after = &batch.tenants[&tenant];
        for (a, b) in after
            .clone()
            .columns_mut()
            .iter()
            .zip(before.clone().columns_mut())
        {
            assert_eq!((a.count, &a.data), (b.count, &b.data));
        }
        // An entry of a new tenant that fails leaves no empty tenant behind.
        let other = TenantId::new();
        let mut no_kind = event("d", "/bin/d");
        no_kind.kind = None;
        assert!(
            batch
                .add_entry(&entry(&other.to_string(), vec![no_kind]))
                .is_err()
        );
        assert!(!batch.tenants.contains_key(&other));
        assert!(matches!(
            batch.add_entry(&entry("not-a-tenant", vec![])),
            Err(BadEntry::Field("tenant_id"))
        ));
        assert!(matches!(
            batch.add_entry(&[0xff, 0xff]),
            Err(BadEntry::Malformed(_))
        ));
        assert_eq!(
            batch
                .add_entry(&[0x32, 0x05, 0x01])
                .unwrap_err()
                .to_string(),
            "entry is not a StreamBatch: field runs past the end"
        );
        assert_eq!(batch.events(), 1);
    }
}
