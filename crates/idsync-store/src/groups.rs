//! The names Authentik's groups were seen with (`authentik_group_names`: uuid → every
//! name), and the questions a group's change asks of the users read model.
//!
//! Authentik reports a group's rename or a change of its members only as an event of the
//! group, and the users read model keeps group *names*. To know which users may still
//! carry a group's old name after a rename, idsync notes every name it sees a group
//! with: in a group's own answer, or in a user's `groups_obj`. All of them are kept until
//! the group is deleted, because a user's answer may show the new name before the
//! group's event is processed. A name that is later reused by another group only makes
//! a few users be fetched again for nothing. This is a cache of Authentik's state, not an
//! event-sourced read model: when it lacks a group, a rename reaches its former holders
//! at the next reconcile instead of at once.

use std::collections::BTreeSet;

use sqlx::PgExecutor;
use uuid::Uuid;

use crate::StoreError;

/// Notes that each group was seen with that name.
pub async fn remember<'e>(
    db: impl PgExecutor<'e>,
    groups: &[(Uuid, &str)],
) -> Result<(), StoreError> {
    if groups.is_empty() {
        return Ok(());
    }
    let (uuids, names): (Vec<Uuid>, Vec<&str>) = groups.iter().copied().unzip();
    sqlx::query(
        "INSERT INTO authentik_group_names (uuid, name)
         SELECT * FROM UNNEST($1::uuid[], $2::text[])
         ON CONFLICT (uuid, name) DO NOTHING",
    )
    .bind(&uuids)
    .bind(&names)
    .execute(db)
    .await?;
    Ok(())
}

/// Every name the group was seen with.
pub async fn names_of<'e>(db: impl PgExecutor<'e>, uuid: Uuid) -> Result<Vec<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT name FROM authentik_group_names WHERE uuid = $1 ORDER BY name")
            .bind(uuid)
            .fetch_all(db)
            .await?,
    )
}

/// Forgets a deleted group's names.
pub async fn forget<'e>(db: impl PgExecutor<'e>, uuid: Uuid) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM authentik_group_names WHERE uuid = $1")
        .bind(uuid)
        .execute(db)
        .await?;
    Ok(())
}

/// The users (pks, not deleted, in the read model) whose groups may no longer match a
/// group whose members are now `members`, whose name is now `name` (`None`: the group
/// was deleted) and which was also seen as `old_names`:
/// - a member that does not carry `name`, or carries one of the old names;
/// - a non-member that carries `name` or one of the old names.
///
/// Members unknown to the read model are not returned: their own registration brings
/// their groups.
pub async fn users_to_refresh<'e>(
    db: impl PgExecutor<'e>,
    members: &[i64],
    name: Option<&str>,
    old_names: &[String],
) -> Result<Vec<i64>, StoreError> {
    let old: Vec<&str> = old_names
        .iter()
        .map(String::as_str)
        .filter(|old| Some(*old) != name)
        .collect();
    let all: Vec<&str> = old
        .iter()
        .copied()
        .chain(name)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    Ok(sqlx::query_scalar(
        "SELECT pk FROM users
          WHERE deleted_at IS NULL
            AND CASE WHEN pk = ANY($1)
                     THEN ($2::text IS NOT NULL AND NOT groups @> ARRAY[$2::text])
                          OR groups && $3::text[]
                     ELSE groups && $4::text[]
                END
          ORDER BY pk",
    )
    .bind(members)
    .bind(name)
    .bind(&old)
    .bind(&all)
    .fetch_all(db)
    .await?)
}
