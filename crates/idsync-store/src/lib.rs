//! Everything idsync keeps in Postgres, in the order data flows through it:
//! `db` (pool, database creation, migrations) → `event_store` (commands become events
//! with a global position) → `feed` (reading events back in that order) → `notify`
//! (telling a process, live, that new positions committed).

pub mod backoff;
pub mod db;
pub mod erasure;
mod error;
pub mod event_store;
pub mod feed;
pub mod groups;
mod ids;
pub mod inbox;
pub mod locks;
pub mod notify;
pub mod privacy;
pub mod projections;
pub mod tickets;

pub use error::StoreError;
pub use event_store::{AppendedEvent, EraseOutcome, EventStore};
pub use feed::FeedItem;
pub use ids::{Position, UserPk};
pub use notify::{FeedSignal, Notifier, Watermarks};
