//! Turning stream batches into `events` rows and inserting them.
//!
//! COPY cannot be used: PostgreSQL refuses `COPY FROM` into a table with
//! row-level security for a role it applies to. One `INSERT .. SELECT FROM
//! UNNEST(arrays)` per tenant sends each column as one array parameter,
//! which is nearly as compact on the wire and plans once.

use chrono::{DateTime, NaiveDate, Utc};
use mamori_proto::agent::v1::StreamBatch;
use mamori_tenancy::{Db, TenantId};
use prost::Message;
use sqlx::PgConnection;
use std::collections::BTreeMap;
use uuid::Uuid;

const INSERT: &str = "INSERT INTO events (tenant_id, ts, id, device_id, kind, os_user, subject, received_at, payload)
     SELECT $1, u.* FROM UNNEST($2::timestamptz[], $3::uuid[], $4::uuid[], $5::int2[], $6::text[],
                                $7::text[], $8::timestamptz[], $9::bytea[]) AS u
     ON CONFLICT DO NOTHING";

/// Column arrays of one tenant's events.
#[derive(Debug, Default, Clone)]
pub struct Rows {
    pub ts: Vec<DateTime<Utc>>,
    pub id: Vec<Uuid>,
    pub device: Vec<Uuid>,
    pub kind: Vec<i16>,
    pub os_user: Vec<String>,
    pub subject: Vec<String>,
    pub received_at: Vec<DateTime<Utc>>,
    pub payload: Vec<Vec<u8>>,
}

impl Rows {
    pub fn len(&self) -> usize {
        self.id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.id.is_empty()
    }

    fn days(&self) -> impl Iterator<Item = NaiveDate> + '_ {
        self.ts.iter().map(|t| t.date_naive())
    }
}

/// Events of many tenants, grouped by tenant.
#[derive(Debug, Default)]
pub struct Batch {
    pub tenants: BTreeMap<TenantId, Rows>,
}

/// Why a stream entry can never be written (it goes to the dead letters).
#[derive(Debug, thiserror::Error)]
pub enum BadEntry {
    #[error("entry is not a StreamBatch: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("entry has an invalid {0}")]
    Field(&'static str),
}

impl Batch {
    /// Adds one stream entry's events and returns the entry's trace context
    /// ("" when none). Ingest validated the events already; this only
    /// re-checks what would break the insert.
    pub fn add_entry(&mut self, bytes: &[u8]) -> Result<String, BadEntry> {
        let sb = StreamBatch::decode(bytes)?;
        let tenant: TenantId = sb
            .tenant_id
            .parse()
            .map_err(|_| BadEntry::Field("tenant_id"))?;
        let device: Uuid = sb
            .device_id
            .parse()
            .map_err(|_| BadEntry::Field("device_id"))?;
        let received = sb
            .received_at
            .and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.try_into().ok()?))
            .ok_or(BadEntry::Field("received_at"))?;
        let mut staged = Rows::default();
        for mut e in sb.events {
            let id = Uuid::from_slice(&e.id).map_err(|_| BadEntry::Field("event id"))?;
            let kind = mamori_proto::kind_of(&e).ok_or(BadEntry::Field("event kind"))?;
            let ts = e
                .occurred_at_us
                .checked_add(e.clock_offset_ms.saturating_mul(1000))
                .and_then(DateTime::from_timestamp_micros)
                .ok_or(BadEntry::Field("event time"))?;
            staged.ts.push(ts);
            staged.id.push(id);
            staged.device.push(device);
            staged.kind.push(kind.code());
            staged.subject.push(mamori_proto::subject(&e).to_owned());
            staged.os_user.push(std::mem::take(&mut e.os_user));
            staged.received_at.push(received);
            // The id and time live in their own columns; the payload keeps
            // the rest (the clock offset stays: it says how far off the
            // device clock was). `ts - clock_offset` gives the device time.
            e.id.clear();
            e.occurred_at_us = 0;
            staged.payload.push(e.encode_to_vec());
        }
        let rows = self.tenants.entry(tenant).or_default();
        rows.ts.extend(staged.ts);
        rows.id.extend(staged.id);
        rows.device.extend(staged.device);
        rows.kind.extend(staged.kind);
        rows.os_user.extend(staged.os_user);
        rows.subject.extend(staged.subject);
        rows.received_at.extend(staged.received_at);
        rows.payload.extend(staged.payload);
        Ok(sb.traceparent)
    }

    pub fn events(&self) -> usize {
        self.tenants.values().map(Rows::len).sum()
    }

    /// The first and last day any event falls on.
    pub fn day_range(&self) -> Option<(NaiveDate, NaiveDate)> {
        let mut days = self.tenants.values().flat_map(Rows::days);
        let first = days.next()?;
        Some(days.fold((first, first), |(lo, hi), d| (lo.min(d), hi.max(d))))
    }
}

/// Inserts one tenant's rows on a connection whose transaction is already
/// set to that tenant. Returns the rows actually inserted (replays are 0).
pub async fn insert_rows(
    conn: &mut PgConnection,
    tenant: TenantId,
    rows: &Rows,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(INSERT)
        .bind(tenant.as_uuid())
        .bind(&rows.ts)
        .bind(&rows.id)
        .bind(&rows.device)
        .bind(&rows.kind)
        .bind(&rows.os_user)
        .bind(&rows.subject)
        .bind(&rows.received_at)
        .bind(&rows.payload)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}

/// Writes a whole batch in one transaction. Returns new rows inserted.
pub async fn write(db: &Db, batch: &Batch) -> Result<u64, mamori_tenancy::Error> {
    let mut tenants = batch.tenants.iter();
    let Some((first, rows)) = tenants.next() else {
        return Ok(0);
    };
    let mut tx = db.begin_tenant(*first).await?;
    let mut inserted = insert_rows(&mut tx, *first, rows).await?;
    for (tenant, rows) in tenants {
        tx.switch_tenant(*tenant).await?;
        inserted += insert_rows(&mut tx, *tenant, rows).await?;
    }
    tx.commit().await?;
    Ok(inserted)
}

/// True when the error says an event's day has no partition yet.
pub fn is_missing_partition(e: &mamori_tenancy::Error) -> bool {
    matches!(e, mamori_tenancy::Error::Database(sqlx::Error::Database(d))
        if d.message().contains("no partition of relation"))
}
