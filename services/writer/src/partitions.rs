//! Daily partitions of `events`, created ahead of time (and on demand when
//! an event arrives for a day that has none, e.g. from a long-offline PC),
//! and the retention of each tenant's operation log.

use chrono::{Duration, NaiveDate, Utc};
use mamori_tenancy::Db;

/// Creates the partitions for [from, to]; returns how many were new.
pub async fn ensure_partitions(
    db: &Db,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT mamori_ensure_event_partitions($1, $2)")
        .bind(from)
        .bind(to)
        .fetch_one(db.pool())
        .await
}

/// Builds the search indexes of every finished day's partition that lacks
/// them (the current day takes inserts with its primary key alone).
/// Returns how many partitions were indexed.
pub async fn index_finished_days(db: &Db) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT mamori_index_event_partitions($1)")
        .bind(Utc::now().date_naive())
        .fetch_one(db.pool())
        .await
}

/// Rows deleted per tenant per retention call.
const RETENTION_BATCH: i32 = 50_000;

/// Drops partitions older than every tenant's retention and deletes each
/// tenant's expired events and file-trace rows (at most one batch of each
/// per tenant per call).
/// Returns the rows deleted.
pub async fn apply_retention(db: &Db) -> Result<i64, sqlx::Error> {
    // The file trace's expired rows go with the events'.
    sqlx::query_scalar("SELECT mamori_apply_retention($1) + mamori_trim_file_trace($1)")
        .bind(RETENTION_BATCH)
        .fetch_one(db.pool())
        .await
}

/// Yesterday to a week ahead, indexes of finished days, and retention,
/// every hour, until `stop`.
pub(crate) async fn maintain(db: Db, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let today = Utc::now().date_naive();
        match ensure_partitions(&db, today - Duration::days(1), today + Duration::days(7)).await {
            Ok(n) if n > 0 => tracing::info!(created = n, "event partitions created ahead"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot create event partitions; will retry"),
        }
        let started = std::time::Instant::now();
        match index_finished_days(&db).await {
            Ok(n) if n > 0 => tracing::info!(
                partitions = n,
                seconds = started.elapsed().as_secs_f64(),
                "search indexes built for finished days"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot index finished days; will retry"),
        }
        // Keep deleting while whole batches come back, then wait an hour.
        loop {
            match apply_retention(&db).await {
                Ok(n) if n > 0 => {
                    tracing::info!(deleted = n, "expired events deleted");
                    if n < i64::from(RETENTION_BATCH) || stop.is_cancelled() {
                        break;
                    }
                }
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot apply retention; will retry");
                    break;
                }
            }
        }
    }
}
