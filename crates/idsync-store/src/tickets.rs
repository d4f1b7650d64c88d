//! Stream tickets' rows (`stream_tickets`): what a ticket stands for, kept by the hash of
//! its text only. What a ticket is and who may have one is the server's business.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

use crate::StoreError;

/// A ticket's row, as stored.
pub struct TicketRow {
    pub claims: Value,
    pub user_pk: Option<i64>,
    pub is_admin: bool,
}

/// Store a ticket that lives `ttl`, sweeping long-expired ones first (issuing is rare
/// and cheap, so no timer is needed).
pub async fn insert(
    pool: &PgPool,
    hash: &[u8],
    row: &TicketRow,
    token_expires_at: DateTime<Utc>,
    ttl: Duration,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM stream_tickets WHERE expires_at < now() - interval '1 minute'")
        .execute(pool)
        .await?;
    sqlx::query(
        "INSERT INTO stream_tickets (ticket_hash, claims, user_pk, is_admin, token_expires_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))",
    )
    .bind(hash)
    .bind(&row.claims)
    .bind(row.user_pk)
    .bind(row.is_admin)
    .bind(token_expires_at)
    .bind(ttl.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(())
}

/// Take the ticket with this hash: it is deleted in the same statement, so it works
/// exactly once even when two requests race with it. `None` when unknown, already used,
/// expired, or its token expired (an expired ticket is consumed too).
pub async fn take(pool: &PgPool, hash: &[u8]) -> Result<Option<TicketRow>, StoreError> {
    let row: Option<(Value, Option<i64>, bool, bool)> = sqlx::query_as(
        "DELETE FROM stream_tickets WHERE ticket_hash = $1
         RETURNING claims, user_pk, is_admin, (expires_at > now() AND token_expires_at > now())",
    )
    .bind(hash)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        Some((claims, user_pk, is_admin, true)) => Some(TicketRow {
            claims,
            user_pk,
            is_admin,
        }),
        _ => None,
    })
}
