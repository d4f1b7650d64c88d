//! Reading events back in global order: the one reader every consumer shares (API
//! pages, SSE and WebSocket feeds, projections).

use chrono::{DateTime, Utc};
use idsync_domain::User;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgExecutor, Row};

use crate::StoreError;
use crate::ids::{Position, UserPk};
use crate::privacy::{self, Erased, StoredKey};

/// The contract's feed item (docs/contract.md): what SSE `data:`, a WebSocket `event` message and an
/// `/api/events` entry carry. Its OpenAPI description is the server's
/// (`api::schema::FeedItemSchema`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedItem {
    pub position: Position,
    #[serde(rename = "type")]
    pub event_type: String,
    pub user_pk: UserPk,
    pub sequence: i64,
    pub recorded_at: DateTime<Utc>,
    /// `UserRegistered`: the user; `UserUpdated`: `pk` and the changed fields; `UserDeleted`,
    /// `UserErased`: `pk`. An erased user's personal fields are `null`, with `"erased": true`.
    pub data: Value,
    /// `source` (`webhook` or `reconcile`), `event_id` when known, `received_at`.
    pub metadata: Value,
}

/// Upper bound on one page, whatever a caller asks for.
pub const MAX_PAGE: i64 = 1000;

/// Each event with its user's data key (none once erased) to open sealed fields with.
const SELECT: &str = "SELECT e.global_position, e.event_type, e.aggregate_id, e.sequence, e.recorded_at, e.payload, e.metadata, k.wrapped_key, k.kek_id
  FROM events e LEFT JOIN user_data_keys k ON k.user_pk = e.aggregate_id::bigint";

/// UNPREPARED: the feed reads below run as unnamed statements, not cached prepared
/// ones. A prepared statement switches to a generic plan after five runs when Postgres
/// estimates it no worse; right after a database restart (fresh statistics, every
/// reader catching up at once) that plan ignored the selective `global_position > $n`
/// and took ~100 s per call. An unnamed statement is planned with its parameters every
/// time: a parse per call, instead of a chance of a plan that stalls every feed.
///
/// Events with `global_position > after`, oldest first, at most `limit`.
///
/// A plain `>` cursor is correct only because positions are assigned under the counter
/// row's lock (see the first migration): no smaller position can commit later.
pub async fn read_after<'e>(
    db: impl PgExecutor<'e>,
    after: Position,
    limit: i64,
) -> Result<Vec<FeedItem>, StoreError> {
    read_after_unbounded(db, after, limit.clamp(0, MAX_PAGE)).await
}

/// Like `read_after`, without the page cap: for replay, which reads large batches.
pub async fn read_after_unbounded<'e>(
    db: impl PgExecutor<'e>,
    after: Position,
    limit: i64,
) -> Result<Vec<FeedItem>, StoreError> {
    let rows = sqlx::query(&format!(
        "{SELECT} WHERE e.aggregate_type = $1 AND e.global_position > $2 ORDER BY e.global_position LIMIT $3"
    ))
    // Planned for its parameters every time (see UNPREPARED).
    .persistent(false)
    .bind(<User as cqrs_es::Aggregate>::TYPE)
    .bind(after)
    .bind(limit.max(0))
    .fetch_all(db)
    .await?;
    rows.iter().map(to_item).collect()
}

/// Events as a projection rebuild reads them in bulk: the rows as they came, decoded
/// one by one on demand (see [`RawEvent`]). Owns its rows, so it can be handed to
/// another thread while the next batch is read.
#[derive(Debug, Default)]
pub struct RawBatch {
    rows: Vec<PgRow>,
}

/// An event of a [`RawBatch`]: the stored payload as text (still tagged,
/// `{"UserUpdated": {...}}`), to deserialise straight into typed structs, and no
/// metadata. Borrowed from the row: nothing is copied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawEvent<'r> {
    pub position: i64,
    pub event_type: &'r str,
    pub user_pk: i64,
    pub sequence: i64,
    pub recorded_at: DateTime<Utc>,
    pub payload: &'r str,
    /// The user's data key, to open sealed personal fields (None once erased).
    pub key: Option<StoredKey<'r>>,
}

impl RawBatch {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The position of the last event (None when empty).
    pub fn last_position(&self) -> Result<Option<i64>, StoreError> {
        Ok(match self.rows.last() {
            Some(row) => Some(row.try_get(0)?),
            None => None,
        })
    }

    /// The events, oldest first.
    pub fn events(&self) -> impl Iterator<Item = Result<RawEvent<'_>, StoreError>> {
        self.rows.iter().map(|row| {
            let position: i64 = row.try_get(0)?;
            let aggregate_id: &str = row.try_get(2)?;
            let user_pk = aggregate_id.parse().map_err(|_| StoreError::Corrupt {
                position,
                reason: format!("aggregate id {aggregate_id:?} is not a pk"),
            })?;
            let wrapped: Option<&[u8]> = row.try_get(6)?;
            let kek_id: Option<&str> = row.try_get(7)?;
            Ok(RawEvent {
                position,
                event_type: row.try_get(1)?,
                user_pk,
                sequence: row.try_get(5)?,
                recorded_at: row.try_get(3)?,
                payload: row.try_get(4)?,
                key: wrapped
                    .zip(kek_id)
                    .map(|(wrapped, kek_id)| StoredKey { wrapped, kek_id }),
            })
        })
    }
}

/// Like `read_after_unbounded`, for bulk readers (replay): the same events, in the same
/// order, as a [`RawBatch`] instead of feed items.
pub async fn read_raw_after<'e>(
    db: impl PgExecutor<'e>,
    after: i64,
    limit: i64,
) -> Result<RawBatch, StoreError> {
    let rows = sqlx::query(
        "SELECT e.global_position, e.event_type, e.aggregate_id, e.recorded_at, e.payload::text,
                e.sequence, k.wrapped_key, k.kek_id
           FROM events e LEFT JOIN user_data_keys k ON k.user_pk = e.aggregate_id::bigint
          WHERE e.aggregate_type = $1 AND e.global_position > $2
          ORDER BY e.global_position LIMIT $3",
    )
    // Planned for its parameters every time (see UNPREPARED).
    .persistent(false)
    .bind(<User as cqrs_es::Aggregate>::TYPE)
    .bind(after)
    .bind(limit.max(0))
    .fetch_all(db)
    .await?;
    Ok(RawBatch { rows })
}

/// One user's events with `global_position > after`, oldest first.
pub async fn read_user_after<'e>(
    db: impl PgExecutor<'e>,
    pk: UserPk,
    after: Position,
    limit: i64,
) -> Result<Vec<FeedItem>, StoreError> {
    let rows = sqlx::query(&format!(
        "{SELECT} WHERE e.aggregate_type = $1 AND e.aggregate_id = $2 AND e.global_position > $3 ORDER BY e.global_position LIMIT $4"
    ))
    // Planned for its parameters every time (see UNPREPARED).
    .persistent(false)
    .bind(<User as cqrs_es::Aggregate>::TYPE)
    .bind(pk.to_string())
    .bind(after)
    .bind(limit.clamp(0, MAX_PAGE))
    .fetch_all(db)
    .await?;
    rows.iter().map(to_item).collect()
}

/// The highest position committed so far (0 for an empty store).
pub async fn head<'e>(db: impl PgExecutor<'e>) -> Result<Position, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT COALESCE(max(global_position), 0)::bigint FROM events")
            .fetch_one(db)
            .await?,
    )
}

fn to_item(row: &sqlx::postgres::PgRow) -> Result<FeedItem, StoreError> {
    let position: i64 = row.try_get("global_position")?;
    let corrupt = |reason: String| StoreError::Corrupt { position, reason };
    let event_type: String = row.try_get("event_type")?;
    let aggregate_id: String = row.try_get("aggregate_id")?;
    let user_pk = aggregate_id
        .parse()
        .map_err(|_| corrupt(format!("aggregate id {aggregate_id:?} is not a pk")))?;
    let payload: Value = row.try_get("payload")?;
    let sequence: i64 = row.try_get("sequence")?;
    let mut data = unwrap_payload(&event_type, payload).map_err(corrupt)?;
    if let Value::Object(inner) = &mut data {
        let wrapped: Option<&[u8]> = row.try_get("wrapped_key")?;
        let kek_id: Option<&str> = row.try_get("kek_id")?;
        let key = wrapped
            .zip(kek_id)
            .map(|(wrapped, kek_id)| StoredKey { wrapped, kek_id });
        // An erased user's fields come out `null` with `"erased": true`, never an error.
        privacy::open(inner, user_pk, sequence, key, Erased::Null)?;
    }
    Ok(FeedItem {
        position: Position(position),
        data,
        event_type,
        user_pk: UserPk(user_pk),
        sequence,
        recorded_at: row.try_get("recorded_at")?,
        metadata: row.try_get("metadata")?,
    })
}

/// postgres-es stores serde's external tagging, `{"UserUpdated": {...}}`; feeds publish
/// the inner object, since the type is already a field of its own.
fn unwrap_payload(event_type: &str, payload: Value) -> Result<Value, String> {
    match payload {
        Value::Object(mut map) if map.len() == 1 => map
            .remove(event_type)
            .ok_or_else(|| format!("payload is not tagged {event_type}")),
        _ => Err(format!("payload is not a tagged {event_type} object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payload_is_unwrapped_from_its_tag() {
        assert_eq!(
            unwrap_payload("UserDeleted", json!({"UserDeleted": {"pk": 3}})),
            Ok(json!({"pk": 3}))
        );
        assert!(unwrap_payload("UserDeleted", json!({"UserUpdated": {"pk": 3}})).is_err());
        assert!(unwrap_payload("UserDeleted", json!([1])).is_err());
    }
}
