//! Reconcile: users Authentik has that no webhook told us about, changes and deletions
//! that were never delivered. The read model is filled by the real projector of a
//! running `idsync serve`; reconcile runs as the CLI (and as serve's periodic job).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use idsync_authentik::model::Pagination;
use idsync_authentik::{AuthentikUser, ClientError, UserPage};
use idsync_server::reconcile::{self, ChangeKind, Directory, Options};
use idsync_store::EventStore;
use idsync_testkit::authentik::{AuthentikStub, fixtures};
use serde_json::{Value, json};
use sqlx::{Connection, PgPool};

use crate::helpers::{App, STUB_TOKEN, database_of, idsync, serve_with_stub, url_for};
use crate::intake::post_json;

const TOKEN: &str = STUB_TOKEN;

async fn start_with(pool: &PgPool, stub: &AuthentikStub, extra: &[(&str, &str)]) -> App {
    let mut env = vec![
        ("IDSYNC_AUTHENTIK_TIMEOUT", "2s"),
        // Tests that want the periodic run say so; the others must not race it.
        ("IDSYNC_RECONCILE_INTERVAL", "0"),
    ];
    env.extend_from_slice(extra);
    serve_with_stub(pool, stub, &env).await
}

async fn created(app: &App, pk: i64) {
    let body = json!({"event_type": "model_created", "pk": pk});
    let (status, answer) = post_json(app, &body).await;
    assert_eq!(status, 202, "{answer}");
}

/// Poll `check` every 50 ms until it holds, or fail after `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until the inbox is worked off and the `users` read model has every event.
async fn settled(pool: &PgPool) {
    eventually(
        Duration::from_secs(20),
        "inbox and projector settled",
        || async {
            let (open, checkpoint, head): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM webhook_inbox WHERE status IN ('pending', 'processing')),
                    (SELECT position FROM projection_checkpoints WHERE name = 'users'),
                    (SELECT coalesce(max(global_position), 0) FROM events)",
        )
        .fetch_one(pool)
        .await
        .expect("progress");
            open == 0 && checkpoint == head
        },
    )
    .await;
}

/// (pk, type, data, metadata) in global order, personal fields opened.
async fn events(pool: &PgPool) -> Vec<(i64, String, Value, Value)> {
    crate::sync::events(pool).await
}

/// The read model as text, to compare before and after.
async fn read_model(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT row_to_json(u)::text FROM users u ORDER BY pk")
        .fetch_all(pool)
        .await
        .expect("users")
}

/// `idsync reconcile ARGS` against `pool`'s database and `stub`: (success, stdout, stderr).
async fn reconcile_cli(
    pool: &PgPool,
    stub: &AuthentikStub,
    args: &[&str],
) -> (bool, String, String) {
    let all: Vec<&str> = std::iter::once("reconcile")
        .chain(args.iter().copied())
        .collect();
    let url = stub.url();
    idsync(
        pool,
        &all,
        &[
            ("IDSYNC_AUTHENTIK_URL", url.as_str()),
            ("IDSYNC_AUTHENTIK_TOKEN", TOKEN),
        ],
    )
    .await
}

/// Users 2, 3 and 5 synced by webhook; then, without any webhook, 1 (there from the
/// start) is never announced, 2 changes its email and name, 3 is deleted, 5 stays.
async fn missed_webhooks(pool: &PgPool) -> (AuthentikStub, App) {
    let stub = AuthentikStub::start(TOKEN).await;
    stub.upsert(fixtures::user(1).username("alice"));
    stub.upsert(fixtures::user(2).username("bob").groups(&["staff"]));
    stub.upsert(fixtures::user(3).username("carl"));
    stub.upsert(fixtures::user(5).username("eve"));
    let app = start_with(pool, &stub, &[]).await;
    for pk in [2, 3, 5] {
        created(&app, pk).await;
    }
    settled(pool).await;
    assert_eq!(events(pool).await.len(), 3);
    stub.upsert(
        fixtures::user(2)
            .username("bob")
            .groups(&["staff"])
            .email("bob@new.example")
            .name("Bob Builder"),
    );
    stub.remove(3);
    (stub, app)
}

#[sqlx::test(migrations = false)]
async fn missed_webhooks_become_reconcile_events_and_a_second_run_changes_nothing(pool: PgPool) {
    let (stub, _app) = missed_webhooks(&pool).await;

    let (ok, stdout, stderr) = reconcile_cli(&pool, &stub, &[]).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert_eq!(
        stdout.trim(),
        "registered 1, updated 1, deleted 1, unchanged 1, conflicts 0",
        "{stderr}"
    );
    assert!(stderr.contains("fetched"), "progress on stderr: {stderr}");

    let mut new: Vec<_> = events(&pool).await.split_off(3);
    new.sort_by_key(|e| e.0);
    let summary: Vec<(i64, &str)> = new.iter().map(|e| (e.0, e.1.as_str())).collect();
    assert_eq!(
        summary,
        vec![
            (1, "UserRegistered"),
            (2, "UserUpdated"),
            (3, "UserDeleted")
        ]
    );
    assert_eq!(new[0].2["username"], "alice");
    assert_eq!(new[0].2["uuid"], fixtures::user_uuid(1).to_string());
    assert_eq!(
        new[1].2,
        json!({"pk": 2, "email": "bob@new.example", "name": "Bob Builder"}),
        "only the changed fields"
    );
    assert_eq!(new[2].2, json!({"pk": 3}));
    for (pk, _, _, meta) in &new {
        assert_eq!(meta["source"], "reconcile", "user {pk}: {meta}");
        assert!(meta.get("event_id").is_none(), "{meta}");
        assert!(meta["received_at"].is_string(), "{meta}");
    }

    // Once the projector has the new events, nothing is left to do.
    settled(&pool).await;
    let (ok, stdout, stderr) = reconcile_cli(&pool, &stub, &[]).await;
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout.trim(),
        "registered 0, updated 0, deleted 0, unchanged 3, conflicts 0"
    );
    assert_eq!(
        events(&pool).await.len(),
        6,
        "the second run appends nothing"
    );
}

#[sqlx::test(migrations = false)]
async fn dry_run_prints_the_differences_and_writes_nothing(pool: PgPool) {
    let (stub, _app) = missed_webhooks(&pool).await;
    let events_before = events(&pool).await;
    let users_before = read_model(&pool).await;

    let (ok, stdout, stderr) = reconcile_cli(&pool, &stub, &["--dry-run"]).await;
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        vec![
            "register 1 alice (missing here)",
            "update 2 bob: email, name",
            "delete 3 carl (gone from Authentik)",
            "would register 1, update 1, delete 1, unchanged 1, conflicts 0",
        ]
    );
    // Give a stray write time to show up, then check nothing changed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(events(&pool).await, events_before);
    assert_eq!(read_model(&pool).await, users_before);

    // The real run does what the dry run announced.
    let (ok, stdout, _) = reconcile_cli(&pool, &stub, &[]).await;
    assert!(ok);
    assert_eq!(
        stdout.trim(),
        "registered 1, updated 1, deleted 1, unchanged 1, conflicts 0"
    );
}

#[sqlx::test(migrations = false)]
async fn without_authentik_settings_reconcile_names_them(pool: PgPool) {
    let (ok, _, stderr) = idsync(&pool, &["reconcile"], &[]).await;
    assert!(!ok);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("IDSYNC_AUTHENTIK_URL") && stderr.contains("IDSYNC_AUTHENTIK_TOKEN"),
        "{stderr}"
    );
}

#[sqlx::test(migrations = false)]
async fn a_rejected_token_stops_the_run_with_one_clear_line(pool: PgPool) {
    let stub = AuthentikStub::start(TOKEN).await;
    stub.upsert(fixtures::user(1));
    // serve migrates the database; reconcile refuses an unmigrated one.
    let _app = start_with(&pool, &stub, &[]).await;
    stub.set_forbidden(true);
    let (ok, stdout, stderr) = reconcile_cli(&pool, &stub, &[]).await;
    assert!(!ok, "{stdout}");
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ")
            && last.contains("403")
            && last.contains("IDSYNC_AUTHENTIK_TOKEN"),
        "{stderr}"
    );
    assert!(!stderr.contains(TOKEN), "the token itself never shows");
    assert!(events(&pool).await.is_empty());
}

/// A stand-in directory whose listing and fetch-by-pk disagree, as Authentik's do when
/// users move between pages while we list.
struct ShiftingDirectory {
    listed: Vec<AuthentikUser>,
    by_pk: HashMap<i64, AuthentikUser>,
    fetched: Mutex<Vec<i64>>,
}

impl Directory for ShiftingDirectory {
    async fn list_users(&self, page: u32, _page_size: u32) -> Result<UserPage, ClientError> {
        assert_eq!(page, 1, "one page announced");
        Ok(UserPage {
            users: self.listed.clone(),
            pagination: Pagination {
                next: 0,
                previous: 0,
                count: self.by_pk.len() as u64,
                current: 1,
                total_pages: 1,
                start_index: 1,
                end_index: self.listed.len() as u64,
            },
        })
    }

    async fn get_user(&self, pk: i64) -> Result<AuthentikUser, ClientError> {
        if let Ok(mut fetched) = self.fetched.lock() {
            fetched.push(pk);
        }
        self.by_pk.get(&pk).cloned().ok_or(ClientError::NotFound)
    }
}

fn parsed(fixture: fixtures::UserFixture) -> AuthentikUser {
    serde_json::from_value(fixture.json()).expect("fixture is a valid user")
}

#[sqlx::test(migrations = false)]
async fn a_user_missing_from_the_listing_is_deleted_only_when_authentik_says_404(pool: PgPool) {
    // Users 1..=4 synced by webhook.
    let stub = AuthentikStub::start(TOKEN).await;
    for pk in 1..=4 {
        stub.upsert(fixtures::user(pk));
    }
    let app = start_with(&pool, &stub, &[]).await;
    for pk in 1..=4 {
        created(&app, pk).await;
    }
    settled(&pool).await;

    // The listing shows only user 1. Users 2 and 3 still exist (3 with a new email);
    // user 4 is really gone.
    let directory = ShiftingDirectory {
        listed: vec![parsed(fixtures::user(1))],
        by_pk: [
            (1, parsed(fixtures::user(1))),
            (2, parsed(fixtures::user(2))),
            (3, parsed(fixtures::user(3).email("three@new.example"))),
        ]
        .into_iter()
        .collect(),
        fetched: Mutex::new(Vec::new()),
    };
    // Reads and writes what the binary encrypted, with the same development key.
    crate::privacy::development_keyring();
    let store = EventStore::new(pool.clone());
    let report = reconcile::reconcile(&pool, &store, &directory, &Options::default(), &|_| {})
        .await
        .expect("reconcile");

    let mut fetched = directory.fetched.lock().expect("lock").clone();
    fetched.sort_unstable();
    assert_eq!(
        fetched,
        vec![2, 3, 4],
        "every unlisted user is checked by pk"
    );
    let kinds: Vec<(i64, ChangeKind)> = report
        .changes
        .iter()
        .map(|c| (c.pk, c.kind.clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (3, ChangeKind::Update(vec!["email"])),
            (4, ChangeKind::Delete)
        ]
    );
    assert_eq!(
        report.summary(),
        "registered 0, updated 1, deleted 1, unchanged 2, conflicts 0"
    );
    let new: Vec<(i64, String)> = events(&pool)
        .await
        .split_off(4)
        .into_iter()
        .map(|e| (e.0, e.1))
        .collect();
    assert_eq!(new.len(), 2, "{new:?}");
    assert!(new.contains(&(3, "UserUpdated".to_owned())), "{new:?}");
    assert!(new.contains(&(4, "UserDeleted".to_owned())), "{new:?}");
}

#[sqlx::test(migrations = false)]
async fn serve_reconciles_periodically_and_reports_the_last_run(pool: PgPool) {
    let stub = AuthentikStub::start(TOKEN).await;
    stub.upsert(fixtures::user(7).username("jane"));
    let app = start_with(&pool, &stub, &[("IDSYNC_RECONCILE_INTERVAL", "1s")]).await;
    // No webhook at all: the periodic run finds jane.
    eventually(
        Duration::from_secs(15),
        "jane registered by reconcile",
        || async { !events(&pool).await.is_empty() },
    )
    .await;
    let events = events(&pool).await;
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].0, events[0].1.as_str()), (7, "UserRegistered"));
    assert_eq!(events[0].3["source"], "reconcile");

    eventually(Duration::from_secs(10), "reconcile metrics", || async {
        let text = app.metrics().await;
        text.contains("idsync_reconcile_last_success 1")
            && text.contains("idsync_reconcile_runs_total{outcome=\"ok\"}")
            && text.contains("idsync_reconcile_last_users{result=\"registered\"}")
            && text.contains("idsync_reconcile_last_users{result=\"unchanged\"}")
            && text.contains("idsync_reconcile_last_run_timestamp_seconds")
            && text.contains("idsync_reconcile_last_duration_seconds")
    })
    .await;
    let text = app.metrics().await;
    assert!(
        text.contains("idsync_events_appended_total{type=\"UserRegistered\"} 1"),
        "{text}"
    );
}

#[sqlx::test(migrations = false)]
async fn one_reconcile_at_a_time_per_database(pool: PgPool) {
    let stub = AuthentikStub::start(TOKEN).await;
    stub.upsert(fixtures::user(7));
    // Another process's run, as far as the lock can tell.
    let db = database_of(&pool).await;
    let mut holder = sqlx::PgConnection::connect(&url_for(&db))
        .await
        .expect("connect");
    sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
        .bind(reconcile::LOCK_KEY)
        .execute(&mut holder)
        .await
        .expect("lock");

    let app = start_with(&pool, &stub, &[("IDSYNC_RECONCILE_INTERVAL", "1s")]).await;
    eventually(
        Duration::from_secs(15),
        "a skipped periodic run",
        || async {
            app.metrics()
                .await
                .contains("idsync_reconcile_runs_total{outcome=\"skipped\"}")
        },
    )
    .await;
    let (ok, _, stderr) = reconcile_cli(&pool, &stub, &[]).await;
    assert!(!ok);
    assert!(stderr.contains("another reconcile is running"), "{stderr}");
    // A dry run writes nothing, so it does not wait for the lock.
    let (ok, stdout, stderr) = reconcile_cli(&pool, &stub, &["--dry-run"]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("would register 1,"), "{stdout}");
    assert!(
        events(&pool).await.is_empty(),
        "nothing ran while the lock was held"
    );

    holder.close().await.expect("release the lock");
    eventually(
        Duration::from_secs(15),
        "the periodic run once the lock is free",
        || async { events(&pool).await.len() == 1 },
    )
    .await;
}

#[sqlx::test(migrations = false)]
async fn a_large_directory_is_registered_in_batches_gap_free_and_a_second_run_changes_nothing(
    pool: PgPool,
) {
    const USERS: i64 = 2_500;
    let stub = AuthentikStub::start(TOKEN).await;
    stub.upsert_many((1..=USERS).map(|pk| fixtures::user(pk).json()));
    let _app = start_with(&pool, &stub, &[]).await;
    // User 7 was deleted here while Authentik still lists it: a conflict, left as is,
    // whatever batch it lands in.
    let store = EventStore::new(pool.clone());
    let metadata =
        idsync_domain::EventMetadata::new(idsync_domain::Source::Webhook, None, chrono::Utc::now());
    let seven = parsed(fixtures::user(7)).to_snapshot();
    for command in [
        idsync_domain::UserCommand::ApplySnapshot(seven),
        idsync_domain::UserCommand::Delete { pk: 7 },
    ] {
        store.execute(7, command, &metadata).await.expect("user 7");
    }
    settled(&pool).await;

    let (ok, stdout, stderr) = reconcile_cli(&pool, &stub, &[]).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert_eq!(
        stdout.trim(),
        format!(
            "registered {}, updated 0, deleted 0, unchanged 0, conflicts 1",
            USERS - 1
        ),
        "{stderr}"
    );
    let positions: Vec<i64> =
        sqlx::query_scalar("SELECT global_position FROM events ORDER BY global_position")
            .fetch_all(&pool)
            .await
            .expect("positions");
    assert_eq!(positions, (1..=USERS + 1).collect::<Vec<i64>>(), "gap-free");
    let all = events(&pool).await;
    let mut registered: Vec<i64> = all[2..]
        .iter()
        .map(|(pk, kind, _, meta)| {
            assert_eq!(kind, "UserRegistered");
            assert_eq!(meta["source"], "reconcile");
            *pk
        })
        .collect();
    registered.sort_unstable();
    let want: Vec<i64> = (1..=USERS).filter(|pk| *pk != 7).collect();
    assert_eq!(registered, want, "each user once");

    settled(&pool).await;
    let (ok, stdout, stderr) = reconcile_cli(&pool, &stub, &[]).await;
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout.trim(),
        format!(
            "registered 0, updated 0, deleted 0, unchanged {}, conflicts 1",
            USERS - 1
        )
    );
    assert_eq!(events(&pool).await.len(), all.len(), "nothing appended");
}
