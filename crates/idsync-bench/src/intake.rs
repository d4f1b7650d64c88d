//! Durable intake: webhooks accepted per second and latency with N concurrent senders,
//! beside pgbench running the same single-row INSERT into the same table at the same
//! concurrency. idsync answers 202 only after its INSERT committed, so pgbench's rate is
//! the ceiling; the target is ≥ 0.8 × of it with p99 < 25 ms.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

use crate::support::{BoxError, ScratchDb, Server, ms, pgbench, quantile};

#[derive(clap::Args)]
pub struct Args {
    /// Concurrent senders (and pgbench clients).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds each side runs (after a short warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

const SECRET: &str = "bench-secret";

pub async fn run(server_url: &str, args: Args) -> Result<(), BoxError> {
    let db = ScratchDb::create(server_url, "idsync_bench_intake").await?;
    let result = measure(&db, &args).await;
    db.drop_db().await?;
    let (idsync, baseline) = result?;

    let ratio = idsync.rate / baseline.rate;
    println!();
    println!(
        "durable webhook intake, {} concurrent senders, {} s each, loopback (idsync with default settings)",
        args.concurrency, args.seconds
    );
    println!(
        "{:<44} {:>12} {:>10} {:>10}",
        "", "per second", "p50", "p99"
    );
    println!(
        "{:<44} {:>12.0} {:>10} {:>10}",
        "idsync POST /authentik/webhook (202)",
        idsync.rate,
        ms(idsync.p50),
        ms(idsync.p99)
    );
    println!(
        "{:<44} {:>12.0} {:>10} {:>10}",
        "baseline: pgbench, same INSERT", baseline.rate, "-", "-"
    );
    println!(
        "ratio idsync / pgbench: {ratio:.2} (target >= 0.80); p99 {} (target < 25 ms)",
        ms(idsync.p99)
    );
    println!("requests: {} ok, {} failed", idsync.ok, idsync.failed);
    Ok(())
}

struct Figures {
    rate: f64,
    p50: Duration,
    p99: Duration,
    ok: u64,
    failed: u64,
}

async fn measure(db: &ScratchDb, args: &Args) -> Result<(Figures, Figures), BoxError> {
    // idsync runs with its defaults (a 16-connection pool, 4 intake writers).
    let server = Server::start(&db.url, &[("IDSYNC_WEBHOOK_SECRET", SECRET)]).await?;
    let idsync = load(&server, args).await;
    server.stop().await;
    let idsync = idsync?;
    let baseline = run_pgbench(&db.url, args).await?;
    Ok((idsync, baseline))
}

/// Closed-loop load: each sender posts, waits for the answer, posts again.
async fn load(server: &Server, args: &Args) -> Result<Figures, BoxError> {
    // Warm-up: connections, the server's pool, Postgres's caches.
    send_for(server.addr, args.concurrency, Duration::from_secs(1)).await;
    let started = Instant::now();
    let results = send_for(
        server.addr,
        args.concurrency,
        Duration::from_secs(args.seconds),
    )
    .await;
    let elapsed = started.elapsed();
    let mut latencies = Vec::new();
    let mut failed = 0;
    for (mut lat, f) in results {
        latencies.append(&mut lat);
        failed += f;
    }
    latencies.sort_unstable();
    Ok(Figures {
        rate: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: quantile(&latencies, 0.50),
        p99: quantile(&latencies, 0.99),
        ok: latencies.len() as u64,
        failed,
    })
}

/// `senders` keep-alive connections, each sending requests back to back for `duration`.
/// The client is a minimal HTTP/1.1 writer/reader rather than a general client: on two
/// cores every cycle the load generator burns is taken from the server under test, and
/// pgbench's baseline uses a lean C client too.
async fn send_for(
    addr: SocketAddr,
    senders: usize,
    duration: Duration,
) -> Vec<(Vec<Duration>, u64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..senders)
        .map(|s| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(8192);
                let mut failed = 0u64;
                let mut conn: Option<BufStream<TcpStream>> = None;
                let mut n: i64 = 0;
                let mut response = Vec::with_capacity(512);
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let body = format!(
                        "{{\"event_id\":\"{}\",\"action\":\"model_created\",\"model_app\":\"authentik_core\",\
                         \"model_name\":\"user\",\"model_pk\":{},\"created\":\"2026-11-22T10:00:00Z\",\
                         \"actor\":{{\"pk\":1,\"username\":\"akadmin\"}}}}",
                        uuid::Uuid::new_v4(),
                        (s as i64) * 1_000_000 + n
                    );
                    let request = format!(
                        "POST /authentik/webhook HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {SECRET}\r\n\
                         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let t = Instant::now();
                    let stream = match conn.as_mut() {
                        Some(c) => c,
                        None => match TcpStream::connect(addr).await {
                            Ok(tcp) => {
                                let _ = tcp.set_nodelay(true);
                                conn.insert(BufStream::new(tcp))
                            }
                            Err(_) => {
                                failed += 1;
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                continue;
                            }
                        },
                    };
                    match exchange(stream, request.as_bytes(), &mut response).await {
                        Ok(202) => latencies.push(t.elapsed()),
                        Ok(_) => failed += 1,
                        Err(_) => {
                            failed += 1;
                            conn = None;
                        }
                    }
                }
                (latencies, failed)
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut out = Vec::new();
    for t in tasks {
        if let Ok(r) = t.await {
            out.push(r);
        }
    }
    out
}

/// Send one request, read one response (status line, headers, Content-Length body).
async fn exchange(
    stream: &mut BufStream<TcpStream>,
    request: &[u8],
    scratch: &mut Vec<u8>,
) -> std::io::Result<u16> {
    stream.write_all(request).await?;
    stream.flush().await?;
    let mut status = 0u16;
    let mut content_length = 0usize;
    loop {
        scratch.clear();
        let n = stream.read_until(b'\n', scratch).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = std::str::from_utf8(scratch).unwrap_or("").trim_end();
        if line.is_empty() {
            break;
        }
        if status == 0 {
            status = line
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
        } else if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    scratch.resize(content_length, 0);
    stream.read_exact(scratch).await?;
    Ok(status)
}

/// pgbench with a custom script doing the INSERT intake does, with a body of the same size.
async fn run_pgbench(url: &str, args: &Args) -> Result<Figures, BoxError> {
    let script = std::env::temp_dir().join(format!("idsync-intake-{}.sql", std::process::id()));
    let body = "x".repeat(260);
    std::fs::write(
        &script,
        format!(
            "\\set pk random(1, 1000000000)\n\
             INSERT INTO webhook_inbox (id, event_id, action, user_pk, format, body) \
             VALUES (gen_random_uuid(), gen_random_uuid()::text, 'model_created', :pk, 'mapping', '{body}');\n"
        ),
    )?;
    let out = tokio::process::Command::new(pgbench()?)
        .args([
            "-n",
            "-M",
            "prepared",
            "-c",
            &args.concurrency.to_string(),
            "-j",
            "2",
            "-T",
        ])
        .arg(args.seconds.to_string())
        .arg("-f")
        .arg(&script)
        .arg(url)
        .output()
        .await?;
    let _ = std::fs::remove_file(&script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "pgbench failed: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let tps = stdout
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.trim_start_matches("tps = ").split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| format!("no tps in pgbench output: {stdout}"))?;
    Ok(Figures {
        rate: tps,
        p50: Duration::ZERO,
        p99: Duration::ZERO,
        ok: 0,
        failed: 0,
    })
}
