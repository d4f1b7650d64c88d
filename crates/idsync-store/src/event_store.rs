//! Commands in, events out: cqrs-es's pure event store over postgres-es.
//!
//! We drive `PersistedEventStore` ourselves rather than through `CqrsFramework` for one
//! reason: the framework returns `()`, and callers need the committed events (the sync
//! worker records its outcome, metrics count events by type). The steps are the same:
//! load the aggregate, let it handle the command, commit with metadata.
//!
//! [`EventStore::execute_many`] does the same for many users in one transaction. Event
//! writers are serialised on the position counter until they commit (see the first
//! migration), so one command per transaction means one WAL flush per command, one
//! after the other; a batch shares one flush. It writes exactly the rows postgres-es
//! writes, and relies on the same optimistic lock (the primary key on aggregate type,
//! id and sequence).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateContext, AggregateError, DomainEvent};
use idsync_domain::{EventKind, EventMetadata, User, UserCommand, UserEvent};
use postgres_es::PostgresEventRepository;
use sqlx::{PgPool, Row};

use crate::StoreError;
use crate::backoff::Backoff;

/// How often a command is re-run after losing an optimistic-concurrency race before we
/// give up. Two writers on one user are rare (the sync worker serialises per pk), so a
/// handful is plenty; the bound keeps a pathological loop from spinning forever.
const MAX_ATTEMPTS: u32 = 8;

/// An event that was just committed.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendedEvent {
    pub sequence: usize,
    pub event: UserEvent,
}

impl AppendedEvent {
    pub fn kind(&self) -> EventKind {
        self.event.kind()
    }
}

/// What a batch gives back: per command, in the order given, its events or why it
/// appended none.
pub type BatchResults = Vec<Result<Vec<AppendedEvent>, StoreError>>;

pub struct EventStore {
    store: PersistedEventStore<PostgresEventRepository, User>,
    pool: PgPool,
    conflicts: AtomicU64,
}

impl EventStore {
    pub fn new(pool: PgPool) -> Self {
        let repo = PostgresEventRepository::new(pool.clone());
        Self {
            store: PersistedEventStore::new_event_store(repo),
            pool,
            conflicts: AtomicU64::new(0),
        }
    }

    /// Run `command` against user `pk` and commit what it produces. On a concurrency
    /// conflict (another writer appended to the same user between our load and commit)
    /// the aggregate is reloaded and the command re-run: the rules are re-decided against
    /// the new state, which is what makes the retry correct rather than a blind re-insert.
    pub async fn execute(
        &self,
        pk: i64,
        command: UserCommand,
        metadata: &EventMetadata,
    ) -> Result<Vec<AppendedEvent>, StoreError> {
        let id = pk.to_string();
        let mut attempt = 1;
        loop {
            match self.try_execute(&id, command.clone(), metadata).await {
                Err(AggregateError::AggregateConflict) if attempt < MAX_ATTEMPTS => {
                    self.conflicts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(pk, attempt, "aggregate conflict; reloading and retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(AggregateError::AggregateConflict) => {
                    return Err(StoreError::Conflict {
                        pk,
                        attempts: attempt,
                    });
                }
                Err(AggregateError::UserError(err)) => return Err(err.into()),
                Err(AggregateError::DatabaseConnectionError(err)) => {
                    return Err(match err.downcast::<sqlx::Error>() {
                        Ok(sqlx_err) => StoreError::from(*sqlx_err),
                        Err(other) => StoreError::EventStore(other.to_string()),
                    });
                }
                Err(AggregateError::UnexpectedError(err)) => {
                    return Err(match err.downcast::<sqlx::Error>() {
                        Ok(sqlx_err) => StoreError::from(*sqlx_err),
                        Err(other) => StoreError::EventStore(other.to_string()),
                    });
                }
                Err(err) => return Err(StoreError::EventStore(err.to_string())),
                Ok(events) => return Ok(events),
            }
        }
    }

    async fn try_execute(
        &self,
        id: &str,
        command: UserCommand,
        metadata: &EventMetadata,
    ) -> Result<Vec<AppendedEvent>, AggregateError<idsync_domain::UserError>> {
        use cqrs_es::EventStore as _;
        let mut context = self.store.load_aggregate(id).await?;
        let sink = EventSink::default();
        context
            .aggregate()
            .handle(command, &(), &sink)
            .await
            .map_err(AggregateError::UserError)?;
        let events = sink.collect().await;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let committed = self
            .store
            .commit(events, context, metadata.to_map())
            .await?;
        Ok(committed
            .into_iter()
            .map(|e| AppendedEvent {
                sequence: e.sequence,
                event: e.payload,
            })
            .collect())
    }

    /// Run many commands (users in any order, a user possibly more than once) and
    /// commit everything they produce in one transaction. The results come back in the
    /// order of `items`, each what [`execute`](Self::execute) would have returned for it
    /// run alone in that order: its events, or a domain error (`StoreError::Domain`)
    /// that only that item gets. Commands that produce nothing write nothing.
    ///
    /// The aggregates are loaded with one query and each command decided by the same
    /// rules (`User::decide`); a user named twice sees the events of its first command.
    /// The rows are postgres-es's (`aggregate_type` `User`, the pk as id, the next
    /// sequences, type, version, the externally tagged payload, the metadata map), in
    /// the order of `items`, so their global positions are consecutive in that order.
    ///
    /// If another writer appended to one of these users after the load, the primary
    /// key refuses the insert: the whole batch is rolled back and its commands run one
    /// by one through `execute`, which reloads and re-decides (and retries its own
    /// conflicts). A user whose command still cannot win gets `StoreError::Conflict`.
    ///
    /// `Err` is for the batch as a whole: the database failed. Nothing of the batch is
    /// committed then, unless it failed during that one-by-one fallback, where the
    /// commands before the failure are.
    pub async fn execute_many(
        &self,
        items: Vec<(i64, UserCommand)>,
        metadata: &EventMetadata,
    ) -> Result<BatchResults, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        match self.try_execute_many(&items, metadata).await {
            Ok(results) => Ok(results),
            Err(err) if is_unique_violation(&err) => {
                self.conflicts.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    commands = items.len(),
                    "batch lost a concurrency race; running its commands one by one"
                );
                let mut results = Vec::with_capacity(items.len());
                for (pk, command) in items {
                    match self.execute(pk, command, metadata).await {
                        Err(err @ (StoreError::Domain(_) | StoreError::Conflict { .. })) => {
                            results.push(Err(err));
                        }
                        Err(err) => return Err(err),
                        Ok(events) => results.push(Ok(events)),
                    }
                }
                Ok(results)
            }
            Err(err) => Err(err),
        }
    }

    /// What `execute_many` would do, writing nothing: per command, the events it would
    /// append now, or its domain error.
    pub async fn preview_many(
        &self,
        items: Vec<(i64, UserCommand)>,
    ) -> Result<Vec<Result<Vec<UserEvent>, StoreError>>, StoreError> {
        let mut users = self.load_many(&items).await?;
        Ok(items
            .into_iter()
            .map(|(pk, command)| {
                let (user, _) = users.entry(pk).or_default();
                let events = user.decide(command)?;
                for event in &events {
                    user.apply(event.clone());
                }
                Ok(events)
            })
            .collect())
    }

    async fn try_execute_many(
        &self,
        items: &[(i64, UserCommand)],
        metadata: &EventMetadata,
    ) -> Result<BatchResults, StoreError> {
        let mut users = self.load_many(items).await?;
        let mut results = Vec::with_capacity(items.len());
        let mut rows = EventRows::default();
        for (pk, command) in items {
            let (user, sequence) = users.entry(*pk).or_default();
            let events = match user.decide(command.clone()) {
                Ok(events) => events,
                Err(err) => {
                    results.push(Err(StoreError::Domain(err)));
                    continue;
                }
            };
            let mut appended = Vec::with_capacity(events.len());
            for event in events {
                *sequence += 1;
                rows.push(*pk, *sequence, &event)?;
                user.apply(event.clone());
                appended.push(AppendedEvent {
                    sequence: *sequence,
                    event,
                });
            }
            results.push(Ok(appended));
        }
        if rows.ids.is_empty() {
            return Ok(results);
        }
        // As cqrs-es and postgres-es serialise them: the metadata map and each event
        // (serde's external tagging) as JSON values, bound as jsonb into the json columns.
        let metadata = serde_json::to_value(metadata.to_map())
            .map_err(|e| StoreError::EventStore(format!("metadata: {e}")))?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT $1, t.id, t.seq, t.type, t.version, t.payload, $7
               FROM UNNEST($2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[])
                    WITH ORDINALITY AS t(id, seq, type, version, payload, ord)
              ORDER BY t.ord",
        )
        .bind(<User as Aggregate>::TYPE)
        .bind(&rows.ids)
        .bind(&rows.sequences)
        .bind(&rows.types)
        .bind(&rows.versions)
        .bind(&rows.payloads)
        .bind(&metadata)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(results)
    }

    /// The aggregates of these commands' users (default for a user with no events),
    /// each with its last sequence, from one query.
    async fn load_many(
        &self,
        items: &[(i64, UserCommand)],
    ) -> Result<HashMap<i64, (User, usize)>, StoreError> {
        let mut ids: Vec<String> = items.iter().map(|(pk, _)| pk.to_string()).collect();
        ids.sort_unstable();
        ids.dedup();
        let rows = sqlx::query(
            "SELECT aggregate_id, sequence, payload::text FROM events
              WHERE aggregate_type = $1 AND aggregate_id = ANY($2)
              ORDER BY aggregate_id, sequence",
        )
        // Planned for each call's own ids. A prepared statement's generic plan, cached
        // while `events` was small, can scan every event and filter (seen: a cold
        // reconcile slowing down with every batch).
        .persistent(false)
        .bind(<User as Aggregate>::TYPE)
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        let mut users: HashMap<i64, (User, usize)> = HashMap::with_capacity(ids.len());
        for row in rows {
            let id: &str = row.try_get(0)?;
            let sequence: i64 = row.try_get(1)?;
            let payload: &str = row.try_get(2)?;
            let unreadable = |reason: String| {
                StoreError::EventStore(format!("user {id}, event {sequence}: {reason}"))
            };
            let pk: i64 = id
                .parse()
                .map_err(|_| unreadable("the aggregate id is not a pk".to_owned()))?;
            let event: UserEvent =
                serde_json::from_str(payload).map_err(|e| unreadable(e.to_string()))?;
            let (user, last) = users.entry(pk).or_default();
            user.apply(event);
            *last = usize::try_from(sequence)
                .map_err(|_| unreadable("negative sequence".to_owned()))?;
        }
        Ok(users)
    }

    /// How many times a command lost a concurrency race and was re-run.
    pub fn conflicts_retried(&self) -> u64 {
        self.conflicts.load(Ordering::Relaxed)
    }

    /// The user as the event stream has it now (None if never registered).
    pub async fn load(&self, pk: i64) -> Result<User, StoreError> {
        use cqrs_es::EventStore as _;
        let mut context = self
            .store
            .load_aggregate(&pk.to_string())
            .await
            .map_err(|e| StoreError::EventStore(e.to_string()))?;
        Ok(std::mem::take(context.aggregate()))
    }
}

/// Short, jittered pauses (2-4 ms, then doubling up to 128-256 ms): the other writer's
/// transaction is usually done within milliseconds, and jitter keeps two retrying
/// writers from colliding again in lockstep.
fn backoff(attempt: u32) -> Duration {
    Backoff::new(Duration::from_millis(4), Duration::from_millis(256))
        .with_jitter()
        .delay_after(attempt)
}

/// A duplicate key: in `events`, another writer took one of our sequences.
fn is_unique_violation(err: &StoreError) -> bool {
    match err {
        StoreError::Database(sqlx::Error::Database(db)) => db.code().as_deref() == Some("23505"),
        _ => false,
    }
}

/// The columns of the rows a batch inserts.
#[derive(Default)]
struct EventRows {
    ids: Vec<String>,
    sequences: Vec<i64>,
    types: Vec<String>,
    versions: Vec<String>,
    payloads: Vec<serde_json::Value>,
}

impl EventRows {
    fn push(&mut self, pk: i64, sequence: usize, event: &UserEvent) -> Result<(), StoreError> {
        let payload = serde_json::to_value(event)
            .map_err(|e| StoreError::EventStore(format!("user {pk}: {e}")))?;
        self.ids.push(pk.to_string());
        self.sequences.push(sequence as i64);
        self.types.push(event.event_type());
        self.versions.push(event.event_version());
        self.payloads.push(payload);
        Ok(())
    }
}
