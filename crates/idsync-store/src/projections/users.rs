//! The `users` read model: the CONTRACT's user, one row per pk, deleted users kept with
//! `deleted_at`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use idsync_domain::{UserChanges, UserSnapshot};
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, PgConnection, PgExecutor};
use uuid::Uuid;

use super::Projection;
use crate::{FeedItem, StoreError};

/// A row of `users`, serialised as the CONTRACT's user.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize, utoipa::ToSchema)]
#[schema(as = User)]
pub struct UserRow {
    pub pk: i64,
    pub uuid: Uuid,
    pub username: String,
    pub email: String,
    pub name: String,
    pub is_active: bool,
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub user_type: String,
    pub groups: Vec<String>,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    #[schema(ignore)]
    pub position: i64,
}

impl UserRow {
    /// The user as a snapshot, to compare with one fetched from Authentik.
    pub fn to_snapshot(&self) -> UserSnapshot {
        UserSnapshot {
            pk: self.pk,
            uuid: self.uuid,
            username: self.username.clone(),
            email: self.email.clone(),
            name: self.name.clone(),
            is_active: self.is_active,
            user_type: self.user_type.clone(),
            groups: self.groups.clone(),
            date_joined: self.registered_at,
        }
    }

    fn from_snapshot(s: UserSnapshot, at: DateTime<Utc>, position: i64) -> Self {
        Self {
            pk: s.pk,
            uuid: s.uuid,
            username: s.username,
            email: s.email,
            name: s.name,
            is_active: s.is_active,
            user_type: s.user_type,
            groups: s.groups,
            registered_at: s.date_joined,
            updated_at: at,
            deleted_at: None,
            position,
        }
    }
}

const COLUMNS: &str = "pk, uuid, username, email, name, is_active, type, groups, registered_at, updated_at, deleted_at, position";

/// One user of the read model.
pub async fn get<'e>(db: impl PgExecutor<'e>, pk: i64) -> Result<Option<UserRow>, StoreError> {
    Ok(
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE pk = $1"))
            .bind(pk)
            .fetch_optional(db)
            .await?,
    )
}

/// A page of users with `pk > after`, by pk (keyset paging: stable under inserts).
pub async fn page<'e>(
    db: impl PgExecutor<'e>,
    after: i64,
    limit: i64,
) -> Result<Vec<UserRow>, StoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM users WHERE pk > $1 ORDER BY pk LIMIT $2"
    ))
    .bind(after)
    .bind(limit.clamp(0, 1000))
    .fetch_all(db)
    .await?)
}

/// Every user not deleted, by pk (reconcile compares them all with Authentik).
pub async fn all_active<'e>(db: impl PgExecutor<'e>) -> Result<Vec<UserRow>, StoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM users WHERE deleted_at IS NULL ORDER BY pk"
    ))
    .fetch_all(db)
    .await?)
}

/// The projection that maintains `users`.
#[derive(Debug, Clone, Copy, Default)]
pub struct UsersProjection;

impl Projection for UsersProjection {
    const NAME: &'static str = "users";
    const TABLE: &'static str = "users";

    /// Set-based: one read of the affected rows, the events folded in memory, one upsert.
    async fn apply(
        &self,
        conn: &mut PgConnection,
        table: &str,
        items: &[FeedItem],
    ) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let mut pks: Vec<i64> = items.iter().map(|i| i.user_pk).collect();
        pks.sort_unstable();
        pks.dedup();
        let existing: Vec<UserRow> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM {table} WHERE pk = ANY($1)"))
                .bind(&pks)
                .fetch_all(&mut *conn)
                .await?;
        let mut rows: HashMap<i64, UserRow> = existing.into_iter().map(|r| (r.pk, r)).collect();
        let mut changed: Vec<i64> = Vec::with_capacity(pks.len());
        for item in items {
            if fold(&mut rows, item)? {
                changed.push(item.user_pk);
            }
        }
        changed.sort_unstable();
        changed.dedup();
        upsert(conn, table, changed.iter().filter_map(|pk| rows.get(pk))).await
    }
}

/// Apply one event to the in-memory rows. Returns whether a row changed. Events at or
/// below a row's position were applied already (a replay catching up over rows it
/// wrote): skipping them makes applying idempotent.
fn fold(rows: &mut HashMap<i64, UserRow>, item: &FeedItem) -> Result<bool, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        position: item.position,
        reason,
    };
    if rows
        .get(&item.user_pk)
        .is_some_and(|r| r.position >= item.position)
    {
        return Ok(false);
    }
    match item.event_type.as_str() {
        "UserRegistered" => {
            let snapshot = UserSnapshot::deserialize(&item.data)
                .map_err(|e| corrupt(format!("UserRegistered: {e}")))?;
            rows.insert(
                item.user_pk,
                UserRow::from_snapshot(snapshot, item.recorded_at, item.position),
            );
        }
        "UserUpdated" => {
            let changes = UserChanges::deserialize(&item.data)
                .map_err(|e| corrupt(format!("UserUpdated: {e}")))?;
            let Some(row) = rows.get_mut(&item.user_pk) else {
                return Err(corrupt(
                    "UserUpdated for a user never registered".to_owned(),
                ));
            };
            let mut snapshot = row.to_snapshot();
            changes.apply_to(&mut snapshot);
            let deleted_at = row.deleted_at;
            *row = UserRow::from_snapshot(snapshot, item.recorded_at, item.position);
            row.deleted_at = deleted_at;
        }
        "UserDeleted" => {
            let Some(row) = rows.get_mut(&item.user_pk) else {
                return Err(corrupt(
                    "UserDeleted for a user never registered".to_owned(),
                ));
            };
            row.deleted_at = Some(item.recorded_at);
            row.updated_at = item.recorded_at;
            row.position = item.position;
        }
        other => return Err(corrupt(format!("unknown event type {other}"))),
    }
    Ok(true)
}

async fn upsert<'r>(
    conn: &mut PgConnection,
    table: &str,
    rows: impl Iterator<Item = &'r UserRow>,
) -> Result<(), StoreError> {
    let mut cols = Columns::default();
    for r in rows {
        cols.pk.push(r.pk);
        cols.uuid.push(r.uuid);
        cols.username.push(r.username.as_str());
        cols.email.push(r.email.as_str());
        cols.name.push(r.name.as_str());
        cols.is_active.push(r.is_active);
        cols.user_type.push(r.user_type.as_str());
        // text[][] cannot be ragged, so each row's groups travel as one array literal.
        cols.groups.push(array_literal(&r.groups));
        cols.registered_at.push(r.registered_at);
        cols.updated_at.push(r.updated_at);
        cols.deleted_at.push(r.deleted_at);
        cols.position.push(r.position);
    }
    if cols.pk.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!(
        "INSERT INTO {table} ({COLUMNS})
         SELECT pk, uuid, username, email, name, is_active, type,
                groups::text[], registered_at, updated_at, deleted_at, position
           FROM UNNEST($1::bigint[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::bool[], $7::text[],
                       $8::text[], $9::timestamptz[], $10::timestamptz[], $11::timestamptz[], $12::bigint[])
                AS t(pk, uuid, username, email, name, is_active, type, groups, registered_at, updated_at, deleted_at, position)
         ON CONFLICT (pk) DO UPDATE SET
             uuid = EXCLUDED.uuid, username = EXCLUDED.username, email = EXCLUDED.email,
             name = EXCLUDED.name, is_active = EXCLUDED.is_active, type = EXCLUDED.type,
             groups = EXCLUDED.groups, registered_at = EXCLUDED.registered_at,
             updated_at = EXCLUDED.updated_at, deleted_at = EXCLUDED.deleted_at,
             position = EXCLUDED.position"
    ))
    .bind(&cols.pk)
    .bind(&cols.uuid)
    .bind(&cols.username)
    .bind(&cols.email)
    .bind(&cols.name)
    .bind(&cols.is_active)
    .bind(&cols.user_type)
    .bind(&cols.groups)
    .bind(&cols.registered_at)
    .bind(&cols.updated_at)
    .bind(&cols.deleted_at)
    .bind(&cols.position)
    .execute(conn)
    .await?;
    Ok(())
}

/// A Postgres array literal, every element quoted and escaped, so any text survives.
fn array_literal(items: &[String]) -> String {
    let mut out = String::with_capacity(2 + items.iter().map(|s| s.len() + 3).sum::<usize>());
    out.push('{');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in item.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
    out
}

#[derive(Default)]
struct Columns<'r> {
    pk: Vec<i64>,
    uuid: Vec<Uuid>,
    username: Vec<&'r str>,
    email: Vec<&'r str>,
    name: Vec<&'r str>,
    is_active: Vec<bool>,
    user_type: Vec<&'r str>,
    groups: Vec<String>,
    registered_at: Vec<DateTime<Utc>>,
    updated_at: Vec<DateTime<Utc>>,
    deleted_at: Vec<Option<DateTime<Utc>>>,
    position: Vec<i64>,
}

#[cfg(test)]
mod tests {
    use super::array_literal;

    #[test]
    fn array_literals_quote_everything() {
        assert_eq!(array_literal(&[]), "{}");
        assert_eq!(
            array_literal(&[
                "a b".into(),
                "it's".into(),
                r#"q"u\o,t{e}"#.into(),
                "NULL".into()
            ]),
            r#"{"a b","it's","q\"u\\o,t{e}","NULL"}"#
        );
    }
}
