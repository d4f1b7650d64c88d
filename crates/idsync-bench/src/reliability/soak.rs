//! Soak: mixed load for a while on one replica (webhooks, SSE readers, API requests with
//! tokens). No error answer may occur, RSS after warm-up must grow less than 10 %, and
//! the p99 of each kind is reported.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use idsync_testkit::authentik::{AuthentikStub, fixtures};
use idsync_testkit::oidc::{TestIssuer, TokenSpec};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use super::cluster::{PgCluster, Replica, client, settings};
use super::{Row, SECRET, TOKEN};
use crate::support::rss_kb;
use crate::support::{BoxError, ms, quantile};

pub(super) struct Params {
    pub duration: Duration,
    pub webhook_rate: u64,
    pub api_rate: u64,
    pub readers: usize,
}

/// What each error answer was, by kind ("webhook 503", "/api/me timeout", "SSE closed
/// by the server mid-stream"...), so a failed soak says what to look at.
#[derive(Default)]
struct Errors(std::sync::Mutex<std::collections::BTreeMap<String, u64>>);

impl Errors {
    fn add(&self, what: String) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(what).or_default() += 1;
        }
    }

    fn total(&self) -> u64 {
        self.0.lock().map(|m| m.values().sum()).unwrap_or(0)
    }

    fn summary(&self) -> String {
        let m = self.0.lock().map(|m| m.clone()).unwrap_or_default();
        if m.is_empty() {
            return "none".to_owned();
        }
        m.iter()
            .map(|(what, n)| format!("{n} × {what}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// How a request ended, for the error table: its status, or what kind of failure.
fn outcome(result: &Result<u16, reqwest::Error>) -> String {
    match result {
        Ok(status) => status.to_string(),
        Err(e) if e.is_timeout() => "timeout".to_owned(),
        Err(e) if e.is_connect() => "connect error".to_owned(),
        Err(e) => {
            // The innermost cause says what happened (a closed connection, a reset...).
            let mut cause: &dyn std::error::Error = e;
            while let Some(inner) = cause.source() {
                cause = inner;
            }
            format!("error ({cause})")
        }
    }
}

#[derive(Default)]
struct Kind {
    ok: AtomicU64,
    /// Not sent: the client's own in-flight bound was full (the server fell behind).
    skipped: AtomicU64,
    latencies: std::sync::Mutex<Vec<Duration>>,
}

impl Kind {
    fn record(&self, ok: bool, took: Duration) {
        if ok {
            self.ok.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut l) = self.latencies.lock() {
                l.push(took);
            }
        }
    }

    fn p99(&self) -> Duration {
        let mut l = self.latencies.lock().map(|l| l.clone()).unwrap_or_default();
        l.sort_unstable();
        quantile(&l, 0.99)
    }
}

pub(super) async fn run(params: Params) -> Result<Row, BoxError> {
    let cluster = PgCluster::create().await?;
    let database_url = cluster.url("idsync");
    let stub = AuthentikStub::start(TOKEN).await;
    let users = 2_000i64;
    stub.upsert_many((1..=users).map(|pk| fixtures::user(pk).json()));
    let issuer = TestIssuer::start().await;
    let env = settings(&[
        ("DATABASE_URL", database_url.as_str()),
        ("IDSYNC_WEBHOOK_SECRET", SECRET),
        ("IDSYNC_AUTHENTIK_URL", stub.url().as_str()),
        ("IDSYNC_AUTHENTIK_TOKEN", TOKEN),
        ("IDSYNC_OIDC_ISSUER", issuer.issuer().as_str()),
        ("IDSYNC_OIDC_AUDIENCE", issuer.client_id().as_str()),
        ("IDSYNC_RECONCILE_INTERVAL", "0"),
        ("IDSYNC_RECONCILE_START_DELAY", "1h"),
    ]);
    let http = client(Duration::from_secs(30), Some(512))?;
    let replica = Replica::start_ready(&env, &http).await?;
    let pid = replica.pid().ok_or("no pid")?;
    let admin = issuer.token(
        &TokenSpec::new()
            .sub("1")
            .groups(["authentik Admins"])
            .exp_in(7200),
    );
    let user_tokens: Arc<Vec<String>> = Arc::new(
        (1..=50)
            .map(|pk| issuer.token(&TokenSpec::new().sub(pk.to_string()).exp_in(7200)))
            .collect(),
    );

    let webhooks = Arc::new(Kind::default());
    let api = Arc::new(Kind::default());
    let sse_events = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Errors::default());
    let deadline = Instant::now() + params.duration;

    // SSE readers: lean, count what arrives.
    let mut readers = Vec::new();
    for _ in 0..params.readers {
        let addr = replica.addr;
        let admin = admin.clone();
        let events = sse_events.clone();
        let errors = errors.clone();
        readers.push(tokio::spawn(async move {
            let Ok(mut tcp) = tokio::net::TcpStream::connect(addr).await else {
                errors.add("SSE connect error".to_owned());
                return;
            };
            let request = format!(
                "GET /api/events/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {admin}\r\n\r\n"
            );
            if tcp.write_all(request.as_bytes()).await.is_err() {
                errors.add("SSE request not sent".to_owned());
                return;
            }
            let mut buf = vec![0u8; 32 * 1024];
            let mut first = true;
            let mut seen = 0u64;
            loop {
                let remaining = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(remaining, tcp.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => {
                        if first {
                            first = false;
                            if !buf[..n].starts_with(b"HTTP/1.1 200") {
                                let head = String::from_utf8_lossy(&buf[..n.min(12)]).into_owned();
                                errors.add(format!("SSE answered {head:?}"));
                                return;
                            }
                        }
                        let ids = buf[..n].windows(4).filter(|w| w == b"id: ").count();
                        seen += ids as u64;
                        events.fetch_add(ids as u64, Ordering::Relaxed);
                    }
                    Ok(Ok(_)) => {
                        // The bucket, not the exact count: one row per cause.
                        let when = if seen == 0 { "before any event" } else { "mid-stream" };
                        errors.add(format!("SSE closed by the server {when}"));
                        return;
                    }
                    Ok(Err(e)) => {
                        errors.add(format!("SSE read error ({:?})", e.kind()));
                        return;
                    }
                    Err(_) => return,
                }
            }
        }));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    // RSS every 5 s.
    let rss = {
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while Instant::now() < deadline {
                samples.push(rss_kb(pid));
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            samples.push(rss_kb(pid));
            samples
        })
    };

    // Webhooks and API requests, open loop, each kind bounded in flight.
    let webhook_gate = Arc::new(Semaphore::new(512));
    let api_gate = Arc::new(Semaphore::new(512));
    let started = Instant::now();
    let total_rate = params.webhook_rate + params.api_rate;
    let tick = Duration::from_secs_f64(1.0 / total_rate as f64);
    let mut n = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    while Instant::now() < deadline {
        tokio::time::sleep_until((started + tick * n as u32).into()).await;
        n += 1;
        let is_webhook = n % total_rate < params.webhook_rate;
        let http = http.clone();
        if is_webhook {
            let Ok(permit) = webhook_gate.clone().try_acquire_owned() else {
                webhooks.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let url = replica.url("/authentik/webhook");
            let kind = webhooks.clone();
            let errors = errors.clone();
            let pk = (n as i64 % users) + 1;
            tasks.spawn(async move {
                let _permit = permit;
                let body = json!({
                    "event_id": uuid::Uuid::new_v4().to_string(), "action": "model_updated",
                    "model_app": "authentik_core", "model_name": "user", "model_pk": pk,
                })
                .to_string();
                let t = Instant::now();
                let status = http
                    .post(url)
                    .bearer_auth(SECRET)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16());
                let ok = matches!(status, Ok(200 | 202));
                if !ok {
                    errors.add(format!("webhook {}", outcome(&status)));
                }
                kind.record(ok, t.elapsed());
            });
        } else {
            let Ok(permit) = api_gate.clone().try_acquire_owned() else {
                api.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let pk = (n % 50) + 1;
            let (path, token) = match n % 3 {
                0 => ("/api/me".to_owned(), user_tokens[(pk - 1) as usize].clone()),
                1 => (format!("/api/users/{pk}"), admin.clone()),
                _ => ("/api/users?limit=20".to_owned(), admin.clone()),
            };
            let url = replica.url(&path);
            let kind = api.clone();
            let errors = errors.clone();
            let route = match n % 3 {
                0 => "/api/me",
                1 => "/api/users/{pk}",
                _ => "/api/users",
            };
            tasks.spawn(async move {
                let _permit = permit;
                let t = Instant::now();
                let status = http
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .map(|r| r.status().as_u16());
                // 404: /api/me or a user not synced yet at the very start.
                let ok = matches!(status, Ok(200 | 404));
                if !ok {
                    errors.add(format!("{route} {}", outcome(&status)));
                }
                kind.record(ok, t.elapsed());
            });
        }
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    for r in readers {
        let _ = r.await;
    }
    let rss = rss.await.unwrap_or_default();
    // The sync workers (4 per process by default, one Authentik fetch per item) work
    // through the inbox more slowly than intake stores into it at this rate: what is
    // still queued is stored, not lost, and is reported rather than waited for. Every
    // webhook answered 202 must be in the inbox.
    let pool = sqlx::PgPool::connect(&database_url).await?;
    let (stored, queued): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE status IN ('pending', 'processing')) FROM webhook_inbox",
    )
    .fetch_one(&pool)
    .await?;
    pool.close().await;
    let accepted = webhooks.ok.load(Ordering::Relaxed) as i64;
    let lost = (accepted - stored).max(0) as u64;
    replica.stop().await;
    drop(cluster);

    // Warm-up: the first fifth of the run.
    let warm = rss.len() / 5;
    let after_warmup = rss.get(warm.max(1)).copied().unwrap_or(0);
    let last = rss.last().copied().unwrap_or(0);
    let growth = if after_warmup > 0 {
        (last as f64 - after_warmup as f64) / after_warmup as f64 * 100.0
    } else {
        0.0
    };
    let error_count = errors.total();
    let passed = error_count == 0 && growth < 10.0 && lost == 0;
    // The RSS curve at each fifth of the run: growth that levels off reads differently
    // from growth that does not.
    let curve = (0..=5)
        .filter_map(|i| rss.get((rss.len().saturating_sub(1) * i) / 5))
        .map(|kb| format!("{}", kb / 1024))
        .collect::<Vec<_>>()
        .join(" → ");
    let secs = elapsed.as_secs_f64();
    Ok(Row {
        scenario: "soak".into(),
        load: format!(
            "{:.0} s: webhooks {:.0}/s (offered {}), API {:.0}/s (offered {}), {} SSE readers",
            secs,
            webhooks.ok.load(Ordering::Relaxed) as f64 / secs,
            params.webhook_rate,
            api.ok.load(Ordering::Relaxed) as f64 / secs,
            params.api_rate,
            params.readers
        ),
        faults: "none (load only)".into(),
        lost,
        duplicated: 0,
        other: format!(
            "{error_count} error answers ({}); p99 webhook {}, API {}; {} SSE events delivered; not sent (client bound full): {} webhooks, {} API; RSS {} KiB after warm-up → {} KiB at the end ({growth:+.1} %; MiB at each fifth: {curve}); inbox: {stored} stored, {} synced during the run ({:.0}/s), {queued} still queued at the end",
            errors.summary(),
            ms(webhooks.p99()),
            ms(api.p99()),
            sse_events.load(Ordering::Relaxed),
            webhooks.skipped.load(Ordering::Relaxed),
            api.skipped.load(Ordering::Relaxed),
            after_warmup,
            last,
            stored - queued,
            (stored - queued) as f64 / secs
        ),
        passed,
    })
}
