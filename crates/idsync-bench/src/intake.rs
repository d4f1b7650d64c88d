//! Durable intake: webhooks accepted per second and latency with N concurrent senders,
//! beside pgbench running the same single-row INSERT into the same table at the same
//! concurrency. idsync answers 202 only after its INSERT committed, so pgbench's rate is
//! the ceiling; the target is ≥ 0.8 × of it with p99 < 25 ms.

use std::time::Duration;

use crate::support::{BoxError, ScratchDb, Server, closed_loop, ms, pgbench};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Concurrent senders (and pgbench clients).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds each side runs (after a short warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

const SECRET: &str = "bench-secret";

pub(crate) async fn run(server_url: &str, args: Args) -> Result<(), BoxError> {
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

/// Closed-loop load: each sender posts a new webhook, waits for the 202, posts again.
async fn load(server: &Server, args: &Args) -> Result<Figures, BoxError> {
    let addr = server.addr;
    let request = move |sender: usize, n: u64| {
        let body = format!(
            "{{\"event_id\":\"{}\",\"action\":\"model_created\",\"model_app\":\"authentik_core\",\
             \"model_name\":\"user\",\"model_pk\":{},\"created\":\"2026-11-22T10:00:00Z\",\
             \"actor\":{{\"pk\":1,\"username\":\"akadmin\"}}}}",
            uuid::Uuid::new_v4(),
            (sender as u64) * 1_000_000 + n
        );
        format!(
            "POST /authentik/webhook HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {SECRET}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    // Warm-up: connections, the server's pool, Postgres's caches.
    closed_loop(addr, args.concurrency, Duration::from_secs(1), 202, request).await;
    let load = closed_loop(
        addr,
        args.concurrency,
        Duration::from_secs(args.seconds),
        202,
        request,
    )
    .await;
    Ok(Figures {
        rate: load.rate,
        p50: load.p50,
        p99: load.p99,
        ok: load.ok,
        failed: load.failed,
    })
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
