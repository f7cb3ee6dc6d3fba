//! The Redis snapshot of driver positions: each driver's last position and status under
//! `{redis.key_prefix}driver:{id}` with a TTL of `redis.ttl_s`, written behind in pipelined
//! batches. After a restart the engine reads it back and puts online drivers into the index before
//! it reports ready, so nearby answers at once instead of waiting for every app to report again.
//!
//! Updates are coalesced: driver actors send at most one per `redis.snapshot_interval_ms` per driver
//! (and every status change), and the writer keeps only the newest per driver in each batch. A
//! snapshot is a cache: a failed batch is counted and logged, and the next update replaces it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use metrics::counter;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::metrics::{SNAPSHOT_ERRORS, SNAPSHOT_WRITES};

/// Most drivers one pipeline carries.
const MAX_BATCH: usize = 4_096;

/// A driver as the snapshot keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotEntry {
    /// The driver.
    pub driver_id: Uuid,
    /// Vehicle type.
    pub vehicle_type: String,
    /// `online` / `offline`.
    pub status: String,
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lng: f64,
    /// Heading, degrees.
    pub heading: Option<f32>,
    /// Speed, m/s.
    pub speed_mps: Option<f32>,
    /// When the app took the position, epoch ms.
    pub ts_ms: i64,
    /// When the engine received it, epoch ms.
    pub received_ms: i64,
}

/// The snapshot writer's handle. Cheap to clone.
#[derive(Clone)]
pub struct Snapshot {
    tx: mpsc::UnboundedSender<SnapshotEntry>,
    healthy: Arc<AtomicBool>,
    connection: ConnectionManager,
    prefix: String,
}

impl Snapshot {
    /// Connects to `url` and starts the writer on the current runtime.
    ///
    /// # Errors
    ///
    /// Redis's error when the server cannot be reached.
    pub async fn connect(url: &str, prefix: &str, ttl_s: u64) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let connection = client.get_connection_manager().await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let healthy = Arc::new(AtomicBool::new(true));
        actix_rt::spawn(run(
            connection.clone(),
            rx,
            prefix.to_owned(),
            ttl_s,
            Arc::clone(&healthy),
        ));
        Ok(Self {
            tx,
            healthy,
            connection,
            prefix: prefix.to_owned(),
        })
    }

    /// Queues a driver's latest state.
    pub fn record(&self, entry: SnapshotEntry) {
        let _ = self.tx.send(entry);
    }

    /// Whether the last batch was written.
    #[must_use]
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Whether Redis answers now.
    pub async fn ping(&self) -> bool {
        let mut con = self.connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut con)
            .await
            .is_ok()
    }

    /// Every driver in the snapshot.
    ///
    /// # Errors
    ///
    /// Redis's error.
    pub async fn load(&self) -> redis::RedisResult<Vec<SnapshotEntry>> {
        let mut con = self.connection.clone();
        let pattern = format!("{}driver:*", self.prefix);
        let mut cursor: u64 = 0;
        let mut entries = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1_000)
                .query_async(&mut con)
                .await?;
            if !keys.is_empty() {
                let values: Vec<Option<String>> =
                    redis::cmd("MGET").arg(&keys).query_async(&mut con).await?;
                entries.extend(
                    values
                        .into_iter()
                        .flatten()
                        .filter_map(|v| serde_json::from_str::<SnapshotEntry>(&v).ok()),
                );
            }
            if next == 0 {
                return Ok(entries);
            }
            cursor = next;
        }
    }
}

async fn run(
    mut connection: ConnectionManager,
    mut rx: mpsc::UnboundedReceiver<SnapshotEntry>,
    prefix: String,
    ttl_s: u64,
    healthy: Arc<AtomicBool>,
) {
    let mut buffer = Vec::with_capacity(MAX_BATCH);
    loop {
        if rx.recv_many(&mut buffer, MAX_BATCH).await == 0 {
            return;
        }
        let newest: HashMap<Uuid, SnapshotEntry> =
            buffer.drain(..).map(|e| (e.driver_id, e)).collect();
        let mut pipe = redis::pipe();
        for (id, entry) in &newest {
            let value = serde_json::to_string(entry).unwrap_or_default();
            pipe.cmd("SET")
                .arg(format!("{prefix}driver:{id}"))
                .arg(value)
                .arg("EX")
                .arg(ttl_s)
                .ignore();
        }
        match pipe.query_async::<()>(&mut connection).await {
            Ok(()) => {
                counter!(SNAPSHOT_WRITES).increment(newest.len() as u64);
                healthy.store(true, Ordering::Release);
            }
            Err(e) => {
                counter!(SNAPSHOT_ERRORS).increment(1);
                if healthy.swap(false, Ordering::AcqRel) {
                    tracing::warn!(error = %e, "driver snapshot write failed");
                }
            }
        }
    }
}
