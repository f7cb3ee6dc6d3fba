//! The persistence writer: everything the engine stores goes through one queue to one writer task,
//! which commits it in batches (group commit). One writer keeps each trip's events in order; a
//! batch is as large as what queued while the previous one was committing, so the cost of a commit
//! is shared by everyone waiting for it.
//!
//! When the database fails, the writer keeps the batch and retries it with exponential backoff
//! (50 ms doubling to 5 s), marks the database down (`/ready` says so), and the queue grows
//! meanwhile: nothing is dropped. The queue is bounded by admission, not by dropping: above
//! `database.max_pending` queued writes, new trip requests are refused with 503 while the trips
//! already running carry on. Sampled positions are the one lossy write: above the bound they are
//! skipped and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};
use tokio::sync::{mpsc, oneshot, watch};

use super::store::{Store, Write};
use crate::metrics::{
    DB_BATCH_SIZE, DB_COMMIT_DURATION, DB_PENDING, DB_WRITE_ERRORS, POSITIONS_SKIPPED,
};

/// Most writes one batch carries.
const MAX_BATCH: usize = 2_048;
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

struct Job {
    write: Write,
    durable: Option<oneshot::Sender<()>>,
}

/// The handle the engine writes through. Cheap to clone.
#[derive(Clone)]
pub struct Persistence {
    tx: mpsc::UnboundedSender<Job>,
    pending: Arc<AtomicUsize>,
    healthy: Arc<AtomicBool>,
    max_pending: usize,
    idle: watch::Receiver<bool>,
    store: Store,
    committed: Arc<tokio::sync::Notify>,
}

/// The write was not taken: the engine is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the persistence writer has stopped")]
pub struct WriterGone;

impl Persistence {
    /// Starts the writer task on the current runtime.
    #[must_use]
    pub fn start(store: Store, max_pending: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = Arc::new(AtomicUsize::new(0));
        let healthy = Arc::new(AtomicBool::new(true));
        let (idle_tx, idle) = watch::channel(true);
        let committed = Arc::new(tokio::sync::Notify::new());
        actix_rt::spawn(run(
            store.clone(),
            rx,
            Arc::clone(&pending),
            Arc::clone(&healthy),
            idle_tx,
            Arc::clone(&committed),
        ));
        Self {
            tx,
            pending,
            healthy,
            max_pending,
            idle,
            store,
            committed,
        }
    }

    /// Notified after every commit (the outbox publisher waits on it).
    #[must_use]
    pub fn committed(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.committed)
    }

    /// The store behind the writer (for reads).
    #[must_use]
    pub const fn store(&self) -> &Store {
        &self.store
    }

    fn push(&self, write: Write, durable: Option<oneshot::Sender<()>>) -> Result<(), WriterGone> {
        self.pending.fetch_add(1, Ordering::AcqRel);
        gauge!(DB_PENDING).increment(1.0);
        self.tx.send(Job { write, durable }).map_err(|_| {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            gauge!(DB_PENDING).decrement(1.0);
            WriterGone
        })
    }

    /// Queues a write behind the hot path.
    ///
    /// # Errors
    ///
    /// [`WriterGone`] once the engine has stopped.
    pub fn write(&self, write: Write) -> Result<(), WriterGone> {
        self.push(write, None)
    }

    /// Queues a write and returns a receiver that fires once it is committed.
    ///
    /// # Errors
    ///
    /// [`WriterGone`] once the engine has stopped.
    pub fn write_durable(&self, write: Write) -> Result<oneshot::Receiver<()>, WriterGone> {
        let (tx, rx) = oneshot::channel();
        self.push(write, Some(tx))?;
        Ok(rx)
    }

    /// Queues a sampled position unless the queue is over its bound (then it is skipped).
    pub fn sample(&self, write: Write) {
        if self.is_full() {
            counter!(POSITIONS_SKIPPED).increment(1);
        } else {
            let _ = self.write(write);
        }
    }

    /// Writes queued and not yet committed.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Whether the queue is over `database.max_pending`.
    #[must_use]
    pub fn is_full(&self) -> bool {
        self.pending() >= self.max_pending
    }

    /// Whether the last commit succeeded.
    #[must_use]
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Waits until everything queued so far is committed, at most `limit`. True if it was.
    pub async fn flush(&self, limit: Duration) -> bool {
        let mut idle = self.idle.clone();
        tokio::time::timeout(limit, async {
            loop {
                if self.pending() == 0 {
                    return;
                }
                if idle.changed().await.is_err() {
                    return;
                }
            }
        })
        .await
        .is_ok()
            && self.pending() == 0
    }
}

async fn run(
    store: Store,
    mut rx: mpsc::UnboundedReceiver<Job>,
    pending: Arc<AtomicUsize>,
    healthy: Arc<AtomicBool>,
    idle: watch::Sender<bool>,
    committed: Arc<tokio::sync::Notify>,
) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut writes: Vec<Write> = Vec::with_capacity(MAX_BATCH);
    loop {
        if rx.recv_many(&mut jobs, MAX_BATCH).await == 0 {
            return;
        }
        writes.clear();
        writes.extend(jobs.iter().map(|j| j.write.clone()));
        let mut backoff = FIRST_BACKOFF;
        loop {
            let started = Instant::now();
            match store.write_batch(&writes).await {
                Ok(()) => {
                    histogram!(DB_COMMIT_DURATION).record(started.elapsed().as_secs_f64());
                    histogram!(DB_BATCH_SIZE).record(writes.len() as f64);
                    committed.notify_one();
                    if !healthy.swap(true, Ordering::AcqRel) {
                        tracing::info!("database is back; draining the queue");
                    }
                    break;
                }
                Err(e) => {
                    counter!(DB_WRITE_ERRORS).increment(1);
                    if healthy.swap(false, Ordering::AcqRel) {
                        tracing::error!(error = %e, queued = pending.load(Ordering::Acquire), "database write failed; retrying with backoff");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        let n = jobs.len();
        for job in jobs.drain(..) {
            if let Some(durable) = job.durable {
                let _ = durable.send(());
            }
        }
        pending.fetch_sub(n, Ordering::AcqRel);
        gauge!(DB_PENDING).decrement(n as f64);
        let _ = idle.send(pending.load(Ordering::Acquire) == 0);
    }
}
