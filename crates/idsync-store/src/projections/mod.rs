//! Read models fed from the global event feed, each with a checkpoint written in the
//! same transaction as its change.

pub mod projector;
pub mod replay;
pub mod users;
pub mod users_cache;
mod users_json;

use std::future::Future;

use sqlx::PgConnection;

use crate::{FeedItem, Position, StoreError, feed};
use replay::RebuildProgress;

/// A read model. Adding one is adding a type that implements this (and its migration):
/// the projector, replay and lag reporting are shared.
pub trait Projection: Send + Sync + 'static {
    /// Its name: the checkpoint row and `idsync replay --projection NAME`.
    const NAME: &'static str;
    /// The table it owns; replay builds `<TABLE>_rebuild` beside it and swaps them.
    const TABLE: &'static str;

    /// Apply `items` (consecutive, in position order) to `table`. Must be idempotent for
    /// items already applied, and set-based: a few statements per batch, not per event.
    fn apply(
        &self,
        conn: &mut PgConnection,
        table: &str,
        items: &[FeedItem],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Fill `table`, freshly created and empty, from the whole event log: replay's bulk
    /// phase. Reads `batch` events per query and reports each step to `progress`;
    /// returns the position of the last event applied (0 for an empty log). Events that
    /// commit after it are applied by replay's swap, through [`apply`](Self::apply).
    ///
    /// The default is `apply`, batch after batch. A projection that can do better on an
    /// empty table (fold in memory, write each row once) overrides it; what it leaves in
    /// `table` must equal what `apply` would have.
    fn rebuild(
        &self,
        conn: &mut PgConnection,
        table: &str,
        batch: i64,
        progress: &mut RebuildProgress<'_>,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send {
        async move {
            let mut position = 0;
            loop {
                let items =
                    feed::read_after_unbounded(&mut *conn, Position(position), batch).await?;
                let Some(last) = items.last().map(|i| i.position.0) else {
                    return Ok(position);
                };
                self.apply(conn, table, &items).await?;
                position = last;
                progress
                    .advanced(conn, items.len() as u64, position)
                    .await?;
                if (items.len() as i64) < batch {
                    return Ok(position);
                }
            }
        }
    }
}
