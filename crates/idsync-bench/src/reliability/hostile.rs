//! Slow and hostile clients: request heads sent a byte a second (cut at the head
//! timeout, `/livez` still fast for others), 64 KiB of headers (431), thousands of idle
//! WebSockets and SSE streams (memory per connection), and an SSE reader that never
//! reads (dropped once its buffers are full, other readers not slowed).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use idsync_domain::{EventMetadata, Source, UserCommand, UserSnapshot};
use idsync_store::EventStore;
use idsync_testkit::oidc::{TestIssuer, TokenSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::cluster::{PgCluster, Replica, client, settings};
use super::{Row, SECRET};
use crate::support::rss_kb;
use crate::support::{BoxError, ms, quantile};

pub(super) struct Params {
    pub slow_clients: usize,
    pub idle_ws: usize,
    pub idle_sse: usize,
    pub readers: usize,
    pub events: u64,
}

pub(super) async fn run(params: Params) -> Result<Row, BoxError> {
    let cluster = PgCluster::create().await?;
    let database_url = cluster.url("idsync");
    let issuer = TestIssuer::start().await;
    let env = settings(&[
        ("DATABASE_URL", database_url.as_str()),
        ("IDSYNC_WEBHOOK_SECRET", SECRET),
        ("IDSYNC_OIDC_ISSUER", issuer.issuer().as_str()),
        ("IDSYNC_OIDC_AUDIENCE", issuer.client_id().as_str()),
        ("IDSYNC_RECONCILE_INTERVAL", "0"),
        ("IDSYNC_FEED_BUFFER", "1024"),
    ]);
    let http = client(Duration::from_secs(10), None)?;
    let replica = Replica::start_ready(&env, &http).await?;
    let addr = replica.addr;
    let pid = replica.pid().ok_or("no pid")?;
    let admin = issuer.token(
        &TokenSpec::new()
            .sub("1")
            .groups(["authentik Admins"])
            .exp_in(7200),
    );

    // 1. Slowloris, with /livez measured meanwhile.
    let mut slow = tokio::task::JoinSet::new();
    for _ in 0..params.slow_clients {
        slow.spawn(slowloris(addr));
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let mut livez = Vec::new();
    let probe_until = Instant::now() + Duration::from_secs(13);
    while Instant::now() < probe_until {
        let t = Instant::now();
        let ok = http
            .get(replica.url("/livez"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ok {
            livez.push(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut cut_after = Vec::new();
    let mut never_cut = 0u64;
    while let Some(result) = slow.join_next().await {
        match result {
            Ok(Some(d)) => cut_after.push(d),
            _ => never_cut += 1,
        }
    }
    livez.sort_unstable();
    cut_after.sort_unstable();

    // 2. 64 KiB of headers.
    let big_head_status = big_head(addr).await;

    // 3. Idle WebSockets, then idle SSE streams: RSS per connection.
    let rss_base = rss_kb(pid);
    let mut idle_ws = Vec::new();
    for i in 0..params.idle_ws {
        if let Some(tcp) = open_ws(addr, &admin, i).await {
            idle_ws.push(tcp);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_ws = rss_kb(pid);
    let mut idle_sse = Vec::new();
    for _ in 0..params.idle_sse {
        if let Some(tcp) = open_sse(addr, &admin, None).await {
            idle_sse.push(tcp);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_sse = rss_kb(pid);
    let ws_open = idle_ws.len();
    let sse_open = idle_sse.len();
    drop(idle_ws);
    drop(idle_sse);
    let ws_kb = (rss_ws.saturating_sub(rss_base)) as f64 / ws_open.max(1) as f64;
    let sse_kb = (rss_sse.saturating_sub(rss_ws)) as f64 / sse_open.max(1) as f64;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 4. A reader that never reads, beside readers that do; events produced at pace.
    let head0: i64 = {
        let pool = sqlx::PgPool::connect(&database_url).await?;
        let h = idsync_store::feed::head(&pool).await?.0;
        pool.close().await;
        h
    };
    let stuck = open_sse(addr, &admin, Some(head0))
        .await
        .ok_or("stuck reader")?;
    let total = params.events;
    let latencies = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..params.readers {
        let Some(tcp) = open_sse(addr, &admin, Some(head0)).await else {
            continue;
        };
        let latencies = latencies.clone();
        readers.spawn(read_all(tcp, head0 + total as i64, latencies));
    }
    let pool = sqlx::PgPool::connect(&database_url).await?;
    let store = Arc::new(EventStore::new(pool.clone()));
    let produced = Instant::now();
    let rate = 1_000.0;
    // Paced, with a few writes in flight: one at a time cannot keep 1,000/s on a loaded
    // machine.
    let gate = Arc::new(tokio::sync::Semaphore::new(16));
    let mut writes = tokio::task::JoinSet::new();
    for n in 0..total {
        tokio::time::sleep_until((produced + Duration::from_secs_f64(n as f64 / rate)).into())
            .await;
        let permit = gate.clone().acquire_owned().await?;
        let store = store.clone();
        writes.spawn(async move {
            let _permit = permit;
            let pk = 1_000_000 + n as i64;
            store
                .execute(
                    pk,
                    UserCommand::ApplySnapshot(snapshot(pk)),
                    &EventMetadata::new(Source::Webhook, None, Utc::now()),
                )
                .await
                .map(|_| ())
        });
        while let Some(done) = writes.try_join_next() {
            done??;
        }
    }
    while let Some(done) = writes.join_next().await {
        done??;
    }
    let production = produced.elapsed();
    let mut complete = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while let Ok(Some(result)) = tokio::time::timeout_at(deadline, readers.join_next()).await {
        if matches!(result, Ok(true)) {
            complete += 1;
        }
    }
    // The stuck reader: its connection must be closed by the server. Reading now drains
    // what the buffers held, then must reach the end.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let (stuck_closed, stuck_events) = drain(stuck, Duration::from_secs(20)).await;
    pool.close().await;
    let mut lat = latencies.lock().await.clone();
    lat.sort_unstable();
    replica.stop().await;
    drop(cluster);

    let passed = livez.last().is_some()
        && quantile(&livez, 0.99) < Duration::from_millis(50)
        && never_cut == 0
        && cut_after
            .last()
            .is_some_and(|d| *d < Duration::from_secs(15))
        && big_head_status == 431
        && complete == params.readers
        && stuck_closed;
    Ok(Row {
        scenario: "slow and hostile clients".into(),
        load: format!(
            "{} byte-a-second heads; {} idle WebSockets + {} idle SSE; {} SSE readers + 1 that never reads, {} events in {:.1} s (offered 1,000/s)",
            params.slow_clients,
            ws_open,
            sse_open,
            params.readers,
            total,
            production.as_secs_f64()
        ),
        faults: "slowloris, 64 KiB head, non-reading client".into(),
        lost: (params.readers - complete) as u64,
        duplicated: 0,
        other: format!(
            "/livez meanwhile p50 {} p99 {} ({} probes); slow heads cut after p50 {:.1} s, max {:.1} s, {} never cut; 64 KiB head → {}; RSS {:.1} KiB per idle WebSocket, {:.1} KiB per idle SSE stream; readers p99 {} commit→client, {}/{} complete; reader that never reads: closed by the server {} after {} events",
            ms(quantile(&livez, 0.5)),
            ms(quantile(&livez, 0.99)),
            livez.len(),
            quantile(&cut_after, 0.5).as_secs_f64(),
            cut_after.last().copied().unwrap_or_default().as_secs_f64(),
            never_cut,
            big_head_status,
            ws_kb,
            sse_kb,
            ms(quantile(&lat, 0.99)),
            complete,
            params.readers,
            stuck_closed,
            stuck_events
        ),
        passed,
    })
}

/// Sends a head a byte a second; returns how long until the server closed it.
async fn slowloris(addr: SocketAddr) -> Option<Duration> {
    let mut tcp = TcpStream::connect(addr).await.ok()?;
    let started = Instant::now();
    let head = format!(
        "GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: {}\r\n\r\n",
        "a".repeat(60)
    );
    for byte in head.as_bytes() {
        if tcp.write_all(&[*byte]).await.is_err() {
            return Some(started.elapsed());
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => return None,
            Err(_) => {}
        }
    }
    None
}

async fn big_head(addr: SocketAddr) -> u16 {
    let Ok(mut tcp) = TcpStream::connect(addr).await else {
        return 0;
    };
    let mut head = String::from("GET /livez HTTP/1.1\r\nHost: x\r\n");
    for i in 0..64 {
        head.push_str(&format!("X-Filler-{i}: {}\r\n", "a".repeat(1000)));
    }
    head.push_str("\r\n");
    let _ = tcp.write_all(head.as_bytes()).await;
    let mut buf = [0u8; 512];
    match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await {
        Ok(Ok(n)) if n > 12 => std::str::from_utf8(&buf[9..12])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

async fn open_ws(addr: SocketAddr, token: &str, i: usize) -> Option<TcpStream> {
    let mut tcp = TcpStream::connect(addr).await.ok()?;
    let key = format!("{:022}==", i);
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.ok()?;
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    buf[..n].starts_with(b"HTTP/1.1 101").then_some(tcp)
}

async fn open_sse(addr: SocketAddr, token: &str, after: Option<i64>) -> Option<TcpStream> {
    let mut tcp = TcpStream::connect(addr).await.ok()?;
    let query = after.map_or(String::new(), |a| format!("?after={a}"));
    let request = format!(
        "GET /api/events/stream{query} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.ok()?;
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    buf[..n].starts_with(b"HTTP/1.1 200").then_some(tcp)
}

/// Reads an SSE stream until position `last`; records commit→client latency.
async fn read_all(
    mut tcp: TcpStream,
    last: i64,
    latencies: Arc<tokio::sync::Mutex<Vec<Duration>>>,
) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    let mut filled = 0;
    let mut samples = Vec::new();
    let mut seen = 0i64;
    loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = match tokio::time::timeout(Duration::from_secs(30), tcp.read(&mut buf[filled..]))
            .await
        {
            Ok(Ok(n)) if n > 0 => n,
            _ => break,
        };
        filled += n;
        let mut start = 0;
        while let Some(end) = buf[start..filled].iter().position(|b| *b == b'\n') {
            let line = &buf[start..start + end];
            start += end + 1;
            if let Some(id) = line.strip_prefix(b"id: ") {
                seen = std::str::from_utf8(id)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(seen);
            } else if line.starts_with(b"data: ")
                && let Some(at) = recorded_at(line)
            {
                samples.push((Utc::now() - at).to_std().unwrap_or_default());
            }
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        if seen >= last {
            break;
        }
    }
    latencies.lock().await.extend(samples);
    seen >= last
}

/// Reads what is left; true if the server closed the connection within `within`.
async fn drain(mut tcp: TcpStream, within: Duration) -> (bool, u64) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut events = 0u64;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return (true, events),
            Ok(Ok(n)) => {
                events += buf[..n].windows(4).filter(|w| w == b"id: ").count() as u64;
            }
            Err(_) => return (false, events),
        }
    }
}

fn recorded_at(line: &[u8]) -> Option<chrono::DateTime<Utc>> {
    let text = std::str::from_utf8(line).ok()?;
    let at = text.find("\"recorded_at\":\"")? + "\"recorded_at\":\"".len();
    let end = text[at..].find('"')?;
    chrono::DateTime::parse_from_rfc3339(&text[at..at + end])
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

fn snapshot(pk: i64) -> UserSnapshot {
    UserSnapshot {
        pk,
        uuid: uuid::Uuid::new_v4(),
        username: format!("bench{pk}"),
        email: format!("bench{pk}@example.org"),
        name: format!("Bench User {pk} with a name long enough to look real"),
        is_active: true,
        user_type: "internal".into(),
        groups: vec!["staff".into()],
        date_joined: Utc::now(),
        uid: None,
    }
}
