//! The projector: keeps one read model up to date from the global feed.
//!
//! Each batch is one transaction: lock the checkpoint row, read the events after it,
//! apply them, move the checkpoint. A crash at any point leaves read model and
//! checkpoint in agreement, so nothing is lost or applied twice. Reading the checkpoint
//! under its row lock (never from memory) is also what makes replay's swap safe: the
//! swap holds that lock while it moves the checkpoint.
//!
//! One projector is active per database and projection: the leader holds a session
//! advisory lock on a dedicated connection; others stand by and take over when that
//! connection (with its process) goes away. Correctness does not depend on it (the row
//! lock serialises batches); it keeps the work in one place.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Projection;
use crate::locks::SessionLock;
use crate::notify::Notifier;
use crate::{Position, StoreError, feed};

#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// Events per transaction.
    pub batch: i64,
    /// How often a standby tries to become leader, and an idle leader re-checks the feed
    /// even without notifications.
    pub poll: Duration,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            batch: 1000,
            poll: Duration::from_secs(2),
        }
    }
}

/// Whether this process's projector is the active one (for logs, metrics, tests).
#[derive(Debug, Default)]
pub struct ProjectorState {
    active: AtomicBool,
}

impl ProjectorState {
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }
}

/// The advisory lock key for a projection's leader.
pub fn leader_key(name: &str) -> String {
    format!("idsync:projector:{name}")
}

/// Run `projection`'s projector until `cancel` fires.
pub async fn run<P: Projection>(
    projection: P,
    pool: PgPool,
    notifier: Notifier,
    config: ProjectorConfig,
    state: Arc<ProjectorState>,
    cancel: CancellationToken,
) {
    let mut standby_logged = false;
    while !cancel.is_cancelled() {
        match SessionLock::try_acquire(&pool, &leader_key(P::NAME)).await {
            Ok(Some(lock)) => {
                tracing::info!(projection = P::NAME, "projector active");
                standby_logged = false;
                state.active.store(true, Ordering::Relaxed);
                let result = lead(&projection, &pool, &notifier, &config, lock, &cancel)
                    .instrument(tracing::info_span!("projector", projection = P::NAME))
                    .await;
                state.active.store(false, Ordering::Relaxed);
                if let Err(err) = result {
                    tracing::warn!(projection = P::NAME, error = %err, "projector stopped; will try again");
                }
            }
            Ok(None) => {
                if !standby_logged {
                    tracing::info!(
                        projection = P::NAME,
                        "another process projects; standing by"
                    );
                    standby_logged = true;
                }
            }
            Err(err) => {
                tracing::warn!(projection = P::NAME, error = %err, "cannot reach the database to project");
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(config.poll) => {}
        }
    }
}

async fn lead<P: Projection>(
    projection: &P,
    pool: &PgPool,
    notifier: &Notifier,
    config: &ProjectorConfig,
    mut lock: SessionLock,
    cancel: &CancellationToken,
) -> Result<(), StoreError> {
    // Subscribe before the first read, so nothing committed in between is slept through.
    let mut signals = notifier.subscribe();
    loop {
        if cancel.is_cancelled() {
            lock.release().await;
            return Ok(());
        }
        let applied = project_batch(projection, pool, config.batch).await?;
        if applied as i64 >= config.batch {
            continue; // more is waiting
        }
        if applied > 0 {
            continue; // cheap re-check; an empty batch then sends us to sleep
        }
        tokio::select! {
            () = cancel.cancelled() => {}
            signal = signals.recv() => {
                // A position, a resync or a lag all mean the same here: read from the
                // checkpoint. A closed channel means the process is shutting down.
                if matches!(signal, Err(RecvError::Closed)) {
                    tokio::time::sleep(config.poll).await;
                }
            }
            () = tokio::time::sleep(config.poll) => {
                // Still the leader? If the lock connection died, the lock is gone and
                // another process may have taken over: stand down.
                lock.check().await?;
            }
        }
    }
}

/// Apply the next batch after the checkpoint, in one transaction. Returns how many
/// events were applied (0 when caught up).
pub async fn project_batch<P: Projection>(
    projection: &P,
    pool: &PgPool,
    batch: i64,
) -> Result<usize, StoreError> {
    let mut tx = pool.begin().await?;
    let checkpoint: i64 = sqlx::query_scalar(
        "SELECT position FROM projection_checkpoints WHERE name = $1 FOR UPDATE",
    )
    .bind(P::NAME)
    .fetch_one(&mut *tx)
    .await?;
    let items = feed::read_after(&mut *tx, Position(checkpoint), batch).await?;
    let Some(last) = items.last().map(|i| i.position.0) else {
        tx.commit().await?;
        return Ok(0);
    };
    projection.apply(&mut tx, P::TABLE, &items).await?;
    sqlx::query(
        "UPDATE projection_checkpoints SET position = $2, updated_at = now() WHERE name = $1",
    )
    .bind(P::NAME)
    .bind(last)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(items.len())
}

/// How far a projection is behind the event log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lag {
    pub checkpoint: i64,
    pub head: i64,
    /// Events not yet applied.
    pub events: i64,
    /// Age of the oldest event not yet applied (0 when caught up).
    pub seconds: f64,
}

pub async fn lag(pool: &PgPool, name: &str) -> Result<Lag, StoreError> {
    let (checkpoint, head, seconds): (i64, i64, f64) = sqlx::query_as(
        "SELECT c.position,
                (SELECT COALESCE(max(global_position), 0) FROM events)::bigint,
                COALESCE((SELECT EXTRACT(EPOCH FROM now() - e.recorded_at)
                            FROM events e WHERE e.global_position = c.position + 1), 0)::float8
           FROM projection_checkpoints c WHERE c.name = $1",
    )
    .bind(name)
    .fetch_one(pool)
    .await?;
    Ok(Lag {
        checkpoint,
        head,
        events: (head - checkpoint).max(0),
        seconds: seconds.max(0.0),
    })
}
