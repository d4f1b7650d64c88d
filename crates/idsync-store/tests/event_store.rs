//! The event store against a real Postgres: global order, gap-freedom, conflicts,
//! notifications. Each test gets its own database from `#[sqlx::test]`.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use idsync_domain::{EventMetadata, Source, UserCommand, UserSnapshot};
use idsync_store::{EventStore, FeedSignal, Notifier, feed};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn snapshot(pk: i64) -> UserSnapshot {
    UserSnapshot {
        pk,
        uuid: Uuid::from_u128(pk as u128),
        username: format!("user{pk}"),
        email: format!("user{pk}@example.org"),
        name: format!("User {pk}"),
        is_active: true,
        user_type: "internal".into(),
        groups: vec![],
        date_joined: chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("valid"),
    }
}

fn meta() -> EventMetadata {
    EventMetadata::new(
        Source::Webhook,
        Some(Uuid::new_v4().to_string()),
        Utc::now(),
    )
}

/// Start a notifier and wait until its LISTEN is in place (it announces a Resync then).
async fn listening_notifier(
    pool: &PgPool,
    cancel: &CancellationToken,
) -> tokio::sync::broadcast::Receiver<FeedSignal> {
    let notifier = Notifier::new(16_384);
    let mut rx = notifier.subscribe();
    tokio::spawn(notifier.run(pool.clone(), cancel.clone()));
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("listener started")
        .expect("channel open");
    assert_eq!(first, FeedSignal::Resync);
    rx
}

#[sqlx::test(migrations = "../../migrations")]
async fn concurrent_writers_produce_a_gap_free_ordered_feed(pool: PgPool) {
    const WRITERS: i64 = 8;
    const PER_WRITER: i64 = 500;
    const TOTAL: i64 = WRITERS * PER_WRITER;

    let cancel = CancellationToken::new();
    let mut notifications = listening_notifier(&pool, &cancel).await;
    let store = Arc::new(EventStore::new(pool.clone()));

    // A reader polling with its cursor while the writers run.
    let reader = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut seen = Vec::with_capacity(TOTAL as usize);
            let mut cursor = 0;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while cursor < TOTAL {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "reader timed out at {cursor}"
                );
                let page = feed::read_after(&pool, cursor, 200)
                    .await
                    .expect("read feed");
                for item in &page {
                    seen.push(item.position);
                    cursor = item.position;
                }
                if page.is_empty() {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            seen
        })
    };

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..PER_WRITER {
                    let pk = w * 10_000 + i + 1;
                    let appended = store
                        .execute(pk, UserCommand::ApplySnapshot(snapshot(pk)), &meta())
                        .await
                        .expect("append");
                    assert_eq!(appended.len(), 1);
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }

    let seen = reader.await.expect("reader");
    let expected: Vec<i64> = (1..=TOTAL).collect();
    assert_eq!(
        seen, expected,
        "the reader saw every position once, in order"
    );

    // Notifications: every position, in position order.
    let mut notified = Vec::new();
    while notified.len() < TOTAL as usize {
        match tokio::time::timeout(Duration::from_secs(10), notifications.recv()).await {
            Ok(Ok(FeedSignal::Committed(p))) => notified.push(p),
            Ok(Ok(FeedSignal::Resync)) => {}
            other => panic!("notification stream ended early: {other:?}"),
        }
    }
    assert_eq!(notified, expected, "notifications arrive in position order");
    cancel.cancel();
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_rolled_back_insert_leaves_no_hole(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    store
        .execute(1, UserCommand::ApplySnapshot(snapshot(1)), &meta())
        .await
        .expect("first");

    // A transaction takes position 2, a concurrent writer waits behind it, then the
    // first rolls back: the waiter must get 2, not 3.
    let mut tx = pool.begin().await.expect("begin");
    let taken: i64 = sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('User', '99', 1, 'UserDeleted', '1.0', '{\"UserDeleted\":{\"pk\":99}}', '{}')
         RETURNING global_position",
    )
    .fetch_one(&mut *tx)
    .await
    .expect("insert in tx");
    assert_eq!(taken, 2);

    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move {
            EventStore::new(pool)
                .execute(2, UserCommand::ApplySnapshot(snapshot(2)), &meta())
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "the second writer waits for the first"
    );
    tx.rollback().await.expect("rollback");
    waiter.await.expect("join").expect("second writer");

    let positions: Vec<i64> = feed::read_after(&pool, 0, 100)
        .await
        .expect("feed")
        .iter()
        .map(|i| i.position)
        .collect();
    assert_eq!(positions, vec![1, 2]);
    assert_eq!(feed::head(&pool).await.expect("head"), 2);
}

#[sqlx::test(migrations = "../../migrations")]
async fn two_writers_on_one_user_conflict_and_retry(pool: PgPool) {
    let store = Arc::new(EventStore::new(pool.clone()));
    store
        .execute(7, UserCommand::ApplySnapshot(snapshot(7)), &meta())
        .await
        .expect("register");

    // Hold the position counter so both writers load the same version and then queue
    // up on their inserts: whoever goes second must hit the optimistic-lock conflict.
    let mut gate = pool.begin().await.expect("begin");
    sqlx::query("SELECT position FROM event_position_counter FOR UPDATE")
        .execute(&mut *gate)
        .await
        .expect("lock counter");

    let mut new_email = snapshot(7);
    new_email.email = "seven@new.example".into();
    let mut new_name = snapshot(7);
    new_name.name = "Seven Renamed".into();
    let a = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .execute(7, UserCommand::ApplySnapshot(new_email), &meta())
                .await
        })
    };
    let b = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .execute(7, UserCommand::ApplySnapshot(new_name), &meta())
                .await
        })
    };
    // Wait until both are blocked on the counter lock.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&pool)
        .await
        .expect("pg_stat_activity");
        if waiting >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "writers never blocked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gate.commit().await.expect("release");
    let a = a.await.expect("join a").expect("writer a");
    let b = b.await.expect("join b").expect("writer b");
    assert_eq!(a.len() + b.len(), 2, "each command appended its one update");
    assert!(
        store.conflicts_retried() >= 1,
        "one writer conflicted and was retried"
    );

    let items = feed::read_user_after(&pool, 7, 0, 100).await.expect("feed");
    let sequences: Vec<i64> = items.iter().map(|i| i.sequence).collect();
    assert_eq!(sequences, vec![1, 2, 3]);
    let types: Vec<&str> = items.iter().map(|i| i.event_type.as_str()).collect();
    assert_eq!(types, vec!["UserRegistered", "UserUpdated", "UserUpdated"]);
    // The retried command was re-decided against the new state. A snapshot is the
    // whole user, so the later one wins: the first update carries its one change, the
    // second carries everything in which its snapshot differs from the state after the
    // first (its own change, and the first writer's field set back).
    let first = items[1].data.as_object().expect("object");
    let second = items[2].data.as_object().expect("object");
    assert_eq!(first.len(), 2, "pk + one field: {}", items[1].data);
    assert_eq!(second.len(), 3, "pk + two fields: {}", items[2].data);
    let user = store.load(7).await.expect("load");
    let current = user.current().expect("registered");
    assert_eq!(current.email, second["email"]);
    assert_eq!(current.name, second["name"]);
    let email_won = current.email == "seven@new.example";
    let name_won = current.name == "Seven Renamed";
    assert!(
        email_won != name_won,
        "exactly one snapshot is the final state"
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn feed_items_have_the_contract_shape(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    let metadata = EventMetadata::new(Source::Reconcile, None, Utc::now());
    store
        .execute(5, UserCommand::ApplySnapshot(snapshot(5)), &metadata)
        .await
        .expect("register");
    store
        .execute(5, UserCommand::Delete { pk: 5 }, &metadata)
        .await
        .expect("delete");
    // Deleting again and snapshotting a deleted user append nothing.
    assert!(
        store
            .execute(5, UserCommand::Delete { pk: 5 }, &metadata)
            .await
            .expect("delete again")
            .is_empty()
    );
    let err = store
        .execute(5, UserCommand::ApplySnapshot(snapshot(5)), &metadata)
        .await
        .expect_err("deleted");
    assert!(matches!(
        err,
        idsync_store::StoreError::Domain(idsync_domain::UserError::Deleted { pk: 5 })
    ));

    let items = feed::read_after(&pool, 0, 10).await.expect("feed");
    assert_eq!(items.len(), 2);
    let json = serde_json::to_value(&items[1]).expect("serialize");
    assert_eq!(json["position"], 2);
    assert_eq!(json["type"], "UserDeleted");
    assert_eq!(json["user_pk"], 5);
    assert_eq!(json["sequence"], 2);
    assert_eq!(json["data"], serde_json::json!({"pk": 5}));
    assert_eq!(json["metadata"]["source"], "reconcile");
    assert!(json["metadata"]["received_at"].is_string());
    assert!(json["recorded_at"].is_string());
    assert_eq!(items[0].data["username"], "user5");
    assert!(items[0].recorded_at <= items[1].recorded_at);
    // Limits and cursors.
    assert_eq!(feed::read_after(&pool, 1, 10).await.expect("feed").len(), 1);
    assert_eq!(feed::read_after(&pool, 0, 1).await.expect("feed").len(), 1);
    assert!(
        feed::read_after(&pool, 2, 10)
            .await
            .expect("feed")
            .is_empty()
    );
}
