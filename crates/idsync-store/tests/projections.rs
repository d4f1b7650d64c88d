//! Projections against a real Postgres: checkpoint and read model move together,
//! replay swaps in a complete model while events keep arriving.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use idsync_domain::{EventMetadata, Source, UserCommand, UserSnapshot};
use idsync_store::projections::Projection;
use idsync_store::projections::projector::{self, ProjectorConfig, ProjectorState};
use idsync_store::projections::replay;
use idsync_store::projections::users::{UserRow, UsersProjection};
use idsync_store::{EventStore, Notifier, feed};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn snapshot(pk: i64, version: u32) -> UserSnapshot {
    UserSnapshot {
        pk,
        uuid: Uuid::from_u128(pk as u128),
        username: format!("user{pk}"),
        email: format!("user{pk}.v{version}@example.org"),
        name: format!("User {pk}"),
        is_active: version % 3 != 2,
        user_type: "internal".into(),
        groups: if version.is_multiple_of(2) {
            vec![]
        } else {
            vec!["staff".into(), "it's quoted".into(), r#"q"u\o,t{e}"#.into()]
        },
        date_joined: chrono::DateTime::from_timestamp(1_700_000_000 + pk, 0).expect("valid"),
        uid: Some(format!("{pk:064x}")),
    }
}

fn meta() -> EventMetadata {
    EventMetadata::new(Source::Webhook, None, Utc::now())
}

/// Registers, updates and deletes across `users` users: a realistic mix.
async fn write_history(store: &EventStore, users: std::ops::RangeInclusive<i64>, versions: u32) {
    for v in 0..versions {
        for pk in users.clone() {
            store
                .execute(pk, UserCommand::ApplySnapshot(snapshot(pk, v)), &meta())
                .await
                .expect("snapshot");
        }
    }
    for pk in users.clone().filter(|pk| pk % 5 == 0) {
        store
            .execute(pk, UserCommand::Delete { pk }, &meta())
            .await
            .expect("delete");
    }
}

async fn read_model(pool: &PgPool) -> Vec<UserRow> {
    sqlx::query_as("SELECT pk, uuid, username, email, name, is_active, type, groups, registered_at, updated_at, deleted_at, uid, position, erased FROM users ORDER BY pk")
        .fetch_all(pool)
        .await
        .expect("users")
}

async fn checkpoint(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE name = 'users'")
        .fetch_one(pool)
        .await
        .expect("checkpoint")
}

async fn catch_up(pool: &PgPool, batch: i64) {
    while projector::project_batch(&UsersProjection, pool, batch)
        .await
        .expect("batch")
        > 0
    {}
}

/// What the event stream says each user is, straight from the aggregates.
async fn expected(
    store: &EventStore,
    pks: std::ops::RangeInclusive<i64>,
) -> Vec<(i64, Option<UserSnapshot>, bool)> {
    let mut out = Vec::new();
    for pk in pks {
        let user = store.load(pk).await.expect("load");
        out.push((pk, user.current().cloned(), user.is_deleted()));
    }
    out
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_crash_between_commit_and_projection_loses_and_repeats_nothing(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    write_history(&store, 1..=20, 3).await;

    // Part of the log is projected...
    projector::project_batch(&UsersProjection, &pool, 15)
        .await
        .expect("batch");
    assert_eq!(checkpoint(&pool).await, 15);
    // ...then a batch is applied but the process dies before commit.
    let mut tx = pool.begin().await.expect("begin");
    let items = feed::read_after(&mut *tx, idsync_store::Position(15), 10)
        .await
        .expect("read");
    UsersProjection
        .apply(&mut tx, "users", &items)
        .await
        .expect("apply");
    drop(tx);
    assert_eq!(
        checkpoint(&pool).await,
        15,
        "the checkpoint did not move without its change"
    );

    // More events commit while no projector runs; then it restarts.
    write_history(&store, 21..=25, 2).await;
    catch_up(&pool, 7).await;
    assert_eq!(
        checkpoint(&pool).await,
        feed::head(&pool).await.expect("head").0
    );

    let model = read_model(&pool).await;
    let want = expected(&store, 1..=25).await;
    assert_eq!(model.len(), 25);
    for (row, (pk, snapshot, deleted)) in model.iter().zip(want) {
        assert_eq!(row.pk, pk);
        assert_eq!(row.deleted_at.is_some(), deleted, "user {pk}");
        if !deleted {
            // A live user's row is exactly the aggregate's current state.
            assert_eq!(Some(row.to_snapshot()), snapshot, "user {pk}");
        }
    }
    let deleted = model.iter().filter(|r| r.deleted_at.is_some()).count();
    assert_eq!(deleted, 5, "users 5, 10, 15, 20, 25 were deleted");
    // Re-applying everything (a replay catching up over rows it wrote) changes nothing.
    let before = read_model(&pool).await;
    let mut tx = pool.begin().await.expect("begin");
    let all = feed::read_after_unbounded(&mut *tx, idsync_store::Position::START, 100_000)
        .await
        .expect("read");
    UsersProjection
        .apply(&mut tx, "users", &all)
        .await
        .expect("apply again");
    tx.commit().await.expect("commit");
    assert_eq!(read_model(&pool).await, before);
}

#[sqlx::test(migrations = "../../migrations")]
async fn replay_on_a_live_system_swaps_in_a_complete_model(pool: PgPool) {
    let store = Arc::new(EventStore::new(pool.clone()));
    write_history(&store, 1..=300, 4).await;

    // The live projector runs throughout, as inside `serve`.
    let cancel = CancellationToken::new();
    let notifier = Notifier::new(1024);
    tokio::spawn(notifier.clone().run(pool.clone(), cancel.clone()));
    let state = Arc::new(ProjectorState::default());
    tokio::spawn(projector::run(
        UsersProjection,
        pool.clone(),
        notifier,
        ProjectorConfig {
            batch: 200,
            poll: Duration::from_millis(200),
        },
        state.clone(),
        cancel.clone(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while checkpoint(&pool).await < feed::head(&pool).await.expect("head").0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "projector never caught up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(state.is_active());

    // Writers keep appending; a reader keeps reading like the API would.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let store = store.clone();
        let writing = writing.clone();
        tokio::spawn(async move {
            let mut v = 10;
            while writing.load(Ordering::Relaxed) {
                for pk in (1..=300).step_by(37) {
                    let _ = store
                        .execute(pk, UserCommand::ApplySnapshot(snapshot(pk, v)), &meta())
                        .await;
                }
                store
                    .execute(
                        1000 + v as i64,
                        UserCommand::ApplySnapshot(snapshot(1000 + v as i64, 0)),
                        &meta(),
                    )
                    .await
                    .expect("new user");
                v += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let reading = Arc::new(AtomicBool::new(true));
    let reader = {
        let pool = pool.clone();
        let reading = reading.clone();
        tokio::spawn(async move {
            let mut last = 0i64;
            let mut reads = 0u32;
            while reading.load(Ordering::Relaxed) {
                let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
                    .fetch_one(&pool)
                    .await
                    .expect("read users");
                assert!(count >= 300, "a reader saw a partial model: {count} users");
                assert!(count >= last, "the model went backwards: {last} → {count}");
                last = count;
                reads += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            reads
        })
    };

    let report = replay::replay(&UsersProjection, &pool, 97, |_done: u64, _head: i64| {})
        .await
        .expect("replay");
    assert!(report.events > 1000);

    writing.store(false, Ordering::Relaxed);
    writer.await.expect("writer");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while checkpoint(&pool).await < feed::head(&pool).await.expect("head").0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "projector did not resume after the swap"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reading.store(false, Ordering::Relaxed);
    assert!(
        reader.await.expect("reader") > 10,
        "the reader really read during the replay"
    );

    // The live model equals one built from scratch now.
    let live = read_model(&pool).await;
    replay::replay(&UsersProjection, &pool, 1000, |_: u64, _: i64| {})
        .await
        .expect("fresh replay");
    assert_eq!(read_model(&pool).await, live);
    cancel.cancel();
}

#[sqlx::test(migrations = "../../migrations")]
async fn only_one_projector_is_active_and_a_standby_takes_over(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    write_history(&store, 1..=10, 1).await;
    let config = ProjectorConfig {
        batch: 100,
        poll: Duration::from_millis(100),
    };
    let (a_cancel, b_cancel) = (CancellationToken::new(), CancellationToken::new());
    let (a, b) = (
        Arc::new(ProjectorState::default()),
        Arc::new(ProjectorState::default()),
    );
    // Separate pools, as two processes would have.
    let pool_b = PgPool::connect_with((*pool.connect_options()).clone())
        .await
        .expect("pool b");
    tokio::spawn(projector::run(
        UsersProjection,
        pool.clone(),
        Notifier::new(16),
        config.clone(),
        a.clone(),
        a_cancel.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::spawn(projector::run(
        UsersProjection,
        pool_b,
        Notifier::new(16),
        config,
        b.clone(),
        b_cancel.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(a.is_active() && !b.is_active(), "exactly one is active");

    a_cancel.cancel();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !b.is_active() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the standby never took over"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    write_history(&store, 11..=12, 1).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while checkpoint(&pool).await < feed::head(&pool).await.expect("head").0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new leader does not project"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b_cancel.cancel();
}

async fn table_rows(pool: &PgPool, table: &str) -> Vec<UserRow> {
    sqlx::query_as(&format!("SELECT pk, uuid, username, email, name, is_active, type, groups, registered_at, updated_at, deleted_at, uid, position, erased FROM {table} ORDER BY pk"))
        .fetch_all(pool)
        .await
        .expect("rows")
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_bulk_rebuild_equals_the_live_projection_within_and_past_its_memory_bound(
    pool: PgPool,
) {
    let store = EventStore::new(pool.clone());
    write_history(&store, 1..=60, 4).await;
    // A few users registered late, updated and deleted, interleaved with the others.
    write_history(&store, 61..=70, 2).await;
    catch_up(&pool, 50).await;
    let live = table_rows(&pool, "users").await;
    let head = feed::head(&pool).await.expect("head").0;
    assert_eq!(live.len(), 70);

    // Everything in memory; a bound hit at once; a bound hit midway. Big and odd batches.
    for (max_users, batch) in [(usize::MAX, 10_000), (usize::MAX, 13), (0, 17), (25, 9)] {
        let mut conn = pool.acquire().await.expect("conn");
        sqlx::query("DROP TABLE IF EXISTS users_check")
            .execute(&mut *conn)
            .await
            .expect("drop");
        sqlx::query("CREATE TABLE users_check (LIKE users INCLUDING ALL)")
            .execute(&mut *conn)
            .await
            .expect("create");
        let mut seen: Vec<(u64, i64)> = Vec::new();
        let mut sink = |done: u64, head: i64| seen.push((done, head));
        let mut progress = replay::RebuildProgress::start(&mut conn, &mut sink)
            .await
            .expect("progress");
        let position = idsync_store::projections::users::rebuild(
            &mut conn,
            "users_check",
            batch,
            max_users,
            &mut progress,
        )
        .await
        .expect("rebuild");
        assert_eq!(
            progress.done(),
            head as u64,
            "max {max_users}, batch {batch}"
        );
        drop(conn);
        assert_eq!(position, head, "max {max_users}, batch {batch}");
        assert_eq!(seen.last(), Some(&(head as u64, head)));
        assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "{seen:?}");
        assert_eq!(
            table_rows(&pool, "users_check").await,
            live,
            "max {max_users}, batch {batch}"
        );
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_bulk_rebuild_refuses_a_corrupt_event(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    write_history(&store, 1..=3, 1).await;
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('User', '2', 2, 'UserUpdated', '1.0', '{\"UserDeleted\":{\"pk\":2}}', '{}')",
    )
    .execute(&pool)
    .await
    .expect("insert");
    let err = replay::replay(&UsersProjection, &pool, 1000, |_: u64, _: i64| {})
        .await
        .expect_err("corrupt");
    assert!(
        matches!(err, idsync_store::StoreError::Corrupt { position: 4, .. }),
        "{err}"
    );
    // The live model was not touched.
    assert!(read_model(&pool).await.is_empty());
    assert_eq!(checkpoint(&pool).await, 0);
}

/// Pages of users are JSON written straight from Postgres's rows; single users are
/// serde's JSON of a UserRow (and cached). A client must not be able to tell them
/// apart: same members, same order, same values, timestamps in the same format.
#[sqlx::test(migrations = "../../migrations")]
async fn pages_are_written_as_the_same_json_as_one_user(pool: PgPool) {
    use idsync_store::projections::users::{self, UserFilter};
    let cases = [
        // (registered_at, deleted_at, uid, name, groups)
        ("2026-01-05 09:41:59+00", None, None, "Plain", vec![]),
        (
            "2026-01-05 09:41:59.5+00",
            Some("2026-02-01 10:00:00.123+00"),
            Some("ab".repeat(32)),
            "Ünïcødé \"quoted\" \\ back\tslash\u{1}",
            vec!["staff".to_owned(), "a \"b\"".to_owned()],
        ),
        (
            "1999-12-31 23:59:59.999999+00",
            Some("2030-06-30 12:00:00.000007+00"),
            None,
            "",
            vec!["ÿ".to_owned()],
        ),
    ];
    for (i, (registered, deleted, uid, name, groups)) in cases.iter().enumerate() {
        sqlx::query(
            "INSERT INTO users (pk, uuid, username, email, name, is_active, type, groups,
                                registered_at, updated_at, deleted_at, uid, position)
             VALUES ($1, gen_random_uuid(), $2, 'e@x', $3, $4, 'internal', $5,
                     $6::timestamptz, $6::timestamptz + interval '1.25 seconds',
                     $7::timestamptz, $8, $1)",
        )
        .bind(i as i64 + 1)
        .bind(format!("user{i}"))
        .bind(name)
        .bind(i % 2 == 0)
        .bind(groups)
        .bind(registered)
        .bind(*deleted)
        .bind(uid.as_deref())
        .execute(&pool)
        .await
        .expect("insert");
    }
    let page = users::search(&pool, &UserFilter::default(), 0, 100)
        .await
        .expect("page");
    assert_eq!((page.count, page.last_pk), (3, Some(3)));
    let text = String::from_utf8(page.users.clone()).expect("UTF-8");
    let from_rows: Vec<serde_json::Value> = serde_json::from_str(&text).expect("a JSON array");
    for (i, from_postgres) in from_rows.iter().enumerate() {
        let row = users::get(&pool, i as i64 + 1)
            .await
            .expect("get")
            .expect("row");
        let from_idsync = serde_json::to_value(&row).expect("serialise");
        assert_eq!(from_postgres, &from_idsync, "user {}", i + 1);
    }
    // The members come in UserRow's order (serde_json::Value compares maps without it).
    let first_object = &text[..text.find('}').expect("an object")];
    let positions: Vec<usize> = [
        "pk",
        "uuid",
        "username",
        "email",
        "name",
        "is_active",
        "type",
        "groups",
        "registered_at",
        "updated_at",
        "deleted_at",
        "uid",
    ]
    .iter()
    .map(|key| {
        first_object
            .find(&format!("\"{key}\""))
            .unwrap_or_else(|| panic!("{key} in {first_object}"))
    })
    .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "members out of order: {first_object}"
    );
}
