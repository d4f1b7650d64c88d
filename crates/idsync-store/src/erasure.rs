//! The database side of crypto-shredding's maintenance (docs/privacy.md): which
//! key-encryption keys wrapped the stored user keys, encrypting events written before
//! encryption, rewrapping user keys with a new key, and the users due for erasure.

use std::time::Duration;

use cqrs_es::Aggregate;
use idsync_domain::User;
use serde_json::Value;
use sqlx::PgPool;

use crate::StoreError;
use crate::event_store::{data_keys, inner_mut, lock_users};
use crate::privacy::{self, Keyring};

/// How many user keys each key-encryption key wrapped, by key id. Empty before the
/// privacy migration ran.
pub async fn key_ids(pool: &PgPool) -> Result<Vec<(String, i64)>, StoreError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('user_data_keys') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_as(
        "SELECT kek_id, count(*) FROM user_data_keys GROUP BY kek_id ORDER BY kek_id",
    )
    .fetch_all(pool)
    .await?)
}

/// The condition of an event whose personal fields are stored in plaintext.
const PLAINTEXT: &str =
    "aggregate_type = 'User' AND event_type IN ('UserRegistered', 'UserUpdated')
    AND (payload::jsonb -> event_type) ?| array['username', 'email', 'name', 'uid']";

/// Whether any event still has personal fields in plaintext (written before encryption).
pub async fn plaintext_remains(pool: &PgPool) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar(&format!(
        "SELECT EXISTS (SELECT 1 FROM events WHERE {PLAINTEXT})"
    ))
    .fetch_one(pool)
    .await?)
}

/// One step of `idsync encrypt-events`: the next `limit` events after position `after`
/// that have personal fields in plaintext are sealed with their users' keys (created
/// when missing), or stripped when their user is erased, in one transaction. Returns
/// how many were rewritten and the position to continue after (None: done).
///
/// Safe beside a running serve: a reader sees an event either in plaintext or sealed,
/// both readable; a user's key and plaintext change under the same per-user lock
/// erasure takes, so an erasure racing this leaves no key and no plaintext behind.
pub async fn encrypt_batch(
    pool: &PgPool,
    keyring: &Keyring,
    after: i64,
    limit: i64,
) -> Result<(u64, Option<i64>), StoreError> {
    let candidates: Vec<(i64, String)> = sqlx::query_as(&format!(
        "SELECT global_position, aggregate_id FROM events
          WHERE global_position > $1 AND {PLAINTEXT}
          ORDER BY global_position LIMIT $2"
    ))
    .bind(after)
    .bind(limit.max(1))
    .fetch_all(pool)
    .await?;
    let Some(last) = candidates.last().map(|c| c.0) else {
        return Ok((0, None));
    };
    let positions: Vec<i64> = candidates.iter().map(|c| c.0).collect();
    let mut pks: Vec<i64> = candidates
        .iter()
        .filter_map(|(_, id)| id.parse().ok())
        .collect();
    pks.sort_unstable();
    pks.dedup();

    let mut tx = pool.begin().await?;
    lock_users(&mut tx, &pks).await?;
    let ids: Vec<String> = pks.iter().map(i64::to_string).collect();
    let erased: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT aggregate_id FROM events
          WHERE aggregate_type = $1 AND aggregate_id = ANY($2) AND event_type = 'UserErased'",
    )
    .bind(<User as Aggregate>::TYPE)
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let live: Vec<i64> = pks
        .iter()
        .copied()
        .filter(|pk| !erased.contains(&pk.to_string()))
        .collect();
    let keys = data_keys(&mut tx, keyring, &live).await?;
    // Read again under the locks: an erasure may have stripped some meanwhile.
    let rows: Vec<(i64, String, i64, String)> = sqlx::query_as(&format!(
        "SELECT global_position, aggregate_id, sequence, payload::text FROM events
          WHERE global_position = ANY($1) AND {PLAINTEXT} FOR UPDATE"
    ))
    .bind(&positions)
    .fetch_all(&mut *tx)
    .await?;
    let mut updated_positions = Vec::with_capacity(rows.len());
    let mut payloads = Vec::with_capacity(rows.len());
    for (position, id, sequence, payload) in rows {
        let corrupt = |reason: String| StoreError::Corrupt { position, reason };
        let pk: i64 = id
            .parse()
            .map_err(|_| corrupt("the aggregate id is not a pk".to_owned()))?;
        let mut value: Value =
            serde_json::from_str(&payload).map_err(|e| corrupt(e.to_string()))?;
        let Some(inner) = inner_mut(&mut value) else {
            return Err(corrupt("payload is not a tagged object".to_owned()));
        };
        match keys.get(&pk) {
            Some(key) => privacy::seal(inner, key, pk, sequence)?,
            None => {
                privacy::strip(inner);
            }
        }
        updated_positions.push(position);
        payloads.push(value);
    }
    sqlx::query(
        "UPDATE events e SET payload = t.payload::json
           FROM UNNEST($1::bigint[], $2::jsonb[]) AS t(position, payload)
          WHERE e.global_position = t.position",
    )
    .bind(&updated_positions)
    .bind(&payloads)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((updated_positions.len() as u64, Some(last)))
}

/// One step of `idsync rotate-data-key`: up to `limit` user keys not wrapped by the
/// current key are rewrapped with it. Returns how many (0: done).
pub async fn rotate_batch(pool: &PgPool, keyring: &Keyring, limit: i64) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await?;
    // SKIP LOCKED: two rotations at once share the work instead of waiting.
    let rows: Vec<(i64, Vec<u8>, String)> = sqlx::query_as(
        "SELECT user_pk, wrapped_key, kek_id FROM user_data_keys
          WHERE kek_id <> $1 ORDER BY user_pk LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(keyring.current().id())
    .bind(limit.max(1))
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut pks = Vec::with_capacity(rows.len());
    let mut wrapped = Vec::with_capacity(rows.len());
    for (pk, key, kek_id) in &rows {
        // An unknown key fails the whole batch before anything is written.
        wrapped.push(keyring.rewrap(*pk, key, kek_id)?);
        pks.push(*pk);
    }
    sqlx::query(
        "UPDATE user_data_keys k SET wrapped_key = t.key, kek_id = $3
           FROM UNNEST($1::bigint[], $2::bytea[]) AS t(pk, key)
          WHERE k.user_pk = t.pk",
    )
    .bind(&pks)
    .bind(&wrapped)
    .bind(keyring.current().id())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(pks.len() as u64)
}

/// Users deleted more than `after` ago and not erased yet (the read model's view), at
/// most `limit`.
pub async fn due_for_erasure(
    pool: &PgPool,
    after: Duration,
    limit: i64,
) -> Result<Vec<i64>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT pk FROM users
          WHERE deleted_at IS NOT NULL AND NOT erased
            AND deleted_at < now() - make_interval(secs => $1)
          ORDER BY pk LIMIT $2",
    )
    .bind(after.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
