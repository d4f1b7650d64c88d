//! Live feeds: `GET /api/events/stream` (SSE) and `GET /ws` (WebSocket), both built on
//! [`Subscription`], which delivers every event after a position exactly once, in
//! order, whatever the process's broadcast or LISTEN connection does.
//!
//! The rule (BRIEF §5): subscribe to the live broadcast *before* reading the backlog,
//! then drop what was already sent. Positions are gap-free, so a subscriber that sees a
//! position it did not expect (a gap), lags behind the broadcast, or is told to resync,
//! simply re-reads the database from the last position it sent.

pub mod hub;
pub mod identity;
pub mod sse;
pub mod ws;

use std::collections::VecDeque;
use std::sync::Arc;

use idsync_store::{FeedItem, StoreError, feed};
use sqlx::PgPool;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::auth::Caller;
pub use hub::Hub;

/// Who may see which events.
#[derive(Debug, Clone, Copy)]
pub enum Filter {
    All,
    User(Option<i64>),
}

impl Filter {
    pub fn for_caller(caller: &Caller) -> Self {
        if caller.is_admin {
            Filter::All
        } else {
            Filter::User(caller.user_pk)
        }
    }

    fn allows(self, item: &FeedItem) -> bool {
        match self {
            Filter::All => true,
            Filter::User(pk) => pk == Some(item.user_pk),
        }
    }
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    /// Events after this position (`after=0`: from the beginning).
    After(i64),
    /// Only events committed from now on.
    Now,
}

pub struct Subscription {
    pool: PgPool,
    live: broadcast::Receiver<Arc<FeedItem>>,
    filter: Filter,
    /// The last position handled (sent or filtered out).
    last: i64,
    pending: VecDeque<Arc<FeedItem>>,
    /// Read the database from `last` before taking live events again.
    catch_up: bool,
}

impl Subscription {
    /// Subscribes to the hub first, then fixes the starting position, so nothing
    /// committed in between can be missed.
    pub async fn start(
        pool: PgPool,
        hub: &Hub,
        filter: Filter,
        start: Start,
    ) -> Result<Self, StoreError> {
        let live = hub.subscribe();
        let last = match start {
            Start::After(position) => position.max(0),
            Start::Now => feed::head(&pool).await?,
        };
        Ok(Self {
            pool,
            live,
            filter,
            last,
            pending: VecDeque::new(),
            catch_up: true,
        })
    }

    /// The next event this subscriber may see. `None` when the hub is gone.
    pub async fn next(&mut self) -> Result<Option<Arc<FeedItem>>, StoreError> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Ok(Some(item));
            }
            if self.catch_up {
                let page = feed::read_after(&self.pool, self.last, feed::MAX_PAGE).await?;
                if page.is_empty() {
                    self.catch_up = false;
                    continue;
                }
                for item in page {
                    self.accept(Arc::new(item));
                }
                continue;
            }
            match self.live.recv().await {
                Ok(item) if item.position <= self.last => {} // already sent from the backlog
                Ok(item) if item.position == self.last + 1 => self.accept(item),
                // A gap: something was broadcast before we subscribed, or dropped.
                Ok(_) => self.catch_up = true,
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "subscriber lagged; catching up from the database");
                    self.catch_up = true;
                }
                Err(RecvError::Closed) => return Ok(None),
            }
        }
    }

    fn accept(&mut self, item: Arc<FeedItem>) {
        self.last = item.position;
        if self.filter.allows(&item) {
            self.pending.push_back(item);
        }
    }
}
