//! Turning hits into alarms, in the tenant's transaction: each event counts
//! once per rule (replays are recognised), windowed rules wait for their
//! threshold, an open alarm of the same incident within the window takes
//! the count, and a new alarm writes its notifications to the outbox in the
//! same transaction.

use crate::rules::Hit;
use chrono::{DateTime, Utc};
use mamori_policy::document::{Delivery, Notifications};
use mamori_tenancy::TenantTx;
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

/// Where and to whom an alarm happened.
#[derive(Debug, Clone)]
pub struct Occurrence<'a> {
    pub event_id: Uuid,
    pub device: Uuid,
    pub os_user: &'a str,
    pub at: DateTime<Utc>,
}

/// What recording a hit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// This event was counted before (a replayed stream entry).
    Replay,
    /// An app the tenant has seen before, or one seen during the learning
    /// period.
    KnownApp,
    /// A windowed rule below its threshold.
    BelowThreshold,
    /// Counted into an open alarm.
    Counted(Uuid),
    /// A new alarm, with this many notifications queued.
    Raised(Uuid, usize),
}

fn dedupe_key(category: &str, device: Uuid, os_user: &str, detail: &str) -> String {
    let mut key = format!("{category}|{device}|{os_user}|{detail}");
    if key.len() > 600 {
        let mut end = 600;
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        key.truncate(end);
    }
    key
}

/// How hits become alarms and mail.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The deduplication window.
    pub window: Duration,
    pub digest_every: Duration,
    /// "New app" is quiet for a tenant's first this-long.
    pub learning: Duration,
    /// Alarm e-mails a tenant may queue per day (UTC).
    pub mail_quota: u32,
}

/// Records one hit.
pub async fn record(
    tx: &mut TenantTx,
    hit: &Hit,
    at: &Occurrence<'_>,
    settings: &Settings,
    notifications: Option<&Notifications>,
) -> Result<Outcome, sqlx::Error> {
    let (window, learning) = (settings.window, settings.learning);
    let tenant = tx.tenant().as_uuid();
    if hit.category == "new_app" && !first_sighting(tx, &hit.detail, at, learning).await? {
        return Ok(Outcome::KnownApp);
    }
    let key = dedupe_key(hit.category, at.device, at.os_user, &hit.detail);
    let fresh = sqlx::query(
        "INSERT INTO alert_hits (tenant_id, rule, event_id, key, at, amount) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(hit.category)
    .bind(at.event_id)
    .bind(&key)
    .bind(at.at)
    .bind(hit.amount)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if fresh == 0 {
        return Ok(Outcome::Replay);
    }
    // One incident at a time per key, across alerting replicas.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("{tenant}|{key}"))
        .execute(&mut **tx)
        .await?;
    if let Some((limit, span)) = hit.threshold {
        // Every window (e - span, e] that holds this hit, not only the one
        // ending at it: hits may be counted out of order (a batch written
        // late, a tenant's events evaluated partly in the overflow lane),
        // and a later hit counted first must still see the window cross.
        let total: i64 = sqlx::query_scalar(
            "SELECT coalesce(max(w.total), 0)::bigint FROM (
                 SELECT h.at, sum(h.amount) OVER (
                     ORDER BY h.at
                     RANGE BETWEEN make_interval(secs => $4) - interval '1 microsecond' PRECEDING
                               AND CURRENT ROW) AS total
                 FROM alert_hits h
                 WHERE h.rule = $1 AND h.key = $2
                   AND h.at > $3 - make_interval(secs => $4) AND h.at <= $3 + make_interval(secs => $4)
             ) w
             WHERE w.at >= $3",
        )
        .bind(hit.category)
        .bind(&key)
        .bind(at.at)
        .bind(span.as_secs_f64())
        .fetch_one(&mut **tx)
        .await?;
        if total < limit {
            return Ok(Outcome::BelowThreshold);
        }
    }
    let open: Option<Uuid> = sqlx::query_scalar(
        "UPDATE alarms SET count = count + 1, last_at = greatest(last_at, $2),
                           first_at = least(first_at, $2)
         WHERE id = (SELECT id FROM alarms
                     WHERE dedupe_key = $1 AND status = 'open'
                       AND last_at > $2 - make_interval(secs => $3)
                       AND first_at < $2 + make_interval(secs => $3)
                     ORDER BY last_at DESC LIMIT 1)
         RETURNING id",
    )
    .bind(&key)
    .bind(at.at)
    .bind(window.as_secs_f64())
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(id) = open {
        return Ok(Outcome::Counted(id));
    }
    let id = Uuid::now_v7();
    let summary: String = hit.summary.chars().take(1000).collect();
    sqlx::query(
        "INSERT INTO alarms (tenant_id, id, category, device_id, os_user, summary, first_at, last_at,
                             dedupe_key, details)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9)",
    )
    .bind(tenant)
    .bind(id)
    .bind(hit.category)
    .bind(at.device)
    .bind(at.os_user)
    .bind(&summary)
    .bind(at.at)
    .bind(&key)
    .bind(json!({ "event_id": at.event_id, "detail": hit.detail }))
    .execute(&mut **tx)
    .await?;
    let queued = match notifications {
        Some(n) => queue_notifications(tx, id, hit.category, &summary, at, n, settings).await?,
        None => 0,
    };
    Ok(Outcome::Raised(id, queued))
}

/// Records `app` as seen in the tenant; true when it is new there and the
/// tenant is past its learning period (its first `learning` after creation,
/// while the inventory of ordinary apps builds up).
async fn first_sighting(
    tx: &mut TenantTx,
    app: &str,
    at: &Occurrence<'_>,
    learning: Duration,
) -> Result<bool, sqlx::Error> {
    let tenant = tx.tenant().as_uuid();
    let inserted = sqlx::query(
        "INSERT INTO known_apps (tenant_id, app, first_seen, device_id) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(app)
    .bind(at.at)
    .bind(at.device)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(false);
    }
    let learned: bool = sqlx::query_scalar(
        "SELECT created_at < now() - make_interval(secs => $2) FROM tenants WHERE id = $1",
    )
    .bind(tenant)
    .bind(learning.as_secs_f64())
    .fetch_optional(&mut **tx)
    .await?
    .unwrap_or(false);
    Ok(learned)
}

/// Writes one outbox row per recipient of every route that covers the
/// category. E-mail goes only to confirmed addresses (see
/// `mamori_policy::recipients`) and within the tenant's daily quota; the
/// first alarm over the quota each day tells the tenant's administrators.
async fn queue_notifications(
    tx: &mut TenantTx,
    alarm: Uuid,
    category: &str,
    summary: &str,
    at: &Occurrence<'_>,
    n: &Notifications,
    settings: &Settings,
) -> Result<usize, sqlx::Error> {
    let tenant = tx.tenant().as_uuid();
    let digest_every = settings.digest_every;
    let emails: Vec<String> = n
        .routes
        .iter()
        .filter(|r| r.covers(category))
        .flat_map(|r| &r.email)
        .map(|e| mamori_policy::recipients::normalise(e))
        .collect();
    let confirmed: std::collections::HashSet<String> = if emails.is_empty() {
        Default::default()
    } else {
        sqlx::query_scalar(
            "SELECT e FROM unnest($1::text[]) AS e
             WHERE EXISTS (SELECT 1 FROM notification_recipients r
                           WHERE r.email = e AND r.confirmed_at IS NOT NULL)
                OR EXISTS (SELECT 1 FROM users u WHERE u.tenant_id = $2 AND u.email = e
                           AND u.email_verified_at IS NOT NULL AND u.disabled_at IS NULL)",
        )
        .bind(&emails)
        .bind(tenant)
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect()
    };
    // Mails the quota still allows today, counted when first needed.
    let mut mail_left: Option<i64> = None;
    let mut over_quota = false;
    let hostname: Option<String> = sqlx::query_scalar("SELECT hostname FROM devices WHERE id = $1")
        .bind(at.device)
        .fetch_optional(&mut **tx)
        .await?;
    let payload = json!({
        "alarm_id": alarm,
        "category": category,
        "summary": summary,
        "device_id": at.device,
        "hostname": hostname.unwrap_or_default(),
        "os_user": at.os_user,
        "at": at.at,
    });
    let mut queued = 0;
    // One row per distinct (channel, recipient, mode): two routes naming the
    // same address send one message.
    let mut seen = std::collections::HashSet::new();
    for route in n.routes.iter().filter(|r| r.covers(category)) {
        let digest = route.mode == Delivery::Digest;
        let targets = route
            .email
            .iter()
            .map(|e| ("email", mamori_policy::recipients::normalise(e)))
            .chain(route.webhooks.iter().map(|w| ("webhook", w.to_string())));
        for (channel, recipient) in targets {
            if !seen.insert((channel, recipient.clone(), digest)) {
                continue;
            }
            if channel == "email" {
                if !confirmed.contains(&recipient) {
                    metrics::counter!("mamori_alerting_mail_unconfirmed_total").increment(1);
                    continue;
                }
                let left = match mail_left {
                    Some(left) => left,
                    None => i64::from(settings.mail_quota) - mail_today(tx).await?,
                };
                if left <= 0 {
                    over_quota = true;
                    mail_left = Some(0);
                    metrics::counter!("mamori_alerting_mail_over_quota_total").increment(1);
                    continue;
                }
                mail_left = Some(left - 1);
            }
            sqlx::query(
                "INSERT INTO notification_outbox (tenant_id, id, alarm_id, channel, recipient, digest, payload,
                                                  next_attempt_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7,
                         CASE WHEN $6 THEN to_timestamp(ceil(extract(epoch FROM now()) / $8) * $8) ELSE now() END)",
            )
            .bind(tenant)
            .bind(Uuid::now_v7())
            .bind(alarm)
            .bind(channel)
            .bind(&recipient)
            .bind(digest)
            .bind(&payload)
            .bind(digest_every.as_secs_f64())
            .execute(&mut **tx)
            .await?;
            queued += 1;
        }
    }
    if over_quota {
        queued += quota_notice(tx, settings.mail_quota).await?;
    }
    Ok(queued)
}

/// Serialises the tenant's alarm mail until commit, so that consumers on
/// several shards, lanes or replicas cannot each count the same room under
/// the daily quota. Taken first in every alerting transaction of a tenant
/// (before any incident lock, so the two cannot deadlock); it also keeps
/// one tenant's alarms recorded one transaction at a time.
pub async fn lock_mail_quota(tx: &mut TenantTx) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("mail-quota|{}", tx.tenant()))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Alarm e-mails the tenant queued today (UTC).
async fn mail_today(tx: &mut TenantTx) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM notification_outbox
         WHERE tenant_id = $1 AND channel = 'email' AND alarm_id IS NOT NULL
           AND created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
    )
    .bind(tx.tenant().as_uuid())
    .fetch_one(&mut **tx)
    .await
}

/// Tells the tenant's administrators (verified, enabled) that its alarm
/// mail stops for the day, once a day. Returns the mails queued.
async fn quota_notice(tx: &mut TenantTx, quota: u32) -> Result<usize, sqlx::Error> {
    let tenant = tx.tenant().as_uuid();
    let first = sqlx::query(
        "INSERT INTO mail_quota_notices (tenant_id, day)
         VALUES ($1, (now() AT TIME ZONE 'UTC')::date) ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if first == 0 {
        return Ok(0);
    }
    tracing::warn!(tenant_id = %tenant, quota, "tenant reached its daily alarm mail quota");
    let admins: Vec<String> = sqlx::query_scalar(
        "SELECT email FROM users WHERE tenant_id = $1 AND role = 'tenant_admin'
           AND email_verified_at IS NOT NULL AND disabled_at IS NULL",
    )
    .bind(tenant)
    .fetch_all(&mut **tx)
    .await?;
    let payload = json!({ "kind": "mail_quota", "quota": quota });
    for email in &admins {
        sqlx::query(
            "INSERT INTO notification_outbox (tenant_id, id, channel, recipient, payload)
             VALUES ($1, $2, 'email', $3, $4)",
        )
        .bind(tenant)
        .bind(Uuid::now_v7())
        .bind(email)
        .bind(&payload)
        .execute(&mut **tx)
        .await?;
    }
    Ok(admins.len())
}
