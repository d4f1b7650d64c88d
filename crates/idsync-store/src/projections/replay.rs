//! Rebuilding a read model from position 0 without readers ever seeing it half built.
//!
//! The new model is built in `<table>_rebuild` beside the live one by the projection's
//! [`rebuild`](Projection::rebuild) (set-based batches by default; the users projection
//! folds the log in memory and writes each row once). Then one transaction takes the
//! projection's checkpoint row lock (so the live projector, which takes it for every
//! batch, waits), applies whatever arrived in the meantime, swaps the tables by renaming
//! them, and moves the checkpoint. Readers see either the old model or the new one; the
//! live projector resumes on the new one from the new checkpoint.

use std::time::Instant;

use sqlx::{Connection, PgConnection, PgPool};

use super::Projection;
use crate::locks::SessionLock;
use crate::{Position, StoreError, feed};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayReport {
    pub events: u64,
    pub position: i64,
    pub seconds: f64,
}

/// Progress of a replay: events applied so far and the log's head when last looked at
/// (it grows while events keep arriving).
pub trait Progress {
    fn update(&mut self, done: u64, head: i64);
}

impl<F: FnMut(u64, i64)> Progress for F {
    fn update(&mut self, done: u64, head: i64) {
        self(done, head)
    }
}

/// What a [`Projection::rebuild`] reports its steps to: counts the events applied and
/// keeps the log's head current for the display.
pub struct RebuildProgress<'a> {
    done: u64,
    head: i64,
    sink: &'a mut (dyn Progress + Send),
}

impl<'a> RebuildProgress<'a> {
    /// Starts at the current head of the log.
    pub async fn start(
        conn: &mut PgConnection,
        sink: &'a mut (dyn Progress + Send),
    ) -> Result<Self, StoreError> {
        let head = feed::head(&mut *conn).await?.0;
        sink.update(0, head);
        Ok(Self {
            done: 0,
            head,
            sink,
        })
    }

    /// `events` more were applied, up to `position`.
    pub async fn advanced(
        &mut self,
        conn: &mut PgConnection,
        events: u64,
        position: i64,
    ) -> Result<(), StoreError> {
        self.done += events;
        if position >= self.head {
            self.head = feed::head(&mut *conn).await?.0;
        }
        self.sink.update(self.done, self.head);
        Ok(())
    }

    /// Events applied so far.
    pub fn done(&self) -> u64 {
        self.done
    }
}

pub async fn replay<P: Projection>(
    projection: &P,
    pool: &PgPool,
    batch: i64,
    mut progress: impl Progress + Send,
) -> Result<ReplayReport, StoreError> {
    let started = Instant::now();
    let batch = batch.clamp(1, feed::MAX_PAGE * 50);
    let table = P::TABLE;
    let rebuild = format!("{table}_rebuild");
    // One replay per projection at a time: a second would drop the first's table. The
    // whole replay runs on the lock's connection.
    let Some(mut conn) =
        SessionLock::try_acquire(pool, &format!("idsync:replay:{}", P::NAME)).await?
    else {
        return Err(StoreError::Busy(format!(
            "another replay of {} is running",
            P::NAME
        )));
    };

    sqlx::query(&format!("DROP TABLE IF EXISTS {rebuild}"))
        .execute(&mut *conn)
        .await?;
    sqlx::query(&format!(
        "CREATE TABLE {rebuild} (LIKE {table} INCLUDING ALL)"
    ))
    .execute(&mut *conn)
    .await?;

    // The bulk of the work: everything up to about now, built by the projection.
    let (mut position, mut done) = {
        let mut progress = RebuildProgress::start(&mut conn, &mut progress).await?;
        let position = projection
            .rebuild(&mut conn, &rebuild, batch, &mut progress)
            .await?;
        (position, progress.done())
    };

    // The swap. Waiting for the checkpoint row lock means waiting for the live
    // projector's current batch; after our commit it continues from our position.
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT position FROM projection_checkpoints WHERE name = $1 FOR UPDATE")
        .bind(P::NAME)
        .fetch_one(&mut *tx)
        .await?;
    loop {
        let items = feed::read_after_unbounded(&mut *tx, Position(position), batch).await?;
        let Some(last) = items.last().map(|i| i.position.0) else {
            break;
        };
        projection.apply(&mut tx, &rebuild, &items).await?;
        position = last;
        done += items.len() as u64;
    }
    let old = format!("{table}_replaced");
    for statement in [
        format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"),
        format!("ALTER TABLE {table} RENAME TO {old}"),
        format!("ALTER TABLE {rebuild} RENAME TO {table}"),
        format!("DROP TABLE {old}"),
    ] {
        sqlx::query(&statement).execute(&mut *tx).await?;
    }
    // `LIKE ... INCLUDING ALL` named the copied indexes after the rebuild table; give
    // them their usual names back so every replay leaves the same schema.
    let prefix = format!("{rebuild}_");
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexname FROM pg_indexes WHERE tablename = $1 AND starts_with(indexname, $2)",
    )
    .bind(table)
    .bind(&prefix)
    .fetch_all(&mut *tx)
    .await?;
    for index in indexes {
        let renamed = format!("{table}_{}", &index[prefix.len()..]);
        sqlx::query(&format!(r#"ALTER INDEX "{index}" RENAME TO "{renamed}""#))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "UPDATE projection_checkpoints SET position = $2, updated_at = now() WHERE name = $1",
    )
    .bind(P::NAME)
    .bind(position)
    .execute(&mut *tx)
    .await?;
    // Every process may hold rows of the old table (the users cache): delivered at
    // commit, this tells them to trust none of it.
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(crate::notify::CHANNEL)
        .bind(crate::notify::RESYNC_PAYLOAD)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    progress.update(done, position);
    conn.release().await;
    Ok(ReplayReport {
        events: done,
        position,
        seconds: started.elapsed().as_secs_f64(),
    })
}
