//! Chaos with three replicas: webhooks for many users, duplicated and reordered, spread
//! over three `idsync serve` processes on a throwaway cluster, while replicas are
//! SIGKILLed and restarted, Postgres restarts (fast shutdown) once, and the Authentik
//! stub fails 30 % of its answers and delays 5 %. At the end the read model must equal
//! the stub's truth, every accepted webhook must be in the inbox and finished, no user
//! registered twice, every SSE reader must have seen every position once and in order,
//! and no answer may have been a 500.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idsync_testkit::authentik::{AuthentikStub, fixtures};
use idsync_testkit::oidc::{TestIssuer, TokenSpec};
use serde_json::json;
use tokio::sync::RwLock;

use super::cluster::{PgCluster, Replica, Rng, client, settings, wait_ready};
use super::sse::{Reader, ReaderTally};
use super::{Row, SECRET, TOKEN};
use crate::support::BoxError;

pub(super) struct Params {
    pub users: i64,
    pub webhooks: usize,
    pub kills: usize,
    pub kill_every: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Create,
    Update,
    Delete,
}

#[derive(Debug)]
struct Delivery {
    event_id: String,
    body: String,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    accepted: AtomicU64,
    duplicate_answers: AtomicU64,
    unavailable: AtomicU64,
    server_errors: AtomicU64,
    connection_errors: AtomicU64,
    other: AtomicU64,
}

pub(super) async fn run(params: Params) -> Result<Row, BoxError> {
    let cluster = PgCluster::create().await?;
    let database_url = cluster.url("idsync");
    let stub = AuthentikStub::start(TOKEN).await;
    let issuer = TestIssuer::start().await;
    let admin = issuer.token(
        &TokenSpec::new()
            .sub("1")
            .groups(["authentik Admins"])
            .exp_in(7200),
    );
    let env = settings(&[
        ("DATABASE_URL", database_url.as_str()),
        ("IDSYNC_WEBHOOK_SECRET", SECRET),
        ("IDSYNC_AUTHENTIK_URL", stub.url().as_str()),
        ("IDSYNC_AUTHENTIK_TOKEN", TOKEN),
        ("IDSYNC_AUTHENTIK_TIMEOUT", "5s"),
        ("IDSYNC_OIDC_ISSUER", issuer.issuer().as_str()),
        ("IDSYNC_OIDC_AUDIENCE", issuer.client_id().as_str()),
        ("IDSYNC_SYNC_LEASE", "15s"),
        ("IDSYNC_SYNC_RETRY_MIN", "200ms"),
        ("IDSYNC_SYNC_RETRY_MAX", "2s"),
        // Reconcile would repair what a lost webhook left behind: off, so a loss shows.
        ("IDSYNC_RECONCILE_INTERVAL", "0"),
        ("IDSYNC_RECONCILE_START_DELAY", "1h"),
        ("IDSYNC_DB_MAX_CONNECTIONS", "12"),
    ]);
    let http = client(Duration::from_secs(20), Some(32))?;

    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Replica::start(&env).await?);
    }
    for replica in &replicas {
        wait_ready(&http, replica, Duration::from_secs(60)).await?;
    }
    // Faults from now on.
    stub.set_fail_ratio(0.30);
    stub.set_slow_ratio(0.05, Duration::from_secs(3));

    let addrs: Arc<RwLock<Vec<Option<std::net::SocketAddr>>>> =
        Arc::new(RwLock::new(replicas.iter().map(|r| Some(r.addr)).collect()));

    // One SSE reader per replica slot, reconnecting with Last-Event-ID.
    let mut readers = Vec::new();
    for slot in 0..3 {
        readers.push(Reader::spawn(addrs.clone(), slot, admin.clone()));
    }

    // The script: per user a create, some updates, maybe a delete; interleaved at random
    // with each user's own order kept.
    let mut rng = Rng::new(0x1d5_c0de);
    let users = params.users;
    let mut per_user: Vec<Vec<Op>> = (0..users).map(|_| vec![Op::Create]).collect();
    let deletes = (users as usize * 3 / 10).min(params.webhooks / 10);
    for ops in per_user.iter_mut().take(deletes) {
        ops.push(Op::Delete);
    }
    let mut remaining = params.webhooks.saturating_sub(users as usize + deletes);
    while remaining > 0 {
        let u = rng.below(users as u64) as usize;
        let ops = &mut per_user[u];
        let at = if ops.last() == Some(&Op::Delete) {
            ops.len() - 1
        } else {
            ops.len()
        };
        ops.insert(at, Op::Update);
        remaining -= 1;
    }
    let mut order: Vec<usize> = per_user
        .iter()
        .enumerate()
        .flat_map(|(u, ops)| std::iter::repeat_n(u, ops.len()))
        .collect();
    for i in (1..order.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    let mut next_op = vec![0usize; users as usize];
    let mut versions = vec![0u32; users as usize];

    let counters = Arc::new(Counters::default());
    let accepted_ids: Arc<Mutex<HashSet<String>>> = Arc::default();
    let (tx, rx) = tokio::sync::mpsc::channel::<Delivery>(256);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut senders = Vec::new();
    for worker in 0..12 {
        senders.push(tokio::spawn(send_loop(
            worker,
            rx.clone(),
            addrs.clone(),
            http.clone(),
            counters.clone(),
            accepted_ids.clone(),
        )));
    }

    // Faults: a replica killed and restarted every `kill_every` (once the projector's
    // leader), Postgres restarted once in between.
    let started = Instant::now();
    let faults = Arc::new(Mutex::new(Vec::<String>::new()));
    let replicas = Arc::new(tokio::sync::Mutex::new(replicas));
    let chaos = {
        let replicas = replicas.clone();
        let addrs = addrs.clone();
        let env = env.clone();
        let faults = faults.clone();
        let kills = params.kills;
        let every = params.kill_every;
        let cluster_stop = cluster.ctl();
        let http = http.clone();
        tokio::spawn(async move {
            let mut rng = Rng::new(7);
            for round in 0..kills {
                tokio::time::sleep(every).await;
                let mut replicas = replicas.lock().await;
                let slot = if round == 1 {
                    replicas
                        .iter()
                        .position(|r| r.leader.load(Ordering::SeqCst))
                        .unwrap_or(0)
                } else {
                    rng.below(3) as usize
                };
                let was_leader = replicas[slot].leader.load(Ordering::SeqCst);
                let t = started.elapsed().as_secs_f64();
                // SIGKILL under load, with leases, open streams and requests in flight.
                // The senders keep trying its address (connection refused, then the
                // next replica) until its replacement is ready, as behind a load
                // balancer whose health check has not noticed yet.
                let _ = replicas[slot].child.start_kill();
                let _ = replicas[slot].child.wait().await;
                match Replica::start(&env).await {
                    Ok(new) => replicas[slot] = new,
                    Err(err) => {
                        faults
                            .lock()
                            .expect("a lock held by a task that panicked")
                            .push(format!("restart failed: {err}"));
                        continue;
                    }
                }
                let _ = wait_ready(&http, &replicas[slot], Duration::from_secs(60)).await;
                addrs.write().await[slot] = Some(replicas[slot].addr);
                faults
                    .lock()
                    .expect("a lock held by a task that panicked")
                    .push(format!(
                        "t={t:.0}s SIGKILL replica {slot}{}",
                        if was_leader {
                            " (projector leader)"
                        } else {
                            ""
                        }
                    ));
                if round == 1 {
                    tokio::time::sleep(every / 2).await;
                    let t = started.elapsed().as_secs_f64();
                    match cluster_stop.restart_fast().await {
                        Ok(()) => faults
                            .lock()
                            .expect("a lock held by a task that panicked")
                            .push(format!("t={t:.0}s Postgres restart (fast)")),
                        Err(err) => faults
                            .lock()
                            .expect("a lock held by a task that panicked")
                            .push(format!("Postgres restart failed: {err}")),
                    }
                }
            }
        })
    };

    // Produce: each change goes to the stub first, then its webhook into a reorder
    // window; 20 % are sent twice. Paced to spread over the faults.
    let total_ops = order.len();
    let pace = (params.kill_every * (params.kills as u32 + 1)).as_secs_f64() / total_ops as f64;
    let mut window: Vec<Delivery> = Vec::new();
    let mut duplicates_sent = 0u64;
    let produce_started = Instant::now();
    for (i, u) in order.iter().copied().enumerate() {
        let due = produce_started + Duration::from_secs_f64(pace * i as f64);
        tokio::time::sleep_until(due.into()).await;
        let pk = u as i64 + 1;
        let op = per_user[u][next_op[u]];
        next_op[u] += 1;
        let action = match op {
            Op::Create => {
                stub.upsert(user_version(pk, 0).json());
                "model_created"
            }
            Op::Update => {
                versions[u] += 1;
                stub.upsert(user_version(pk, versions[u]).json());
                "model_updated"
            }
            Op::Delete => {
                stub.remove(pk);
                "model_deleted"
            }
        };
        let event_id = uuid::Uuid::new_v4().to_string();
        let body = json!({
            "event_id": event_id, "action": action, "model_app": "authentik_core",
            "model_name": "user", "model_pk": pk, "created": chrono::Utc::now().to_rfc3339(),
        })
        .to_string();
        if rng.chance(0.2) {
            duplicates_sent += 1;
            window.push(Delivery {
                event_id: event_id.clone(),
                body: body.clone(),
            });
        }
        window.push(Delivery { event_id, body });
        while window.len() > 24 {
            let pick = rng.below(window.len() as u64) as usize;
            let delivery = window.swap_remove(pick);
            tx.send(delivery).await?;
        }
    }
    while !window.is_empty() {
        let pick = rng.below(window.len() as u64) as usize;
        tx.send(window.swap_remove(pick)).await?;
    }
    drop(tx);
    for sender in senders {
        let _ = sender.await;
    }
    let _ = chaos.await;
    let load_time = started.elapsed();
    // The stub heals: what is left is retried and finishes.
    stub.set_fail_ratio(0.0);
    stub.set_slow_ratio(0.0, Duration::ZERO);

    let pool = sqlx::PgPool::connect(&database_url).await?;
    let settled = settle(&pool, Duration::from_secs(180)).await?;
    let head: Vec<i64> = sqlx::query_scalar(
        "SELECT global_position FROM events WHERE aggregate_type = 'User' ORDER BY global_position",
    )
    .fetch_all(&pool)
    .await?;
    let last = head.last().copied().unwrap_or(0);
    let tallies: Vec<ReaderTally> = {
        let mut out = Vec::new();
        for reader in readers {
            out.push(reader.finish(last, Duration::from_secs(60)).await);
        }
        out
    };

    // Checks.
    let accepted = accepted_ids
        .lock()
        .expect("a lock held by a task that panicked")
        .clone();
    let inbox: HashMap<String, (String, Option<String>)> =
        sqlx::query_as::<_, (String, String, Option<String>)>(
            "SELECT event_id, status, last_error FROM webhook_inbox WHERE event_id IS NOT NULL",
        )
        .fetch_all(&pool)
        .await?
        .into_iter()
        .map(|(e, s, l)| (e, (s, l)))
        .collect();
    let lost_in_inbox = accepted.iter().filter(|e| !inbox.contains_key(*e)).count() as u64;
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    for (status, _) in inbox.values() {
        *statuses.entry(status.clone()).or_default() += 1;
    }
    let unfinished = statuses.get("pending").copied().unwrap_or(0)
        + statuses.get("processing").copied().unwrap_or(0);
    let failed = statuses.get("failed").copied().unwrap_or(0);
    let registered_twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT aggregate_id FROM events WHERE event_type = 'UserRegistered'
           GROUP BY aggregate_id HAVING count(*) > 1) twice",
    )
    .fetch_one(&pool)
    .await?;
    let mut model_wrong = 0u64;
    let mut first_wrong = None;
    for pk in 1..=users {
        let row = idsync_store::projections::users::get(&pool, pk).await?;
        let truth = stub.user(pk);
        let ok = match (&truth, &row) {
            (Some(json), Some(row)) if row.deleted_at.is_none() => {
                let user: idsync_authentik::model::AuthentikUser =
                    serde_json::from_value(json.clone())?;
                let mut want = user.to_snapshot();
                let mut have = row.to_snapshot();
                want.groups.sort();
                have.groups.sort();
                want == have
            }
            (None, None) => true,
            (None, Some(row)) => row.deleted_at.is_some(),
            _ => false,
        };
        if !ok {
            model_wrong += 1;
            first_wrong.get_or_insert(pk);
        }
    }
    pool.close().await;
    let (mut missed, mut repeated, mut disorder, mut reconnects) = (0u64, 0u64, 0u64, 0u64);
    for t in &tallies {
        missed += head.len() as u64 - t.distinct_seen(&head);
        repeated += t.repeated;
        disorder += t.out_of_order;
        reconnects += t.reconnects;
    }
    let sse_500 = tallies.iter().map(|t| t.server_errors).sum::<u64>();

    {
        let replicas = replicas.lock().await;
        for replica in replicas.iter() {
            for line in replica.errors() {
                eprintln!("  replica {} logged: {line}", replica.addr);
            }
        }
    }
    let replicas = Arc::try_unwrap(replicas)
        .map_err(|_| "replicas still shared")?
        .into_inner();
    for replica in replicas {
        replica.stop().await;
    }
    drop(cluster);

    let c = &counters;
    let server_errors = c.server_errors.load(Ordering::Relaxed) + sse_500;
    let lost = lost_in_inbox + model_wrong + missed;
    let duplicated = registered_twice as u64 + repeated;
    let faults = faults
        .lock()
        .expect("a lock held by a task that panicked")
        .clone();
    let kills = faults.iter().filter(|f| f.contains("SIGKILL")).count();
    let pg_restarts = faults
        .iter()
        .filter(|f| f.contains("Postgres restart ("))
        .count();
    let passed = lost == 0
        && duplicated == 0
        && server_errors == 0
        && unfinished == 0
        && disorder == 0
        && settled
        && kills >= params.kills.min(3)
        && faults.iter().any(|f| f.contains("leader"))
        && pg_restarts == 1;
    for fault in &faults {
        eprintln!("  chaos: {fault}");
    }
    if let Some(pk) = first_wrong {
        eprintln!(
            "  chaos: read model differs from the stub for {model_wrong} users (first: pk {pk})"
        );
    }
    Ok(Row {
        scenario: "chaos, 3 replicas".into(),
        load: format!(
            "{} webhooks ({} sent twice) for {} users over {:.0} s, reordered; 3 SSE readers",
            total_ops,
            duplicates_sent,
            users,
            load_time.as_secs_f64()
        ),
        faults: format!(
            "{kills} SIGKILL+restart ({} of them the projector leader), {pg_restarts} Postgres fast restart, stub 30 % 5xx + 5 % 3 s late",
            faults.iter().filter(|f| f.contains("leader")).count()
        ),
        lost,
        duplicated,
        other: format!(
            "{} deliveries: {} accepted, {} duplicate answers, {} × 503, {} connection errors (retried), {} × 500; inbox {:?}, {failed} failed; read model = stub for {}/{} users; SSE: {} positions each, {} missed, {} repeated, {} out of order, {} reconnects",
            c.sent.load(Ordering::Relaxed),
            c.accepted.load(Ordering::Relaxed),
            c.duplicate_answers.load(Ordering::Relaxed),
            c.unavailable.load(Ordering::Relaxed),
            c.connection_errors.load(Ordering::Relaxed),
            server_errors,
            statuses,
            users as u64 - model_wrong,
            users,
            head.len(),
            missed,
            repeated,
            disorder,
            reconnects
        ),
        passed,
    })
}

/// A user as the stub serves it after `version` updates: the name, the email and the
/// groups change, and odd versions are inactive.
fn user_version(pk: i64, version: u32) -> fixtures::UserFixture {
    let user = fixtures::user(pk);
    if version == 0 {
        return user;
    }
    let team = format!("team-{}", version % 3);
    user.name(format!("User {pk} v{version}"))
        .email(format!("user{pk}.v{version}@example.org"))
        .active(version.is_multiple_of(2))
        .groups(&[team.as_str()])
}

/// Posts each delivery until it is answered 202/200 (as Authentik retries), trying the
/// replicas in turn.
async fn send_loop(
    worker: usize,
    rx: Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Delivery>>>,
    addrs: Arc<RwLock<Vec<Option<std::net::SocketAddr>>>>,
    http: reqwest::Client,
    counters: Arc<Counters>,
    accepted: Arc<Mutex<HashSet<String>>>,
) {
    let mut turn = worker;
    loop {
        let Some(delivery) = rx.lock().await.recv().await else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            turn += 1;
            let addr = { addrs.read().await[turn % 3] };
            let Some(addr) = addr else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            counters.sent.fetch_add(1, Ordering::Relaxed);
            let answer = http
                .post(format!("http://{addr}/authentik/webhook"))
                .bearer_auth(SECRET)
                .header("content-type", "application/json")
                .body(delivery.body.clone())
                .send()
                .await;
            match answer.map(|r| r.status().as_u16()) {
                Ok(202) => {
                    counters.accepted.fetch_add(1, Ordering::Relaxed);
                    accepted
                        .lock()
                        .expect("a lock held by a task that panicked")
                        .insert(delivery.event_id.clone());
                    break;
                }
                Ok(200) => {
                    counters.duplicate_answers.fetch_add(1, Ordering::Relaxed);
                    accepted
                        .lock()
                        .expect("a lock held by a task that panicked")
                        .insert(delivery.event_id.clone());
                    break;
                }
                Ok(503) => {
                    counters.unavailable.fetch_add(1, Ordering::Relaxed);
                }
                Ok(status) if status >= 500 => {
                    counters.server_errors.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {
                    counters.other.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(_) => {
                    counters.connection_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Waits until no inbox item is pending or processing.
pub(super) async fn settle(pool: &sqlx::PgPool, within: Duration) -> Result<bool, BoxError> {
    let deadline = Instant::now() + within;
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM webhook_inbox WHERE status IN ('pending', 'processing')",
        )
        .fetch_one(pool)
        .await
        .unwrap_or(1);
        let lag: i64 = sqlx::query_scalar(
            "SELECT (SELECT COALESCE(max(global_position), 0) FROM events WHERE aggregate_type = 'User')
                  - COALESCE((SELECT position FROM projection_checkpoints WHERE name = 'users'), 0)",
        )
        .fetch_one(pool)
        .await
        .unwrap_or(0);
        if open == 0 && lag <= 0 {
            return Ok(true);
        }
        if Instant::now() > deadline {
            eprintln!("  not settled: {open} inbox items open, projection {lag} behind");
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
