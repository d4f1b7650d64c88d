//! SSE fan-out: N subscribers on one idsync process, events appended at a fixed rate
//! (committed by this process, as another idsync process would: they reach the server
//! through Postgres NOTIFY), and for every subscriber a check that every position
//! arrives exactly once, in order. Latency is measured from the event's `recorded_at`
//! (set in the committing transaction) to its arrival, on every tenth subscriber.
//! RSS per idle subscriber is the server's RSS growth over N idle streams, divided by N.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use idsync_domain::{EventMetadata, Source, UserCommand, UserSnapshot};
use idsync_store::EventStore;
use idsync_testkit::oidc::TokenSpec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::support::{BoxError, ScratchDb, ms, quantile, rss_kb, serve_with_issuer};

#[derive(clap::Args)]
pub(crate) struct Args {
    #[arg(long, default_value_t = 10_000)]
    subscribers: usize,
    /// Events per second appended.
    #[arg(long, default_value_t = 100)]
    rate: u64,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

pub(crate) async fn run(server_url: &str, args: Args) -> Result<(), BoxError> {
    let db = ScratchDb::create(server_url, "idsync_bench_fanout").await?;
    let result = measure(&db, &args).await;
    db.drop_db().await?;
    result
}

struct Tally {
    received: AtomicU64,
    out_of_order: AtomicU64,
    latencies: Mutex<Vec<Duration>>,
}

async fn measure(db: &ScratchDb, args: &Args) -> Result<(), BoxError> {
    let (issuer, server) = serve_with_issuer(&db.url, &[]).await?;
    let pid = server.child.id().ok_or("no pid")?;
    let token = issuer.token(
        &TokenSpec::new()
            .sub("1")
            .groups(["authentik Admins"])
            .exp_in(3600),
    );
    let total = args.rate * args.seconds;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_kb(pid);

    let tally = Arc::new(Tally {
        received: AtomicU64::new(0),
        out_of_order: AtomicU64::new(0),
        latencies: Mutex::new(Vec::new()),
    });
    let request = format!(
        "GET /api/events/stream?after=0 HTTP/1.0\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\r\n",
        server.addr
    );
    let opened = Instant::now();
    // The subscribers run on one thread of their own, the producer on the main runtime:
    // the load generator shares the machine with the server, and one thread bounds
    // what the readers take from it (and keeps the producer's pace independent).
    let readers_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let readers_handle = readers_runtime.handle().clone();
    let (stop_readers, readers_stopped) = tokio::sync::oneshot::channel::<()>();
    let readers_thread = std::thread::spawn(move || {
        readers_runtime.block_on(async {
            let _ = readers_stopped.await;
        });
    });
    let mut readers = Vec::with_capacity(args.subscribers);
    let connect_gate = Arc::new(tokio::sync::Semaphore::new(256));
    for i in 0..args.subscribers {
        let gate = connect_gate.clone();
        let addr = server.addr;
        let request = request.clone();
        let tally = tally.clone();
        readers.push(readers_handle.spawn(async move {
            let stream = {
                let _permit = gate.acquire().await;
                let mut tcp = TcpStream::connect(addr).await?;
                tcp.write_all(request.as_bytes()).await?;
                tcp
            };
            // A lean reader: the load generator shares the two cores with the server,
            // so every cycle it spends parsing is a cycle the server does not get.
            let mut stream = stream;
            let mut buf = vec![0u8; 16 * 1024];
            let (mut filled, mut last, mut received, mut disorder) = (0usize, 0u64, 0u64, 0u64);
            let sample = i % 10 == 0;
            let mut samples = Vec::new();
            'read: while last < total {
                if filled == buf.len() {
                    buf.resize(buf.len() * 2, 0);
                }
                let n = stream.read(&mut buf[filled..]).await?;
                if n == 0 {
                    break;
                }
                filled += n;
                let mut start = 0;
                while let Some(end) = memchr::memchr(b'\n', &buf[start..filled]) {
                    let line = &buf[start..start + end];
                    start += end + 1;
                    if let Some(id) = line.strip_prefix(b"id: ") {
                        let id = parse_u64(id);
                        if id != last + 1 {
                            disorder += 1;
                        }
                        last = id;
                        received += 1;
                        if last >= total {
                            break 'read;
                        }
                    } else if sample
                        && line.starts_with(b"data: ")
                        && let Some(at) = recorded_at(line)
                    {
                        samples.push((Utc::now() - at).to_std().unwrap_or_default());
                    }
                }
                buf.copy_within(start..filled, 0);
                filled -= start;
            }
            tally.received.fetch_add(received, Ordering::Relaxed);
            tally.out_of_order.fetch_add(disorder, Ordering::Relaxed);
            tally.latencies.lock().await.extend(samples);
            Ok::<u64, std::io::Error>(last)
        }));
    }
    // Idle: every subscriber connected, nothing to send yet.
    let idle_wait = Instant::now();
    loop {
        let open = open_streams(server.addr).await.unwrap_or(0);
        if open >= args.subscribers as u64 || idle_wait.elapsed() > Duration::from_secs(120) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let connect_time = opened.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = rss_kb(pid);

    // Produce at a fixed rate.
    let pool = sqlx::PgPool::connect(&db.url).await?;
    let store = EventStore::new(pool.clone());
    let produced = Instant::now();
    let tick = Duration::from_secs_f64(1.0 / args.rate as f64);
    for n in 0..total {
        let due = produced + tick * n as u32;
        tokio::time::sleep_until(due.into()).await;
        let pk = n as i64 + 1;
        store
            .execute(
                pk,
                UserCommand::ApplySnapshot(snapshot(pk)),
                &EventMetadata::new(Source::Webhook, None, Utc::now()),
            )
            .await?;
    }
    let production = produced.elapsed();
    let mut complete = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for r in readers {
        if let Ok(Ok(Ok(last))) = tokio::time::timeout_at(deadline, r).await
            && last >= total
        {
            complete += 1;
        }
    }
    let delivery = produced.elapsed();
    let _ = stop_readers.send(());
    let _ = readers_thread.join();
    server.stop().await;
    pool.close().await;

    let mut latencies = tally.latencies.lock().await.clone();
    latencies.sort_unstable();
    let received = tally.received.load(Ordering::Relaxed);
    println!();
    println!(
        "SSE fan-out on one process: {} subscribers, {} events at {}/s",
        args.subscribers, total, args.rate
    );
    println!(
        "subscribers connected:            {} in {:.1} s",
        args.subscribers,
        connect_time.as_secs_f64()
    );
    println!(
        "every event to every subscriber:  {complete}/{} subscribers complete, {} out-of-order/missed",
        args.subscribers,
        tally.out_of_order.load(Ordering::Relaxed)
    );
    println!(
        "events delivered:                 {received} ({:.0}/s over {:.1} s; offered {}/s x {} = {}/s)",
        received as f64 / delivery.as_secs_f64(),
        delivery.as_secs_f64(),
        args.rate,
        args.subscribers,
        args.rate * args.subscribers as u64
    );
    println!(
        "production took {:.1} s (target {} s)",
        production.as_secs_f64(),
        args.seconds
    );
    println!(
        "delivery latency (commit -> client), {} samples: p50 {}  p99 {}  (target p99 < 250 ms)",
        latencies.len(),
        ms(quantile(&latencies, 0.5)),
        ms(quantile(&latencies, 0.99))
    );
    println!(
        "server RSS: {} KB before, {} KB with {} idle subscribers: {:.1} KB per idle subscriber (target < 16 KB)",
        rss_before,
        rss_idle,
        args.subscribers,
        (rss_idle.saturating_sub(rss_before)) as f64 / args.subscribers as f64
    );
    Ok(())
}

/// `"recorded_at":"<RFC 3339>"` from a data line, without parsing the whole JSON.
fn recorded_at(line: &[u8]) -> Option<DateTime<Utc>> {
    const KEY: &[u8] = b"\"recorded_at\":\"";
    let start = memchr::memmem::find(line, KEY)? + KEY.len();
    let end = start + memchr::memchr(b'"', &line[start..])?;
    let text = std::str::from_utf8(&line[start..end]).ok()?;
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Digits to a number; anything else counts as 0 (and so as out of order).
fn parse_u64(digits: &[u8]) -> u64 {
    let digits = digits.strip_suffix(b"\r").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return 0;
    }
    digits.iter().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    })
}

async fn open_streams(addr: std::net::SocketAddr) -> Option<u64> {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with("idsync_sse_streams_open "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

fn snapshot(pk: i64) -> UserSnapshot {
    UserSnapshot {
        pk,
        uuid: uuid::Uuid::from_u128(pk as u128),
        username: format!("user{pk}"),
        email: format!("user{pk}@example.org"),
        name: format!("User {pk}"),
        is_active: true,
        user_type: "internal".into(),
        groups: vec!["staff".into()],
        date_joined: DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default(),
        uid: None,
    }
}
