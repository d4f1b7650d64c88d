//! Group commit for intake. Each request hands its row to a queue and waits; a few
//! writer tasks take whatever is queued (up to `MAX_BATCH`), insert it with one
//! statement in one transaction, and answer every waiting request after the commit.
//!
//! Durability is unchanged: a request is still answered 202 only after its own row
//! committed. What changes is cost: under load, one commit (one WAL flush) serves many
//! webhooks instead of one; with a single request in flight the batch is that request
//! and nothing waits for company.

use std::sync::Arc;
use std::time::Duration;

use idsync_store::StoreError;
use idsync_store::inbox::{self, Inserted, NewItem};
use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::task::TaskTracker;

/// Most rows in one INSERT.
const MAX_BATCH: usize = 512;
/// Requests waiting for a writer before senders are made to wait (back-pressure).
const QUEUE_CAPACITY: usize = 8192;
/// How long a writer waits for a database connection before answering its batch 503.
/// Shorter than the pool's own timeout: during an outage a request waits at most for
/// the batch in flight and its own (about twice this), and Authentik retries a 503 far
/// sooner than a hung request times out on its side.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// Serve is shutting down: the caller should retry (here later, or elsewhere).
    #[error("intake is shutting down")]
    ShuttingDown,
    /// The writer task ended without answering (it panicked).
    #[error("the intake writer stopped")]
    WriterStopped,
    /// The batch could not be written. Shared: every webhook of the batch gets it.
    #[error(transparent)]
    Store(Arc<StoreError>),
}

impl IntakeError {
    /// Temporary (the database is unreachable, or serve stops): the sender should retry.
    pub fn is_unavailable(&self) -> bool {
        match self {
            IntakeError::ShuttingDown => true,
            IntakeError::WriterStopped => false,
            IntakeError::Store(e) => e.is_unavailable(),
        }
    }
}

struct Pending {
    item: NewItem,
    reply: oneshot::Sender<Result<Inserted, IntakeError>>,
}

#[derive(Clone)]
pub struct IntakeQueue {
    tx: mpsc::Sender<Pending>,
}

impl IntakeQueue {
    /// Start `writers` writer tasks on `tracker`. They stop when the last clone of the
    /// queue is dropped (the router's, once the server has stopped) and everything
    /// queued has been written, so shutdown answers every request that was accepted into
    /// the queue, and serve waits for that before it exits.
    pub fn start(pool: PgPool, writers: usize, tracker: &TaskTracker) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..writers.max(1) {
            tracker.spawn(write_batches(pool.clone(), rx.clone()));
        }
        Self { tx }
    }

    /// Store `item`; returns after its row committed.
    pub async fn submit(&self, item: NewItem) -> Result<Inserted, IntakeError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { item, reply })
            .await
            .map_err(|_| IntakeError::ShuttingDown)?;
        answer.await.map_err(|_| IntakeError::WriterStopped)?
    }
}

async fn write_batches(pool: PgPool, rx: Arc<Mutex<mpsc::Receiver<Pending>>>) {
    loop {
        // Take the lock only to collect a batch, so other writers can collect the next
        // one while this one is being written.
        let batch = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            let mut batch = Vec::with_capacity(16);
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            batch
        };
        let (items, replies): (Vec<NewItem>, Vec<_>) =
            batch.into_iter().map(|p| (p.item, p.reply)).unzip();
        match write(&pool, items).await {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
            }
            Err(err) => {
                let unavailable = err.is_unavailable();
                if !unavailable {
                    tracing::error!(error = %err, rows = replies.len(), "could not store webhooks");
                }
                let shared = Arc::new(err);
                let error = || IntakeError::Store(shared.clone());
                for reply in replies {
                    let _ = reply.send(Err(error()));
                }
                if unavailable {
                    // Everything queued meanwhile would only wait for the same timeout
                    // batch after batch: answer it 503 now (the senders retry). Later
                    // arrivals get a fresh attempt.
                    let mut rx = rx.lock().await;
                    let mut refused = 0;
                    while let Ok(pending) = rx.try_recv() {
                        let _ = pending.reply.send(Err(error()));
                        refused += 1;
                    }
                    if refused > 0 {
                        tracing::debug!(
                            refused,
                            "database unavailable: queued webhooks answered 503"
                        );
                    }
                }
            }
        }
    }
}

/// One batch on a connection acquired within [`ACQUIRE_TIMEOUT`].
async fn write(
    pool: &PgPool,
    items: Vec<NewItem>,
) -> Result<Vec<Inserted>, idsync_store::StoreError> {
    let mut conn = match tokio::time::timeout(ACQUIRE_TIMEOUT, pool.acquire()).await {
        Ok(conn) => conn?,
        Err(_) => return Err(sqlx::Error::PoolTimedOut.into()),
    };
    inbox::insert_many_with(&mut conn, items).await
}
