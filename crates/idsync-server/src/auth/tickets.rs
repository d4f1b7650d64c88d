//! Single-use stream tickets: a browser `EventSource` cannot send an Authorization
//! header, and tokens must not go in URLs, so a caller trades its token for a ticket
//! that lives 30 s, works once, and carries the caller's identity and token expiry.

use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use idsync_oidc::Claims;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::{Caller, Via};
use crate::ApiError;

pub const TICKET_TTL: Duration = Duration::from_secs(30);

fn hash(ticket: &str) -> Vec<u8> {
    Sha256::digest(ticket.as_bytes()).to_vec()
}

/// Issue a ticket for `caller`. Returns the ticket text (shown once, never stored).
pub async fn issue(pool: &PgPool, caller: &Caller) -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let ticket = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let token_expires_at = DateTime::from_timestamp(caller.claims.exp, 0).unwrap_or_else(Utc::now);
    let claims = serde_json::to_value(&caller.claims)
        .map_err(|e| ApiError::Internal(format!("claims do not serialise: {e}")))?;
    // Expired tickets are swept here rather than by a timer: issuing is rare and cheap.
    sqlx::query("DELETE FROM stream_tickets WHERE expires_at < now() - interval '1 minute'")
        .execute(pool)
        .await
        .map_err(idsync_store::StoreError::from)?;
    sqlx::query(
        "INSERT INTO stream_tickets (ticket_hash, claims, user_pk, is_admin, token_expires_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))",
    )
    .bind(hash(&ticket))
    .bind(claims)
    .bind(caller.user_pk)
    .bind(caller.is_admin)
    .bind(token_expires_at)
    .bind(TICKET_TTL.as_secs_f64())
    .execute(pool)
    .await
    .map_err(idsync_store::StoreError::from)?;
    Ok(ticket)
}

/// Redeem a ticket: it is deleted in the same statement, so it works exactly once even
/// when two requests race with it.
pub async fn redeem(pool: &PgPool, ticket: &str) -> Result<Caller, ApiError> {
    // An expired ticket is consumed too, and refused below.
    let row: Option<(serde_json::Value, Option<i64>, bool, bool)> = sqlx::query_as(
        "DELETE FROM stream_tickets WHERE ticket_hash = $1
         RETURNING claims, user_pk, is_admin, (expires_at > now() AND token_expires_at > now())",
    )
    .bind(hash(ticket))
    .fetch_optional(pool)
    .await
    .map_err(idsync_store::StoreError::from)?;
    let Some((claims, user_pk, is_admin, true)) = row else {
        return Err(ApiError::InvalidToken(
            "unknown, used or expired ticket".to_owned(),
        ));
    };
    let claims: Claims = serde_json::from_value(claims)
        .map_err(|e| ApiError::Internal(format!("stored claims unreadable: {e}")))?;
    Ok(Caller {
        claims,
        user_pk,
        is_admin,
        via: Via::Ticket,
    })
}
