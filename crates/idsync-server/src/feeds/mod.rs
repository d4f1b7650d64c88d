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
use std::sync::{Arc, OnceLock};

use idsync_store::{FeedItem, StoreError, feed};
use sqlx::PgPool;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::auth::Caller;
pub use hub::Hub;

/// A feed item on its way to subscribers, with its wire forms computed once and shared:
/// with thousands of subscribers, serialising per subscriber would dominate the cost.
pub struct LiveItem {
    pub item: FeedItem,
    sse: OnceLock<String>,
    ws: OnceLock<String>,
}

impl LiveItem {
    pub fn new(item: FeedItem) -> Self {
        Self {
            item,
            sse: OnceLock::new(),
            ws: OnceLock::new(),
        }
    }

    /// The feed item as JSON (SSE `data:`).
    pub fn sse_json(&self) -> &str {
        self.sse
            .get_or_init(|| serde_json::to_string(&self.item).unwrap_or_default())
    }

    /// The WebSocket `event` frame: the feed item with `type: "event"`, its own type
    /// moved to `event_type`.
    pub fn ws_json(&self) -> &str {
        self.ws.get_or_init(|| {
            let mut message = serde_json::to_value(&self.item).unwrap_or_default();
            if let serde_json::Value::Object(map) = &mut message {
                if let Some(t) = map.remove("type") {
                    map.insert("event_type".to_owned(), t);
                }
                map.insert("type".to_owned(), serde_json::json!("event"));
            }
            message.to_string()
        })
    }
}

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
    live: broadcast::Receiver<Arc<LiveItem>>,
    filter: Filter,
    /// The last position handled (sent or filtered out).
    last: i64,
    pending: VecDeque<Arc<LiveItem>>,
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
    pub async fn next(&mut self) -> Result<Option<Arc<LiveItem>>, StoreError> {
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
                    self.accept(Arc::new(LiveItem::new(item)));
                }
                continue;
            }
            match self.live.recv().await {
                Ok(live) if live.item.position <= self.last => {} // already sent from the backlog
                Ok(live) if live.item.position == self.last + 1 => self.accept(live),
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

    /// The next event only if it is ready now (already pending, or waiting in the live
    /// broadcast in order), without touching the database. Lets a writer batch what
    /// is ready into one write; anything unusual (a gap, a lag) is left for `next`.
    pub fn try_next_ready(&mut self) -> Option<Arc<LiveItem>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            if self.catch_up {
                return None;
            }
            match self.live.try_recv() {
                Ok(live) if live.item.position <= self.last => {}
                Ok(live) if live.item.position == self.last + 1 => self.accept(live),
                Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {
                    self.catch_up = true;
                    return None;
                }
                Err(_) => return None,
            }
        }
    }

    fn accept(&mut self, live: Arc<LiveItem>) {
        self.last = live.item.position;
        if self.filter.allows(&live.item) {
            self.pending.push_back(live);
        }
    }
}
