//! Read models fed from the global event feed, each with a checkpoint written in the
//! same transaction as its change.

pub mod projector;
pub mod replay;
pub mod users;

use std::future::Future;

use sqlx::PgConnection;

use crate::{FeedItem, StoreError};

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
}
