//! The `idsync` binary's library, in the order data flows: `intake` (webhook → inbox),
//! `sync` (inbox → Authentik → events), the HTTP edge (`http`), and around them the
//! configuration and CLI (`cli`), what each subcommand does (`commands`), `metrics`,
//! and process plumbing (`telemetry`, `shutdown`).

pub(crate) mod api;
pub(crate) mod auth;
pub mod cli;
pub mod commands;
mod error;
pub(crate) mod feeds;
pub(crate) mod http;
pub(crate) mod intake;
pub(crate) mod metrics;
pub(crate) mod readiness;
pub mod reconcile;
pub(crate) mod shutdown;
pub(crate) mod state;
pub(crate) mod sync;
pub mod telemetry;

pub use error::{ApiError, CliError};

/// The parsers of what clients send, for the `cargo fuzz` targets in `fuzz/` (not an
/// API: the targets need them outside the crate).
#[doc(hidden)]
pub mod fuzzing {
    use axum::http::{HeaderMap, HeaderValue};

    /// `X-Userinfo` as the WebSocket reads it from a trusted gateway: decoded, then
    /// turned into claims. Returns the subject it would identify.
    pub fn userinfo(raw: &str) -> Option<String> {
        let info = crate::auth::gateway::decode_userinfo(raw)?;
        crate::auth::gateway::gateway_claims(&info).map(|claims| claims.sub)
    }

    /// Where an SSE stream resumes, from a `Last-Event-ID` value and `after`: after a
    /// position, `None` for "only new events", or the 400's detail (a header value hyper
    /// would refuse counts as a 400 too).
    pub fn resume_point(
        last_event_id: Option<&[u8]>,
        after: Option<i64>,
    ) -> Result<Option<i64>, String> {
        let mut headers = HeaderMap::new();
        if let Some(value) = last_event_id {
            let value = HeaderValue::from_bytes(value).map_err(|e| e.to_string())?;
            headers.insert("last-event-id", value);
        }
        match crate::feeds::sse::start_of(&headers, after) {
            Ok(crate::feeds::Start::After(position)) => Ok(Some(position.0)),
            Ok(crate::feeds::Start::Now) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Whether `?ticket=` has a ticket's shape (anything else is refused unread).
    pub fn ticket_well_formed(ticket: &str) -> bool {
        crate::auth::tickets::well_formed(ticket)
    }
}
