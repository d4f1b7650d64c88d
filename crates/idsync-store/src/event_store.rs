//! Commands in, events out: cqrs-es's pure event store over postgres-es.
//!
//! We drive `PersistedEventStore` ourselves rather than through `CqrsFramework` for one
//! reason: the framework returns `()`, and callers need the committed events (the sync
//! worker records its outcome, metrics count events by type). The steps are the same:
//! load the aggregate, let it handle the command, commit with metadata.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateContext, AggregateError, DomainEvent};
use idsync_domain::{EventMetadata, User, UserCommand, UserEvent};
use postgres_es::PostgresEventRepository;
use rand::Rng;
use sqlx::PgPool;

use crate::StoreError;

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
    pub fn event_type(&self) -> String {
        self.event.event_type()
    }
}

pub struct EventStore {
    store: PersistedEventStore<PostgresEventRepository, User>,
    conflicts: AtomicU64,
}

impl EventStore {
    pub fn new(pool: PgPool) -> Self {
        let repo = PostgresEventRepository::new(pool);
        Self {
            store: PersistedEventStore::new_event_store(repo),
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

/// Short, jittered pauses: the other writer's transaction is usually done within
/// milliseconds, and jitter keeps two retrying writers from colliding again in lockstep.
fn backoff(attempt: u32) -> Duration {
    let base_ms = 2u64.saturating_pow(attempt.min(7));
    let jitter = rand::rng().random_range(0..=base_ms);
    Duration::from_millis(base_ms + jitter)
}
