//! Daily partitions of `events`, created ahead of time (and on demand when
//! an event arrives for a day that has none, e.g. from a long-offline PC).

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

/// Yesterday to a week ahead, every hour, until `stop`.
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
    }
}
