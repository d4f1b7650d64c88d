//! A per-process cache of the users read model's rows, as the API sends them (JSON),
//! kept correct by the live feed this process already follows.
//!
//! Why: `/api/me` is what every signed-in page calls first. Served from Postgres, each
//! request pays a pool checkout, a round trip and row decoding on top of the query;
//! served from memory it costs what a token check costs (see `docs/performance.md`).
//!
//! When a cached row may be served, and why it is never older than what the process
//! has been told:
//! - The live feed's hub reads every new event of the log in position order (one reader
//!   per process) and, before anything else sees the batch, drops the cached rows of the
//!   users it touches and advances [`UsersCache`]'s `head`.
//! - The process's `LISTEN` connection raises the notified position the moment a
//!   notification arrives ([`Watermarks`]). While an event has been notified that the
//!   hub has not read yet (`notified > head`), the cache answers nothing: every read goes
//!   to Postgres, as without a cache.
//! - While the listener is not connected, notifications are lost: nothing is served.
//!   A reconnected listener may have missed some, and `idsync replay` swaps a new table
//!   in: both count as a resync. Entries filled before the hub's first full read after
//!   the latest resync are void.
//! - A row read from Postgres is cached only if, in the same snapshot, the projection's
//!   checkpoint had reached the hub's head when the read began (the row reflects every
//!   event the hub has seen), and the hub did not move while it was read (an event it
//!   read meanwhile might be missing from the row). Fills and the hub's invalidations
//!   take one lock, so an invalidation can never run between that check and the insert.
//!
//! Pages of users (`GET /api/users`) are cached too, keyed by their query. Any event may
//! change any page (a new user, a rename that matches a search), so a page is served
//! only while the hub has read no event since it was filled: every event empties the
//! page cache in effect. Identity data changes rarely next to how often it is read.
//!
//! Across replicas: each process follows the same log through its own listener, so each
//! stops serving a user's cached row the moment it is notified of that user's next
//! event. The projector (in whichever process holds it) applies that event only after
//! the same notification reached it and after reading and writing the read model, so in
//! practice every replica has stopped serving the old row before the projection shows
//! the new one; the one window left is a notification still in flight to a replica.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use sqlx::PgPool;

use super::users::UserRow;
use crate::notify::Watermarks;
use crate::{Position, StoreError, UserPk};

/// Rows kept per process (a few hundred bytes each).
pub const CAPACITY: usize = 100_000;
/// Bytes of pages kept per process.
pub const PAGE_BYTES: u64 = 32 * 1024 * 1024;

/// A page's query: what `GET /api/users` was asked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PageKey {
    pub after: i64,
    pub limit: i64,
    pub filter: super::users::UserFilter,
}

/// A cached page: its JSON, and the hub's head when it was read.
#[derive(Debug)]
pub struct CachedPage {
    pub page: super::users::JsonPage,
    head: i64,
    generation: u64,
}

impl CachedPage {
    /// A page read when the cache could not take it: served once, never kept.
    pub fn uncached(page: super::users::JsonPage) -> Self {
        Self {
            page,
            head: -1,
            generation: u64::MAX,
        }
    }
}

#[derive(Clone)]
struct PageWeight;

impl quick_cache::Weighter<PageKey, Arc<CachedPage>> for PageWeight {
    fn weight(&self, _key: &PageKey, page: &Arc<CachedPage>) -> u64 {
        page.page.users.len() as u64 + 64
    }
}

/// A cached user: the JSON the API answers, and the position of the last event in it.
#[derive(Debug)]
pub struct CachedUser {
    pub json: Bytes,
    pub position: i64,
    generation: u64,
}

/// See the module documentation.
pub struct UsersCache {
    entries: quick_cache::sync::Cache<i64, Arc<CachedUser>>,
    pages: quick_cache::sync::Cache<PageKey, Arc<CachedPage>, PageWeight>,
    watermarks: Arc<Watermarks>,
    /// The hub's head: every event up to it has been applied to the cache.
    head: AtomicI64,
    /// The resync count the hub had caught up with at its last complete read; entries of
    /// another generation are void.
    generation: AtomicU64,
    /// Serialises fills with invalidations.
    lock: Mutex<()>,
}

/// What a fill must remember from before its read.
#[derive(Debug, Clone, Copy)]
pub struct FillTicket {
    head: i64,
    generation: u64,
}

impl UsersCache {
    pub fn new(watermarks: Arc<Watermarks>) -> Self {
        Self {
            entries: quick_cache::sync::Cache::new(CAPACITY),
            pages: quick_cache::sync::Cache::with_weighter(1024, PAGE_BYTES, PageWeight),
            watermarks,
            head: AtomicI64::new(-1),
            // Nothing is trusted until the hub's first complete read.
            generation: AtomicU64::new(u64::MAX),
            lock: Mutex::new(()),
        }
    }

    /// Whether the cache has applied everything this process was told.
    fn current(&self) -> Option<u64> {
        let generation = self.generation.load(Ordering::Acquire);
        let caught_up = self.watermarks.listening()
            && generation == self.watermarks.resyncs()
            && self.watermarks.notified() <= self.head.load(Ordering::Acquire);
        caught_up.then_some(generation)
    }

    /// The cached row of user `pk`, if it may be served now.
    pub fn get(&self, pk: i64) -> Option<Arc<CachedUser>> {
        let generation = self.current()?;
        self.entries
            .get(&pk)
            .filter(|entry| entry.generation == generation)
    }

    /// The cached page for `key`, if it may be served now (no event read since it was).
    pub fn page(&self, key: &PageKey) -> Option<Arc<CachedPage>> {
        let generation = self.current()?;
        let head = self.head.load(Ordering::Acquire);
        self.pages
            .get(key)
            .filter(|page| page.generation == generation && page.head == head)
    }

    /// Cache `page`, read under `ticket` (its checkpoint from the same snapshot).
    pub fn fill_page(
        &self,
        ticket: FillTicket,
        key: PageKey,
        page: super::users::JsonPage,
    ) -> Arc<CachedPage> {
        let cached = Arc::new(CachedPage {
            head: ticket.head,
            generation: ticket.generation,
            page,
        });
        if cached.page.checkpoint < ticket.head {
            return cached;
        }
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        if self.head.load(Ordering::Acquire) == ticket.head
            && self.generation.load(Ordering::Acquire) == ticket.generation
        {
            self.pages.insert(key, cached.clone());
        }
        cached
    }

    /// Before reading a row to cache: `None` when the cache cannot take one now.
    pub fn ticket(&self) -> Option<FillTicket> {
        let generation = self.current()?;
        Some(FillTicket {
            head: self.head.load(Ordering::Acquire),
            generation,
        })
    }

    /// Cache `row` (serialised once, here), read under `ticket` in the same snapshot as
    /// the projection's `checkpoint`. Returns the JSON either way.
    pub fn fill(&self, ticket: FillTicket, row: &UserRow, checkpoint: i64) -> Bytes {
        let json = Bytes::from(serde_json::to_vec(row).unwrap_or_default());
        if checkpoint < ticket.head {
            // The read model lags the log: this row may miss an event the hub has seen.
            return json;
        }
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        if self.head.load(Ordering::Acquire) == ticket.head
            && self.generation.load(Ordering::Acquire) == ticket.generation
        {
            self.entries.insert(
                row.pk,
                Arc::new(CachedUser {
                    json: json.clone(),
                    position: row.position,
                    generation: ticket.generation,
                }),
            );
        }
        json
    }

    /// The hub read events up to `head`, touching the users `pks`: their rows go.
    pub fn invalidate(&self, pks: impl IntoIterator<Item = UserPk>, head: Position) {
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        for pk in pks {
            self.entries.remove(&pk.0);
        }
        self.head.store(head.0, Ordering::Release);
    }

    /// The hub has read the whole log as of a moment after resync number `resyncs`:
    /// entries from now on belong to that generation.
    pub fn caught_up(&self, resyncs: u64, head: Position) {
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        if self.generation.load(Ordering::Acquire) != resyncs {
            self.entries.clear();
            self.pages.clear();
            self.generation.store(resyncs, Ordering::Release);
        }
        self.head.store(head.0, Ordering::Release);
    }
}

/// One user and the projection's checkpoint, in one snapshot (one statement).
pub async fn get_with_checkpoint(
    pool: &PgPool,
    pk: i64,
) -> Result<Option<(UserRow, i64)>, StoreError> {
    #[derive(sqlx::FromRow)]
    struct WithCheckpoint {
        #[sqlx(flatten)]
        row: UserRow,
        checkpoint: i64,
    }
    let found: Option<WithCheckpoint> = sqlx::query_as(&format!(
        "SELECT {}, (SELECT position FROM projection_checkpoints WHERE name = 'users') AS checkpoint
           FROM users WHERE pk = $1",
        super::users::COLUMNS
    ))
    .bind(pk)
    .fetch_optional(pool)
    .await?;
    Ok(found.map(|f| (f.row, f.checkpoint)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pk: i64, position: i64) -> UserRow {
        UserRow {
            pk,
            uuid: uuid::Uuid::nil(),
            username: format!("user{pk}"),
            email: String::new(),
            name: String::new(),
            is_active: true,
            user_type: "internal".into(),
            groups: vec![],
            registered_at: chrono::DateTime::UNIX_EPOCH,
            updated_at: chrono::DateTime::UNIX_EPOCH,
            deleted_at: None,
            uid: None,
            position,
            erased: false,
        }
    }

    fn listening() -> Arc<Watermarks> {
        let watermarks = Arc::new(Watermarks::default());
        watermarks.set_listening(true);
        watermarks
    }

    #[test]
    fn nothing_is_served_before_the_hub_caught_up_or_while_a_notification_is_pending() {
        let watermarks = listening();
        let cache = UsersCache::new(watermarks.clone());
        assert!(cache.ticket().is_none(), "not before the hub's first read");
        cache.caught_up(0, Position(10));
        let ticket = cache.ticket().expect("caught up");
        cache.fill(ticket, &row(7, 10), 10);
        assert_eq!(cache.get(7).map(|e| e.position), Some(10));
        // A notification the hub has not read yet: every read goes to Postgres.
        watermarks.committed(11);
        assert!(cache.get(7).is_none());
        // The hub read it (another user's event): 7 is served again.
        cache.invalidate([UserPk(8)], Position(11));
        assert!(cache.get(7).is_some());
        // 7's own event drops it.
        watermarks.committed(12);
        cache.invalidate([UserPk(7)], Position(12));
        assert!(cache.get(7).is_none());
    }

    #[test]
    fn a_fill_that_raced_an_invalidation_or_a_lagging_projection_is_not_kept() {
        let watermarks = listening();
        let cache = UsersCache::new(watermarks.clone());
        cache.caught_up(0, Position(10));
        // The projection is behind the hub: the row may miss an event.
        let ticket = cache.ticket().expect("ticket");
        cache.fill(ticket, &row(7, 5), 9);
        assert!(cache.get(7).is_none());
        // The hub moved while the row was read.
        let ticket = cache.ticket().expect("ticket");
        watermarks.committed(11);
        cache.invalidate([UserPk(7)], Position(11));
        cache.fill(ticket, &row(7, 10), 10);
        assert!(cache.get(7).is_none());
    }

    fn page(checkpoint: i64) -> crate::projections::users::JsonPage {
        crate::projections::users::JsonPage {
            users: b"[]".to_vec(),
            count: 0,
            last_pk: None,
            checkpoint,
        }
    }

    #[test]
    fn a_page_is_served_only_while_no_event_was_read_since() {
        let watermarks = listening();
        let cache = UsersCache::new(watermarks.clone());
        cache.caught_up(0, Position(10));
        let key = PageKey {
            after: 0,
            limit: 100,
            filter: Default::default(),
        };
        let ticket = cache.ticket().expect("ticket");
        cache.fill_page(ticket, key.clone(), page(10));
        assert!(cache.page(&key).is_some());
        // Any event, any user: every page may have changed.
        watermarks.committed(11);
        cache.invalidate([UserPk(999)], Position(11));
        assert!(cache.page(&key).is_none());
        // A page read while the projection lagged the hub is not kept.
        let ticket = cache.ticket().expect("ticket");
        cache.fill_page(ticket, key.clone(), page(10));
        assert!(cache.page(&key).is_none());
    }

    #[test]
    fn a_resync_voids_every_entry_until_the_hub_caught_up_again() {
        let watermarks = listening();
        let cache = UsersCache::new(watermarks.clone());
        cache.caught_up(0, Position(10));
        let ticket = cache.ticket().expect("ticket");
        cache.fill(ticket, &row(7, 10), 10);
        watermarks.set_listening(false);
        assert!(
            cache.get(7).is_none(),
            "not while notifications may be missed"
        );
        watermarks.set_listening(true);
        watermarks.resync();
        assert!(cache.get(7).is_none(), "a replay or a lost listener");
        cache.caught_up(1, Position(10));
        assert!(cache.get(7).is_none(), "old entries are not trusted again");
    }
}
