//! Webhook → inbox → Authentik (a local stub with real-shaped users) → events, through
//! the real binary: the lifecycle, duplicates, outages, a SIGKILL mid-flight, and two
//! processes sharing one inbox.

use std::collections::HashMap;
use std::time::Duration;

use idsync_testkit::authentik::{AuthentikStub, fixtures};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{App, STUB_TOKEN, serve_with_stub};
use crate::intake::post_json;

const TOKEN: &str = STUB_TOKEN;

/// A short Authentik timeout, so failure paths show within a test's patience.
async fn start_with(pool: &PgPool, stub: &AuthentikStub, extra: &[(&str, &str)]) -> App {
    let mut env = vec![("IDSYNC_AUTHENTIK_TIMEOUT", "500ms")];
    env.extend_from_slice(extra);
    serve_with_stub(pool, stub, &env).await
}

fn mapping(action: &str, pk: i64, event_id: Option<&str>) -> Value {
    json!({
        "event_id": event_id.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned),
        "action": action, "model_app": "authentik_core", "model_name": "user",
        "model_pk": pk, "created": "2026-11-22T10:00:00Z", "actor": {"pk": 1, "username": "akadmin"}
    })
}

async fn send(app: &App, body: &Value) {
    let (status, answer) = post_json(app, body).await;
    assert!(status == 202 || status == 200, "{status} {answer}");
}

/// Wait until no inbox item is pending or processing.
pub(crate) async fn settled(pool: &PgPool, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM webhook_inbox WHERE status IN ('pending', 'processing')",
        )
        .fetch_one(pool)
        .await
        .expect("count");
        if open == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} items still open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// (pk, type, data, metadata) in global order.
/// Read as idsync's readers read them: personal fields opened with the development key
/// the test binaries use (see `helpers::binary`).
pub(crate) async fn events(pool: &PgPool) -> Vec<(i64, String, Value, Value)> {
    crate::privacy::development_keyring();
    idsync_store::feed::read_after_unbounded(pool, idsync_store::Position::START, i64::MAX)
        .await
        .expect("events")
        .into_iter()
        .map(|item| (item.user_pk.0, item.event_type, item.data, item.metadata))
        .collect()
}

async fn outcomes(pool: &PgPool) -> Vec<(i64, String, String)> {
    sqlx::query_as("SELECT user_pk, status, coalesce(outcome, '') FROM webhook_inbox ORDER BY seq")
        .fetch_all(pool)
        .await
        .expect("outcomes")
}

#[sqlx::test(migrations = false)]
async fn created_updated_and_deleted_become_the_right_events(pool: PgPool) {
    let stub = AuthentikStub::start(TOKEN).await;
    stub.upsert(
        fixtures::user(7)
            .username("jane")
            .name("Jane O'Brien")
            .email("jane@example.org")
            .groups(&["staff", "authentik Admins"])
            .json(),
    );
    let app = start_with(&pool, &stub, &[]).await;

    let created_id = uuid::Uuid::new_v4().to_string();
    send(&app, &mapping("model_created", 7, Some(&created_id))).await;
    settled(&pool, Duration::from_secs(15)).await;
    // An update that changes nothing in the fields we keep: no event.
    send(&app, &mapping("model_updated", 7, None)).await;
    settled(&pool, Duration::from_secs(15)).await;
    stub.upsert(
        fixtures::user(7)
            .username("jane")
            .name("Jane O'Brien")
            .email("jane@new.example")
            .groups(&["staff", "authentik Admins"])
            .json(),
    );
    send(&app, &json!({"event_type": "model_updated", "pk": 7})).await;
    settled(&pool, Duration::from_secs(15)).await;
    stub.remove(7);
    send(&app, &mapping("model_deleted", 7, None)).await;
    settled(&pool, Duration::from_secs(15)).await;

    let events = events(&pool).await;
    let types: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(types, vec!["UserRegistered", "UserUpdated", "UserDeleted"]);
    let registered = &events[0].2;
    assert_eq!(registered["pk"], 7);
    assert_eq!(registered["username"], "jane");
    assert_eq!(registered["name"], "Jane O'Brien");
    assert_eq!(registered["email"], "jane@example.org");
    assert_eq!(registered["type"], "internal");
    assert_eq!(registered["groups"], json!(["authentik Admins", "staff"]));
    assert_eq!(registered["uuid"], fixtures::user_uuid(7).to_string());
    assert_eq!(events[0].3["source"], "webhook");
    assert_eq!(events[0].3["event_id"], created_id);
    assert!(events[0].3["received_at"].is_string());
    assert_eq!(events[1].2, json!({"pk": 7, "email": "jane@new.example"}));
    assert_eq!(events[2].2, json!({"pk": 7}));

    let outcomes: Vec<String> = outcomes(&pool).await.into_iter().map(|o| o.2).collect();
    assert_eq!(
        outcomes,
        vec!["registered", "unchanged", "updated", "deleted"]
    );

    let metrics = app.metrics().await;
    assert!(
        metrics.contains("idsync_authentik_requests_total{result=\"ok\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("idsync_events_appended_total{type=\"UserRegistered\"} 1"),
        "{metrics}"
    );
}

#[sqlx::test(migrations = false)]
async fn created_then_deleted_before_processing_and_unknown_deletes_leave_no_events(pool: PgPool) {
    let stub = AuthentikStub::start(TOKEN).await;
    let app = start_with(&pool, &stub, &[]).await;
    // User 8 was created and deleted in Authentik before idsync fetched it.
    send(&app, &mapping("model_created", 8, None)).await;
    send(&app, &mapping("model_deleted", 8, None)).await;
    // User 9 was never seen at all.
    send(&app, &json!({"event_type": "model_deleted", "pk": 9})).await;
    settled(&pool, Duration::from_secs(15)).await;
    assert!(events(&pool).await.is_empty());
    assert_eq!(
        outcomes(&pool).await,
        vec![
            (8, "done".into(), "not_found".into()),
            (8, "done".into(), "already_absent".into()),
            (9, "done".into(), "already_absent".into()),
        ]
    );
}

#[sqlx::test(migrations = false)]
async fn one_event_id_delivered_three_times_is_one_row_and_one_event(pool: PgPool) {
    let stub = AuthentikStub::start(TOKEN).await;
    stub.upsert(fixtures::user(11).json());
    let app = start_with(&pool, &stub, &[]).await;
    let body = mapping(
        "model_created",
        11,
        Some("7d1d8c1e-2f3a-4b5c-8d9e-0f1a2b3c4d5e"),
    );
    for _ in 0..3 {
        send(&app, &body).await;
    }
    settled(&pool, Duration::from_secs(15)).await;
    send(&app, &body).await; // even after processing
    settled(&pool, Duration::from_secs(15)).await;
    assert_eq!(outcomes(&pool).await.len(), 1);
    assert_eq!(events(&pool).await.len(), 1);
}

#[sqlx::test(migrations = false)]
async fn an_authentik_outage_delays_but_loses_nothing(pool: PgPool) {
    let stub = AuthentikStub::start(TOKEN).await;
    for pk in 1..=20 {
        stub.upsert(fixtures::user(pk).json());
    }
    // Half the calls fail: 500s and hangs past the client's 500 ms timeout.
    stub.set_fail_ratio(0.5);
    stub.set_hang(Duration::from_millis(800));
    let app = start_with(&pool, &stub, &[]).await;
    for pk in 1..=20 {
        send(&app, &mapping("model_created", pk, None)).await;
    }
    // Updates too, so retries interleave with later items of the same users.
    for pk in 1..=20 {
        send(&app, &mapping("model_updated", pk, None)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stub.set_fail_ratio(0.0);
    settled(&pool, Duration::from_secs(60)).await;
    if let Some(path) = std::env::var_os("IDSYNC_TEST_DUMP_LOGS") {
        let _ = std::fs::write(path, app.logs());
    }

    let events = events(&pool).await;
    let mut per_user: HashMap<i64, Vec<String>> = HashMap::new();
    for (pk, t, _, _) in &events {
        per_user.entry(*pk).or_default().push(t.clone());
    }
    assert_eq!(per_user.len(), 20);
    for (pk, types) in &per_user {
        assert_eq!(types, &vec!["UserRegistered".to_owned()], "user {pk}");
    }
    let failed: Vec<_> = outcomes(&pool)
        .await
        .into_iter()
        .filter(|o| o.1 != "done")
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    let retried: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_inbox WHERE attempts > 1")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert!(retried > 0, "the outage caused retries");
}

#[sqlx::test(migrations = false)]
async fn sigkill_mid_flight_then_restart_loses_and_duplicates_nothing(pool: PgPool) {
    let stub = AuthentikStub::start(TOKEN).await;
    for pk in 1..=30 {
        stub.upsert(fixtures::user(pk).json());
    }
    // Slow answers so that items are in flight when the process dies.
    stub.set_delay(Duration::from_millis(150));
    let lease = [
        ("IDSYNC_SYNC_LEASE", "1s"),
        ("IDSYNC_AUTHENTIK_TIMEOUT", "5s"),
    ];
    let mut app = start_with(&pool, &stub, &lease).await;
    for pk in 1..=30 {
        send(&app, &mapping("model_created", pk, None)).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let in_flight: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_inbox WHERE status = 'processing'")
            .fetch_one(&pool)
            .await
            .expect("count");
    app.signal("KILL");
    app.wait_exit(Duration::from_secs(5)).await;
    assert!(in_flight > 0, "items were in flight at the kill");
    let open: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_inbox WHERE status <> 'done'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert!(open > 0, "the kill interrupted work");

    stub.set_delay(Duration::ZERO);
    let _app = start_with(&pool, &stub, &lease).await;
    settled(&pool, Duration::from_secs(30)).await;
    let events = events(&pool).await;
    let mut pks: Vec<i64> = events.iter().map(|e| e.0).collect();
    pks.sort_unstable();
    assert_eq!(
        pks,
        (1..=30).collect::<Vec<_>>(),
        "each user registered exactly once"
    );
    assert!(events.iter().all(|e| e.1 == "UserRegistered"));
}

#[sqlx::test(migrations = false)]
async fn two_processes_share_the_inbox_without_double_processing(pool: PgPool) {
    let stub = AuthentikStub::start(TOKEN).await;
    for pk in 1..=40 {
        stub.upsert(fixtures::user(pk).json());
    }
    stub.set_delay(Duration::from_millis(20));
    let a = start_with(&pool, &stub, &[]).await;
    let b = start_with(&pool, &stub, &[]).await;
    for pk in 1..=40 {
        let app = if pk % 2 == 0 { &a } else { &b };
        send(app, &mapping("model_created", pk, None)).await;
        send(app, &mapping("model_updated", pk, None)).await;
    }
    settled(&pool, Duration::from_secs(30)).await;
    let attempts: Vec<i32> = sqlx::query_scalar("SELECT attempts FROM webhook_inbox")
        .fetch_all(&pool)
        .await
        .expect("attempts");
    assert_eq!(attempts.len(), 80);
    assert!(
        attempts.iter().all(|a| *a == 1),
        "every item processed once: {attempts:?}"
    );
    assert_eq!(stub.requests(), 80, "one fetch per item");
    let events = events(&pool).await;
    assert_eq!(events.len(), 40);
    assert!(events.iter().all(|e| e.1 == "UserRegistered"));
}

#[sqlx::test(migrations = false)]
async fn a_rejected_token_shows_in_readyz_and_items_wait(pool: PgPool) {
    let stub = AuthentikStub::start(TOKEN).await;
    stub.upsert(fixtures::user(3).json());
    stub.set_forbidden(true);
    let app = start_with(&pool, &stub, &[]).await;
    send(&app, &mapping("model_created", 3, None)).await;
    let (status, _) = app
        .readyz_warns("the rejected token", |w| {
            w.contains("authentik: API token rejected")
        })
        .await;
    // A warning, not a 503: the process still stores webhooks, and a load balancer
    // acting on a 503 would stop those too.
    assert_eq!(status, 200, "readiness does not depend on Authentik");
    // Intake goes on meanwhile.
    send(&app, &mapping("model_updated", 3, None)).await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"idsync_readiness_warning{component="authentik"} 1"#),
        "{metrics}"
    );
    assert!(
        app.logs().contains("IDSYNC_AUTHENTIK_TOKEN"),
        "logged loudly"
    );
    assert!(!app.logs().contains(TOKEN), "the token itself never logs");
    stub.set_forbidden(false);
    settled(&pool, Duration::from_secs(15)).await;
    app.wait_ready().await;
    assert_eq!(events(&pool).await.len(), 1);
}

#[sqlx::test(migrations = false)]
async fn operators_list_and_retry_failed_items(pool: PgPool) {
    let stub = AuthentikStub::start(TOKEN).await;
    stub.upsert(fixtures::user(5).json());
    stub.set_fail_ratio(1.0);
    let app = start_with(&pool, &stub, &[("IDSYNC_SYNC_DEADLINE", "300ms")]).await;
    send(&app, &mapping("model_created", 5, None)).await;
    settled(&pool, Duration::from_secs(15)).await;
    let cli = |args: &'static [&'static str]| crate::helpers::idsync(&pool, args, &[]);

    let (ok, table, _) = cli(&["inbox", "list", "--status", "failed"]).await;
    assert!(ok);
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM webhook_inbox")
        .fetch_one(&pool)
        .await
        .expect("id");
    assert!(
        table
            .lines()
            .next()
            .is_some_and(|h| h.starts_with("ID") && h.contains("STATUS")),
        "{table}"
    );
    assert!(
        table.contains(&id.to_string()) && table.contains("failed"),
        "{table}"
    );
    let (ok, done_only, _) = cli(&["inbox", "list", "--status", "done"]).await;
    assert!(ok && done_only.contains("(no items)"), "{done_only}");

    stub.set_fail_ratio(0.0);
    let (ok, out, _) = cli(&["inbox", "retry", "--failed"]).await;
    assert!(
        ok && out.contains("1 failed item(s) pending again"),
        "{out}"
    );
    settled(&pool, Duration::from_secs(15)).await;
    assert_eq!(events(&pool).await.len(), 1);

    // A single item by id; an unknown id is a one-line error.
    crate::helpers::idsync_ok(&pool, &["inbox", "retry", &id.to_string()], &[]).await;
    settled(&pool, Duration::from_secs(15)).await;
    assert_eq!(
        events(&pool).await.len(),
        1,
        "re-processing a done item appends nothing"
    );
    let unknown = uuid::Uuid::new_v4().to_string();
    let (ok, _, stderr) = crate::helpers::idsync(&pool, &["inbox", "retry", &unknown], &[]).await;
    assert!(!ok);
    assert!(stderr.contains("no such item"), "{stderr}");
}
