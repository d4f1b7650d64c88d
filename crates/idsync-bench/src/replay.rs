//! Replay: `idsync replay` over N events, beside (a) cqrs-es's `QueryReplay` into a
//! `GenericQuery` over a `PostgresViewRepository` on the same events, and (b) the time
//! Postgres itself takes to read those rows (`COPY (SELECT ...) TO '/dev/null'`).
//!
//! The events are real-shaped: `users` users, each registered once then updated
//! (email, sometimes name and groups) until N events exist, interleaved in global order
//! the way a live system writes them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cqrs_es::persist::{GenericQuery, QueryReplay};
use cqrs_es::{EventEnvelope, View};
use idsync_domain::{User, UserEvent};
use postgres_es::{PostgresEventRepository, PostgresViewRepository};
use serde::{Deserialize, Serialize};

use crate::support::{BoxError, ScratchDb, idsync_binary, migrate};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Events in the log.
    #[arg(long, default_value_t = 1_000_000)]
    events: i64,
    /// Distinct users among them.
    #[arg(long, default_value_t = 100_000)]
    users: i64,
    /// Longest the cqrs-es baseline may run; its rate is measured over what it did.
    #[arg(long, default_value_t = 60)]
    baseline_seconds: u64,
    /// Skip the encrypted variant (`idsync encrypt-events`, then `idsync replay` again
    /// over the sealed events, against the plaintext replay of the same run).
    #[arg(long)]
    no_encrypted: bool,
}

pub(crate) async fn run(server_url: &str, args: Args) -> Result<(), BoxError> {
    let db = ScratchDb::create(server_url, "idsync_bench_replay").await?;
    let result = measure(&db, &args).await;
    db.drop_db().await?;
    result
}

async fn measure(db: &ScratchDb, args: &Args) -> Result<(), BoxError> {
    migrate(&db.url).await?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&db.url)
        .await?;
    eprintln!("loading {} events for {} users...", args.events, args.users);
    load_events(&pool, args.events, args.users).await?;

    // (b) Postgres reading the rows, server side, into a null sink.
    let t = Instant::now();
    sqlx::query(
        "COPY (SELECT global_position, event_type, aggregate_id, sequence, recorded_at, payload, metadata
                 FROM events ORDER BY global_position) TO '/dev/null'",
    )
    .execute(&pool)
    .await?;
    let copy = t.elapsed();

    // idsync replay, the real command.
    eprintln!("idsync replay...");
    let key = idsync_store::privacy::generate();
    let replay = run_replay(&db.url, &key).await?;
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&pool)
        .await?;

    // (a) cqrs-es: QueryReplay → GenericQuery → PostgresViewRepository.
    eprintln!(
        "cqrs-es QueryReplay (at most {} s)...",
        args.baseline_seconds
    );
    sqlx::query("CREATE TABLE bench_user_view (view_id text PRIMARY KEY, version bigint NOT NULL, payload json NOT NULL)")
        .execute(&pool)
        .await?;
    let (baseline_events, baseline_time) =
        cqrs_baseline(&pool, Duration::from_secs(args.baseline_seconds)).await;

    // The same events with their personal fields sealed (docs/privacy.md): encrypted by
    // the real command, then replayed again. cqrs-es's baseline above cannot read them.
    let encrypted = if args.no_encrypted {
        None
    } else {
        eprintln!("idsync encrypt-events...");
        let t = Instant::now();
        let out = tokio::process::Command::new(idsync_binary()?)
            .args(["encrypt-events", "--batch-size", "5000"])
            .env("DATABASE_URL", &db.url)
            .env("IDSYNC_DATA_KEY", &key)
            .env("IDSYNC_LOG_FORMAT", "json")
            .output()
            .await?;
        if !out.status.success() {
            return Err(format!(
                "idsync encrypt-events failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        let encrypt = t.elapsed();
        // encrypt-events rewrote every event with personal fields, leaving as many dead
        // row versions behind. Events sealed as they are written (everything since
        // encryption exists) leave none, and autovacuum clears them after the one-off
        // migration: compare against that state, not a table twice its size.
        sqlx::query("VACUUM (ANALYZE) events, user_data_keys")
            .execute(&pool)
            .await?;
        eprintln!("idsync replay (encrypted)...");
        let sealed_replay = run_replay(&db.url, &key).await?;
        let sealed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE payload::text LIKE '%\"sealed\"%'",
        )
        .fetch_one(&pool)
        .await?;
        Some((encrypt, sealed_replay, sealed))
    };
    pool.close().await;

    let rate = args.events as f64 / replay.as_secs_f64();
    let baseline_rate = baseline_events as f64 / baseline_time.as_secs_f64();
    let copy_rate = args.events as f64 / copy.as_secs_f64();
    println!();
    println!(
        "replay of {} events ({} users) into the users read model",
        args.events, args.users
    );
    println!("{:<62} {:>14} {:>10}", "", "events/s", "time");
    println!(
        "{:<62} {:>14.0} {:>9.1}s",
        "idsync replay (whole command, build beside + swap)",
        rate,
        replay.as_secs_f64()
    );
    println!(
        "{:<62} {:>14.0} {:>9.1}s",
        format!("baseline (a): cqrs-es QueryReplay/GenericQuery ({baseline_events} events)"),
        baseline_rate,
        baseline_time.as_secs_f64()
    );
    println!(
        "{:<62} {:>14.0} {:>9.1}s",
        "baseline (b): Postgres reads the rows (COPY ... TO /dev/null)",
        copy_rate,
        copy.as_secs_f64()
    );
    println!(
        "idsync / (a): {:.1}x (target >= 20x); {rate:.0} events/s (target >= 100,000); idsync / (b): {:.2}",
        rate / baseline_rate,
        rate / copy_rate
    );
    println!("users in the read model after replay: {users}");
    if let Some((encrypt, sealed_replay, sealed)) = encrypted {
        let sealed_rate = args.events as f64 / sealed_replay.as_secs_f64();
        println!(
            "{:<62} {:>14.0} {:>9.1}s",
            format!("idsync encrypt-events ({sealed} events sealed)"),
            args.events as f64 / encrypt.as_secs_f64(),
            encrypt.as_secs_f64()
        );
        println!(
            "{:<62} {:>14.0} {:>9.1}s",
            "idsync replay, personal fields encrypted",
            sealed_rate,
            sealed_replay.as_secs_f64()
        );
        println!(
            "encrypted / plaintext replay: {:.2} (target >= 0.7)",
            sealed_rate / rate
        );
    }
    Ok(())
}

/// `idsync replay` of the users projection, timed whole.
async fn run_replay(url: &str, key: &str) -> Result<Duration, BoxError> {
    let t = Instant::now();
    let out = tokio::process::Command::new(idsync_binary()?)
        .args(["replay", "--projection", "users"])
        .env("DATABASE_URL", url)
        .env("IDSYNC_DATA_KEY", key)
        .env("IDSYNC_LOG_FORMAT", "json")
        .output()
        .await?;
    let elapsed = t.elapsed();
    if !out.status.success() {
        return Err(format!(
            "idsync replay failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(elapsed)
}

/// Bulk-load real-shaped events. The trigger that assigns positions one row at a time
/// is what live writes need; for a million-row load it is disabled and positions are
/// assigned by the same ordering, then the counter is set.
async fn load_events(pool: &sqlx::PgPool, events: i64, users: i64) -> Result<(), BoxError> {
    let mut tx = pool.begin().await?;
    sqlx::query("ALTER TABLE events DISABLE TRIGGER events_global_position")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, global_position, recorded_at)
         SELECT 'User', pk::text, seq,
                CASE WHEN seq = 1 THEN 'UserRegistered' ELSE 'UserUpdated' END, '1.0',
                CASE WHEN seq = 1 THEN json_build_object('UserRegistered', json_build_object(
                        'pk', pk, 'uuid', md5(pk::text)::uuid, 'username', 'user' || pk,
                        'email', 'user' || pk || '@example.org', 'name', 'User ' || pk,
                        'is_active', true, 'type', 'internal', 'groups', json_build_array('staff'),
                        'date_joined', '2026-01-01T00:00:00Z'))
                     WHEN seq % 3 = 0 THEN json_build_object('UserUpdated', json_build_object(
                        'pk', pk, 'email', 'user' || pk || '.v' || seq || '@example.org', 'name', 'User ' || pk || ' v' || seq))
                     WHEN seq % 3 = 1 THEN json_build_object('UserUpdated', json_build_object(
                        'pk', pk, 'groups', json_build_array('staff', 'g' || seq)))
                     ELSE json_build_object('UserUpdated', json_build_object('pk', pk, 'is_active', seq % 2 = 0)) END,
                json_build_object('source', 'webhook', 'received_at', '2026-01-01T00:00:00Z'),
                n, now()
           FROM (SELECT n, ((n - 1) % $2) + 1 AS pk, ((n - 1) / $2) + 1 AS seq
                   FROM generate_series(1, $1) AS n) g",
    )
    .bind(events)
    .bind(users)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE event_position_counter SET position = $1")
        .bind(events)
        .execute(&mut *tx)
        .await?;
    sqlx::query("ALTER TABLE events ENABLE TRIGGER events_global_position")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    sqlx::query("ANALYZE events").execute(pool).await?;
    Ok(())
}

/// The view a cqrs-es user would write for the same read model.
#[derive(Debug, Default, Serialize, Deserialize)]
struct UserView {
    user: Option<serde_json::Value>,
    deleted: bool,
}

static APPLIED: AtomicU64 = AtomicU64::new(0);

impl View<User> for UserView {
    fn update(&mut self, event: &EventEnvelope<User>) {
        APPLIED.fetch_add(1, Ordering::Relaxed);
        match &event.payload {
            UserEvent::UserRegistered(s) => self.user = serde_json::to_value(s).ok(),
            UserEvent::UserUpdated { changes, .. } => {
                if let (Some(user), Ok(serde_json::Value::Object(c))) =
                    (self.user.as_mut(), serde_json::to_value(changes))
                {
                    for (k, v) in c {
                        user[k] = v;
                    }
                }
            }
            UserEvent::UserDeleted(_) => self.deleted = true,
            UserEvent::UserErased(_) => {}
        }
    }
}

async fn cqrs_baseline(pool: &sqlx::PgPool, limit: Duration) -> (u64, Duration) {
    let view_repo = Arc::new(PostgresViewRepository::<UserView, User>::new(
        "bench_user_view",
        pool.clone(),
    ));
    let query = GenericQuery::new(view_repo);
    let replay = QueryReplay::new(PostgresEventRepository::new(pool.clone()), query);
    APPLIED.store(0, Ordering::Relaxed);
    let t = Instant::now();
    let _ = tokio::time::timeout(limit, replay.replay_all()).await;
    (APPLIED.load(Ordering::Relaxed), t.elapsed())
}
