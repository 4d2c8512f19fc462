//! The raw-insert baseline: the writer's own INSERT .. unnest statement,
//! the same rows shape, on the same database, with no services in between.

use mamori_proto::agent::v1::StreamBatch;
use mamori_tenancy::{Db, DeviceId};
use mamori_writer::store::{Batch, Duplicates, insert_rows};
use prost::Message;
use rand::SeedableRng;
use std::time::Instant;

/// Inserts `rows` rows in batches of `batch` rows over `connections`
/// parallel transactions; returns rows/s.
pub async fn measure(
    db: &Db,
    rows: usize,
    batch: usize,
    connections: usize,
) -> anyhow::Result<f64> {
    let tenant = mamori_registry::create_tenant(db, "loadtest raw").await?;
    let device = DeviceId::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let now_us = chrono::Utc::now().timestamp_micros();
    // The writer commits a read of up to 32 stream entries at a time; group
    // the same way so the comparison is like for like.
    let per_tx = batch * 32;
    let mut prepared = Vec::new();
    let mut left = rows;
    while left > 0 {
        let n = left.min(per_tx);
        left -= n;
        let mut b = Batch::default();
        let mut remaining = n;
        while remaining > 0 {
            let k = remaining.min(batch);
            remaining -= k;
            let sb = StreamBatch {
                tenant_id: tenant.to_string(),
                device_id: device.to_string(),
                sequence: 1,
                received_at: Some(prost_types::Timestamp {
                    seconds: now_us / 1_000_000,
                    nanos: 0,
                }),
                traceparent: String::new(),
                events: (0..k)
                    .map(|_| crate::events::event(&mut rng, now_us))
                    .collect(),
            };
            b.add_entry(&sb.encode_to_vec())?;
        }
        prepared.push(b);
    }
    let started = Instant::now();
    let chunks: Vec<Vec<Batch>> = {
        let k = connections.max(1);
        let mut c: Vec<Vec<Batch>> = (0..k).map(|_| Vec::new()).collect();
        for (i, b) in prepared.into_iter().enumerate() {
            c[i % k].push(b);
        }
        c
    };
    let mut tasks = Vec::new();
    for chunk in chunks {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for b in chunk {
                for (t, r) in &b.tenants {
                    let mut tx = db.begin_tenant(*t).await?;
                    insert_rows(&mut tx, *t, r, Duplicates::Fail).await?;
                    tx.commit().await?;
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}
