//! `GET /api/events/stream`: Server-Sent Events. `id:` is the position, `event:` the
//! event type, `data:` the feed item. Resume with `Last-Event-ID` or `?after=`.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use idsync_store::Position;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{FeedState, Filter, Start, Subscription};
use crate::ApiError;
use crate::auth::{Accepts, Identifier};
use crate::metrics::{FEED_EVENTS_DELIVERED, SSE_STREAMS_OPEN};

/// One event of the stream, as the OpenAPI document describes it (and API tools check
/// each event against): a feed item, or the `token_expired` notice that ends the stream.
pub(crate) struct SseEvent;

impl utoipa::PartialSchema for SseEvent {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::intake::schema::raw(serde_json::json!({
            "anyOf": [
                {
                    "type": "object",
                    "required": ["id", "event", "data"],
                    "properties": {
                        "id": {"type": "string", "pattern": "^[0-9]+$", "description": "the position"},
                        "event": {"enum": ["UserRegistered", "UserUpdated", "UserDeleted", "UserErased"]},
                        "data": {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "contentSchema": {"$ref": "#/components/schemas/FeedItem"},
                        },
                    },
                },
                {
                    "type": "object",
                    "required": ["event", "data"],
                    "properties": {
                        "event": {"const": "token_expired"},
                        "data": {"type": "string"},
                    },
                },
            ],
        }))
    }
}

impl utoipa::ToSchema for SseEvent {}

/// How long a browser waits before reconnecting.
const RETRY: Duration = Duration::from_secs(3);
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct StreamParams {
    /// Start after this position (exclusive; 0 = from the beginning). `Last-Event-ID`
    /// wins when both are present. Neither: only new events.
    #[param(minimum = 0)]
    after: Option<i64>,
    /// A single-use ticket from `POST /api/stream-tickets`, for clients that cannot send
    /// headers (a browser `EventSource`).
    ticket: Option<String>,
}

/// The live event feed.
#[utoipa::path(get, path = "/api/events/stream", tag = "feeds", security(("bearer" = [])), params(StreamParams,
        ("Last-Event-ID" = Option<i64>, Header, nullable = false, minimum = 0, description = "resume after this position (wins over `after`)")),
    responses(
        (status = 200, description = "text/event-stream: `id:` position, `event:` type, `data:` the feed item; `event: token_expired` last when the caller's token expires", content_type = "text/event-stream", body = SseEvent),
        (status = 400, description = "invalid `after` or `Last-Event-ID`", body = crate::error::ErrorBody),
        (status = 401, description = "missing or invalid token or ticket", body = crate::error::ErrorBody),
        (status = 503, description = "OIDC not configured, or the issuer is unreachable", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn stream(
    State(state): State<FeedState>,
    State(identifier): State<Identifier>,
    headers: HeaderMap,
    uri: Uri,
    query: Result<Query<StreamParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let caller = identifier
        .require(
            &uri,
            &headers,
            params.ticket.as_deref(),
            Accepts::BEARER_OR_TICKET,
        )
        .await?;
    let start = start_of(&headers, params.after)?;
    let mut subscription = Subscription::start(
        state.pool.clone(),
        &state.hub,
        Filter::for_caller(&caller),
        start,
    )
    .await?;
    let shutdown = state.shutdown.clone();
    // The stream ends when the caller's token does.
    let expires_in = caller.expires_in();
    let open = OpenGauge::new(SSE_STREAMS_OPEN);
    let delivered = metrics::counter!(FEED_EVENTS_DELIVERED, "transport" => "sse");
    let expires_at = tokio::time::Instant::now() + expires_in;
    let body = async_stream::stream! {
        let _open = open;
        yield Ok::<Bytes, Infallible>(Bytes::from(format!("retry: {}\n\n", RETRY.as_millis())));
        // Built once, not per event: with thousands of streams, per-event timers and
        // shutdown registrations add up to a good share of the process's work.
        let end = async {
            tokio::select! {
                () = shutdown.cancelled() => End::Shutdown,
                () = tokio::time::sleep_until(expires_at) => End::TokenExpired,
            }
        };
        tokio::pin!(end);
        // An idle stream gets a comment every 15 s. A stream that carried events since
        // the last tick skips one, so writing events never touches the timer (with
        // thousands of streams, re-arming a timer per write is measurable).
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut wrote = false;
        let mut writes = 0u64;
        loop {
            tokio::select! {
                // Events first: a wake-up for an event then polls nothing else. The
                // rest is polled whenever no event is ready; a subscriber that is always
                // behind (events always ready) checks shutdown and expiry every few writes.
                biased;
                ready = subscription.ready() => match ready {
                    Ok(true) => {
                        // Every event's frame is built once and shared by all streams;
                        // whatever else is ready goes out in the same write, so under load
                        // a stream costs one system call per batch, not per event.
                        let mut frame = Vec::with_capacity(4096);
                        let sent = subscription.write_ready_sse(&mut frame, MAX_WRITE);
                        delivered.increment(sent);
                        wrote = true;
                        yield Ok(Bytes::from(frame));
                        writes += 1;
                        if writes.is_multiple_of(32) {
                            if shutdown.is_cancelled() {
                                break;
                            }
                            if tokio::time::Instant::now() >= expires_at {
                                yield Ok(Bytes::from_static(TOKEN_EXPIRED));
                                break;
                            }
                        }
                    }
                    Ok(false) => break,
                    Err(err) => {
                        // The client reconnects with Last-Event-ID and loses nothing.
                        tracing::warn!(error = %err, "live feed read failed; closing the stream");
                        break;
                    }
                },
                why = &mut end => {
                    if why == End::TokenExpired {
                        yield Ok(Bytes::from_static(TOKEN_EXPIRED));
                    }
                    break;
                }
                _ = tick.tick() => {
                    if !std::mem::take(&mut wrote) {
                        yield Ok(Bytes::from_static(b":keep-alive\n\n"));
                    }
                }
            }
        }
    };
    let mut response = Body::from_stream(body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    // Proxies (nginx) must not buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

const TOKEN_EXPIRED: &[u8] =
    b"event: token_expired\ndata: the access token expired; reconnect with a new one\n\n";

#[derive(PartialEq)]
enum End {
    Shutdown,
    TokenExpired,
}

/// Most bytes gathered into one write.
const MAX_WRITE: usize = 64 * 1024;

pub(crate) fn start_of(headers: &HeaderMap, after: Option<i64>) -> Result<Start, ApiError> {
    // Checked even when Last-Event-ID wins: a bad parameter is refused, not ignored.
    if after.is_some_and(|a| a < 0) {
        return Err(ApiError::InvalidRequest("after must be >= 0".to_owned()));
    }
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .filter(|p| *p >= 0)
                .ok_or_else(|| {
                    ApiError::InvalidRequest(
                        "Last-Event-ID must be a position (an integer >= 0)".to_owned(),
                    )
                })?,
        ),
    };
    match (last_event_id, after) {
        (Some(p), _) => Ok(Start::After(Position(p))),
        (None, Some(a)) => Ok(Start::After(Position(a))),
        (None, None) => Ok(Start::Now),
    }
}

/// Counts an open stream or socket for as long as it lives.
pub(crate) struct OpenGauge(&'static str);

impl OpenGauge {
    pub(crate) fn new(name: &'static str) -> Self {
        metrics::gauge!(name).increment(1.0);
        Self(name)
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        metrics::gauge!(self.0).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn with_last_event_id(value: &[u8]) -> Option<HeaderMap> {
        let mut headers = HeaderMap::new();
        headers.insert("last-event-id", HeaderValue::from_bytes(value).ok()?);
        Some(headers)
    }

    proptest! {
        #![proptest_config(ProptestConfig::default())]

        /// Any header bytes a client can send and any `after`: an answer, never a panic,
        /// and an error exactly when one of them is not a position.
        #[test]
        fn any_resume_point_is_answered(
            bytes in prop::collection::vec(any::<u8>(), 0..32),
            after in proptest::option::of(any::<i64>()),
        ) {
            let Some(headers) = with_last_event_id(&bytes) else {
                return Ok(()); // not a header value hyper would hand us
            };
            let header_ok = std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .is_some_and(|p| p >= 0);
            let after_ok = after.is_none_or(|a| a >= 0);
            prop_assert_eq!(start_of(&headers, after).is_ok(), header_ok && after_ok);
        }

        /// A position (as `id:` lines carry them, maybe padded) resumes right after it,
        /// and wins over `after`.
        #[test]
        fn positions_round_trip(
            position in 0..=i64::MAX,
            pad in "[ \t]{0,2}",
            after in proptest::option::of(0..=i64::MAX),
        ) {
            let headers = with_last_event_id(format!("{pad}{position}{pad}").as_bytes()).expect("header");
            prop_assert_eq!(start_of(&headers, after).ok(), Some(Start::After(Position(position))));
            prop_assert_eq!(start_of(&HeaderMap::new(), Some(position)).ok(), Some(Start::After(Position(position))));
        }

        #[test]
        fn negative_positions_are_refused(position in i64::MIN..0, other in 0..=i64::MAX) {
            let headers = with_last_event_id(position.to_string().as_bytes()).expect("header");
            prop_assert!(start_of(&headers, None).is_err());
            prop_assert!(start_of(&headers, Some(other)).is_err());
            let valid = with_last_event_id(other.to_string().as_bytes()).expect("header");
            prop_assert!(start_of(&valid, Some(position)).is_err());
        }
    }

    #[test]
    fn neither_means_from_now() {
        assert_eq!(start_of(&HeaderMap::new(), None).ok(), Some(Start::Now));
    }
}
