//! Single-use stream tickets: a browser `EventSource` cannot send an Authorization
//! header, and tokens must not go in URLs, so a caller trades its token for a ticket
//! that lives 30 s, works once, and carries the caller's identity and token expiry.

use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use idsync_oidc::Claims;
use idsync_store::UserPk;
use idsync_store::tickets::{self as store, TicketRow};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::{Caller, Via};
use crate::ApiError;

pub(crate) const TICKET_TTL: Duration = Duration::from_secs(30);

/// Random bytes in a ticket.
const TICKET_BYTES: usize = 32;
/// Their length in unpadded base64url.
const TICKET_LEN: usize = 43;

fn hash(ticket: &str) -> Vec<u8> {
    Sha256::digest(ticket.as_bytes()).to_vec()
}

/// A new ticket: 32 random bytes in unpadded base64url.
fn new_ticket() -> String {
    let mut bytes = [0u8; TICKET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `ticket` has the shape [`new_ticket`] gives (43 base64url characters that
/// decode to 32 bytes). Anything else cannot be a ticket: refused without a query.
pub(crate) fn well_formed(ticket: &str) -> bool {
    ticket.len() == TICKET_LEN
        && base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(ticket)
            .is_ok_and(|bytes| bytes.len() == TICKET_BYTES)
}

/// Issue a ticket for `caller`. Returns the ticket text (shown once, never stored).
pub(crate) async fn issue(pool: &PgPool, caller: &Caller) -> Result<String, ApiError> {
    let ticket = new_ticket();
    let token_expires_at = DateTime::from_timestamp(caller.claims.exp, 0).unwrap_or_else(Utc::now);
    let row = TicketRow {
        claims: serde_json::to_value(&caller.claims).map_err(|e| ApiError::Internal {
            context: "claims do not serialise",
            source: e.into(),
        })?,
        user_pk: caller.user_pk.map(|pk| pk.0),
        is_admin: caller.is_admin,
    };
    store::insert(pool, &hash(&ticket), &row, token_expires_at, TICKET_TTL).await?;
    Ok(ticket)
}

/// Redeem a ticket: it works exactly once, even when two requests race with it.
pub(crate) async fn redeem(pool: &PgPool, ticket: &str) -> Result<Caller, ApiError> {
    if !well_formed(ticket) {
        return Err(unknown_ticket());
    }
    let Some(row) = store::take(pool, &hash(ticket)).await? else {
        return Err(unknown_ticket());
    };
    let claims: Claims = serde_json::from_value(row.claims).map_err(|e| ApiError::Internal {
        context: "stored claims unreadable",
        source: e.into(),
    })?;
    Ok(Caller {
        claims,
        user_pk: row.user_pk.map(UserPk),
        is_admin: row.is_admin,
        via: Via::Ticket,
    })
}

fn unknown_ticket() -> ApiError {
    ApiError::InvalidToken("unknown, used or expired ticket".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::default())]

        /// Whatever a client puts in `?ticket=`: an answer, never a panic; only the
        /// ticket shape passes, and it is exactly base64url of 32 bytes.
        #[test]
        fn any_text_is_checked_without_panicking(text in ".{0,64}") {
            let _ = hash(&text);
            if well_formed(&text) {
                let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&text).expect("decodes");
                prop_assert_eq!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes), text);
            }
        }

        #[test]
        fn base64url_text_of_the_right_length(text in "[A-Za-z0-9_-]{43}") {
            // 43 characters carry 258 bits: the last one's 2 spare bits must be zero.
            let canonical = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&text)
                .is_ok();
            prop_assert_eq!(well_formed(&text), canonical);
        }

        /// Every ticket the server can issue is accepted by the shape check, round-trips
        /// through base64url, and hashes to 32 bytes.
        #[test]
        fn issued_tickets_are_well_formed(bytes in any::<[u8; 32]>()) {
            let ticket = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
            prop_assert!(well_formed(&ticket));
            prop_assert_eq!(
                base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&ticket).expect("decodes"),
                bytes.to_vec()
            );
            prop_assert_eq!(hash(&ticket).len(), 32);
        }
    }

    #[test]
    fn new_tickets_are_well_formed_and_distinct() {
        let a = new_ticket();
        let b = new_ticket();
        assert!(well_formed(&a) && well_formed(&b));
        assert_ne!(a, b);
        assert!(!well_formed(""));
        assert!(!well_formed(&format!("{a}=")));
        assert!(!well_formed(&a[1..]));
    }
}
