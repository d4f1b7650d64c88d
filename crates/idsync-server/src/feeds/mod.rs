//! Live feeds: `GET /api/events/stream` (SSE) and `GET /ws` (WebSocket), both built on
//! [`Subscription`], which delivers every event after a position exactly once, in
//! order, whatever the process's broadcast or LISTEN connection does.
//!
//! The rule (docs/contract.md, "Live feeds"): subscribe to the live broadcast *before* reading the backlog,
//! then drop what was already sent. Positions are gap-free, so a subscriber that sees a
//! position it did not expect (a gap), lags behind the broadcast, or is told to resync,
//! simply re-reads the database from the last position it sent.

pub(crate) mod hub;
pub(crate) mod sse;
pub(crate) mod ws;

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use idsync_store::{FeedItem, Position, StoreError, UserPk, feed};
use sqlx::PgPool;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::auth::Caller;
pub(crate) use hub::Hub;

/// What the live feeds need besides identifying callers; a sub-state of the router's
/// state.
#[derive(Clone)]
pub struct FeedState {
    pub pool: PgPool,
    pub hub: Hub,
    /// Cancelled on SIGTERM: open streams and sockets end so shutdown is prompt.
    pub shutdown: tokio_util::sync::CancellationToken,
}

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

    /// The whole SSE event: `id:` position, `event:` type, `data:` the feed item (JSON
    /// has no raw newlines, so it is a single data line). Built once; each stream copies
    /// it into its own write buffer, which is cheaper than sharing reference-counted
    /// bytes that every core would then contend for.
    pub fn sse_frame(&self) -> &[u8] {
        self.sse
            .get_or_init(|| {
                let json = serde_json::to_string(&self.item).unwrap_or_default();
                format!(
                    "id: {}\nevent: {}\ndata: {json}\n\n",
                    self.item.position, self.item.event_type
                )
            })
            .as_bytes()
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

/// What the hub broadcasts: the events of one read of the log, in order, contiguous.
/// One broadcast per read rather than per event: every broadcast wakes every
/// subscriber, so under a burst this is one wake-up (and one write) for many events.
pub(crate) type LiveBatch = Arc<[Arc<LiveItem>]>;

/// Who may see which events.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Filter {
    All,
    User(Option<UserPk>),
}

impl Filter {
    pub(crate) fn for_caller(caller: &Caller) -> Self {
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// Events after this position (`after=0`: from the beginning).
    After(Position),
    /// Only events committed from now on.
    Now,
}

pub(crate) struct Subscription {
    pool: PgPool,
    live: broadcast::Receiver<LiveBatch>,
    filter: Filter,
    /// The last position handled (sent or filtered out).
    last: Position,
    pending: VecDeque<Run>,
    /// Read the database from `last` before taking live events again.
    catch_up: bool,
}

/// Consecutive items of one batch waiting to be sent. Holding the batch rather than
/// each item keeps the hot path free of per-event reference counting: thousands of
/// subscribers touching one shared counter per event make the cores fight over it.
struct Run {
    batch: LiveBatch,
    next: usize,
    end: usize,
}

impl Subscription {
    /// Subscribes to the hub first, then fixes the starting position, so nothing
    /// committed in between can be missed.
    pub(crate) async fn start(
        pool: PgPool,
        hub: &Hub,
        filter: Filter,
        start: Start,
    ) -> Result<Self, StoreError> {
        let live = hub.subscribe();
        let last = match start {
            Start::After(position) => position.max(Position::START),
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

    /// Waits until an event this subscriber may see is pending, reading the database
    /// when behind. `Ok(false)` when the hub is gone. Cancel-safe: nothing is lost if
    /// the future is dropped.
    pub(crate) async fn ready(&mut self) -> Result<bool, StoreError> {
        loop {
            if !self.pending.is_empty() {
                return Ok(true);
            }
            if self.catch_up {
                let page = feed::read_after(&self.pool, self.last, feed::MAX_PAGE).await?;
                if page.is_empty() {
                    self.catch_up = false;
                    continue;
                }
                let batch: LiveBatch = page
                    .into_iter()
                    .map(|item| Arc::new(LiveItem::new(item)))
                    .collect();
                self.accept(batch);
                continue;
            }
            match self.live.recv().await {
                Ok(batch) => self.accept(batch),
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "subscriber lagged; catching up from the database");
                    self.catch_up = true;
                }
                Err(RecvError::Closed) => return Ok(false),
            }
        }
    }

    /// The next event this subscriber may see. `None` when the hub is gone.
    pub(crate) async fn next(&mut self) -> Result<Option<Arc<LiveItem>>, StoreError> {
        if !self.ready().await? {
            return Ok(None);
        }
        Ok(self.pop())
    }

    /// Appends the SSE frames of everything ready now (pending, or waiting in order in
    /// the live broadcast) to `out`, up to about `max` bytes, without touching the
    /// database: a gap or a lag is left for [`Self::ready`]. Returns how many events.
    pub(crate) fn write_ready_sse(&mut self, out: &mut Vec<u8>, max: usize) -> u64 {
        let mut written = 0;
        loop {
            while out.len() < max
                && let Some(run) = self.pending.front_mut()
            {
                let end = run.end;
                for live in &run.batch[run.next..end] {
                    out.extend_from_slice(live.sse_frame());
                }
                written += (end - run.next) as u64;
                self.pending.pop_front();
            }
            if out.len() >= max || self.catch_up {
                return written;
            }
            match self.live.try_recv() {
                Ok(batch) => self.accept(batch),
                Err(broadcast::error::TryRecvError::Lagged(_)) => {
                    self.catch_up = true;
                    return written;
                }
                Err(_) => return written,
            }
        }
    }

    fn pop(&mut self) -> Option<Arc<LiveItem>> {
        let run = self.pending.front_mut()?;
        let live = run.batch[run.next].clone();
        run.next += 1;
        if run.next == run.end {
            self.pending.pop_front();
        }
        Some(live)
    }

    /// Takes what is new in a batch. A position beyond the next expected one is a gap
    /// (something was broadcast before we subscribed, or dropped): the rest comes from
    /// the database.
    fn accept(&mut self, batch: LiveBatch) {
        let mut run: Option<(usize, usize)> = None;
        for (i, live) in batch.iter().enumerate() {
            let position = live.item.position;
            if position <= self.last {
                continue; // already sent from the backlog
            }
            if position != self.last.next() {
                self.catch_up = true;
                break;
            }
            self.last = position;
            match self.filter {
                Filter::All => run = Some((run.map_or(i, |(from, _)| from), i + 1)),
                Filter::User(_) if self.filter.allows(&live.item) => {
                    self.pending.push_back(Run {
                        batch: batch.clone(),
                        next: i,
                        end: i + 1,
                    });
                }
                Filter::User(_) => {}
            }
        }
        if let Some((next, end)) = run {
            self.pending.push_back(Run { batch, next, end });
        }
    }
}
