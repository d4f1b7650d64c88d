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

use cqrs_es::{Aggregate, DomainEvent};
use idsync_domain::{EventKind, EventMetadata, User, UserCommand, UserEvent};
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Row};

use crate::StoreError;
use crate::backoff::Backoff;
use crate::privacy::{self, Erased, StoredKey};

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
    pool: PgPool,
    conflicts: AtomicU64,
    erase_on_delete: bool,
}

/// What `erase` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EraseOutcome {
    /// The key is destroyed and `UserErased` appended.
    Erased,
    /// The user was erased before; nothing changed.
    AlreadyErased,
}

impl EventStore {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            conflicts: AtomicU64::new(0),
            erase_on_delete: false,
        }
    }

    /// Erase a user (right to erasure) in the same transaction that deletes it:
    /// `IDSYNC_ERASE_ON_DELETE`.
    pub fn with_erase_on_delete(mut self, on: bool) -> Self {
        self.erase_on_delete = on;
        self
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
        let mut attempt = 1;
        loop {
            match self
                .try_execute_many(&[(pk, command.clone())], metadata)
                .await
            {
                Err(err) if is_unique_violation(&err) && attempt < MAX_ATTEMPTS => {
                    self.conflicts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(pk, attempt, "aggregate conflict; reloading and retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(err) if is_unique_violation(&err) => {
                    return Err(StoreError::Conflict {
                        pk,
                        attempts: attempt,
                    });
                }
                Err(err) => return Err(err),
                Ok(mut results) => {
                    return results
                        .pop()
                        .unwrap_or_else(|| Err(StoreError::EventStore("no result".to_owned())));
                }
            }
        }
    }

    /// Forget user `pk`'s personal data: destroy its data key, remove personal fields
    /// written before encryption from its events, and append `UserErased`, in one
    /// transaction. `StoreError::Domain(UserError::Unknown)` for a user never seen.
    pub async fn erase(
        &self,
        pk: i64,
        metadata: &EventMetadata,
    ) -> Result<EraseOutcome, StoreError> {
        let events = self
            .execute(pk, UserCommand::Erase { pk }, metadata)
            .await?;
        Ok(if events.is_empty() {
            EraseOutcome::AlreadyErased
        } else {
            EraseOutcome::Erased
        })
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
            let mut events = events;
            if self.erase_on_delete
                && events
                    .iter()
                    .any(|e| matches!(e, UserEvent::UserDeleted(_)))
            {
                // Decided against the user as the deletion leaves it.
                let mut deleted = user.clone();
                for event in &events {
                    deleted.apply(event.clone());
                }
                if let Ok(more) = deleted.decide(UserCommand::Erase { pk: *pk }) {
                    events.extend(more);
                }
            }
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
        seal_rows(&mut tx, &mut rows).await?;
        let erased: Vec<i64> = results
            .iter()
            .flat_map(|r| r.iter().flatten())
            .filter_map(|a| match &a.event {
                UserEvent::UserErased(e) => Some(e.pk),
                _ => None,
            })
            .collect();
        if !erased.is_empty() {
            forget(&mut tx, &erased).await?;
        }
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
            "SELECT e.aggregate_id, e.sequence, e.payload::text, k.wrapped_key, k.kek_id
               FROM events e LEFT JOIN user_data_keys k ON k.user_pk = e.aggregate_id::bigint
              WHERE e.aggregate_type = $1 AND e.aggregate_id = ANY($2)
              ORDER BY e.aggregate_id, e.sequence",
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
            let wrapped: Option<&[u8]> = row.try_get(3)?;
            let kek_id: Option<&str> = row.try_get(4)?;
            let key = wrapped
                .zip(kek_id)
                .map(|(wrapped, kek_id)| StoredKey { wrapped, kek_id });
            let event: UserEvent = if payload.contains(privacy::SEALED) {
                let mut value: Value =
                    serde_json::from_str(payload).map_err(|e| unreadable(e.to_string()))?;
                if let Some(Value::Object(inner)) =
                    value.as_object_mut().and_then(|m| m.values_mut().next())
                {
                    privacy::open(inner, pk, sequence, key, Erased::Blank)?;
                }
                serde_json::from_value(value).map_err(|e| unreadable(e.to_string()))?
            } else {
                serde_json::from_str(payload).map_err(|e| unreadable(e.to_string()))?
            };
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
        let mut users = self.load_many(&[(pk, UserCommand::Delete { pk })]).await?;
        Ok(users.remove(&pk).map(|(user, _)| user).unwrap_or_default())
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
    pks: Vec<i64>,
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
        self.pks.push(pk);
        self.ids.push(pk.to_string());
        self.sequences.push(sequence as i64);
        self.types.push(event.event_type());
        self.versions.push(event.event_version());
        self.payloads.push(payload);
        Ok(())
    }
}

/// Seal the personal fields of `rows` with their users' data keys (created for users
/// who have none yet), in the transaction that inserts them: if it rolls back (a lost
/// race, an erasure in between), so does a key created for it. Without a keyring
/// installed, rows stay as they are.
async fn seal_rows(conn: &mut PgConnection, rows: &mut EventRows) -> Result<(), StoreError> {
    let Some(keyring) = privacy::keyring() else {
        return Ok(());
    };
    let mut pks: Vec<i64> = rows
        .pks
        .iter()
        .zip(&rows.payloads)
        .filter(|(_, payload)| inner(payload).is_some_and(privacy::has_plaintext))
        .map(|(pk, _)| *pk)
        .collect();
    if pks.is_empty() {
        return Ok(());
    }
    pks.sort_unstable();
    pks.dedup();
    let keys = data_keys(conn, &keyring, &pks).await?;
    for ((pk, sequence), payload) in rows.pks.iter().zip(&rows.sequences).zip(&mut rows.payloads) {
        if let (Some(key), Some(inner)) = (keys.get(pk), inner_mut(payload)) {
            privacy::seal(inner, key, *pk, *sequence)?;
        }
    }
    Ok(())
}

/// The data keys of `pks`, each created (and stored wrapped) if it has none.
pub(crate) async fn data_keys(
    conn: &mut PgConnection,
    keyring: &privacy::Keyring,
    pks: &[i64],
) -> Result<HashMap<i64, std::sync::Arc<privacy::DataKey>>, StoreError> {
    let mut created_pks = Vec::new();
    let mut created_keys = Vec::new();
    let existing: Vec<i64> =
        sqlx::query_scalar("SELECT user_pk FROM user_data_keys WHERE user_pk = ANY($1)")
            .bind(pks)
            .fetch_all(&mut *conn)
            .await?;
    for pk in pks.iter().filter(|pk| !existing.contains(pk)) {
        let (_, wrapped) = keyring.new_data_key(*pk);
        created_pks.push(*pk);
        created_keys.push(wrapped);
    }
    if !created_pks.is_empty() {
        // A concurrent writer may create the same user's key first: its key wins (we
        // wait for its commit here), and is read back below.
        sqlx::query(
            "INSERT INTO user_data_keys (user_pk, wrapped_key, kek_id)
             SELECT t.pk, t.key, $3 FROM UNNEST($1::bigint[], $2::bytea[]) AS t(pk, key)
             ON CONFLICT (user_pk) DO NOTHING",
        )
        .bind(&created_pks)
        .bind(&created_keys)
        .bind(keyring.current().id())
        .execute(&mut *conn)
        .await?;
    }
    let rows: Vec<(i64, Vec<u8>, String)> = sqlx::query_as(
        "SELECT user_pk, wrapped_key, kek_id FROM user_data_keys WHERE user_pk = ANY($1)",
    )
    .bind(pks)
    .fetch_all(&mut *conn)
    .await?;
    let mut keys = HashMap::with_capacity(rows.len());
    for (pk, wrapped, kek_id) in rows {
        keys.insert(pk, keyring.data_key(pk, &wrapped, &kek_id)?);
    }
    Ok(keys)
}

/// The lock a user's key and plaintext are changed under by erasure and by
/// `encrypt-events` (which appends no event, so the events' primary key cannot order it
/// against an erasure). Taken in pk order: two holders of several never deadlock.
pub(crate) async fn lock_users(conn: &mut PgConnection, pks: &[i64]) -> Result<(), StoreError> {
    let mut pks = pks.to_vec();
    pks.sort_unstable();
    pks.dedup();
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('idsync:user-key:' || pk, 0))
           FROM UNNEST($1::bigint[]) AS t(pk) ORDER BY pk",
    )
    .bind(&pks)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Forget these users' personal data: their keys, and the plaintext personal fields of
/// events written before encryption.
async fn forget(conn: &mut PgConnection, pks: &[i64]) -> Result<(), StoreError> {
    lock_users(conn, pks).await?;
    sqlx::query("DELETE FROM user_data_keys WHERE user_pk = ANY($1)")
        .bind(pks)
        .execute(&mut *conn)
        .await?;
    let ids: Vec<String> = pks.iter().map(i64::to_string).collect();
    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT global_position, event_type, payload::text FROM events
          WHERE aggregate_type = $1 AND aggregate_id = ANY($2)
            AND (payload::jsonb -> event_type) ?| array['username', 'email', 'name', 'uid']",
    )
    .bind(<User as Aggregate>::TYPE)
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    for (position, _, payload) in rows {
        let mut value: Value = serde_json::from_str(&payload).map_err(|e| StoreError::Corrupt {
            position,
            reason: e.to_string(),
        })?;
        if let Some(inner) = inner_mut(&mut value) {
            privacy::strip(inner);
        }
        sqlx::query("UPDATE events SET payload = $2::jsonb::json WHERE global_position = $1")
            .bind(position)
            .bind(&value)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The event's own object inside its tagged payload (`{"UserUpdated": {...}}`).
pub(crate) fn inner(payload: &Value) -> Option<&serde_json::Map<String, Value>> {
    payload.as_object()?.values().next()?.as_object()
}

pub(crate) fn inner_mut(payload: &mut Value) -> Option<&mut serde_json::Map<String, Value>> {
    payload
        .as_object_mut()?
        .values_mut()
        .next()?
        .as_object_mut()
}
