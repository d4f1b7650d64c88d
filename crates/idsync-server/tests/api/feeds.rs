//! Live feeds through the real binary: SSE resume exactness, fan-out under concurrent
//! writers, the lag path, cross-process delivery, filtering, tickets, the WebSocket
//! protocol with gateway identity, and shutdown with open connections.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::Utc;
use futures::{SinkExt, StreamExt};
use idsync_domain::{EventMetadata, Source, UserCommand, UserSnapshot};
use idsync_store::EventStore;
use idsync_testkit::oidc::{TestIssuer, TokenSpec};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::{App, database_of, metric_value, spawn_app, url_for};

const ADMINS: &str = "authentik Admins";

struct Feeds {
    app: App,
    issuer: TestIssuer,
    store: Arc<EventStore>,
}

async fn feeds(pool: &PgPool, extra: &[(&str, &str)]) -> Feeds {
    let issuer = TestIssuer::start().await;
    let db = database_of(pool).await;
    let (iss, aud) = (issuer.issuer(), issuer.client_id());
    let mut env = vec![
        ("IDSYNC_OIDC_ISSUER", iss.as_str()),
        ("IDSYNC_OIDC_AUDIENCE", aud.as_str()),
    ];
    env.extend_from_slice(extra);
    let app = spawn_app(&url_for(&db), &env).await;
    app.wait_ready().await;
    Feeds {
        app,
        issuer,
        store: Arc::new(EventStore::new(pool.clone())),
    }
}

fn admin(issuer: &TestIssuer) -> String {
    issuer.token(&TokenSpec::new().sub("1").groups([ADMINS]).exp_in(600))
}

fn user(issuer: &TestIssuer, pk: i64) -> String {
    issuer.token(&TokenSpec::new().sub(pk.to_string()).exp_in(600))
}

fn snapshot(pk: i64, version: u32) -> UserSnapshot {
    UserSnapshot {
        pk,
        uuid: uuid::Uuid::from_u128(pk as u128),
        username: format!("user{pk}"),
        email: format!("user{pk}.v{version}@example.org"),
        name: format!("User {pk}"),
        is_active: true,
        user_type: "internal".into(),
        groups: vec![],
        date_joined: chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("valid"),
        uid: None,
    }
}

/// Append one event for user `pk` (registration first, then an email change).
async fn append(store: &EventStore, pk: i64, version: u32) {
    let appended = store
        .execute(
            pk,
            UserCommand::ApplySnapshot(snapshot(pk, version)),
            &EventMetadata::new(Source::Webhook, None, Utc::now()),
        )
        .await
        .expect("append");
    assert_eq!(appended.len(), 1);
}

/// `n` events over `users` users, in position order 1..=n from an empty log.
async fn history(store: &EventStore, n: usize, users: i64) {
    for i in 0..n {
        let pk = (i as i64 % users) + 1;
        append(store, pk, (i as i64 / users) as u32).await;
    }
}

#[derive(Debug, Clone)]
struct SseEvent {
    id: Option<i64>,
    event: Option<String>,
    data: String,
}

struct SseReader {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl SseReader {
    async fn open(
        app: &App,
        query: &str,
        token: Option<&str>,
        last_event_id: Option<i64>,
    ) -> Result<SseReader, (u16, Value)> {
        let mut req = reqwest::Client::new().get(app.url(&format!("/api/events/stream{query}")));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = req.send().await.expect("GET stream");
        if resp.status() != 200 {
            let status = resp.status().as_u16();
            return Err((status, resp.json().await.unwrap_or(Value::Null)));
        }
        assert_eq!(
            resp.headers()
                .get("x-accel-buffering")
                .and_then(|v| v.to_str().ok()),
            Some("no")
        );
        Ok(SseReader {
            body: Box::pin(resp.bytes_stream()),
            buffer: String::new(),
        })
    }

    /// The next event (skipping comments and the retry preamble), or None on timeout/end.
    async fn next(&mut self, within: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut ev = SseEvent {
                    id: None,
                    event: None,
                    data: String::new(),
                };
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        ev.id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        ev.event = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        ev.data.push_str(v.trim_start());
                    }
                }
                if ev.id.is_some() || ev.event.is_some() {
                    return Some(ev);
                }
                continue;
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Ok(Some(Ok(chunk))) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return None,
            }
        }
    }

    /// Positions of the next events up to and including `until`.
    async fn positions_until(&mut self, until: i64) -> Vec<i64> {
        let mut out = Vec::new();
        while out.last().copied().unwrap_or(0) < until {
            match self.next(Duration::from_secs(20)).await {
                Some(SseEvent { id: Some(id), .. }) => out.push(id),
                Some(_) => {}
                None => break,
            }
        }
        out
    }
}

#[sqlx::test(migrations = false)]
async fn resume_after_any_position_is_exact(pool: PgPool) {
    let f = feeds(&pool, &[]).await;
    history(&f.store, 1000, 50).await;
    let token = admin(&f.issuer);
    for n in [0, 1, 417, 999] {
        let mut s = SseReader::open(&f.app, &format!("?after={n}"), Some(&token), None)
            .await
            .expect("open");
        assert_eq!(
            s.positions_until(1000).await,
            ((n + 1)..=1000).collect::<Vec<_>>(),
            "after={n}"
        );
        let mut s = SseReader::open(&f.app, "", Some(&token), Some(n))
            .await
            .expect("open");
        assert_eq!(
            s.positions_until(1000).await,
            ((n + 1)..=1000).collect::<Vec<_>>(),
            "Last-Event-ID {n}"
        );
    }
    // after=1000: nothing yet; the next event arrives live.
    let mut s = SseReader::open(&f.app, "?after=1000", Some(&token), None)
        .await
        .expect("open");
    assert!(s.next(Duration::from_millis(300)).await.is_none());
    append(&f.store, 1, 99).await;
    let live = s.next(Duration::from_secs(10)).await.expect("live event");
    assert_eq!(live.id, Some(1001));
    assert_eq!(live.event.as_deref(), Some("UserUpdated"));
    let item: Value = serde_json::from_str(&live.data).expect("data is a feed item");
    assert_eq!(item["position"], 1001);
    assert_eq!(item["user_pk"], 1);
    assert_eq!(item["type"], "UserUpdated");

    // A client that disconnects mid-stream and resumes with its last id misses nothing.
    let mut first = SseReader::open(&f.app, "?after=0", Some(&token), None)
        .await
        .expect("open");
    let mut got = first.positions_until(300).await;
    drop(first);
    let mut again = SseReader::open(&f.app, "", Some(&token), got.last().copied())
        .await
        .expect("reopen");
    got.extend(again.positions_until(1001).await);
    assert_eq!(got, (1..=1001).collect::<Vec<_>>());
}

#[sqlx::test(migrations = false)]
async fn fifty_streams_get_every_position_once_while_writers_run(pool: PgPool) {
    let f = feeds(&pool, &[]).await;
    let token = admin(&f.issuer);
    let mut streams = Vec::new();
    for _ in 0..50 {
        streams.push(
            SseReader::open(&f.app, "?after=0", Some(&token), None)
                .await
                .expect("open"),
        );
    }
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = f.store.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    append(&store, w * 1000 + (i % 10) + 1, (i / 10) as u32).await;
                }
            })
        })
        .collect();
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut s| tokio::spawn(async move { s.positions_until(400).await }))
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    for r in readers {
        assert_eq!(r.await.expect("reader"), (1..=400).collect::<Vec<_>>());
    }
}

#[sqlx::test(migrations = false)]
async fn a_slow_reader_behind_a_tiny_buffer_still_gets_everything(pool: PgPool) {
    let f = feeds(&pool, &[("IDSYNC_FEED_BUFFER", "2")]).await;
    let token = admin(&f.issuer);
    let mut slow = SseReader::open(&f.app, "?after=0", Some(&token), None)
        .await
        .expect("open");
    let writer = {
        let store = f.store.clone();
        tokio::spawn(async move { history(&store, 300, 30).await })
    };
    let mut got = Vec::new();
    while got.last().copied().unwrap_or(0) < 300 {
        match slow.next(Duration::from_secs(20)).await {
            Some(SseEvent { id: Some(id), .. }) => got.push(id),
            Some(_) => {}
            None => break,
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    writer.await.expect("writer");
    assert_eq!(got, (1..=300).collect::<Vec<_>>());
}

#[sqlx::test(migrations = false)]
async fn events_committed_elsewhere_reach_this_process_and_filters_apply(pool: PgPool) {
    // The test process itself is the other writer; a second serve process also listens.
    let f = feeds(&pool, &[]).await;
    let db = database_of(&pool).await;
    let (iss, aud) = (f.issuer.issuer(), f.issuer.client_id());
    let other = spawn_app(
        &url_for(&db),
        &[
            ("IDSYNC_OIDC_ISSUER", iss.as_str()),
            ("IDSYNC_OIDC_AUDIENCE", aud.as_str()),
        ],
    )
    .await;
    other.wait_ready().await;
    let token = admin(&f.issuer);
    let mut on_a = SseReader::open(&f.app, "", Some(&token), None)
        .await
        .expect("open a");
    let mut on_b = SseReader::open(&other, "", Some(&token), None)
        .await
        .expect("open b");
    let mut own = SseReader::open(&other, "", Some(&user(&f.issuer, 3)), None)
        .await
        .expect("open own");
    tokio::time::sleep(Duration::from_millis(200)).await;
    history(&f.store, 30, 5).await;
    assert_eq!(on_a.positions_until(30).await, (1..=30).collect::<Vec<_>>());
    assert_eq!(on_b.positions_until(30).await, (1..=30).collect::<Vec<_>>());
    // User 3 sees only user 3's events: positions 3, 8, 13, 18, 23, 28.
    let mut mine = Vec::new();
    while let Some(ev) = own.next(Duration::from_millis(800)).await {
        let item: Value = serde_json::from_str(&ev.data).expect("json");
        assert_eq!(item["user_pk"], 3);
        mine.push(ev.id.expect("id"));
    }
    assert_eq!(mine, vec![3, 8, 13, 18, 23, 28]);
}

#[sqlx::test(migrations = false)]
async fn tickets_open_one_stream_once_and_tokens_stay_out_of_urls(pool: PgPool) {
    let f = feeds(&pool, &[]).await;
    let token = admin(&f.issuer);
    let ticket = |app: &App| {
        let req = app
            .http
            .post(app.url("/api/stream-tickets"))
            .bearer_auth(&token);
        async move {
            req.send()
                .await
                .expect("POST")
                .json::<Value>()
                .await
                .expect("json")["ticket"]
                .as_str()
                .expect("ticket")
                .to_owned()
        }
    };
    let t = ticket(&f.app).await;
    let mut s = SseReader::open(&f.app, &format!("?ticket={t}&after=0"), None, None)
        .await
        .expect("ticket works");
    append(&f.store, 1, 0).await;
    assert_eq!(
        s.next(Duration::from_secs(10)).await.and_then(|e| e.id),
        Some(1)
    );
    let reused = SseReader::open(&f.app, &format!("?ticket={t}"), None, None).await;
    assert_eq!(
        reused.err().map(|e| e.0),
        Some(401),
        "a used ticket is refused"
    );

    let expired = ticket(&f.app).await;
    sqlx::query("UPDATE stream_tickets SET expires_at = now() - interval '1 second'")
        .execute(&pool)
        .await
        .expect("expire");
    let refused = SseReader::open(&f.app, &format!("?ticket={expired}"), None, None).await;
    assert_eq!(
        refused.err().map(|e| e.0),
        Some(401),
        "an expired ticket is refused"
    );

    let in_url = SseReader::open(&f.app, &format!("?access_token={token}"), None, None).await;
    assert_eq!(in_url.err().map(|e| e.0), Some(401));
    let none = SseReader::open(&f.app, "", None, None).await;
    assert_eq!(none.err().map(|e| e.0), Some(401));
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(app: &App, path: &str, headers: &[(&str, String)]) -> Ws {
    let mut request = format!("ws://{}{}", app.addr, path)
        .into_client_request()
        .expect("request");
    for (k, v) in headers {
        let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes())
            .expect("header name");
        request
            .headers_mut()
            .insert(name, v.parse().expect("header value"));
    }
    let (ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("ws connect");
    ws
}

async fn ws_recv(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).expect("json frame"),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no frame: {other:?}"),
        }
    }
}

async fn ws_send(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.into())).await.expect("send");
}

fn userinfo(json: &Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(json.to_string())
}

#[sqlx::test(migrations = false)]
async fn websocket_protocol_for_anonymous_callers(pool: PgPool) {
    let f = feeds(&pool, &[]).await;
    let mut ws = ws_connect(&f.app, "/ws", &[]).await;
    assert_eq!(
        ws_recv(&mut ws).await,
        json!({"type": "hello", "authenticated": false, "via": "anonymous", "user": null})
    );
    ws_send(&mut ws, r#"{"type": "subscribe", "after": 0}"#).await;
    assert_eq!(ws_recv(&mut ws).await["code"], "login_required");
    ws_send(&mut ws, r#"{"type": "echo", "data": {"x": [1, "two"]}}"#).await;
    assert_eq!(
        ws_recv(&mut ws).await,
        json!({"type": "echo", "data": {"x": [1, "two"]}})
    );
    for bad in [
        "not json",
        r#"{"type": "dance"}"#,
        r#"{"no": "type"}"#,
        "[]",
    ] {
        ws_send(&mut ws, bad).await;
        let reply = ws_recv(&mut ws).await;
        assert_eq!(
            (reply["type"].as_str(), reply["code"].as_str()),
            (Some("error"), Some("bad_message")),
            "{bad}"
        );
    }
    ws_send(&mut ws, r#"{"type": "ping"}"#).await;
    assert_eq!(
        ws_recv(&mut ws).await,
        json!({"type": "pong"}),
        "still open after bad messages"
    );

    // A spoofed X-Userinfo from a peer that is not a trusted proxy is ignored.
    let spoof = userinfo(&json!({"sub": "1", "preferred_username": "akadmin", "groups": [ADMINS]}));
    let mut ws = ws_connect(&f.app, "/ws", &[("x-userinfo", spoof)]).await;
    assert_eq!(ws_recv(&mut ws).await["authenticated"], false);
    // The warning reaches us through the child's stderr pipe: give it a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !f.app.logs().contains("IDSYNC_TRUSTED_PROXIES") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a warning is logged:\n{}",
            f.app.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[sqlx::test(migrations = false)]
async fn websocket_believes_the_gateway_only_when_it_is_trusted(pool: PgPool) {
    let f = feeds(&pool, &[("IDSYNC_TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    // Keycloak-shaped userinfo whose preferred_username is an email.
    let info = userinfo(
        &json!({"sub": "f:2b1c:jane", "preferred_username": "jane@example.org", "email": "jane@example.org", "email_verified": true}),
    );
    let mut ws = ws_connect(&f.app, "/ws", &[("x-userinfo", info)]).await;
    let hello = ws_recv(&mut ws).await;
    assert_eq!(hello["authenticated"], true, "{hello}");
    assert_eq!(hello["via"], "gateway");
    assert_eq!(hello["user"]["preferred_username"], "jane@example.org");

    let mut ws = ws_connect(&f.app, "/ws", &[("x-userinfo", "%%%not-base64".to_owned())]).await;
    assert_eq!(ws_recv(&mut ws).await["authenticated"], false);
    ws_send(&mut ws, r#"{"type": "ping"}"#).await;
    assert_eq!(
        ws_recv(&mut ws).await["type"],
        "pong",
        "bad base64 does not break the connection"
    );

    // X_Userinfo (underscore) is never read.
    let info = userinfo(&json!({"sub": "9", "preferred_username": "mallory"}));
    let mut ws = ws_connect(&f.app, "/ws", &[("x_userinfo", info)]).await;
    assert_eq!(ws_recv(&mut ws).await["authenticated"], false);

    // An X-Access-Token from the gateway is verified and wins over X-Userinfo.
    let token = f.issuer.token(
        &TokenSpec::new()
            .sub("5")
            .preferred_username("real")
            .exp_in(600),
    );
    let lie = userinfo(&json!({"sub": "1", "preferred_username": "akadmin"}));
    let mut ws = ws_connect(
        &f.app,
        "/ws",
        &[("x-access-token", token), ("x-userinfo", lie)],
    )
    .await;
    let hello = ws_recv(&mut ws).await;
    assert_eq!(hello["via"], "gateway");
    assert_eq!(hello["user"]["preferred_username"], "real");
}

#[sqlx::test(migrations = false)]
async fn websocket_subscribers_get_the_feed(pool: PgPool) {
    let f = feeds(&pool, &[]).await;
    history(&f.store, 5, 5).await;
    let mut ws = ws_connect(
        &f.app,
        "/ws",
        &[("authorization", format!("Bearer {}", admin(&f.issuer)))],
    )
    .await;
    let hello = ws_recv(&mut ws).await;
    assert_eq!(
        (hello["via"].as_str(), hello["user"]["admin"].as_bool()),
        (Some("bearer"), Some(true))
    );
    ws_send(&mut ws, r#"{"type": "subscribe", "after": 2}"#).await;
    assert_eq!(ws_recv(&mut ws).await["type"], "subscribed");
    let mut positions = Vec::new();
    for _ in 0..3 {
        let frame = ws_recv(&mut ws).await;
        assert_eq!(frame["type"], "event");
        assert_eq!(frame["event_type"], "UserRegistered");
        positions.push(frame["position"].as_i64().expect("position"));
    }
    assert_eq!(positions, vec![3, 4, 5]);
    append(&f.store, 2, 1).await;
    let live = ws_recv(&mut ws).await;
    assert_eq!(
        (live["position"].as_i64(), live["event_type"].as_str()),
        (Some(6), Some("UserUpdated"))
    );

    // A ticket identifies a socket too, once.
    let ticket: Value = f
        .app
        .http
        .post(f.app.url("/api/stream-tickets"))
        .bearer_auth(user(&f.issuer, 2))
        .send()
        .await
        .expect("POST")
        .json()
        .await
        .expect("json");
    let path = format!("/ws?ticket={}", ticket["ticket"].as_str().expect("ticket"));
    let mut ws = ws_connect(&f.app, &path, &[]).await;
    assert_eq!(ws_recv(&mut ws).await["via"], "ticket");
    let mut again = ws_connect(&f.app, &path, &[]).await;
    assert_eq!(ws_recv(&mut again).await["code"], "invalid_ticket");
    assert_eq!(ws_recv(&mut again).await["authenticated"], false);
}

#[sqlx::test(migrations = false)]
async fn sigterm_with_100_open_streams_and_sockets_exits_within_5_s(pool: PgPool) {
    let mut f = feeds(&pool, &[]).await;
    let token = admin(&f.issuer);
    let mut streams = Vec::new();
    let mut sockets = Vec::new();
    for _ in 0..50 {
        streams.push(
            SseReader::open(&f.app, "", Some(&token), None)
                .await
                .expect("open"),
        );
        sockets.push(ws_connect(&f.app, "/ws", &[]).await);
    }
    let metrics = f.app.metrics().await;
    assert_eq!(
        metric_value(&metrics, "idsync_sse_streams_open"),
        Some(50.0),
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, "idsync_ws_connections_open"),
        Some(50.0),
        "{metrics}"
    );
    let started = std::time::Instant::now();
    f.app.signal("TERM");
    let status = f.app.wait_exit(Duration::from_secs(5)).await;
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A subscriber that hangs up is noticed straight away (not at the next write), so its
/// stream, its subscription and its memory go with it.
#[sqlx::test(migrations = false)]
async fn a_stream_whose_client_hangs_up_is_closed_at_once(pool: PgPool) {
    let f = feeds(&pool, &[]).await;
    let token = admin(&f.issuer);
    let open_streams =
        || async { metric_value(&f.app.metrics().await, "idsync_sse_streams_open").unwrap_or(0.0) };
    let stream = SseReader::open(&f.app, "", Some(&token), None)
        .await
        .expect("open");
    assert_eq!(open_streams().await, 1.0);
    drop(stream);
    // Well under the 15 s keep-alive: the server must not wait for a write to fail.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while open_streams().await != 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the stream stayed open after its client left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An idle stream hears a keep-alive comment every 15 s (proxies close silent lines).
#[sqlx::test(migrations = false)]
async fn an_idle_stream_gets_a_keep_alive_comment_every_15_s(pool: PgPool) {
    let f = feeds(&pool, &[]).await;
    let token = admin(&f.issuer);
    let opened = std::time::Instant::now();
    let resp = reqwest::Client::new()
        .get(f.app.url("/api/events/stream"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET stream");
    assert_eq!(resp.status(), 200);
    let mut body = Box::pin(resp.bytes_stream());
    let mut text = String::new();
    let mut comments = Vec::new();
    while comments.len() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(20), body.next())
            .await
            .expect("a keep-alive within 20 s")
            .expect("the stream stays open")
            .expect("chunk");
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(at) = text.find(":keep-alive\n\n") {
            comments.push(opened.elapsed());
            text.drain(..at + ":keep-alive\n\n".len());
        }
    }
    assert!(
        comments[0] >= Duration::from_secs(14) && comments[0] < Duration::from_secs(17),
        "first keep-alive after {:?}",
        comments[0]
    );
    let gap = comments[1] - comments[0];
    assert!(
        gap >= Duration::from_secs(14) && gap < Duration::from_secs(17),
        "keep-alives {gap:?} apart"
    );
}

/// The stream ends when the caller's token does, saying why, so the client can come back
/// with a fresh token and its Last-Event-ID.
#[sqlx::test(migrations = false)]
async fn the_stream_ends_when_the_token_expires(pool: PgPool) {
    let f = feeds(&pool, &[]).await;
    let token = f
        .issuer
        .token(&TokenSpec::new().sub("1").groups([ADMINS]).exp_in(3));
    let opened = std::time::Instant::now();
    let mut stream = SseReader::open(&f.app, "", Some(&token), None)
        .await
        .expect("open");
    let last = stream
        .next(Duration::from_secs(10))
        .await
        .expect("a closing event before the stream ends");
    assert_eq!(last.event.as_deref(), Some("token_expired"));
    assert!(
        opened.elapsed() >= Duration::from_secs(1) && opened.elapsed() < Duration::from_secs(6),
        "ended after {:?}",
        opened.elapsed()
    );
    let waiting = std::time::Instant::now();
    assert!(
        stream.next(Duration::from_secs(5)).await.is_none(),
        "nothing after token_expired"
    );
    assert!(
        waiting.elapsed() < Duration::from_secs(2),
        "the stream ended (it did not just fall silent)"
    );
}
