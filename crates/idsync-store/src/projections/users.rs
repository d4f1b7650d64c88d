//! The `users` read model: the contract's user (docs/contract.md), one row per pk, deleted users kept with
//! `deleted_at`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use idsync_domain::{UserChanges, UserFields, UserFieldsMut, UserSnapshot};
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, PgConnection, PgExecutor};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::Projection;
use super::replay::RebuildProgress;
use crate::feed::{self, RawEvent};
use crate::{FeedItem, Position, StoreError};

/// A row of `users`, serialised as the contract's user (docs/contract.md). An erased
/// user's personal fields are empty here and `null` in its JSON, with `"erased": true`.
/// Its OpenAPI description is the server's (`api::schema::UserSchema`).
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct UserRow {
    pub pk: i64,
    pub uuid: Uuid,
    /// empty once erased (`null` in its JSON)
    pub username: String,
    /// empty once erased (`null` in its JSON)
    pub email: String,
    /// empty once erased (`null` in its JSON)
    pub name: String,
    pub is_active: bool,
    /// `type` in its JSON.
    #[sqlx(rename = "type")]
    pub user_type: String,
    pub groups: Vec<String>,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    /// Authentik's hashed user id (what `sub` carries under its default `sub_mode`);
    /// null for a user registered before idsync kept it, until the next reconcile.
    pub uid: Option<String>,
    /// The position of the last event folded in (not sent to clients).
    pub position: i64,
    /// The user's personal data was forgotten (right to erasure): `username`, `email`,
    /// `name` and `uid` are null.
    pub erased: bool,
}

/// By hand, for the erased user's nulls; `users_json` writes the same members in the
/// same order (tests compare the two).
impl Serialize for UserRow {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let personal = |value: &str| (!self.erased).then(|| value.to_owned());
        let mut s = serializer.serialize_struct("User", 13)?;
        s.serialize_field("pk", &self.pk)?;
        s.serialize_field("uuid", &self.uuid)?;
        s.serialize_field("username", &personal(&self.username))?;
        s.serialize_field("email", &personal(&self.email))?;
        s.serialize_field("name", &personal(&self.name))?;
        s.serialize_field("is_active", &self.is_active)?;
        s.serialize_field("type", &self.user_type)?;
        s.serialize_field("groups", &self.groups)?;
        s.serialize_field("registered_at", &self.registered_at)?;
        s.serialize_field("updated_at", &self.updated_at)?;
        s.serialize_field("deleted_at", &self.deleted_at)?;
        s.serialize_field("uid", &self.uid.as_deref().filter(|_| !self.erased))?;
        s.serialize_field("erased", &self.erased)?;
        s.end()
    }
}

/// Updates write the same fields as in the aggregate; `date_joined` is `registered_at`.
impl UserFieldsMut for UserRow {
    fn fields_mut(&mut self) -> UserFields<'_> {
        UserFields {
            uuid: &mut self.uuid,
            username: &mut self.username,
            email: &mut self.email,
            name: &mut self.name,
            is_active: &mut self.is_active,
            user_type: &mut self.user_type,
            groups: &mut self.groups,
            date_joined: &mut self.registered_at,
            uid: &mut self.uid,
        }
    }
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
            uid: self.uid.clone(),
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
            uid: s.uid,
            position,
            erased: false,
        }
    }
}

pub(crate) const COLUMNS: &str = "pk, uuid, username, email, name, is_active, type, groups, registered_at, updated_at, deleted_at, uid, position, erased";

/// One user of the read model.
pub async fn get<'e>(db: impl PgExecutor<'e>, pk: i64) -> Result<Option<UserRow>, StoreError> {
    Ok(
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE pk = $1"))
            .bind(pk)
            .fetch_optional(db)
            .await?,
    )
}

/// A page of users as the API's JSON: the array, how many, the last pk, and the users
/// projection's checkpoint in the same snapshot (-1 for an empty page: unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPage {
    pub users: Vec<u8>,
    pub count: i64,
    pub last_pk: Option<i64>,
    pub checkpoint: i64,
}

/// What a page of users is narrowed to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct UserFilter {
    /// A case-insensitive prefix of the username, the email or the name.
    pub prefix: Option<String>,
    /// Authentik's user type (`internal`, `external`, `service_account`,
    /// `internal_service_account`).
    pub user_type: Option<String>,
}

/// The SQL of a page of users matching `filter` with `pk > after` (`$1`), by pk, at most
/// `$2` (keyset paging: stable under inserts). `$3` is the prefix pattern when
/// searching, then `$3`/`$4` the type.
pub fn search_sql(filter: &UserFilter) -> String {
    // Conditions are left out rather than made `$n IS NULL OR ...`: a prepared
    // statement's generic plan cannot use the prefix indexes through such an OR.
    // The checkpoint comes along, from the same snapshot, for the page cache.
    let mut sql = format!(
        "SELECT {COLUMNS}, (SELECT position FROM projection_checkpoints WHERE name = 'users') \
         FROM users WHERE pk > $1"
    );
    if filter.prefix.is_some() {
        sql.push_str(
            " AND (lower(username) LIKE $3 OR lower(email) LIKE $3 OR lower(name) LIKE $3)",
        );
    }
    if filter.user_type.is_some() {
        sql.push_str(if filter.prefix.is_some() {
            " AND type = $4"
        } else {
            " AND type = $3"
        });
    }
    sql.push_str(" ORDER BY pk LIMIT $2");
    sql
}

/// A page of the users matching `filter` with `pk > after`, by pk, as the API's JSON
/// array, written straight from the rows Postgres sent (`users_json`): no
/// [`UserRow`] is built, no string copied twice.
pub async fn search<'e>(
    db: impl PgExecutor<'e>,
    filter: &UserFilter,
    after: i64,
    limit: i64,
) -> Result<JsonPage, StoreError> {
    let pattern = filter
        .prefix
        .as_deref()
        .map(|p| format!("{}%", escape_like(&p.to_lowercase())));
    let sql = search_sql(filter);
    let mut query = sqlx::query(&sql).bind(after).bind(limit.clamp(0, 1000));
    if let Some(pattern) = pattern {
        query = query.bind(pattern);
    }
    if let Some(user_type) = &filter.user_type {
        query = query.bind(user_type.as_str());
    }
    let rows = query.fetch_all(db).await?;
    let mut users = Vec::with_capacity(64 + rows.len() * 400);
    users.push(b'[');
    let mut last_pk = None;
    let mut checkpoint = None;
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            users.push(b',');
        }
        last_pk = Some(super::users_json::write_user(&mut users, row)?);
        checkpoint = Some(sqlx::Row::try_get::<i64, _>(row, COLUMN_COUNT)?);
    }
    users.push(b']');
    // An empty page has no row to bring the checkpoint along; a checkpoint read later
    // could be newer than the page's snapshot, so none is claimed (and the page is not
    // cached).
    let checkpoint = checkpoint.unwrap_or(-1);
    Ok(JsonPage {
        users,
        count: rows.len() as i64,
        last_pk,
        checkpoint,
    })
}

/// Columns in [`COLUMNS`].
const COLUMN_COUNT: usize = 14;

/// `text` with LIKE's wildcards and escape character taken literally.
fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
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

/// Users a rebuild keeps in memory before it writes them out (a few hundred bytes
/// each). Past it, replay writes what it has and continues the way the live projector
/// works: read the affected rows back, fold, upsert.
pub const REBUILD_MAX_USERS: usize = 500_000;

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
        let mut pks: Vec<i64> = items.iter().map(|i| i.user_pk.0).collect();
        pks.sort_unstable();
        pks.dedup();
        let existing: Vec<UserRow> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM {table} WHERE pk = ANY($1)"))
                // Planned for these pks each time: a generic plan cached while the table
                // was small may scan it whole (see `EventStore::execute_many`'s load).
                .persistent(false)
                .bind(&pks)
                .fetch_all(&mut *conn)
                .await?;
        let mut rows: HashMap<i64, UserRow> = existing.into_iter().map(|r| (r.pk, r)).collect();
        let mut changed: Vec<i64> = Vec::with_capacity(pks.len());
        for item in items {
            if fold(&mut rows, item)? {
                changed.push(item.user_pk.0);
            }
        }
        changed.sort_unstable();
        changed.dedup();
        upsert(conn, table, changed.iter().filter_map(|pk| rows.get(pk))).await
    }

    /// The whole log folded in memory, each user written once: see [`rebuild`].
    async fn rebuild(
        &self,
        conn: &mut PgConnection,
        table: &str,
        batch: i64,
        progress: &mut RebuildProgress<'_>,
    ) -> Result<i64, StoreError> {
        rebuild(conn, table, batch, REBUILD_MAX_USERS, progress).await
    }
}

/// Replay's bulk phase for `users`, into the empty `table`.
///
/// Re-applying batch after batch would rewrite a user's row once per batch that
/// touches it (a million events over 100,000 users: about ten writes per row, most of
/// replay's time). Instead the events are folded into rows in memory, and each row is
/// written once at the end, with one binary `COPY` (the table is empty). Folding a batch
/// runs on a blocking thread while the next batch is read, so Postgres reading and
/// this process decoding overlap. Payloads are read as text and deserialised straight
/// into the typed events.
///
/// Memory is bounded: once more than `max_users` users are in memory they are written
/// out, and the rest of the log is applied the way [`UsersProjection::apply`] does
/// (rows read back, folded, upserted).
pub async fn rebuild(
    conn: &mut PgConnection,
    table: &str,
    batch: i64,
    max_users: usize,
    progress: &mut RebuildProgress<'_>,
) -> Result<i64, StoreError> {
    let started = std::time::Instant::now();
    let batch = batch.max(1);
    let mut rows: HashMap<i64, UserRow> = HashMap::new();
    let mut position = 0;
    let mut folded_events = 0u64;
    // The batch being folded on a blocking thread: (task, its events, its last position).
    let mut folding: Option<(JoinHandle<FoldResult>, u64, i64)> = None;
    let mut reading = true;
    let mut overflow = false;
    loop {
        // The next batch is read while the previous one is folded.
        let read = if reading {
            Some(feed::read_raw_after(&mut *conn, position, batch).await)
        } else {
            None
        };
        if let Some((task, events, last)) = folding.take() {
            let (folded, result) = joined(task).await?;
            rows = folded;
            result?;
            folded_events += events;
            progress.advanced(conn, events, last).await?;
        }
        let Some(read) = read else {
            break;
        };
        let chunk = read?;
        let Some(last) = chunk.last_position()? else {
            break;
        };
        if rows.len() > max_users {
            // `chunk` is read again by the fallback below.
            overflow = true;
            break;
        }
        // A short batch was the end of the log (as far as the bulk phase goes; replay's
        // swap applies what comes after).
        reading = chunk.len() as i64 >= batch;
        let events = chunk.len() as u64;
        let mut into = std::mem::take(&mut rows);
        let task = tokio::task::spawn_blocking(move || {
            let result = chunk
                .events()
                .try_for_each(|event| fold_raw(&mut into, event?));
            (into, result)
        });
        folding = Some((task, events, last));
        position = last;
    }
    let folded_in = started.elapsed();

    let mut sorted: Vec<&UserRow> = rows.values().collect();
    sorted.sort_unstable_by_key(|r| r.pk);
    copy_into(conn, table, &sorted).await?;
    tracing::debug!(
        events = folded_events,
        users = rows.len(),
        fold_seconds = folded_in.as_secs_f64(),
        write_seconds = (started.elapsed() - folded_in).as_secs_f64(),
        overflow,
        "users rebuilt in memory and written"
    );
    if !overflow {
        return Ok(position);
    }
    drop(rows);
    loop {
        let items = feed::read_after_unbounded(&mut *conn, Position(position), batch).await?;
        let Some(last) = items.last().map(|i| i.position.0) else {
            return Ok(position);
        };
        UsersProjection.apply(conn, table, &items).await?;
        position = last;
        progress
            .advanced(conn, items.len() as u64, position)
            .await?;
        if (items.len() as i64) < batch {
            return Ok(position);
        }
    }
}

/// Write `rows` into `table`, which holds none of them, with one binary `COPY`: the
/// fastest way into Postgres, each value in the same binary form sqlx binds it in.
async fn copy_into(
    conn: &mut PgConnection,
    table: &str,
    rows: &[&UserRow],
) -> Result<(), StoreError> {
    /// Sent in pieces of about this size.
    const CHUNK: usize = 1 << 20;
    let mut copy = conn
        .copy_in_raw(&format!(
            "COPY {table} ({COLUMNS}) FROM STDIN WITH (FORMAT binary)"
        ))
        .await?;
    let mut buf = Vec::with_capacity(CHUNK + 4096);
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    buf.extend_from_slice(&0i32.to_be_bytes()); // flags
    buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    for row in rows {
        if let Err(err) = copy_row(&mut buf, row) {
            copy.abort(err.to_string()).await?;
            return Err(err);
        }
        if buf.len() >= CHUNK {
            copy.send(buf.as_slice()).await?;
            buf.clear();
        }
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes()); // trailer
    copy.send(buf).await?;
    copy.finish().await?;
    Ok(())
}

/// One tuple of a binary `COPY` of [`COLUMNS`].
fn copy_row(buf: &mut Vec<u8>, row: &UserRow) -> Result<(), StoreError> {
    fn field(buf: &mut Vec<u8>, bytes: &[u8]) {
        // Values here are far below 2 GiB (Postgres's own limit is 1 GiB).
        buf.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        buf.extend_from_slice(bytes);
    }
    buf.extend_from_slice(&14i16.to_be_bytes());
    field(buf, &row.pk.to_be_bytes());
    field(buf, row.uuid.as_bytes());
    field(buf, row.username.as_bytes());
    field(buf, row.email.as_bytes());
    field(buf, row.name.as_bytes());
    field(buf, &[u8::from(row.is_active)]);
    field(buf, row.user_type.as_bytes());
    // text[]: dimensions, no-nulls flag, element type (text), then per dimension its
    // length and lower bound, then the elements. An empty array has no dimension.
    const TEXT_OID: i32 = 25;
    let start = buf.len();
    buf.extend_from_slice(&0i32.to_be_bytes()); // length, set below
    let dimensions = i32::from(!row.groups.is_empty());
    buf.extend_from_slice(&dimensions.to_be_bytes());
    buf.extend_from_slice(&0i32.to_be_bytes());
    buf.extend_from_slice(&TEXT_OID.to_be_bytes());
    if dimensions == 1 {
        buf.extend_from_slice(&(row.groups.len() as i32).to_be_bytes());
        buf.extend_from_slice(&1i32.to_be_bytes());
        for group in &row.groups {
            field(buf, group.as_bytes());
        }
    }
    let len = (buf.len() - start - 4) as i32;
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
    field(buf, &pg_micros(row.registered_at)?.to_be_bytes());
    field(buf, &pg_micros(row.updated_at)?.to_be_bytes());
    match row.deleted_at {
        Some(at) => field(buf, &pg_micros(at)?.to_be_bytes()),
        None => buf.extend_from_slice(&(-1i32).to_be_bytes()),
    }
    match &row.uid {
        Some(uid) => field(buf, uid.as_bytes()),
        None => buf.extend_from_slice(&(-1i32).to_be_bytes()),
    }
    field(buf, &row.position.to_be_bytes());
    field(buf, &[u8::from(row.erased)]);
    Ok(())
}

/// A timestamptz's binary form, microseconds since 2000-01-01 UTC, computed as sqlx
/// computes it when it binds one (so both paths store the same instant).
fn pg_micros(at: DateTime<Utc>) -> Result<i64, StoreError> {
    let epoch = chrono::NaiveDate::from_ymd_opt(2000, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("2000-01-01 is a valid date");
    (at.naive_utc() - epoch)
        .num_microseconds()
        .ok_or_else(|| StoreError::EventStore(format!("timestamp {at} is out of range")))
}

type FoldResult = (HashMap<i64, UserRow>, Result<(), StoreError>);

async fn joined(task: JoinHandle<FoldResult>) -> Result<FoldResult, StoreError> {
    match task.await {
        Ok(folded) => Ok(folded),
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(err) => Err(StoreError::EventStore(format!(
            "replay: folding stopped: {err}"
        ))),
    }
}

/// A stored event's payload, typed. postgres-es stores serde's external tagging, which
/// is this enum's too; `UserUpdated` also carries `pk`, which `UserChanges` ignores.
#[derive(Deserialize)]
// The variant names are the stored event types (serde's external tags), not style.
#[allow(clippy::enum_variant_names)]
enum Change {
    UserRegistered(UserSnapshot),
    UserUpdated(UserChanges),
    UserDeleted(serde::de::IgnoredAny),
    UserErased(serde::de::IgnoredAny),
}

impl Change {
    fn event_type(&self) -> &'static str {
        match self {
            Change::UserRegistered(_) => "UserRegistered",
            Change::UserUpdated(_) => "UserUpdated",
            Change::UserDeleted(_) => "UserDeleted",
            Change::UserErased(_) => "UserErased",
        }
    }
}

/// A stored event whose personal fields are sealed, as replay reads it. The other fields
/// are those of `UserSnapshot` and `UserChanges` that are not personal.
#[derive(Deserialize)]
#[allow(clippy::enum_variant_names)]
enum SealedChange {
    UserRegistered(SealedRegistered),
    UserUpdated(SealedUpdated),
}

#[derive(Deserialize)]
struct SealedRegistered {
    pk: i64,
    uuid: Uuid,
    is_active: bool,
    #[serde(rename = "type")]
    user_type: String,
    groups: Vec<String>,
    date_joined: DateTime<Utc>,
    sealed: crate::privacy::Sealed,
}

#[derive(Deserialize)]
struct SealedUpdated {
    uuid: Option<Uuid>,
    is_active: Option<bool>,
    #[serde(rename = "type")]
    user_type: Option<String>,
    groups: Option<Vec<String>>,
    date_joined: Option<DateTime<Utc>>,
    sealed: crate::privacy::Sealed,
}

impl SealedChange {
    fn open(
        self,
        pk: i64,
        sequence: i64,
        key: Option<crate::privacy::StoredKey<'_>>,
    ) -> Result<Change, StoreError> {
        use crate::privacy::open_typed;
        Ok(match self {
            SealedChange::UserRegistered(r) => {
                let p = open_typed(&r.sealed, pk, sequence, key)?;
                Change::UserRegistered(UserSnapshot {
                    pk: r.pk,
                    uuid: r.uuid,
                    username: p.username.unwrap_or_default(),
                    email: p.email.unwrap_or_default(),
                    name: p.name.unwrap_or_default(),
                    is_active: r.is_active,
                    user_type: r.user_type,
                    groups: r.groups,
                    date_joined: r.date_joined,
                    uid: p.uid,
                })
            }
            SealedChange::UserUpdated(u) => {
                let p = open_typed(&u.sealed, pk, sequence, key)?;
                Change::UserUpdated(UserChanges {
                    uuid: u.uuid,
                    username: p.username,
                    email: p.email,
                    name: p.name,
                    is_active: u.is_active,
                    user_type: u.user_type,
                    groups: u.groups,
                    date_joined: u.date_joined,
                    uid: p.uid,
                })
            }
        })
    }
}

/// [`fold`] for a raw event: the payload deserialised from its text.
fn fold_raw(rows: &mut HashMap<i64, UserRow>, event: RawEvent<'_>) -> Result<(), StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        position: event.position,
        reason,
    };
    if rows
        .get(&event.user_pk)
        .is_some_and(|r| r.position >= event.position)
    {
        return Ok(());
    }
    let change: Change = if event.payload.contains(crate::privacy::SEALED) {
        // Sealed personal fields: opened (or blanked, once erased) on the way, typed all
        // along (no `serde_json::Value`: replay's speed is in this loop).
        let sealed: SealedChange = serde_json::from_str(event.payload)
            .map_err(|e| corrupt(format!("{}: {e}", event.event_type)))?;
        sealed.open(event.user_pk, event.sequence, event.key)?
    } else {
        serde_json::from_str(event.payload)
            .map_err(|e| corrupt(format!("{}: {e}", event.event_type)))?
    };
    if change.event_type() != event.event_type {
        return Err(corrupt(format!(
            "payload is not tagged {}",
            event.event_type
        )));
    }
    fold_change(
        rows,
        event.user_pk,
        event.position,
        event.recorded_at,
        change,
    )
    .map_err(corrupt)
}

/// Apply one event to the in-memory rows. Returns whether a row changed. Events at or
/// below a row's position were applied already (a replay catching up over rows it
/// wrote): skipping them makes applying idempotent.
fn fold(rows: &mut HashMap<i64, UserRow>, item: &FeedItem) -> Result<bool, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        position: item.position.0,
        reason,
    };
    if rows
        .get(&item.user_pk.0)
        .is_some_and(|r| r.position >= item.position.0)
    {
        return Ok(false);
    }
    // Erased fields are published as null; rows keep them empty.
    let blanked = crate::privacy::blank_erased(&item.data);
    let data = blanked.as_ref().unwrap_or(&item.data);
    let change = match item.event_type.as_str() {
        "UserRegistered" => Change::UserRegistered(
            UserSnapshot::deserialize(data).map_err(|e| corrupt(format!("UserRegistered: {e}")))?,
        ),
        "UserUpdated" => Change::UserUpdated(
            UserChanges::deserialize(data).map_err(|e| corrupt(format!("UserUpdated: {e}")))?,
        ),
        "UserDeleted" => Change::UserDeleted(serde::de::IgnoredAny),
        "UserErased" => Change::UserErased(serde::de::IgnoredAny),
        other => return Err(corrupt(format!("unknown event type {other}"))),
    };
    fold_change(
        rows,
        item.user_pk.0,
        item.position.0,
        item.recorded_at,
        change,
    )
    .map_err(corrupt)?;
    Ok(true)
}

/// The one place an event changes a row, for the live projector and replay alike.
fn fold_change(
    rows: &mut HashMap<i64, UserRow>,
    pk: i64,
    position: i64,
    at: DateTime<Utc>,
    change: Change,
) -> Result<(), String> {
    match change {
        Change::UserRegistered(snapshot) => {
            rows.insert(pk, UserRow::from_snapshot(snapshot, at, position));
        }
        Change::UserUpdated(changes) => {
            let Some(row) = rows.get_mut(&pk) else {
                return Err("UserUpdated for a user never registered".to_owned());
            };
            changes.apply_to(row);
            row.updated_at = at;
            row.position = position;
        }
        Change::UserDeleted(_) => {
            let Some(row) = rows.get_mut(&pk) else {
                return Err("UserDeleted for a user never registered".to_owned());
            };
            row.deleted_at = Some(at);
            row.updated_at = at;
            row.position = position;
        }
        Change::UserErased(_) => {
            let Some(row) = rows.get_mut(&pk) else {
                return Err("UserErased for a user never registered".to_owned());
            };
            // No plaintext copy is left in the read model either.
            row.username.clear();
            row.email.clear();
            row.name.clear();
            row.uid = None;
            row.erased = true;
            row.updated_at = at;
            row.position = position;
        }
    }
    Ok(())
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
        cols.uid.push(r.uid.as_deref());
        cols.position.push(r.position);
        cols.erased.push(r.erased);
    }
    if cols.pk.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!(
        "INSERT INTO {table} ({COLUMNS})
         SELECT pk, uuid, username, email, name, is_active, type,
                groups::text[], registered_at, updated_at, deleted_at, uid, position, erased
           FROM UNNEST($1::bigint[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::bool[], $7::text[],
                       $8::text[], $9::timestamptz[], $10::timestamptz[], $11::timestamptz[], $12::text[],
                       $13::bigint[], $14::bool[])
                AS t(pk, uuid, username, email, name, is_active, type, groups, registered_at, updated_at, deleted_at, uid, position, erased)
         ON CONFLICT (pk) DO UPDATE SET
             uuid = EXCLUDED.uuid, username = EXCLUDED.username, email = EXCLUDED.email,
             name = EXCLUDED.name, is_active = EXCLUDED.is_active, type = EXCLUDED.type,
             groups = EXCLUDED.groups, registered_at = EXCLUDED.registered_at,
             updated_at = EXCLUDED.updated_at, deleted_at = EXCLUDED.deleted_at,
             uid = EXCLUDED.uid, position = EXCLUDED.position, erased = EXCLUDED.erased"
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
    .bind(&cols.uid)
    .bind(&cols.position)
    .bind(&cols.erased)
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
    uid: Vec<Option<&'r str>>,
    position: Vec<i64>,
    erased: Vec<bool>,
}

#[cfg(test)]
mod tests {
    use super::{array_literal, escape_like};

    #[test]
    fn like_wildcards_are_taken_literally() {
        assert_eq!(escape_like("a_b%c\\d"), "a\\_b\\%c\\\\d");
        assert_eq!(escape_like("jane"), "jane");
    }

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

/// A column a token's `sub` can name a user by (the pk itself needs no lookup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectColumn {
    Uuid,
    Username,
    Email,
    Uid,
}

impl SubjectColumn {
    fn sql(self) -> &'static str {
        match self {
            SubjectColumn::Uuid => "uuid::text",
            SubjectColumn::Username => "username",
            SubjectColumn::Email => "email",
            SubjectColumn::Uid => "uid",
        }
    }

    /// Which users have the column filled in at all (`uid` is missing for users synced
    /// before idsync kept it; an email may be empty).
    fn present(self) -> &'static str {
        match self {
            SubjectColumn::Uuid | SubjectColumn::Username => "true",
            SubjectColumn::Email => "email <> ''",
            SubjectColumn::Uid => "uid IS NOT NULL",
        }
    }
}

/// The pk of the live user whose `column` is `value` (the lowest, should two share it).
pub async fn pk_by<'e>(
    db: impl PgExecutor<'e>,
    column: SubjectColumn,
    value: &str,
) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar(&format!(
        "SELECT pk FROM users WHERE {} = $1 AND deleted_at IS NULL ORDER BY pk LIMIT 1",
        column.sql()
    ))
    .bind(value)
    .fetch_optional(db)
    .await?)
}

/// Live users, and how many of them have `column` (None: every user, the pk).
pub async fn column_coverage<'e>(
    db: impl PgExecutor<'e>,
    column: Option<SubjectColumn>,
) -> Result<(i64, i64), StoreError> {
    let condition = column.map_or("true", SubjectColumn::present);
    Ok(sqlx::query_as(&format!(
        "SELECT count(*), count(*) FILTER (WHERE {condition}) FROM users WHERE deleted_at IS NULL"
    ))
    .fetch_one(db)
    .await?)
}
