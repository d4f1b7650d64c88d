//! The read side through the real binary: replay restores a wiped read model while
//! `serve` runs, and killing the active projector's process hands over to another.

use std::time::Duration;

use idsync_testkit::authentik::{AuthentikStub, fixtures};
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::{App, STUB_TOKEN, idsync, serve_with_stub};
use crate::intake::post_json;

const TOKEN: &str = STUB_TOKEN;

async fn serve(pool: &PgPool, stub: &AuthentikStub) -> App {
    serve_with_stub(pool, stub, &[]).await
}

/// Wait until the inbox is drained and the `users` projection has every event.
pub(crate) async fn projected(pool: &PgPool, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (open, behind): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM webhook_inbox WHERE status IN ('pending', 'processing')),
                    (SELECT COALESCE(max(global_position), 0) FROM events)
                  - (SELECT position FROM projection_checkpoints WHERE name = 'users')",
        )
        .fetch_one(pool)
        .await
        .expect("progress");
        if open == 0 && behind == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} inbox items open, projection {behind} events behind"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn users(pool: &PgPool) -> Vec<(i64, String, String, bool, Vec<String>, bool)> {
    sqlx::query_as("SELECT pk, username, email, is_active, groups, deleted_at IS NOT NULL FROM users ORDER BY pk")
        .fetch_all(pool)
        .await
        .expect("users")
}

async fn webhook(app: &App, action: &str, pk: i64) {
    let (status, body) = post_json(app, &json!({"event_type": action, "pk": pk})).await;
    assert_eq!(status, 202, "{body}");
}

#[sqlx::test(migrations = false)]
async fn an_operator_wipes_the_read_model_and_replay_restores_it(pool: PgPool) {
    let stub = AuthentikStub::start(TOKEN).await;
    for pk in 1..=20 {
        stub.upsert(fixtures::user(pk).groups(&["staff"]).json());
    }
    let app = serve(&pool, &stub).await;
    for pk in 1..=20 {
        webhook(&app, "model_created", pk).await;
    }
    stub.upsert(fixtures::user(3).email("three@new.example").json());
    webhook(&app, "model_updated", 3).await;
    stub.remove(4);
    webhook(&app, "model_deleted", 4).await;
    projected(&pool, Duration::from_secs(20)).await;
    let before = users(&pool).await;
    assert_eq!(before.len(), 20);
    assert_eq!(before[2].2, "three@new.example");
    assert!(before[3].5, "user 4 is marked deleted");

    sqlx::query("DELETE FROM users")
        .execute(&pool)
        .await
        .expect("wipe");
    let (ok, stdout, stderr) = idsync(&pool, &["replay", "--projection", "users"], &[]).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("replayed 22 events into users"), "{stdout}");
    assert!(
        stderr.contains("replay users: 22/22 events"),
        "progress is shown: {stderr}"
    );
    assert_eq!(users(&pool).await, before, "the read model is back");

    // serve keeps projecting into the swapped-in table.
    stub.upsert(fixtures::user(21).json());
    webhook(&app, "model_created", 21).await;
    projected(&pool, Duration::from_secs(20)).await;
    assert_eq!(users(&pool).await.len(), 21);

    let (ok, _, stderr) = idsync(&pool, &["replay", "--projection", "nope"], &[]).await;
    assert!(!ok);
    assert!(stderr.contains("known: users"), "{stderr}");
}

#[sqlx::test(migrations = false)]
async fn killing_the_active_projector_hands_over_to_the_other_process(pool: PgPool) {
    let stub = AuthentikStub::start(TOKEN).await;
    for pk in 1..=10 {
        stub.upsert(fixtures::user(pk).json());
    }
    let mut a = serve(&pool, &stub).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut b = serve(&pool, &stub).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let active = |app: &App| app.logs().contains("projector active");
    assert!(active(&a) ^ active(&b), "exactly one process projects");
    let (dead, survivor) = if active(&a) {
        (&mut a, &b)
    } else {
        (&mut b, &a)
    };
    assert!(survivor.logs().contains("standing by"));

    dead.signal("KILL");
    dead.wait_exit(Duration::from_secs(5)).await;
    for pk in 1..=10 {
        webhook(survivor, "model_created", pk).await;
    }
    projected(&pool, Duration::from_secs(20)).await;
    assert_eq!(users(&pool).await.len(), 10);
    assert!(active(survivor), "the standby took over");
}
