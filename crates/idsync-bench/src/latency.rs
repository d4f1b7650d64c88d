//! Webhook → SSE latency: webhooks POSTed at a fixed rate (each for a new user the
//! Authentik stub knows), and the time from sending each POST until its
//! `UserRegistered` arrives on an admin's open SSE stream. Everything between is the
//! real path: intake, inbox, sync worker, Authentik fetch, event store, NOTIFY, hub.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use idsync_testkit::authentik::{AuthentikStub, fixtures};
use idsync_testkit::oidc::{TestIssuer, TokenSpec};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::support::{BoxError, ScratchDb, Server, ms, quantile};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Webhooks per second.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

const SECRET: &str = "bench";
const TOKEN: &str = "stub-token";

pub(crate) async fn run(server_url: &str, args: Args) -> Result<(), BoxError> {
    let db = ScratchDb::create(server_url, "idsync_bench_latency").await?;
    let result = measure(&db, &args).await;
    db.drop_db().await?;
    result
}

async fn measure(db: &ScratchDb, args: &Args) -> Result<(), BoxError> {
    let total = args.rate * args.seconds;
    let stub = AuthentikStub::start(TOKEN).await;
    for pk in 1..=total as i64 {
        stub.upsert(fixtures::user(pk).json());
    }
    let issuer = TestIssuer::start().await;
    let (iss, aud, stub_url) = (issuer.issuer(), issuer.client_id(), stub.url());
    let server = Server::start(
        &db.url,
        &[
            ("IDSYNC_WEBHOOK_SECRET", SECRET),
            ("IDSYNC_AUTHENTIK_URL", stub_url.as_str()),
            ("IDSYNC_AUTHENTIK_TOKEN", TOKEN),
            ("IDSYNC_OIDC_ISSUER", iss.as_str()),
            ("IDSYNC_OIDC_AUDIENCE", aud.as_str()),
        ],
    )
    .await?;
    let token = issuer.token(
        &TokenSpec::new()
            .sub("1")
            .groups(["authentik Admins"])
            .exp_in(3600),
    );

    // The subscriber: records when each user's event arrived.
    let arrived: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let mut tcp = TcpStream::connect(server.addr).await?;
    tcp.write_all(
        format!(
            "GET /api/events/stream HTTP/1.0\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\r\n",
            server.addr
        )
        .as_bytes(),
    )
    .await?;
    let reader = {
        let arrived = arrived.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(tcp).lines();
            let mut seen = 0u64;
            while seen < total {
                let Ok(Some(line)) = lines.next_line().await else {
                    break;
                };
                if let Some(data) = line.strip_prefix("data: ") {
                    let at = Instant::now();
                    if let Some(pk) = user_pk(data) {
                        arrived.lock().await.insert(pk, at);
                        seen += 1;
                    }
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let client = reqwest::Client::new();
    let url = server.url("/authentik/webhook");
    let mut sent: HashMap<i64, Instant> = HashMap::new();
    let started = Instant::now();
    let tick = Duration::from_secs_f64(1.0 / args.rate as f64);
    let mut posts = Vec::new();
    for n in 0..total {
        tokio::time::sleep_until((started + tick * n as u32).into()).await;
        let pk = n as i64 + 1;
        sent.insert(pk, Instant::now());
        let req = client
            .post(&url)
            .bearer_auth(SECRET)
            .header("content-type", "application/json")
            .body(format!("{{\"event_type\":\"model_created\",\"pk\":{pk}}}"));
        posts.push(tokio::spawn(async move {
            req.send().await.map(|r| r.status().as_u16())
        }));
    }
    let mut accepted = 0;
    for p in posts {
        if let Ok(Ok(202)) = p.await {
            accepted += 1;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), reader).await;
    server.stop().await;

    let arrived = arrived.lock().await;
    let mut latencies: Vec<Duration> = sent
        .iter()
        .filter_map(|(pk, t)| arrived.get(pk).map(|a| a.saturating_duration_since(*t)))
        .collect();
    latencies.sort_unstable();
    println!();
    println!(
        "webhook -> SSE event, {} webhooks at {}/s, Authentik stub answering at once",
        total, args.rate
    );
    println!(
        "accepted {accepted}/{total}; delivered on the stream {}/{total}",
        latencies.len()
    );
    println!(
        "latency p50 {}  p99 {}  max {}  (targets p50 < 10 ms, p99 < 50 ms)",
        ms(quantile(&latencies, 0.5)),
        ms(quantile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default())
    );
    Ok(())
}

fn user_pk(data: &str) -> Option<i64> {
    let start = data.find("\"user_pk\":")? + "\"user_pk\":".len();
    let rest = &data[start..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}
