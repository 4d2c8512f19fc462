//! The notifier: leases due rows of the outbox (a lease ends a crashed
//! sender's claim), sends them (e-mail over SMTP, webhooks signed with
//! HMAC-SHA256), and marks them sent; a failure is retried with exponential
//! backoff. Digest rows due together go to each recipient as one message.

use chrono::{DateTime, Utc};
use futures::StreamExt;
use mamori_keywrap::Kek;
use mamori_mail::Mailer;
use mamori_tenancy::{Db, TenantId};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Rows leased per round.
const LEASE_ROWS: i32 = 100;
/// Deliveries in progress at once.
const CONCURRENT_DELIVERIES: usize = 8;

#[derive(Debug)]
pub(crate) struct Notifier {
    pub(crate) db: Db,
    pub(crate) mailer: Mailer,
    pub(crate) http: reqwest::Client,
    pub(crate) kek: Arc<Kek>,
    pub(crate) max_attempts: i32,
    pub(crate) lease_s: u32,
    pub(crate) allow_private: bool,
    pub(crate) public_url: String,
}

/// One message: a recipient's digest rows together, an immediate row alone.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Delivery {
    tenant: Uuid,
    channel: String,
    recipient: String,
    /// The row of an immediate notification; None for a digest.
    single: Option<Uuid>,
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    tenant_id: Uuid,
    id: Uuid,
    channel: String,
    recipient: String,
    digest: bool,
    payload: Value,
    attempts: i32,
}

impl Notifier {
    /// Sends what is due whenever woken, and every `poll`, until `stop`.
    pub(crate) async fn run(self, wake: Arc<Notify>, poll: Duration, stop: CancellationToken) {
        loop {
            if let Err(e) = self.drain().await {
                tracing::warn!(error = %e, "outbox round failed; retrying");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Sends due rows until none is left.
    async fn drain(&self) -> anyhow::Result<()> {
        loop {
            let rows: Vec<Row> = sqlx::query_as("SELECT * FROM mamori_lease_notifications($1, $2)")
                .bind(LEASE_ROWS)
                .bind(self.lease_s.min(i32::MAX as u32) as i32)
                .fetch_all(self.db.pool())
                .await?;
            if rows.is_empty() {
                return Ok(());
            }
            // Immediate rows go one by one; digest rows one message per
            // tenant, channel and recipient.
            let mut groups: BTreeMap<Delivery, Vec<Row>> = BTreeMap::new();
            for r in rows {
                let key = Delivery {
                    tenant: r.tenant_id,
                    channel: r.channel.clone(),
                    recipient: r.recipient.clone(),
                    single: (!r.digest).then_some(r.id),
                };
                groups.entry(key).or_default().push(r);
            }
            // A few deliveries at a time: a slow SMTP server or webhook
            // does not hold up the rest, and one connection's round trips
            // do not bound the rate. Each is settled as soon as it is done.
            let settled: Vec<anyhow::Result<()>> = futures::stream::iter(groups)
                .map(|(d, rows)| async move {
                    let tenant = TenantId::from_uuid(d.tenant);
                    let result = self.send(tenant, &d.channel, &d.recipient, &rows).await;
                    self.settle(tenant, &rows, result).await
                })
                .buffer_unordered(CONCURRENT_DELIVERIES)
                .collect()
                .await;
            settled.into_iter().collect::<anyhow::Result<()>>()?;
        }
    }

    async fn send(
        &self,
        tenant: TenantId,
        channel: &str,
        recipient: &str,
        rows: &[Row],
    ) -> anyhow::Result<()> {
        let alarms: Vec<&Value> = rows.iter().map(|r| &r.payload).collect();
        // The first row's id names the delivery: a resend after a crash
        // carries the same id.
        let delivery = rows[0].id;
        match channel {
            "email" => {
                let (subject, body) = self.email_text(&alarms);
                self.mailer
                    .try_send(
                        recipient,
                        &subject,
                        body,
                        Some(format!("{delivery}@mamori")),
                    )
                    .await
            }
            "webhook" => {
                self.post_webhook(tenant, recipient, delivery, &alarms)
                    .await
            }
            other => anyhow::bail!("unknown channel {other:?}"),
        }
    }

    fn email_text(&self, alarms: &[&Value]) -> (String, String) {
        let line = |a: &Value| {
            format!(
                "{} [{}] {} — {} {}\n  {}/alarms/{}",
                a["at"].as_str().unwrap_or_default(),
                a["category"].as_str().unwrap_or_default(),
                a["summary"].as_str().unwrap_or_default(),
                a["hostname"].as_str().unwrap_or_default(),
                a["os_user"].as_str().unwrap_or_default(),
                self.public_url.trim_end_matches('/'),
                a["alarm_id"].as_str().unwrap_or_default(),
            )
        };
        if let [one] = alarms
            && one["kind"] == "mail_quota"
        {
            return (
                "[Mamori] daily alarm e-mail limit reached".into(),
                format!(
                    "Your tenant has sent {} alarm e-mails today (UTC), its daily limit. Further alarm e-mails are not sent until tomorrow; the alarms are still raised: {}/alarms\n",
                    one["quota"],
                    self.public_url.trim_end_matches('/')
                ),
            );
        }
        if let [one] = alarms {
            let subject = format!(
                "[Mamori] {}: {}",
                one["category"].as_str().unwrap_or_default(),
                one["summary"]
                    .as_str()
                    .unwrap_or_default()
                    .chars()
                    .take(150)
                    .collect::<String>()
            );
            return (subject, format!("{}\n", line(one)));
        }
        let subject = format!("[Mamori] {} alarms", alarms.len());
        let body: Vec<String> = alarms.iter().map(|a| line(a)).collect();
        (subject, format!("{}\n", body.join("\n")))
    }

    async fn post_webhook(
        &self,
        tenant: TenantId,
        webhook: &str,
        delivery: Uuid,
        alarms: &[&Value],
    ) -> anyhow::Result<()> {
        let id: Uuid = webhook.parse()?;
        let mut tx = self.db.begin_tenant(tenant).await?;
        let row: Option<(String, Vec<u8>)> =
            sqlx::query_as("SELECT url, secret_wrapped FROM webhooks WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        tx.commit().await?;
        let Some((url, sealed)) = row else {
            anyhow::bail!(Permanent("the webhook was deleted".into()));
        };
        // The form (and a literal address) is checked again at every
        // delivery; a name is resolved and vetted by the client's resolver
        // (`VettedDns`) as it connects.
        mamori_policy::webhook::check_url(&url, self.allow_private)
            .map_err(|e| Permanent(format!("webhook URL refused: {e}")))?;
        let secret = self.kek.open(&format!("webhook:{id}"), &sealed)?;
        let text: Vec<String> = alarms
            .iter()
            .map(|a| {
                format!(
                    "[{}] {} ({} {})",
                    a["category"].as_str().unwrap_or_default(),
                    a["summary"].as_str().unwrap_or_default(),
                    a["hostname"].as_str().unwrap_or_default(),
                    a["os_user"].as_str().unwrap_or_default()
                )
            })
            .collect();
        // `text` is what Slack and Teams incoming webhooks show; `alarms`
        // is for programs.
        let body = serde_json::to_vec(&json!({
            "text": format!("Mamori: {}", text.join("\n")),
            "delivery_id": delivery,
            "alarms": alarms,
        }))?;
        let status =
            mamori_policy::webhook::post_signed(&self.http, &url, &secret, delivery, body).await?;
        if !status.is_success() {
            anyhow::bail!("webhook answered {status}");
        }
        Ok(())
    }

    /// Marks the rows sent, or schedules the next attempt.
    async fn settle(
        &self,
        tenant: TenantId,
        rows: &[Row],
        result: anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let mut tx = self.db.begin_tenant(tenant).await?;
        match &result {
            Ok(()) => {
                sqlx::query(
                    "UPDATE notification_outbox SET sent_at = now(), attempts = attempts + 1, last_error = NULL
                     WHERE id = ANY($1)",
                )
                .bind(&ids)
                .execute(&mut *tx)
                .await?;
                metrics::counter!("mamori_alerting_notifications_sent_total", "channel" => rows[0].channel.clone())
                    .increment(rows.len() as u64);
            }
            Err(e) => {
                let permanent = e.downcast_ref::<Permanent>().is_some();
                let attempts = rows.iter().map(|r| r.attempts).max().unwrap_or(0) + 1;
                let give_up = permanent || attempts >= self.max_attempts;
                let delay_s = 2f64.powi(attempts.min(12)).min(3600.0);
                let next: Option<DateTime<Utc>> = (!give_up).then(|| {
                    Utc::now() + chrono::Duration::milliseconds((delay_s * 1000.0) as i64)
                });
                sqlx::query(
                    "UPDATE notification_outbox
                     SET attempts = attempts + 1, last_error = $2,
                         next_attempt_at = coalesce($3, 'infinity'::timestamptz)
                     WHERE id = ANY($1)",
                )
                .bind(&ids)
                .bind(format!("{e:#}").chars().take(500).collect::<String>())
                .bind(next)
                .execute(&mut *tx)
                .await?;
                if give_up {
                    tracing::error!(tenant_id = %tenant, channel = %rows[0].channel, recipient = %rows[0].recipient, attempts, error = format!("{e:#}"), "notification given up");
                } else {
                    tracing::warn!(tenant_id = %tenant, channel = %rows[0].channel, attempts, retry_in_s = delay_s, error = format!("{e:#}"), "notification failed; will retry");
                }
                metrics::counter!("mamori_alerting_notification_failures_total", "channel" => rows[0].channel.clone())
                    .increment(rows.len() as u64);
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

/// A failure that retrying cannot fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Permanent(String);

pub use mamori_policy::webhook::sign;
