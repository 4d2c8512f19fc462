//! The writer's handling of stream entries: decode the batches, write them
//! to PostgreSQL in one transaction. Reading, claiming and acking are the
//! shared [`mamori_streams::Consumer`]'s.

use crate::store::{self, Batch};
use mamori_streams::{BATCH_FIELD, Entry, Handler};
use mamori_tenancy::Db;
use std::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) key: String,
    pub(crate) db: Db,
}

impl Handler for Writer {
    /// Writes the entries in one transaction; an entry that can never be
    /// written is returned for the dead letters.
    async fn handle(&self, entries: &[Entry]) -> Result<Vec<(String, String)>, BoxError> {
        let mut batch = Batch::default();
        let mut dead = Vec::new();
        let mut parents = Vec::new();
        for entry in entries {
            let added = match &entry.bytes {
                Some(b) => batch.add_entry(b).map_err(|e| e.to_string()),
                None => Err(format!("entry has no field {BATCH_FIELD:?}")),
            };
            match added {
                Ok(tp) if !tp.is_empty() => parents.push(tp),
                Ok(_) => {}
                Err(why) => dead.push((entry.id.clone(), why)),
            }
        }
        let started = Instant::now();
        let inserted = self.write(&batch).await?;
        let elapsed = started.elapsed();
        metrics::histogram!("mamori_writer_commit_seconds").record(elapsed.as_secs_f64());
        metrics::counter!("mamori_writer_events_committed_total").increment(inserted);
        metrics::counter!("mamori_writer_events_duplicate_total")
            .increment(batch.events() as u64 - inserted);
        for tp in parents {
            let span = tracing::info_span!("batch_committed", stream = %self.key, commit_ms = elapsed.as_millis() as u64);
            mamori_telemetry::set_parent_from_traceparent(&span, &tp);
        }
        Ok(dead)
    }
}

impl Writer {
    async fn write(&self, batch: &Batch) -> anyhow::Result<u64> {
        match store::write(&self.db, batch).await {
            Err(e) if store::is_missing_partition(&e) => {
                let (from, to) = batch.day_range().expect("a failed write had rows");
                let created = crate::ensure_partitions(&self.db, from, to).await?;
                tracing::info!(%from, %to, created, "created partitions on demand");
                Ok(store::write(&self.db, batch).await?)
            }
            other => Ok(other?),
        }
    }
}
