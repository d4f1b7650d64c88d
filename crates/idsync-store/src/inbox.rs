//! The durable webhook inbox. Intake inserts; sync workers claim, then finish, retry or
//! fail items; operators list and retry them.
//!
//! An item is about a user (by pk) or a group (by uuid): its [`Subject`]. Claiming takes,
//! with `FOR UPDATE SKIP LOCKED`, only items that are the earliest unfinished one of
//! their subject: so two items of one user (or group) are never in flight at once, a
//! subject's items run in arrival order, and any number of workers in any number of
//! processes share the table without double processing. A claimed item carries a lease;
//! a process that dies mid-item loses it when the lease expires and another worker
//! reclaims the item. Completing checks the lease is still ours.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

use crate::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Processing,
    Done,
    Ignored,
    Failed,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Pending,
        Status::Processing,
        Status::Done,
        Status::Ignored,
        Status::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Processing => "processing",
            Status::Done => "done",
            Status::Ignored => "ignored",
            Status::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// What an item is about. Stored as `user_pk` (0 for a group) and `group_pk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    User(i64),
    Group(Uuid),
}

impl Subject {
    fn columns(self) -> (i64, Option<Uuid>) {
        match self {
            Subject::User(pk) => (pk, None),
            Subject::Group(uuid) => (0, Some(uuid)),
        }
    }

    fn from_columns(user_pk: i64, group_pk: Option<Uuid>) -> Self {
        match group_pk {
            Some(uuid) => Subject::Group(uuid),
            None => Subject::User(user_pk),
        }
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::User(pk) => write!(f, "{pk}"),
            Subject::Group(uuid) => write!(f, "group {uuid}"),
        }
    }
}

/// A webhook to store.
#[derive(Debug, Clone)]
pub struct NewItem {
    pub event_id: Option<String>,
    pub action: &'static str,
    pub subject: Subject,
    pub format: &'static str,
    pub body: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    New(Uuid),
    /// An item with the same `event_id` exists already: this one is a re-delivery.
    Duplicate(Uuid),
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct Item {
    pub id: Uuid,
    pub seq: i64,
    pub received_at: DateTime<Utc>,
    pub event_id: Option<String>,
    pub action: String,
    /// 0 for a group's item.
    pub user_pk: i64,
    pub group_pk: Option<Uuid>,
    pub format: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub outcome: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Item {
    pub fn subject(&self) -> Subject {
        Subject::from_columns(self.user_pk, self.group_pk)
    }
}

const ITEM_COLUMNS: &str = "id, seq, received_at, event_id, action, user_pk, group_pk, format, status, \
     attempts, next_attempt_at, last_error, outcome, finished_at";

/// Store one webhook. Returns once the row is committed.
pub async fn insert(pool: &PgPool, item: NewItem) -> Result<Inserted, StoreError> {
    let mut results = insert_many(pool, vec![item]).await?;
    results
        .pop()
        .ok_or_else(|| StoreError::EventStore("insert returned no result".to_owned()))
}

/// Store several webhooks in one statement and one commit, in the order given (which
/// becomes their arrival order). Results come back in the same order. One commit for a
/// batch instead of one per row is what lets intake keep up with Postgres's own
/// single-row rate (see `docs/performance.md`).
pub async fn insert_many(pool: &PgPool, items: Vec<NewItem>) -> Result<Vec<Inserted>, StoreError> {
    let mut conn = pool.acquire().await?;
    insert_many_with(&mut conn, items).await
}

/// Like [`insert_many`], on a connection the caller acquired (intake acquires with a
/// shorter timeout than the pool's, so a database outage is answered quickly).
pub async fn insert_many_with(
    conn: &mut sqlx::PgConnection,
    items: Vec<NewItem>,
) -> Result<Vec<Inserted>, StoreError> {
    let n = items.len();
    let mut ids = Vec::with_capacity(n);
    let mut event_ids = Vec::with_capacity(n);
    let mut actions = Vec::with_capacity(n);
    let mut pks = Vec::with_capacity(n);
    let mut group_pks = Vec::with_capacity(n);
    let mut formats = Vec::with_capacity(n);
    let mut bodies = Vec::with_capacity(n);
    for item in items {
        ids.push(Uuid::now_v7());
        event_ids.push(item.event_id);
        actions.push(item.action);
        let (user_pk, group_pk) = item.subject.columns();
        pks.push(user_pk);
        group_pks.push(group_pk);
        formats.push(item.format);
        bodies.push(item.body);
    }
    // ON CONFLICT DO NOTHING skips re-deliveries, including two of the same event in
    // one batch; RETURNING names the rows that were new.
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO webhook_inbox (id, event_id, action, user_pk, group_pk, format, body)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::uuid[], $6::text[], $7::text[])
         ON CONFLICT (event_id) DO NOTHING
         RETURNING id",
    )
    .bind(&ids)
    .bind(&event_ids)
    .bind(&actions)
    .bind(&pks)
    .bind(&group_pks)
    .bind(&formats)
    .bind(&bodies)
    .fetch_all(&mut *conn)
    .await?;
    let inserted: std::collections::HashSet<Uuid> = inserted.into_iter().collect();
    let duplicates: Vec<&str> = ids
        .iter()
        .zip(&event_ids)
        .filter(|(id, _)| !inserted.contains(id))
        .filter_map(|(_, e)| e.as_deref())
        .collect();
    let existing: std::collections::HashMap<String, Uuid> = if duplicates.is_empty() {
        Default::default()
    } else {
        sqlx::query_as::<_, (String, Uuid)>(
            "SELECT event_id, id FROM webhook_inbox WHERE event_id = ANY($1)",
        )
        .bind(&duplicates)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect()
    };
    ids.into_iter()
        .zip(event_ids)
        .map(|(id, event_id)| {
            if inserted.contains(&id) {
                return Ok(Inserted::New(id));
            }
            event_id
                .and_then(|e| existing.get(&e).copied())
                .map(Inserted::Duplicate)
                .ok_or_else(|| {
                    StoreError::EventStore("a row was neither inserted nor found".to_owned())
                })
        })
        .collect()
}

/// A claimed item: what a worker needs to process it.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: Uuid,
    pub event_id: Option<String>,
    pub action: String,
    pub subject: Subject,
    pub received_at: DateTime<Utc>,
    /// Including this one.
    pub attempts: i32,
}

#[derive(FromRow)]
struct ClaimedRow {
    id: Uuid,
    event_id: Option<String>,
    action: String,
    user_pk: i64,
    group_pk: Option<Uuid>,
    received_at: DateTime<Utc>,
    attempts: i32,
}

impl From<ClaimedRow> for Claimed {
    fn from(row: ClaimedRow) -> Self {
        Self {
            id: row.id,
            event_id: row.event_id,
            action: row.action,
            subject: Subject::from_columns(row.user_pk, row.group_pk),
            received_at: row.received_at,
            attempts: row.attempts,
        }
    }
}

/// Claim up to `limit` due items for `worker`, leased for `lease`.
pub async fn claim(
    pool: &PgPool,
    worker: &str,
    lease: Duration,
    limit: i64,
) -> Result<Vec<Claimed>, StoreError> {
    let rows: Vec<ClaimedRow> = sqlx::query_as(
        "WITH candidate AS (
             SELECT i.id
               FROM webhook_inbox i
              WHERE i.status IN ('pending', 'processing')
                AND (i.status = 'pending' OR i.locked_until < now())
                AND i.next_attempt_at <= now()
                AND NOT EXISTS (
                    SELECT 1 FROM webhook_inbox e
                     WHERE e.user_pk = i.user_pk
                       AND e.group_pk IS NOT DISTINCT FROM i.group_pk
                       AND e.seq < i.seq
                       AND e.status IN ('pending', 'processing'))
              ORDER BY i.seq
              LIMIT $3
                FOR UPDATE SKIP LOCKED)
         UPDATE webhook_inbox w
            SET status = 'processing',
                locked_until = now() + make_interval(secs => $2),
                locked_by = $1,
                attempts = w.attempts + 1
           FROM candidate
          WHERE w.id = candidate.id
         RETURNING w.id, w.event_id, w.action, w.user_pk, w.group_pk, w.received_at, w.attempts",
    )
    // Not a cached prepared statement: after a few runs Postgres may switch a prepared
    // statement to a generic plan, and for this query (with `now()` and the NOT EXISTS
    // per subject) the generic plan chosen after a database restart, on fresh
    // statistics, took ~100 s per call. An unnamed statement is planned for its actual
    // parameters every time, which costs far less than one bad plan.
    .persistent(false)
    .bind(worker)
    .bind(lease.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Claimed::from).collect())
}

/// Finish a claimed item as done with `outcome` and, in the same transaction, store
/// `followups`: the items its processing asks for (a group's change becomes one refresh
/// item per affected user). Followups carry event ids derived from the item, so doing
/// this twice (after a lost lease) stores them once. False when the lease was lost:
/// then nothing is written.
pub async fn finish_with_followups(
    pool: &PgPool,
    id: Uuid,
    worker: &str,
    outcome: &str,
    followups: Vec<NewItem>,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let updated = sqlx::query(
        "UPDATE webhook_inbox
            SET status = 'done', outcome = $3, finished_at = now(), locked_until = NULL, last_error = NULL
          WHERE id = $1 AND locked_by = $2 AND status = 'processing'",
    )
    .bind(id)
    .bind(worker)
    .bind(outcome)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() != 1 {
        return Ok(false);
    }
    for chunk in chunked(followups, 1000) {
        insert_many_with(&mut tx, chunk).await?;
    }
    tx.commit().await?;
    Ok(true)
}

fn chunked<T>(items: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut chunks = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        chunks.push(items.by_ref().take(size).collect());
    }
    chunks
}

/// Finish a claimed item as `done` or `ignored` with its outcome. False when the lease
/// was lost (another worker reclaimed the item; its result stands).
pub async fn finish(
    pool: &PgPool,
    id: Uuid,
    worker: &str,
    status: Status,
    outcome: &str,
) -> Result<bool, StoreError> {
    let updated = sqlx::query(
        "UPDATE webhook_inbox
            SET status = $3, outcome = $4, finished_at = now(), locked_until = NULL, last_error = NULL
          WHERE id = $1 AND locked_by = $2 AND status = 'processing'",
    )
    .bind(id)
    .bind(worker)
    .bind(status.as_str())
    .bind(outcome)
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Put a claimed item back to be tried again at `retry_at`, recording why.
pub async fn retry_later(
    pool: &PgPool,
    id: Uuid,
    worker: &str,
    retry_at: DateTime<Utc>,
    error: &str,
) -> Result<bool, StoreError> {
    let updated = sqlx::query(
        "UPDATE webhook_inbox
            SET status = 'pending', next_attempt_at = $3, last_error = $4, locked_until = NULL
          WHERE id = $1 AND locked_by = $2 AND status = 'processing'",
    )
    .bind(id)
    .bind(worker)
    .bind(retry_at)
    .bind(truncate(error))
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Give up on a claimed item.
pub async fn fail(pool: &PgPool, id: Uuid, worker: &str, error: &str) -> Result<bool, StoreError> {
    let updated = sqlx::query(
        "UPDATE webhook_inbox
            SET status = 'failed', last_error = $3, outcome = 'failed', finished_at = now(), locked_until = NULL
          WHERE id = $1 AND locked_by = $2 AND status = 'processing'",
    )
    .bind(id)
    .bind(worker)
    .bind(truncate(error))
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Hand an item back untouched (shutdown while it was in flight): it does not count as
/// an attempt and is due at once.
pub async fn release(pool: &PgPool, id: Uuid, worker: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE webhook_inbox
            SET status = 'pending', locked_until = NULL, attempts = greatest(attempts - 1, 0)
          WHERE id = $1 AND locked_by = $2 AND status = 'processing'",
    )
    .bind(id)
    .bind(worker)
    .execute(pool)
    .await?;
    Ok(())
}

/// Items, newest first, optionally of one status.
pub async fn list(
    pool: &PgPool,
    status: Option<Status>,
    limit: i64,
) -> Result<Vec<Item>, StoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {ITEM_COLUMNS} FROM webhook_inbox
          WHERE $1::text IS NULL OR status = $1
          ORDER BY seq DESC LIMIT $2"
    ))
    .bind(status.map(Status::as_str))
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<Item>, StoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {ITEM_COLUMNS} FROM webhook_inbox WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

/// Make a finished item (failed, done or ignored) pending again, due now, with a fresh
/// attempt count. Returns false when there is no such item or it is still unfinished.
pub async fn retry(pool: &PgPool, id: Uuid) -> Result<bool, StoreError> {
    let updated = sqlx::query(
        "UPDATE webhook_inbox
            SET status = 'pending', attempts = 0, next_attempt_at = now(), locked_until = NULL,
                locked_by = NULL, outcome = NULL, finished_at = NULL
          WHERE id = $1 AND status IN ('failed', 'done', 'ignored')",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Make every failed item pending again. Returns how many.
pub async fn retry_failed(pool: &PgPool) -> Result<u64, StoreError> {
    let updated = sqlx::query(
        "UPDATE webhook_inbox
            SET status = 'pending', attempts = 0, next_attempt_at = now(), locked_until = NULL,
                locked_by = NULL, outcome = NULL, finished_at = NULL
          WHERE status = 'failed'",
    )
    .execute(pool)
    .await?;
    Ok(updated.rows_affected())
}

/// Items per status, every status present (0 when none).
pub async fn counts(pool: &PgPool) -> Result<Vec<(Status, i64)>, StoreError> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM webhook_inbox GROUP BY status")
            .fetch_all(pool)
            .await?;
    Ok(Status::ALL
        .into_iter()
        .map(|st| {
            let n = rows
                .iter()
                .find(|(s, _)| s == st.as_str())
                .map_or(0, |(_, n)| *n);
            (st, n)
        })
        .collect())
}

/// Age of the oldest unfinished item, or zero.
pub async fn oldest_unfinished_age(pool: &PgPool) -> Result<Duration, StoreError> {
    let secs: f64 = sqlx::query_scalar(
        "SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(received_at)), 0)::float8
           FROM webhook_inbox WHERE status IN ('pending', 'processing')",
    )
    .fetch_one(pool)
    .await?;
    Ok(Duration::from_secs_f64(secs.max(0.0)))
}

/// The earliest time an unfinished item becomes due (for a worker deciding how long
/// to sleep).
pub async fn next_due(pool: &PgPool) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT min(CASE WHEN status = 'processing' THEN greatest(locked_until, next_attempt_at)
                         ELSE next_attempt_at END)
           FROM webhook_inbox WHERE status IN ('pending', 'processing')",
    )
    .fetch_one(pool)
    .await?)
}

fn truncate(text: &str) -> &str {
    const MAX: usize = 2000;
    if text.len() <= MAX {
        return text;
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
