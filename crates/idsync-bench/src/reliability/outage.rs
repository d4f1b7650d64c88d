//! Database outage: Postgres stopped for a while under a steady webhook rate. Intake must
//! answer 503 quickly (never hang, never 500), `/readyz` must say why, and everything
//! must recover by itself, with no accepted webhook lost.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idsync_testkit::authentik::{AuthentikStub, fixtures};
use serde_json::json;

use super::chaos::settle;
use super::cluster::{PgCluster, Replica, client, settings};
use super::{Row, SECRET, TOKEN};
use crate::support::{BoxError, ms, quantile};

pub(super) struct Params {
    pub rate: u64,
    pub before: Duration,
    pub outage: Duration,
    pub after: Duration,
}

#[derive(Default)]
struct Tally {
    accepted: Mutex<HashSet<String>>,
    answered_503: AtomicU64,
    /// 503s to requests sent while Postgres was up (before the outage or once back).
    answered_503_up: AtomicU64,
    answered_500: AtomicU64,
    other: AtomicU64,
    failed: AtomicU64,
    slowest_503_us: AtomicU64,
    latencies_during: Mutex<Vec<Duration>>,
    first_202_after_back: Mutex<Option<Instant>>,
}

pub(super) async fn run(params: Params) -> Result<Row, BoxError> {
    let cluster = PgCluster::create().await?;
    let database_url = cluster.url("idsync");
    let stub = AuthentikStub::start(TOKEN).await;
    let users = 2_000i64;
    stub.upsert_many((1..=users).map(|pk| fixtures::user(pk).json()));
    let env = settings(&[
        ("DATABASE_URL", database_url.as_str()),
        ("IDSYNC_WEBHOOK_SECRET", SECRET),
        ("IDSYNC_AUTHENTIK_URL", stub.url().as_str()),
        ("IDSYNC_AUTHENTIK_TOKEN", TOKEN),
        ("IDSYNC_SYNC_RETRY_MIN", "200ms"),
        ("IDSYNC_SYNC_RETRY_MAX", "2s"),
        ("IDSYNC_RECONCILE_INTERVAL", "0"),
        ("IDSYNC_RECONCILE_START_DELAY", "1h"),
    ]);
    let http = client(Duration::from_secs(30), Some(256))?;
    let replica = Replica::start_ready(&env, &http).await?;
    let url = replica.url("/authentik/webhook");

    let tally = Arc::new(Tally::default());
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let back_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let total = params.before + params.outage + params.after;
    let count = (total.as_secs_f64() * params.rate as f64) as u64;
    let started = Instant::now();
    let tick = Duration::from_secs_f64(1.0 / params.rate as f64);

    // /readyz, once a second: what it says during the outage.
    let readyz_reasons: Arc<Mutex<Vec<String>>> = Arc::default();
    let readyz_503 = Arc::new(AtomicU64::new(0));
    let probe = {
        let http = http.clone();
        let readyz = replica.url("/readyz");
        let down = down.clone();
        let reasons = readyz_reasons.clone();
        let count503 = readyz_503.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if !down.load(Ordering::SeqCst) {
                    continue;
                }
                if let Ok(r) = http.get(&readyz).send().await
                    && r.status() == 503
                {
                    count503.fetch_add(1, Ordering::Relaxed);
                    if let Ok(body) = r.text().await {
                        reasons
                            .lock()
                            .expect("a lock held by a task that panicked")
                            .push(body);
                    }
                }
            }
        })
    };

    let ctl = cluster.ctl();
    let faults = {
        let down = down.clone();
        let back_at = back_at.clone();
        let (before, outage) = (params.before, params.outage);
        tokio::spawn(async move {
            tokio::time::sleep(before).await;
            down.store(true, Ordering::SeqCst);
            let stopped = ctl.stop_fast().await;
            tokio::time::sleep(outage).await;
            let started = ctl.start().await;
            *back_at.lock().expect("a lock held by a task that panicked") = Some(Instant::now());
            down.store(false, Ordering::SeqCst);
            stopped.and(started)
        })
    };

    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..count {
        tokio::time::sleep_until((started + tick * n as u32).into()).await;
        let http = http.clone();
        let url = url.clone();
        let tally = tally.clone();
        let down = down.clone();
        let back_at = back_at.clone();
        tasks.spawn(async move {
            let event_id = uuid::Uuid::new_v4().to_string();
            let pk = (n as i64 % users) + 1;
            let body = json!({
                "event_id": event_id, "action": "model_updated", "model_app": "authentik_core",
                "model_name": "user", "model_pk": pk,
            })
            .to_string();
            let during = down.load(Ordering::SeqCst);
            let t = Instant::now();
            let answer = http
                .post(&url)
                .bearer_auth(SECRET)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            let took = t.elapsed();
            if during {
                tally
                    .latencies_during
                    .lock()
                    .expect("a lock held by a task that panicked")
                    .push(took);
            }
            match answer.map(|r| r.status().as_u16()) {
                Ok(202 | 200) => {
                    tally
                        .accepted
                        .lock()
                        .expect("a lock held by a task that panicked")
                        .insert(event_id);
                    if back_at
                        .lock()
                        .expect("a lock held by a task that panicked")
                        .is_some()
                    {
                        let mut first = tally
                            .first_202_after_back
                            .lock()
                            .expect("a lock held by a task that panicked");
                        if first.is_none() {
                            *first = Some(Instant::now());
                        }
                    }
                }
                Ok(503) => {
                    tally.answered_503.fetch_add(1, Ordering::Relaxed);
                    if !during {
                        tally.answered_503_up.fetch_add(1, Ordering::Relaxed);
                    }
                    tally
                        .slowest_503_us
                        .fetch_max(took.as_micros() as u64, Ordering::Relaxed);
                }
                Ok(500) => {
                    tally.answered_500.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {
                    tally.other.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        // Reap finished tasks as we go, so the set stays small.
        while let Some(done) = tasks.try_join_next() {
            let _ = done;
        }
    }
    while tasks.join_next().await.is_some() {}
    let load_time = started.elapsed();
    let fault_result = faults.await?;
    probe.abort();

    let pool = sqlx::PgPool::connect(&database_url).await?;
    let back = back_at
        .lock()
        .expect("a lock held by a task that panicked")
        .unwrap_or_else(Instant::now);
    let settled = settle(&pool, Duration::from_secs(120)).await?;
    let drained_after = back.elapsed();
    let stored: HashSet<String> = sqlx::query_scalar::<_, String>(
        "SELECT event_id FROM webhook_inbox WHERE event_id IS NOT NULL",
    )
    .fetch_all(&pool)
    .await?
    .into_iter()
    .collect();
    let failed_items: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_inbox WHERE status = 'failed'")
            .fetch_one(&pool)
            .await?;
    pool.close().await;
    replica.stop().await;
    drop(cluster);

    let accepted = tally
        .accepted
        .lock()
        .expect("a lock held by a task that panicked")
        .clone();
    let lost = accepted.iter().filter(|e| !stored.contains(*e)).count() as u64;
    let mut during = tally
        .latencies_during
        .lock()
        .expect("a lock held by a task that panicked")
        .clone();
    during.sort_unstable();
    let slowest_503 = Duration::from_micros(tally.slowest_503_us.load(Ordering::Relaxed));
    let answered_500 = tally.answered_500.load(Ordering::Relaxed);
    let hung = tally.failed.load(Ordering::Relaxed);
    let reasons = readyz_reasons
        .lock()
        .expect("a lock held by a task that panicked")
        .clone();
    let readyz_says_database = reasons.iter().any(|r| r.contains("database"));
    let recovered_in = tally
        .first_202_after_back
        .lock()
        .expect("a lock held by a task that panicked")
        .map(|t| t.saturating_duration_since(back));
    let passed = fault_result.is_ok()
        && lost == 0
        && answered_500 == 0
        && hung == 0
        && slowest_503 <= Duration::from_secs(5)
        && readyz_says_database
        && settled
        && failed_items == 0;
    Ok(Row {
        scenario: "database outage".into(),
        load: format!(
            "{} webhooks/s for {:.0} s ({} sent)",
            params.rate,
            load_time.as_secs_f64(),
            count
        ),
        faults: format!(
            "Postgres stopped (fast) for {:.0} s{}",
            params.outage.as_secs_f64(),
            match &fault_result {
                Ok(()) => String::new(),
                Err(e) => format!(" (fault injection failed: {e})"),
            }
        ),
        lost,
        duplicated: 0,
        other: format!(
            "{} accepted, {} × 503 ({} of them sent while Postgres was up; slowest {}; answers during the outage p50 {} p99 {}), {} × 500, {} no answer; /readyz 503 with a database reason: {} ({} probes); first 202 {} after Postgres was back; inbox drained {:.1} s after; {} failed items",
            accepted.len(),
            tally.answered_503.load(Ordering::Relaxed),
            tally.answered_503_up.load(Ordering::Relaxed),
            ms(slowest_503),
            ms(quantile(&during, 0.5)),
            ms(quantile(&during, 0.99)),
            answered_500,
            hung,
            readyz_says_database,
            readyz_503.load(Ordering::Relaxed),
            recovered_in.map_or("never".to_owned(), ms),
            drained_after.as_secs_f64(),
            failed_items
        ),
        passed,
    })
}
