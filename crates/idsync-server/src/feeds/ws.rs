//! `GET /ws`: JSON text frames. The server greets with `hello` (who the caller is and
//! how they were identified); clients send `ping`, `echo` and `subscribe`. Anonymous
//! connections are accepted and told so in-protocol; a malformed frame gets a
//! `bad_message` error and the connection stays open.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;

use super::identity::{self, Identity};
use super::sse::OpenGauge;
use super::{Filter, Start, Subscription};
use crate::ApiError;
use crate::http::AppState;
use crate::metrics::{FEED_EVENTS_DELIVERED, WS_CONNECTIONS_OPEN};

/// Client frames are small; nothing legitimate comes close to this.
const MAX_MESSAGE: usize = 64 * 1024;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WsParams {
    /// A single-use ticket from `POST /api/stream-tickets`.
    ticket: Option<String>,
}

/// The WebSocket feed (docs/contract.md has its messages).
#[utoipa::path(get, path = "/ws", tag = "feeds", params(WsParams),
    responses(
        (status = 101, description = "switching protocols; then JSON frames: hello, pong, echo, event, error"),
        (status = 400, description = "not a WebSocket handshake (`Connection: upgrade`, `Upgrade: websocket`, `Sec-WebSocket-Version: 13` and `Sec-WebSocket-Key` are needed), or a malformed query", body = crate::api::ErrorBody),
    ))]
pub async fn upgrade(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<WsParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    // A plain GET (no upgrade) or a malformed query gets the contract's JSON error rather
    // than axum's plain-text rejection.
    let ws = ws.map_err(|e| {
        ApiError::InvalidRequest(format!("not a WebSocket handshake: {}", e.body_text()))
    })?;
    let Query(params) = query.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let identity = identity::identify(&state, peer.ip(), &headers, params.ticket.as_deref()).await;
    Ok(ws
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| session(socket, state, identity)))
}

async fn session(mut socket: WebSocket, state: AppState, identity: Identity) {
    let _open = OpenGauge::new(WS_CONNECTIONS_OPEN);
    if let Some((code, detail)) = &identity.problem
        && send(
            &mut socket,
            &json!({"type": "error", "code": code, "detail": detail}),
        )
        .await
        .is_err()
    {
        return;
    }
    if send(&mut socket, &identity.hello()).await.is_err() {
        return;
    }
    let expires_in = identity.caller.as_ref().map(|c| {
        Duration::from_secs(
            u64::try_from(c.claims.exp.saturating_sub(chrono::Utc::now().timestamp())).unwrap_or(0),
        )
    });
    let expiry = tokio::time::sleep(expires_in.unwrap_or(Duration::from_secs(365 * 24 * 3600)));
    tokio::pin!(expiry);
    let mut subscription: Option<Subscription> = None;
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => {
                let _ = socket.send(Message::Close(Some(CloseFrame { code: 1001, reason: Utf8Bytes::from_static("server shutting down") }))).await;
                return;
            }
            () = &mut expiry, if expires_in.is_some() => {
                let _ = send(&mut socket, &json!({"type": "error", "code": "token_expired", "detail": "the access token expired; reconnect with a new one"})).await;
                let _ = socket.send(Message::Close(Some(CloseFrame { code: 1008, reason: Utf8Bytes::from_static("token expired") }))).await;
                return;
            }
            frame = socket.recv() => {
                let text = match frame {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Binary(_))) => {
                        if send(&mut socket, &bad_message("binary frames are not supported; send JSON text")).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    // Pings are answered by the library.
                    Some(Ok(_)) => continue,
                };
                let reply = match handle(&state, &identity, &mut subscription, text.as_str()).await {
                    Some(reply) => reply,
                    None => continue,
                };
                if send(&mut socket, &reply).await.is_err() {
                    return;
                }
            }
            next = next_event(&mut subscription) => match next {
                Ok(Some(live)) => {
                    metrics::counter!(FEED_EVENTS_DELIVERED, "transport" => "ws").increment(1);
                    if socket.send(Message::Text(Utf8Bytes::from(live.ws_json()))).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(err) => {
                    tracing::warn!(error = %err, "live feed read failed for a socket");
                    subscription = None;
                    if send(&mut socket, &json!({"type": "error", "code": "feed_unavailable", "detail": "the event feed is unavailable; subscribe again"})).await.is_err() {
                        return;
                    }
                }
            },
        }
    }
}

/// Pending forever when not subscribed, so the select above simply waits on the rest.
async fn next_event(
    subscription: &mut Option<Subscription>,
) -> Result<Option<std::sync::Arc<super::LiveItem>>, idsync_store::StoreError> {
    match subscription {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMessage {
    Ping,
    Echo {
        #[serde(default)]
        data: Value,
    },
    Subscribe {
        #[serde(default)]
        after: Option<i64>,
    },
}

async fn handle(
    state: &AppState,
    identity: &Identity,
    subscription: &mut Option<Subscription>,
    text: &str,
) -> Option<Value> {
    let message: ClientMessage = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => {
            return Some(bad_message(&format!(
                "expected {{\"type\": \"ping\" | \"echo\" | \"subscribe\", ...}}: {e}"
            )));
        }
    };
    match message {
        ClientMessage::Ping => Some(json!({"type": "pong"})),
        ClientMessage::Echo { data } => Some(json!({"type": "echo", "data": data})),
        ClientMessage::Subscribe { after } => {
            let Some(caller) = &identity.caller else {
                return Some(
                    json!({"type": "error", "code": "login_required", "detail": "subscribe needs an identified caller: a bearer token, a stream ticket, or a trusted gateway"}),
                );
            };
            let start = match after {
                Some(a) if a < 0 => return Some(bad_message("after must be >= 0")),
                Some(a) => Start::After(a),
                None => Start::Now,
            };
            match Subscription::start(
                state.pool.clone(),
                &state.hub,
                Filter::for_caller(caller),
                start,
            )
            .await
            {
                Ok(s) => {
                    *subscription = Some(s);
                    Some(json!({"type": "subscribed", "after": after}))
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot start a subscription");
                    Some(
                        json!({"type": "error", "code": "feed_unavailable", "detail": "the event feed is unavailable; try again"}),
                    )
                }
            }
        }
    }
}

fn bad_message(detail: &str) -> Value {
    json!({"type": "error", "code": "bad_message", "detail": detail})
}

async fn send(socket: &mut WebSocket, value: &Value) -> Result<(), axum::Error> {
    socket
        .send(Message::Text(Utf8Bytes::from(value.to_string())))
        .await
}
