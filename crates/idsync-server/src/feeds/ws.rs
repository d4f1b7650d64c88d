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
use idsync_store::{Position, UserPk};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::IntoParams;

use super::sse::OpenGauge;
use super::{FeedState, Filter, Start, Subscription};
use crate::ApiError;
use crate::auth::{Accepts, Caller, Identifier};
use crate::metrics::{FEED_EVENTS_DELIVERED, WS_CONNECTIONS_OPEN};

/// Client frames are small; nothing legitimate comes close to this.
const MAX_MESSAGE: usize = 64 * 1024;
/// Read buffer per WebSocket: client messages are small JSON objects.
const READ_BUFFER: usize = 4 * 1024;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct WsParams {
    /// A single-use ticket from `POST /api/stream-tickets`.
    ticket: Option<String>,
}

/// The WebSocket feed (docs/contract.md has its messages).
#[utoipa::path(get, path = "/ws", tag = "feeds", params(WsParams),
    responses(
        (status = 101, description = "switching protocols; then JSON frames: hello, pong, echo, event, error"),
        (status = 400, description = "not a WebSocket handshake (`Connection: upgrade`, `Upgrade: websocket`, `Sec-WebSocket-Version: 13` and `Sec-WebSocket-Key` are needed), or a malformed query", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn upgrade(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    State(state): State<FeedState>,
    State(identifier): State<Identifier>,
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
    // Nothing here fails the handshake: a browser cannot see why one failed, so a
    // refused credential is reported in-protocol and the caller is anonymous.
    let identity = match identifier
        .identify(
            &headers,
            params.ticket.as_deref(),
            Some(peer.ip()),
            Accepts::ANY,
        )
        .await
    {
        Ok(caller) => Identity {
            caller,
            problem: None,
        },
        Err(refused) => Identity {
            caller: None,
            problem: Some((refused.code, refused.error.to_string())),
        },
    };
    Ok(ws
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        // tungstenite's default read buffer is 128 KiB per socket, touched at the first
        // read: with thousands of idle feeds that was ~130 KiB of RSS each (the
        // reliability run's idle WebSockets). Clients send only small control messages.
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| session(socket, state, identity)))
}

async fn session(mut socket: WebSocket, state: FeedState, identity: Identity) {
    let _open = OpenGauge::new(WS_CONNECTIONS_OPEN);
    if let Some((code, detail)) = &identity.problem
        && send(&mut socket, &ServerMessage::error(code, detail.clone()))
            .await
            .is_err()
    {
        return;
    }
    if send(&mut socket, &identity.hello()).await.is_err() {
        return;
    }
    let expires_in = identity.caller.as_ref().map(Caller::expires_in);
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
                let _ = send(&mut socket, &ServerMessage::error("token_expired", "the access token expired; reconnect with a new one")).await;
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
                    if send(&mut socket, &ServerMessage::error("feed_unavailable", "the event feed is unavailable; subscribe again")).await.is_err() {
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
    state: &FeedState,
    identity: &Identity,
    subscription: &mut Option<Subscription>,
    text: &str,
) -> Option<ServerMessage> {
    let message: ClientMessage = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => {
            return Some(bad_message(&format!(
                "expected {{\"type\": \"ping\" | \"echo\" | \"subscribe\", ...}}: {e}"
            )));
        }
    };
    match message {
        ClientMessage::Ping => Some(ServerMessage::Pong),
        ClientMessage::Echo { data } => Some(ServerMessage::Echo { data }),
        ClientMessage::Subscribe { after } => {
            let Some(caller) = &identity.caller else {
                return Some(ServerMessage::error(
                    "login_required",
                    "subscribe needs an identified caller: a bearer token, a stream ticket, or a trusted gateway",
                ));
            };
            let start = match after {
                Some(a) if a < 0 => return Some(bad_message("after must be >= 0")),
                Some(a) => Start::After(Position(a)),
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
                    Some(ServerMessage::Subscribed { after })
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot start a subscription");
                    Some(ServerMessage::error(
                        "feed_unavailable",
                        "the event feed is unavailable; try again",
                    ))
                }
            }
        }
    }
}

fn bad_message(detail: &str) -> ServerMessage {
    ServerMessage::error("bad_message", detail)
}

/// Who is on the other end, decided once at the handshake.
struct Identity {
    caller: Option<Caller>,
    /// A refused credential, told to the client first (`invalid_token`, `invalid_ticket`).
    problem: Option<(&'static str, String)>,
}

impl Identity {
    fn hello(&self) -> ServerMessage {
        match &self.caller {
            None => ServerMessage::Hello {
                authenticated: false,
                via: "anonymous",
                user: None,
            },
            Some(c) => ServerMessage::Hello {
                authenticated: true,
                via: c.via.as_str(),
                user: Some(HelloUser {
                    sub: c.claims.sub.clone(),
                    preferred_username: c.claims.preferred_username.clone(),
                    email: c.claims.email.clone(),
                    name: c.claims.name.clone(),
                    user_pk: c.user_pk,
                    admin: c.is_admin,
                }),
            },
        }
    }
}

/// Frames the server sends, besides events (built once per event by the hub, see
/// `LiveItem::ws_json`). docs/contract.md lists them.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerMessage {
    Hello {
        authenticated: bool,
        /// `bearer`, `ticket`, `gateway` or `anonymous`.
        via: &'static str,
        user: Option<HelloUser>,
    },
    Pong,
    Echo {
        data: Value,
    },
    Subscribed {
        after: Option<i64>,
    },
    Error {
        code: &'static str,
        detail: String,
    },
}

impl ServerMessage {
    fn error(code: &'static str, detail: impl Into<String>) -> Self {
        ServerMessage::Error {
            code,
            detail: detail.into(),
        }
    }
}

#[derive(Debug, Serialize)]
struct HelloUser {
    sub: String,
    preferred_username: Option<String>,
    email: Option<String>,
    name: Option<String>,
    user_pk: Option<UserPk>,
    admin: bool,
}

async fn send(socket: &mut WebSocket, message: &ServerMessage) -> Result<(), axum::Error> {
    let text = serde_json::to_string(message).unwrap_or_default();
    socket.send(Message::Text(Utf8Bytes::from(text))).await
}
