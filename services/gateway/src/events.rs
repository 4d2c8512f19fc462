//! Operation-log search and CSV export, and the audit log.
//!
//! Searches are newest first with keyset pagination on (ts, id), which the
//! events primary key serves directly; a device filter uses
//! `events_device_ts`, free text the trigram index on `subject`. Every read
//! is itself written to the audit log.

use crate::audit;
use crate::ctx::Acting;
use crate::error::{ApiError, ApiResult};
use crate::state::Shared;
use crate::validate;
use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use mamori_proto::EventKind;
use mamori_tenancy::TenantTx;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use std::sync::LazyLock;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// The longest time range one search may cover.
const MAX_RANGE_DAYS: i64 = 2557;
/// Rows per query while exporting.
const EXPORT_CHUNK: i64 = 5000;
/// The most rows one export returns.
const EXPORT_MAX_ROWS: usize = 1_000_000;

static EVENT_DESCRIPTOR: LazyLock<MessageDescriptor> = LazyLock::new(|| {
    DescriptorPool::decode(mamori_proto::FILE_DESCRIPTOR_SET)
        .expect("the build's descriptor set decodes")
        .get_message_by_name("mamori.agent.v1.Event")
        .expect("mamori.agent.v1.Event is in the descriptor set")
});

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// Start of the range (RFC 3339, inclusive). Default: 24 hours before `to`.
    pub from: Option<DateTime<Utc>>,
    /// End of the range (RFC 3339, exclusive). Default: now.
    pub to: Option<DateTime<Utc>>,
    pub device: Option<Uuid>,
    /// An office or department; its sub-groups are included.
    pub group: Option<Uuid>,
    /// The OS user, exactly.
    pub user: Option<String>,
    /// Event kinds, comma-separated (`process_start,file_copy`).
    pub kind: Option<String>,
    /// Free text found anywhere in the path, title, URL host or device name.
    pub q: Option<String>,
    /// Page size, 1–1000 (default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub id: Uuid,
    /// When it happened (corrected to the server clock).
    pub time: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub device_id: Uuid,
    /// The device's host name now (empty if the device was deleted).
    pub hostname: String,
    pub kind: String,
    pub os_user: String,
    pub subject: String,
    /// Everything else the agent reported, in proto3 JSON form.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<EventView>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    pub(crate) ts: DateTime<Utc>,
    pub(crate) id: Uuid,
    device_id: Uuid,
    kind: i16,
    os_user: String,
    subject: String,
    received_at: DateTime<Utc>,
    payload: Vec<u8>,
}

/// A checked search.
#[derive(Debug, Clone)]
struct Search {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    device: Option<Uuid>,
    group: Option<Uuid>,
    user: Option<String>,
    kinds: Option<Vec<i16>>,
    q: Option<String>,
    after: Option<(DateTime<Utc>, Uuid)>,
}

impl Search {
    fn parse(q: &EventQuery) -> ApiResult<Self> {
        let (from, to) = validate::time_range(q.from, q.to, Duration::hours(24))?;
        if from >= to {
            return Err(ApiError::invalid("from", "must be before to"));
        }
        if to - from > Duration::days(MAX_RANGE_DAYS) {
            return Err(ApiError::invalid(
                "from",
                "the range may cover at most 7 years",
            ));
        }
        let kinds = q
            .kind
            .as_deref()
            .filter(|k| !k.is_empty())
            .map(|list| {
                list.split(',')
                    .take(64)
                    .map(|name| {
                        EventKind::parse(name.trim())
                            .map(EventKind::code)
                            .ok_or_else(|| {
                                ApiError::invalid(
                                    "kind",
                                    format!("unknown event kind {:?}", name.trim()),
                                )
                            })
                    })
                    .collect::<ApiResult<Vec<i16>>>()
            })
            .transpose()?;
        let user = q
            .user
            .as_deref()
            .map(|u| validate::search_text("user", u))
            .transpose()?;
        let text =
            q.q.as_deref()
                .filter(|t| !t.is_empty())
                .map(|t| validate::search_text("q", t))
                .transpose()?;
        let after = q.cursor.as_deref().map(decode_cursor).transpose()?;
        Ok(Self {
            from,
            to,
            device: q.device,
            group: q.group,
            user,
            kinds,
            q: text,
            after,
        })
    }

    fn audit_details(&self) -> serde_json::Value {
        serde_json::json!({
            "from": self.from, "to": self.to, "device": self.device, "group": self.group,
            "user": self.user, "kinds": self.kinds, "q": self.q,
        })
    }
}

pub(crate) fn encode_cursor(ts: DateTime<Utc>, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{id}", ts.timestamp_micros()))
}

pub(crate) fn decode_cursor(c: &str) -> ApiResult<(DateTime<Utc>, Uuid)> {
    let bad = || ApiError::invalid("cursor", "is not a cursor this API returned");
    let raw = URL_SAFE_NO_PAD.decode(c.as_bytes()).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (us, id) = text.split_once(':').ok_or_else(bad)?;
    let ts = DateTime::from_timestamp_micros(us.parse().map_err(|_| bad())?).ok_or_else(bad)?;
    Ok((ts, Uuid::parse_str(id).map_err(|_| bad())?))
}

/// How many of the newest rows a text search looks through in order
/// before it asks the trigram index instead.
const TEXT_SCAN_ROWS: i64 = 5000;
/// The most matches of a rare term the trigram step returns (newest
/// first, with every filter applied), more than any page.
const TEXT_MATCH_ROWS: i32 = 20_000;

const COLUMNS: &str =
    "e.ts, e.id, e.device_id, e.kind, e.os_user, e.subject, e.received_at, e.payload";

/// Appends `FROM events e WHERE ...` with every filter but the free text.
fn push_filters(
    b: &mut QueryBuilder<Postgres>,
    tenant: uuid::Uuid,
    s: &Search,
    from: DateTime<Utc>,
) {
    b.push(" FROM events e WHERE e.tenant_id = ")
        .push_bind(tenant);
    b.push(" AND e.ts >= ").push_bind(from);
    b.push(" AND e.ts < ").push_bind(s.to);
    if let Some(d) = s.device {
        b.push(" AND e.device_id = ").push_bind(d);
    }
    if let Some(g) = s.group {
        b.push(" AND e.device_id IN (SELECT d.id FROM devices d WHERE d.tenant_id = ")
            .push_bind(tenant)
            .push(" AND d.group_id IN (WITH RECURSIVE sub(id) AS (SELECT ")
            .push_bind(g)
            .push("::uuid UNION SELECT c.id FROM groups c JOIN sub ON c.parent_id = sub.id WHERE c.tenant_id = ")
            .push_bind(tenant)
            .push(") SELECT id FROM sub))");
    }
    if let Some(u) = &s.user {
        b.push(" AND e.os_user = ").push_bind(u.clone());
    }
    if let Some(k) = &s.kinds {
        b.push(" AND e.kind = ANY(").push_bind(k.clone()).push(")");
    }
    if let Some((ts, id)) = s.after {
        b.push(" AND (e.ts, e.id) < (")
            .push_bind(ts)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
}

/// One page of events, newest first, within the tenant's retention.
///
/// Free text is planned by hand: a term found often is answered fastest by
/// walking the newest rows in key order, a rare or absent one by the
/// trigram indexes. The planner cannot tell the two apart from a `LIKE`
/// pattern, so the search walks the newest [`TEXT_SCAN_ROWS`] first and
/// only when that does not fill the page asks `mamori_events_matching` for
/// the newest [`TEXT_MATCH_ROWS`] matches.
async fn page(tx: &mut TenantTx, s: &Search, limit: i64) -> ApiResult<Vec<EventRow>> {
    let tenant = tx.tenant().as_uuid();
    // Parameters are known per search: plan each one for its own values.
    sqlx::query("SET LOCAL plan_cache_mode = force_custom_plan")
        .execute(&mut **tx)
        .await?;
    let retention: i32 = sqlx::query_scalar("SELECT retention_days FROM tenants WHERE id = $1")
        .bind(tenant)
        .fetch_one(&mut **tx)
        .await?;
    let from = s
        .from
        .max(Utc::now() - Duration::days(i64::from(retention)));
    if from >= s.to {
        return Ok(Vec::new());
    }
    let Some(q) = &s.q else {
        let mut b: QueryBuilder<Postgres> = QueryBuilder::new(format!("SELECT {COLUMNS}"));
        push_filters(&mut b, tenant, s, from);
        b.push(" ORDER BY e.ts DESC, e.id DESC LIMIT ")
            .push_bind(limit);
        return Ok(b.build_query_as::<EventRow>().fetch_all(&mut **tx).await?);
    };
    let pattern = format!("%{}%", validate::like_literal(q));

    // 1. The newest rows in order, filtered.
    let mut b: QueryBuilder<Postgres> =
        QueryBuilder::new(format!("SELECT * FROM (SELECT {COLUMNS}"));
    push_filters(&mut b, tenant, s, from);
    b.push(" ORDER BY e.ts DESC, e.id DESC LIMIT ")
        .push_bind(TEXT_SCAN_ROWS);
    b.push(") w WHERE w.subject ILIKE ")
        .push_bind(pattern.clone());
    b.push(" ORDER BY w.ts DESC, w.id DESC LIMIT ")
        .push_bind(limit);
    let rows = b.build_query_as::<EventRow>().fetch_all(&mut **tx).await?;
    if rows.len() as i64 >= limit {
        return Ok(rows);
    }

    // 2. The trigram indexes over the whole range (through the owner's
    //    function: under row-level security they cannot be used), then the
    //    other filters on those keys.
    let to = match s.after {
        // The cursor's own row is excluded below; keep its instant.
        Some((ts, _)) => s.to.min(
            ts.checked_add_signed(Duration::microseconds(1))
                .unwrap_or(ts),
        ),
        None => s.to,
    };
    let mut b: QueryBuilder<Postgres> = QueryBuilder::new(format!("SELECT {COLUMNS}"));
    push_filters(&mut b, tenant, s, from);
    b.push(" AND (e.ts, e.id) IN (SELECT m.ts, m.id FROM mamori_events_matching(")
        .push_bind(pattern)
        .push(", ")
        .push_bind(from)
        .push(", ")
        .push_bind(to)
        .push(", ")
        .push_bind(s.device)
        .push(", ")
        .push_bind(s.user.clone())
        .push(", ")
        .push_bind(s.kinds.clone())
        .push(", ")
        .push_bind(s.group)
        .push(", ")
        .push_bind(TEXT_MATCH_ROWS)
        .push(") m)");
    b.push(" ORDER BY e.ts DESC, e.id DESC LIMIT ")
        .push_bind(limit);
    Ok(b.build_query_as::<EventRow>().fetch_all(&mut **tx).await?)
}

pub(crate) fn event_view(r: EventRow) -> EventView {
    // The writer keeps the subject in its column only: put it back, so the
    // detail is the event as the agent sent it.
    let payload = mamori_proto::wire::restore_subject(&r.payload, &r.subject)
        .unwrap_or(std::borrow::Cow::Borrowed(&r.payload));
    let detail = DynamicMessage::decode(EVENT_DESCRIPTOR.clone(), &payload[..])
        .ok()
        .and_then(|m| {
            m.serialize_with_options(
                serde_json::value::Serializer,
                &SerializeOptions::new()
                    .use_proto_field_name(true)
                    .skip_default_fields(true),
            )
            .ok()
        })
        .unwrap_or(serde_json::Value::Null);
    EventView {
        id: r.id,
        time: r.ts,
        received_at: r.received_at,
        device_id: r.device_id,
        hostname: String::new(),
        kind: EventKind::from_code(r.kind)
            .map_or_else(|| format!("unknown_{}", r.kind), |k| k.as_str().to_owned()),
        os_user: r.os_user,
        subject: r.subject,
        detail,
    }
}

/// The rows as the API shows them, with their devices' host names (one
/// query for the page).
pub(crate) async fn views(tx: &mut TenantTx, rows: Vec<EventRow>) -> ApiResult<Vec<EventView>> {
    let mut ids: Vec<Uuid> = rows.iter().map(|r| r.device_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let names: std::collections::HashMap<Uuid, String> = if ids.is_empty() {
        Default::default()
    } else {
        sqlx::query_as::<_, (Uuid, String)>(
            "SELECT id, hostname FROM devices WHERE tenant_id = $1 AND id = ANY($2)",
        )
        .bind(tx.tenant().as_uuid())
        .bind(&ids)
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect()
    };
    Ok(rows
        .into_iter()
        .map(|r| {
            let hostname = names.get(&r.device_id).cloned().unwrap_or_default();
            EventView {
                hostname,
                ..event_view(r)
            }
        })
        .collect())
}

/// Search the operation log.
#[utoipa::path(get, path = "/api/v1/events", tag = "logs", params(EventQuery), security(("bearer" = ["read_tenant"])),
    responses((status = 200, body = EventPage), (status = 422, body = crate::error::ErrorBody)))]
pub async fn search(
    State(state): State<Shared>,
    acting: Acting,
    Query(q): Query<EventQuery>,
) -> ApiResult<Json<EventPage>> {
    let s = Search::parse(&q)?;
    let limit = validate::limit(q.limit)?;
    let mut tx = acting.begin(&state).await?;
    let mut rows = page(&mut tx, &s, limit + 1).await?;
    let next = validate::next_page(&mut rows, limit, |r| (r.ts, r.id));
    let mut details = s.audit_details();
    details["returned"] = rows.len().into();
    audit::by(&mut tx, &acting, "events.search", "", details).await?;
    let events = views(&mut tx, rows).await?;
    tx.commit().await?;
    Ok(Json(EventPage {
        events,
        next_cursor: next,
    }))
}

/// What makes a spreadsheet take a cell for a formula when it comes first
/// (after any blanks): the ASCII signs, the full-width ones that Excel in a
/// Japanese locale also honours, and TAB, CR and LF.
const FORMULA_START: [char; 11] = [
    '=', '+', '-', '@', '\t', '\r', '\n', '\u{FF1D}', '\u{FF0B}', '\u{FF0D}', '\u{FF20}',
];

fn csv_field(out: &mut String, value: &str) {
    // Quote always; double inner quotes. A cell that would start a formula
    // is prefixed with ' so that spreadsheets show it as text.
    out.push('"');
    if value
        .trim_start_matches([' ', '\u{3000}'])
        .starts_with(FORMULA_START)
    {
        out.push('\'');
    }
    for c in value.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
}

/// Export the operation log of a time range as CSV (same filters as the
/// search, oldest rows last, at most a million rows).
#[utoipa::path(get, path = "/api/v1/events/export", tag = "logs", params(EventQuery), security(("bearer" = ["read_tenant"])),
    responses((status = 200, content_type = "text/csv", description = "CSV with a header row")))]
pub async fn export(
    State(state): State<Shared>,
    acting: Acting,
    Query(q): Query<EventQuery>,
) -> ApiResult<Response> {
    if q.cursor.is_some() || q.limit.is_some() {
        return Err(ApiError::invalid(
            "cursor",
            "export takes no cursor or limit",
        ));
    }
    let mut s = Search::parse(&q)?;
    {
        let mut tx = acting.begin(&state).await?;
        audit::by(&mut tx, &acting, "events.export", "", s.audit_details()).await?;
        tx.commit().await?;
    }
    let (send, recv) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(4);
    tokio::spawn(async move {
        let mut out =
            String::from("time,received_at,device_id,hostname,kind,os_user,subject,detail\n");
        let mut sent = 0usize;
        loop {
            // A long export stops when its session ends (logout, disable).
            if let Err(e) = state.sessions.check(&state.db, &acting.caller.claims).await {
                let _ = send.send(Err(std::io::Error::other(e.message))).await;
                return;
            }
            let rows = match acting.begin(&state).await {
                Ok(mut tx) => {
                    let r = match page(&mut tx, &s, EXPORT_CHUNK).await {
                        Ok(rows) => {
                            s.after = rows.last().map(|r| (r.ts, r.id));
                            let n = rows.len();
                            views(&mut tx, rows).await.map(|v| (n, v))
                        }
                        Err(e) => Err(e),
                    };
                    let _ = tx.commit().await;
                    r
                }
                Err(e) => Err(e),
            };
            let rows = match rows {
                Ok(r) => r,
                Err(e) => {
                    let _ = send.send(Err(std::io::Error::other(e.message))).await;
                    return;
                }
            };
            let (n, rows) = rows;
            let full = n as i64 == EXPORT_CHUNK;
            for v in rows {
                out.push_str(&v.time.to_rfc3339());
                out.push(',');
                out.push_str(&v.received_at.to_rfc3339());
                out.push(',');
                out.push_str(&v.device_id.to_string());
                out.push(',');
                csv_field(&mut out, &v.hostname);
                out.push(',');
                out.push_str(&v.kind);
                out.push(',');
                csv_field(&mut out, &v.os_user);
                out.push(',');
                csv_field(&mut out, &v.subject);
                out.push(',');
                csv_field(&mut out, &v.detail.to_string());
                out.push('\n');
                sent += 1;
            }
            if send.send(Ok(std::mem::take(&mut out))).await.is_err() {
                return;
            }
            if !full || sent >= EXPORT_MAX_ROWS {
                return;
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(recv);
    Response::builder()
        .header(header::CONTENT_TYPE, "text/csv; charset=utf-8")
        .header(
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"mamori-events.csv\"",
        )
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::internal("export response", e))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Only this action (e.g. `events.search`, `device.revoke`).
    pub action: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub actor_id: Option<Uuid>,
    pub actor_email: String,
    pub actor_role: String,
    pub action: String,
    pub target: String,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    pub client_ip: Option<String>,
    pub request_id: String,
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: Uuid,
    at: DateTime<Utc>,
    actor_id: Option<Uuid>,
    actor_email: String,
    actor_role: String,
    action: String,
    target: String,
    details: String,
    client_ip: Option<String>,
    request_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub next_cursor: Option<String>,
}

/// The tenant's audit trail, newest first: every role that reads the
/// tenant reads it (an auditor's job).
#[utoipa::path(get, path = "/api/v1/audit", tag = "logs", params(AuditQuery), security(("bearer" = ["read_tenant"])),
    responses((status = 200, body = AuditPage)))]
pub async fn audit_log(
    State(state): State<Shared>,
    acting: Acting,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    let limit = validate::limit(q.limit)?;
    let (from, to) = validate::time_range(q.from, q.to, Duration::days(30))?;
    let action = q
        .action
        .as_deref()
        .map(|a| validate::search_text("action", a))
        .transpose()?;
    let after = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let mut tx = acting.begin(&state).await?;
    let mut rows: Vec<AuditRow> = sqlx::query_as(
        "SELECT id, at, actor_id, actor_email, actor_role, action, target, details::text AS details,
                host(client_ip) AS client_ip, request_id
         FROM audit_log
         WHERE tenant_id = $1 AND at >= $2 AND at < $3 AND ($4::text IS NULL OR action = $4)
           AND ($5::timestamptz IS NULL OR (at, id) < ($5, $6))
         ORDER BY at DESC, id DESC LIMIT $7",
    )
    .bind(acting.tenant.as_uuid())
    .bind(from)
    .bind(to)
    .bind(action)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit + 1)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let next = validate::next_page(&mut rows, limit, |r| (r.at, r.id));
    let entries = rows
        .into_iter()
        .map(|r| AuditEntry {
            id: r.id,
            at: r.at,
            actor_id: r.actor_id,
            actor_email: r.actor_email,
            actor_role: r.actor_role,
            action: r.action,
            target: r.target,
            details: serde_json::from_str(&r.details).unwrap_or(serde_json::Value::Null),
            client_ip: r.client_ip,
            request_id: r.request_id,
        })
        .collect();
    Ok(Json(AuditPage {
        entries,
        next_cursor: next,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_that_would_be_formulas_are_shown_as_text() {
        let cell = |v: &str| {
            let mut out = String::new();
            csv_field(&mut out, v);
            out
        };
        for v in [
            "=HYPERLINK(\"http://x\")",
            "+1",
            "-1",
            "@SUM(A1)",
            "\t=1",
            "\r=1",
            "\n=1",
            "\u{FF1D}1+1",
            "\u{FF0B}1",
            "\u{FF20}x",
            "  =1",
            "\u{3000}=1",
        ] {
            assert!(cell(v).starts_with("\"'"), "{v:?} -> {}", cell(v));
        }
        assert_eq!(
            cell("C:\\Secret\\a \"b\".xlsx"),
            "\"C:\\Secret\\a \"\"b\"\".xlsx\""
        );
        assert_eq!(cell("/srv/hr/給与.xlsx"), "\"/srv/hr/給与.xlsx\"");
    }
}
