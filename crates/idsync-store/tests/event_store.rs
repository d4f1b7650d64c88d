//! The event store against a real Postgres: global order, gap-freedom, conflicts,
//! notifications. Each test gets its own database from `#[sqlx::test]`.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use idsync_domain::{EventMetadata, Source, UserCommand, UserEvent, UserSnapshot};
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
        uid: None,
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
                let page = feed::read_after(&pool, idsync_store::Position(cursor), 200)
                    .await
                    .expect("read feed");
                for item in &page {
                    seen.push(item.position.0);
                    cursor = item.position.0;
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

    let positions: Vec<i64> = feed::read_after(&pool, idsync_store::Position(0), 100)
        .await
        .expect("feed")
        .iter()
        .map(|i| i.position.0)
        .collect();
    assert_eq!(positions, vec![1, 2]);
    assert_eq!(feed::head(&pool).await.expect("head").0, 2);
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

    let items = feed::read_user_after(
        &pool,
        idsync_store::UserPk(7),
        idsync_store::Position(0),
        100,
    )
    .await
    .expect("feed");
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

    let items = feed::read_after(&pool, idsync_store::Position(0), 10)
        .await
        .expect("feed");
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
    assert_eq!(
        feed::read_after(&pool, idsync_store::Position(1), 10)
            .await
            .expect("feed")
            .len(),
        1
    );
    assert_eq!(
        feed::read_after(&pool, idsync_store::Position(0), 1)
            .await
            .expect("feed")
            .len(),
        1
    );
    assert!(
        feed::read_after(&pool, idsync_store::Position(2), 10)
            .await
            .expect("feed")
            .is_empty()
    );
}

/// Every stored column a reader can see, in global order.
async fn stored(pool: &PgPool) -> Vec<(i64, String, String, i64, String, String, String, String)> {
    sqlx::query_as(
        "SELECT global_position, aggregate_type, aggregate_id, sequence, event_type, event_version,
                payload::text, metadata::text
           FROM events ORDER BY global_position",
    )
    .fetch_all(pool)
    .await
    .expect("events")
}

/// A script touching every rule: registrations, changes and no-changes, deletes of known
/// and unknown users, a snapshot for a deleted user, a pk mismatch, a user twice in one
/// batch.
fn script() -> Vec<Vec<(i64, UserCommand)>> {
    let renamed = |pk: i64| {
        let mut s = snapshot(pk);
        s.name = format!("Renamed {pk}");
        s.groups = vec!["staff".into(), "a \"quoted\" group".into()];
        s
    };
    let mut mismatch = snapshot(2);
    mismatch.pk = 3;
    vec![
        (1..=20)
            .map(|pk| (pk, UserCommand::ApplySnapshot(snapshot(pk))))
            .collect(),
        vec![
            (1, UserCommand::ApplySnapshot(renamed(1))),
            (2, UserCommand::ApplySnapshot(snapshot(2))), // unchanged: nothing
            (3, UserCommand::Delete { pk: 3 }),
            (3, UserCommand::ApplySnapshot(snapshot(3))), // deleted just before: refused
            (99, UserCommand::Delete { pk: 99 }),         // never seen: nothing
            (21, UserCommand::ApplySnapshot(snapshot(21))),
            (21, UserCommand::ApplySnapshot(renamed(21))), // twice in one batch
            (2, UserCommand::ApplySnapshot(mismatch)),
            (4, UserCommand::Delete { pk: 4 }),
        ],
        vec![
            (4, UserCommand::ApplySnapshot(snapshot(4))),
            (1, UserCommand::ApplySnapshot(snapshot(1))),
        ],
    ]
}

type Outcome = Vec<Result<Vec<(usize, UserEvent)>, String>>;

fn outcome(
    results: Vec<Result<Vec<idsync_store::AppendedEvent>, idsync_store::StoreError>>,
) -> Outcome {
    results
        .into_iter()
        .map(|r| {
            r.map(|events| events.into_iter().map(|e| (e.sequence, e.event)).collect())
                .map_err(|e| e.to_string())
        })
        .collect()
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_batch_does_what_its_commands_one_by_one_do_and_stores_the_same_rows(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    let metadata = EventMetadata::new(Source::Reconcile, None, Utc::now());

    let mut one_by_one: Vec<Outcome> = Vec::new();
    for batch in script() {
        let mut results = Vec::new();
        for (pk, command) in batch {
            results.push(store.execute(pk, command, &metadata).await);
        }
        one_by_one.push(outcome(results));
    }
    let expected = stored(&pool).await;

    // The same again from an empty store, in batches.
    sqlx::query("DELETE FROM events")
        .execute(&pool)
        .await
        .expect("empty");
    sqlx::query("UPDATE event_position_counter SET position = 0")
        .execute(&pool)
        .await
        .expect("reset");
    let mut batched: Vec<Outcome> = Vec::new();
    for batch in script() {
        let results = store.execute_many(batch, &metadata).await.expect("batch");
        batched.push(outcome(results));
    }
    assert_eq!(batched, one_by_one);
    let rows = stored(&pool).await;
    assert_eq!(rows, expected, "byte for byte the rows postgres-es writes");
    assert_eq!(store.conflicts_retried(), 0);

    // Sanity of the script itself: per-item domain errors, in place.
    assert!(batched[1][3].as_ref().is_err_and(|e| e.contains("deleted")));
    assert!(
        batched[1][7]
            .as_ref()
            .is_err_and(|e| e.contains("sent to user"))
    );
    assert_eq!(batched[1][1], Ok(vec![]));
    assert_eq!(batched[1][4], Ok(vec![]));
    assert_eq!(
        batched[1][6].as_ref().map(|e| e[0].0),
        Ok(2),
        "second in the batch: sequence 2"
    );
    assert!(batched[2][0].as_ref().is_err_and(|e| e.contains("deleted")));
    // The aggregates load back to what the batch decided.
    let one = store.load(1).await.expect("load");
    assert_eq!(one.current(), Some(&snapshot(1)));
    assert!(store.load(3).await.expect("load").is_deleted());
}

#[sqlx::test(migrations = "../../migrations")]
async fn batches_get_consecutive_gap_free_positions_in_item_order(pool: PgPool) {
    let cancel = CancellationToken::new();
    let mut notifications = listening_notifier(&pool, &cancel).await;
    let store = Arc::new(EventStore::new(pool.clone()));
    // Batches from four tasks at once, and single commands beside them.
    let batches: Vec<_> = (0..4i64)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut committed = Vec::new();
                for b in 0..10i64 {
                    let items: Vec<(i64, UserCommand)> = (0..50)
                        .map(|i| {
                            let pk = w * 100_000 + b * 1000 + i + 1;
                            (pk, UserCommand::ApplySnapshot(snapshot(pk)))
                        })
                        .collect();
                    let pks: Vec<i64> = items.iter().map(|(pk, _)| *pk).collect();
                    let results = store.execute_many(items, &meta()).await.expect("batch");
                    assert!(
                        results
                            .iter()
                            .all(|r| r.as_ref().is_ok_and(|e| e.len() == 1))
                    );
                    committed.push(pks);
                }
                committed
            })
        })
        .collect();
    let single = {
        let store = store.clone();
        tokio::spawn(async move {
            for pk in 900_001..=900_050 {
                store
                    .execute(pk, UserCommand::ApplySnapshot(snapshot(pk)), &meta())
                    .await
                    .expect("single");
            }
        })
    };
    let mut committed = Vec::new();
    for task in batches {
        committed.extend(task.await.expect("batches"));
    }
    single.await.expect("single");

    let items = feed::read_after_unbounded(&pool, idsync_store::Position(0), 10_000)
        .await
        .expect("feed");
    let positions: Vec<i64> = items.iter().map(|i| i.position.0).collect();
    assert_eq!(
        positions,
        (1..=2050).collect::<Vec<i64>>(),
        "gap-free, each once"
    );
    // Each batch's events are consecutive, in the order of its items.
    let by_pk: std::collections::HashMap<i64, i64> =
        items.iter().map(|i| (i.user_pk.0, i.position.0)).collect();
    for pks in committed {
        let first = by_pk[&pks[0]];
        let got: Vec<i64> = pks.iter().map(|pk| by_pk[pk]).collect();
        assert_eq!(got, (first..first + 50).collect::<Vec<i64>>());
    }
    let mut notified = Vec::new();
    while notified.len() < 2050 {
        match tokio::time::timeout(Duration::from_secs(10), notifications.recv()).await {
            Ok(Ok(FeedSignal::Committed(p))) => notified.push(p),
            Ok(Ok(FeedSignal::Resync)) => {}
            other => panic!("notification stream ended early: {other:?}"),
        }
    }
    assert_eq!(
        notified, positions,
        "notifications arrive in position order"
    );
    cancel.cancel();
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_batch_that_loses_a_race_is_rolled_back_and_run_one_by_one(pool: PgPool) {
    let store = Arc::new(EventStore::new(pool.clone()));
    store
        .execute(7, UserCommand::ApplySnapshot(snapshot(7)), &meta())
        .await
        .expect("register");

    // Another writer appends user 7's sequence 2 and holds its transaction open (and
    // with it the position counter).
    let mut other = pool.begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('User', '7', 2, 'UserUpdated', '1.0', '{\"UserUpdated\":{\"pk\":7,\"name\":\"Other Writer\"}}', '{}')",
    )
    .execute(&mut *other)
    .await
    .expect("insert");

    // The batch loads user 7 at sequence 1, decides, and queues behind the counter.
    let mut renamed = snapshot(7);
    renamed.email = "seven@batch.example".into();
    let items: Vec<(i64, UserCommand)> = vec![
        (1, UserCommand::ApplySnapshot(snapshot(1))),
        (7, UserCommand::ApplySnapshot(renamed)),
        (2, UserCommand::ApplySnapshot(snapshot(2))),
        (7, UserCommand::Delete { pk: 7 }),
        (3, UserCommand::ApplySnapshot(snapshot(3))),
    ];
    let batch = {
        let store = store.clone();
        tokio::spawn(async move { store.execute_many(items, &meta()).await })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&pool)
        .await
        .expect("pg_stat_activity");
        if waiting >= 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the batch never blocked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    other
        .commit()
        .await
        .expect("the other writer commits first");

    let results = batch.await.expect("join").expect("batch");
    assert_eq!(store.conflicts_retried(), 1, "the batch conflicted once");
    let types: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            r.as_ref()
                .expect("every command ran")
                .iter()
                .map(|e| e.kind().as_str().to_owned())
                .collect()
        })
        .collect();
    assert_eq!(
        types,
        vec![
            vec!["UserRegistered"],
            vec!["UserUpdated"],
            vec!["UserRegistered"],
            vec!["UserDeleted"],
            vec!["UserRegistered"],
        ]
    );

    // Nothing lost, nothing twice: user 7 has its registration, the other writer's
    // update, then the batch's re-decided update and delete; 1, 2, 3 once each.
    let items = feed::read_after(&pool, idsync_store::Position(0), 100)
        .await
        .expect("feed");
    let positions: Vec<i64> = items.iter().map(|i| i.position.0).collect();
    assert_eq!(positions, (1..=7).collect::<Vec<i64>>());
    let seven: Vec<(i64, &str)> = items
        .iter()
        .filter(|i| i.user_pk.0 == 7)
        .map(|i| (i.sequence, i.event_type.as_str()))
        .collect();
    assert_eq!(
        seven,
        vec![
            (1, "UserRegistered"),
            (2, "UserUpdated"),
            (3, "UserUpdated"),
            (4, "UserDeleted")
        ]
    );
    // Re-decided against the other writer's state: its snapshot sets the name back.
    let update = items
        .iter()
        .find(|i| i.user_pk.0 == 7 && i.sequence == 3)
        .expect("update");
    assert_eq!(update.data["email"], "seven@batch.example");
    assert_eq!(update.data["name"], "User 7");
    for pk in [1, 2, 3] {
        assert_eq!(
            items.iter().filter(|i| i.user_pk.0 == pk).count(),
            1,
            "user {pk}"
        );
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn domain_errors_belong_to_their_item_and_the_rest_commits(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    store
        .execute(5, UserCommand::ApplySnapshot(snapshot(5)), &meta())
        .await
        .expect("register");
    store
        .execute(5, UserCommand::Delete { pk: 5 }, &meta())
        .await
        .expect("delete");
    let mut wrong = snapshot(6);
    wrong.pk = 5;
    let results = store
        .execute_many(
            vec![
                (4, UserCommand::ApplySnapshot(snapshot(4))),
                (5, UserCommand::ApplySnapshot(snapshot(5))),
                (6, UserCommand::ApplySnapshot(snapshot(6))),
                (6, UserCommand::ApplySnapshot(wrong)),
            ],
            &meta(),
        )
        .await
        .expect("the batch as a whole succeeds");
    assert_eq!(results.len(), 4);
    assert!(results[0].as_ref().is_ok_and(|e| e.len() == 1));
    assert!(matches!(
        results[1],
        Err(idsync_store::StoreError::Domain(
            idsync_domain::UserError::Deleted { pk: 5 }
        ))
    ));
    assert!(results[2].as_ref().is_ok_and(|e| e.len() == 1));
    assert!(matches!(
        results[3],
        Err(idsync_store::StoreError::Domain(
            idsync_domain::UserError::PkMismatch {
                expected: 6,
                got: 5
            }
        ))
    ));
    let items = feed::read_after(&pool, idsync_store::Position(2), 100)
        .await
        .expect("feed");
    let pks: Vec<i64> = items.iter().map(|i| i.user_pk.0).collect();
    assert_eq!(pks, vec![4, 6]);
    assert!(
        store
            .execute_many(Vec::new(), &meta())
            .await
            .expect("empty")
            .is_empty()
    );
    // A dry run of the same decides the same, writing nothing.
    let preview = store
        .preview_many(vec![
            (5, UserCommand::ApplySnapshot(snapshot(5))),
            (8, UserCommand::ApplySnapshot(snapshot(8))),
            (4, UserCommand::ApplySnapshot(snapshot(4))),
        ])
        .await
        .expect("preview");
    assert!(matches!(
        preview[0],
        Err(idsync_store::StoreError::Domain(_))
    ));
    assert!(preview[1].as_ref().is_ok_and(|e| e.len() == 1));
    assert_eq!(preview[2].as_ref().ok(), Some(&vec![]));
    assert_eq!(feed::head(&pool).await.expect("head").0, 4);
}
