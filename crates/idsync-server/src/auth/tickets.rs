//! Single-use stream tickets: a browser `EventSource` cannot send an Authorization
//! header, and tokens must not go in URLs, so a caller trades its token for a ticket
//! that lives 30 s, works once, and carries the caller's identity and token expiry.

use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use idsync_oidc::Claims;
use idsync_store::tickets::{self as store, TicketRow};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::{Caller, Via};
use crate::ApiError;

pub(crate) const TICKET_TTL: Duration = Duration::from_secs(30);

fn hash(ticket: &str) -> Vec<u8> {
    Sha256::digest(ticket.as_bytes()).to_vec()
}

/// Issue a ticket for `caller`. Returns the ticket text (shown once, never stored).
pub(crate) async fn issue(pool: &PgPool, caller: &Caller) -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let ticket = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let token_expires_at = DateTime::from_timestamp(caller.claims.exp, 0).unwrap_or_else(Utc::now);
    let row = TicketRow {
        claims: serde_json::to_value(&caller.claims)
            .map_err(|e| ApiError::Internal(format!("claims do not serialise: {e}")))?,
        user_pk: caller.user_pk,
        is_admin: caller.is_admin,
    };
    store::insert(pool, &hash(&ticket), &row, token_expires_at, TICKET_TTL).await?;
    Ok(ticket)
}

/// Redeem a ticket: it works exactly once, even when two requests race with it.
pub(crate) async fn redeem(pool: &PgPool, ticket: &str) -> Result<Caller, ApiError> {
    let Some(row) = store::take(pool, &hash(ticket)).await? else {
        return Err(ApiError::InvalidToken(
            "unknown, used or expired ticket".to_owned(),
        ));
    };
    let claims: Claims = serde_json::from_value(row.claims)
        .map_err(|e| ApiError::Internal(format!("stored claims unreadable: {e}")))?;
    Ok(Caller {
        claims,
        user_pk: row.user_pk,
        is_admin: row.is_admin,
        via: Via::Ticket,
    })
}
