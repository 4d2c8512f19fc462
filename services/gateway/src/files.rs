//! The file trace: everything that happened to a file and to its content,
//! across the tenant's PCs, in time order — created, copied to the
//! desktop, renamed, copied to a USB stick (which one, by serial), and the
//! same content seen on another PC.
//!
//! The writer keeps one `file_trace` row per file event (device, path,
//! target, content hash). A trace starts from a file (device and path), a
//! content hash or a file event (as an alarm names it) and follows, a
//! bounded number of rounds: the operations at the places it knows (a path
//! on a device, as source or target), the places those lead to (a copy's
//! target, a rename's new name) and every operation on content it knows,
//! on any device. The result is the events those rows point to, oldest
//! first.

use std::collections::{HashMap, HashSet};

use axum::Json;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::audit;
use crate::ctx::Acting;
use crate::error::{ApiError, ApiResult};
use crate::events::{EventRow, EventView, views};
use crate::state::Shared;
use mamori_tenancy::TenantTx;

/// The most operations one trace shows.
const MAX_STEPS: usize = 500;
/// The most rounds of following places and content.
const MAX_ROUNDS: usize = 16;
/// Longest path accepted (the agent's bound).
const MAX_PATH: usize = mamori_proto::schema::max::FILE_PATH;
/// SHA-256 of no bytes: every empty file has it, so it links nothing.
const EMPTY_SHA256: [u8; 32] = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TraceQuery {
    /// Start from a file: the device it is on...
    pub device: Option<Uuid>,
    /// ...and its full path, as the agent reported it.
    pub path: Option<String>,
    /// Or start from content: its SHA-256, 64 hex digits.
    pub sha256: Option<String>,
    /// Or start from a file event (a confidential-folder alarm's
    /// `file_trace` link names its event).
    pub event: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FileTrace {
    /// The operations, oldest first: each a file event as the operation
    /// log shows it (`detail` has the target path, hash, process and the
    /// removable medium's vendor, product and serial).
    pub steps: Vec<EventView>,
    /// True when more operations are connected than one trace shows (the
    /// oldest 500 are shown).
    pub truncated: bool,
}

/// Where a trace starts.
#[derive(Debug)]
enum Start {
    Place(Uuid, String),
    Content(Vec<u8>),
    Event(Uuid),
}

impl Start {
    fn parse(q: &TraceQuery) -> ApiResult<Self> {
        match (q.device, &q.path, &q.sha256, q.event) {
            (Some(device), Some(path), None, None) => {
                if path.is_empty() || path.len() > MAX_PATH {
                    return Err(ApiError::invalid(
                        "path",
                        format!("must be 1 to {MAX_PATH} bytes"),
                    ));
                }
                if path.contains('\0') {
                    return Err(ApiError::invalid("path", "must not contain NUL"));
                }
                Ok(Start::Place(device, path.clone()))
            }
            (None, None, Some(hash), None) => {
                let bytes = hex::decode(hash)
                    .ok()
                    .filter(|b| b.len() == 32)
                    .ok_or_else(|| ApiError::invalid("sha256", "must be 64 hex digits"))?;
                Ok(Start::Content(bytes))
            }
            (None, None, None, Some(event)) => Ok(Start::Event(event)),
            (Some(_), None, None, None) => {
                Err(ApiError::invalid("path", "is required with device"))
            }
            (None, Some(_), None, None) => {
                Err(ApiError::invalid("device", "is required with path"))
            }
            _ => Err(ApiError::invalid(
                "device",
                "give a device and path, or sha256, or event (one of them)",
            )),
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct TraceRow {
    ts: DateTime<Utc>,
    event_id: Uuid,
    device_id: Uuid,
    path: String,
    target: String,
    sha256: Option<Vec<u8>>,
}

/// The places and contents a trace has reached, and its rows.
#[derive(Debug, Default)]
struct Walk {
    places: HashSet<(Uuid, String)>,
    contents: HashSet<Vec<u8>>,
    rows: HashMap<Uuid, TraceRow>,
    new_places: Vec<(Uuid, String)>,
    new_contents: Vec<Vec<u8>>,
}

impl Walk {
    fn place(&mut self, device: Uuid, path: &str) {
        if !path.is_empty() && self.places.insert((device, path.to_owned())) {
            self.new_places.push((device, path.to_owned()));
        }
    }

    fn content(&mut self, hash: &[u8]) {
        if hash.len() == 32 && hash != EMPTY_SHA256 && self.contents.insert(hash.to_vec()) {
            self.new_contents.push(hash.to_vec());
        }
    }

    fn add(&mut self, row: TraceRow) {
        if self.rows.contains_key(&row.event_id) {
            return;
        }
        self.place(row.device_id, &row.path);
        self.place(row.device_id, &row.target);
        if let Some(h) = &row.sha256 {
            self.content(h);
        }
        self.rows.insert(row.event_id, row);
    }
}

/// The trace's rows, oldest first, and whether it was cut at
/// [`MAX_STEPS`].
async fn walk(tx: &mut TenantTx, start: Start) -> ApiResult<(Vec<TraceRow>, bool)> {
    let tenant = tx.tenant().as_uuid();
    let mut w = Walk::default();
    match start {
        Start::Place(device, path) => w.place(device, &path),
        Start::Content(hash) => w.content(&hash),
        Start::Event(id) => {
            let row: Option<TraceRow> = sqlx::query_as(
                "SELECT ts, event_id, device_id, path, target, sha256
                 FROM file_trace WHERE tenant_id = $1 AND event_id = $2",
            )
            .bind(tenant)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
            w.add(row.ok_or_else(|| ApiError::not_found("file event"))?);
        }
    }
    let mut truncated = false;
    for _ in 0..MAX_ROUNDS {
        if w.new_places.is_empty() && w.new_contents.is_empty() {
            break;
        }
        let (devices, paths): (Vec<Uuid>, Vec<String>) = w.new_places.drain(..).unzip();
        let contents: Vec<Vec<u8>> = std::mem::take(&mut w.new_contents);
        let rows: Vec<TraceRow> = sqlx::query_as(
            "SELECT ts, event_id, device_id, path, target, sha256 FROM file_trace
             WHERE tenant_id = $1 AND (
                 (device_id, path) IN (SELECT * FROM unnest($2::uuid[], $3::text[]))
              OR (target <> '' AND (device_id, target) IN (SELECT * FROM unnest($2::uuid[], $3::text[])))
              OR sha256 = ANY($4::bytea[]))
             ORDER BY ts, event_id LIMIT $5",
        )
        .bind(tenant)
        .bind(&devices)
        .bind(&paths)
        .bind(&contents)
        .bind((MAX_STEPS + 1) as i64)
        .fetch_all(&mut **tx)
        .await?;
        if rows.len() > MAX_STEPS {
            truncated = true;
        }
        for row in rows {
            w.add(row);
        }
        if w.rows.len() > MAX_STEPS {
            truncated = true;
            break;
        }
    }
    let mut rows: Vec<TraceRow> = w.rows.into_values().collect();
    rows.sort_by_key(|r| (r.ts, r.event_id));
    rows.truncate(MAX_STEPS);
    Ok((rows, truncated))
}

/// Trace a file: its operations and those on its content, across devices.
#[utoipa::path(get, path = "/api/v1/files/trace", tag = "logs", params(TraceQuery), security(("bearer" = ["read_tenant"])),
    responses((status = 200, body = FileTrace), (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn trace(
    State(state): State<Shared>,
    acting: Acting,
    Query(q): Query<TraceQuery>,
) -> ApiResult<Json<FileTrace>> {
    let start = Start::parse(&q)?;
    let audit_start = format!("{start:?}");
    let mut tx = acting.begin(&state).await?;
    let (rows, truncated) = walk(&mut tx, start).await?;
    let (times, ids): (Vec<DateTime<Utc>>, Vec<Uuid>) =
        rows.iter().map(|r| (r.ts, r.event_id)).unzip();
    let events: Vec<EventRow> = sqlx::query_as(
        "SELECT e.ts, e.id, e.device_id, e.kind, e.os_user, e.subject, e.received_at, e.payload
         FROM events e
         WHERE e.tenant_id = $1 AND (e.ts, e.id) IN (SELECT * FROM unnest($2::timestamptz[], $3::uuid[]))
         ORDER BY e.ts, e.id",
    )
    .bind(tx.tenant().as_uuid())
    .bind(&times)
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    audit::by(
        &mut tx,
        &acting,
        "files.trace",
        "",
        serde_json::json!({ "start": audit_start, "returned": events.len() }),
    )
    .await?;
    let steps = views(&mut tx, events).await?;
    tx.commit().await?;
    Ok(Json(FileTrace { steps, truncated }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn the_empty_files_hash_is_what_sha256_gives_for_no_bytes() {
        let empty: [u8; 32] = Sha256::digest([]).into();
        assert_eq!(empty, EMPTY_SHA256);
    }

    #[test]
    fn a_trace_starts_from_exactly_one_thing_and_names_a_bad_one() {
        let q = |device, path: Option<&str>, sha256: Option<&str>, event| TraceQuery {
            device,
            path: path.map(str::to_owned),
            sha256: sha256.map(str::to_owned),
            event,
        };
        let d = Some(Uuid::nil());
        let hex64 = "ab".repeat(32);
        assert!(matches!(
            Start::parse(&q(d, Some("/home/a/x.xlsx"), None, None)),
            Ok(Start::Place(_, _))
        ));
        assert!(matches!(
            Start::parse(&q(None, None, Some(&hex64), None)),
            Ok(Start::Content(_))
        ));
        assert!(matches!(
            Start::parse(&q(None, None, None, d)),
            Ok(Start::Event(_))
        ));
        for (bad, field) in [
            (q(d, None, None, None), "path"),
            (q(None, Some("/x"), None, None), "device"),
            (q(None, None, Some("abc"), None), "sha256"),
            (q(d, Some(""), None, None), "path"),
            (q(d, Some("/x"), Some(&hex64), None), "device"),
            (q(None, None, None, None), "device"),
        ] {
            let e = Start::parse(&bad).unwrap_err();
            assert!(e.message.starts_with(field), "{bad:?}: {}", e.message);
        }
    }
}
