//! Every row of the webhook intake table of docs/contract.md, against the real binary. Without
//! Authentik configured, accepted items simply wait in the inbox, which lets these
//! tests look at exactly what intake wrote.

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{
    App, SECRET, admin, block_database, database_of, spawn_app, unblock_database, url_for,
};

async fn start(pool: &PgPool) -> App {
    let db = database_of(pool).await;
    let app = spawn_app(&url_for(&db), &[]).await;
    app.wait_ready().await;
    app
}

pub(crate) async fn post(
    app: &App,
    body: impl Into<reqwest::Body>,
    content_type: Option<&str>,
    auth: Option<&str>,
) -> (u16, Value) {
    let mut req = app.http.post(app.url("/authentik/webhook")).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    let resp = req.send().await.expect("POST webhook");
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (status, body)
}

pub(crate) async fn post_json(app: &App, body: &Value) -> (u16, Value) {
    post(
        app,
        body.to_string(),
        Some("application/json"),
        Some(&format!("Bearer {SECRET}")),
    )
    .await
}

async fn inbox_rows(pool: &PgPool) -> Vec<(String, i64, String, Option<String>)> {
    sqlx::query_as("SELECT action, user_pk, format, event_id FROM webhook_inbox ORDER BY seq")
        .fetch_all(pool)
        .await
        .expect("inbox rows")
}

fn default_body(summary: &str) -> Value {
    json!({"body": summary, "severity": "notice", "user_email": "admin@example.org", "user_username": "akadmin"})
}

#[sqlx::test(migrations = false)]
async fn the_three_formats_are_accepted_and_stored(pool: PgPool) {
    let app = start(&pool).await;

    let (status, body) = post_json(&app, &json!({"event_type": "model_created", "pk": 1})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "accepted");
    assert!(uuid::Uuid::parse_str(body["inbox_id"].as_str().expect("inbox_id")).is_ok());

    let event_id = uuid::Uuid::new_v4().to_string();
    let (status, body) = post_json(
        &app,
        &json!({
            "event_id": event_id, "action": "model_updated", "model_app": "authentik_core",
            "model_name": "user", "model_pk": 2, "created": "2026-11-22T10:00:00Z",
            "actor": {"pk": 1, "username": "akadmin"}
        }),
    )
    .await;
    assert_eq!(
        (status, &body["status"]),
        (202, &json!("accepted")),
        "{body}"
    );

    let summary = "model_created: {'asn': {'asn': 64496, 'as_org': 'Example', 'network': '192.0.2.0/24'}, \
        'geo': {'city': 'Dublin', 'country': 'IE'}, \
        'model': {'pk': 7, 'app': 'authentik_core', 'name': \"O'Brien\", 'model_name': 'user'}, \
        'http_request': {'args': {}, 'path': '/api/v3/core/users/', 'method': 'POST', 'request_id': 'x', 'user_agent': 'curl/8'}}";
    let (status, body) = post_json(&app, &default_body(summary)).await;
    assert_eq!(
        (status, &body["status"]),
        (202, &json!("accepted")),
        "{body}"
    );

    assert_eq!(
        inbox_rows(&pool).await,
        vec![
            ("model_created".into(), 1, "dotnet_sample".into(), None),
            ("model_updated".into(), 2, "mapping".into(), Some(event_id)),
            ("model_created".into(), 7, "default_body".into(), None),
        ]
    );
    let raw: String = sqlx::query_scalar("SELECT body FROM webhook_inbox WHERE user_pk = 7")
        .fetch_one(&pool)
        .await
        .expect("raw body");
    assert!(raw.contains("O'Brien"), "the raw body is kept: {raw}");
}

#[sqlx::test(migrations = false)]
async fn a_redelivered_event_id_is_a_duplicate(pool: PgPool) {
    let app = start(&pool).await;
    let body = json!({
        "event_id": "0b7c3f0e-4e5a-4c1b-9d2f-6a7e8c9d0a1b", "action": "model_created",
        "model_app": "authentik_core", "model_name": "user", "model_pk": 5
    });
    let (status, first) = post_json(&app, &body).await;
    assert_eq!(status, 202);
    for _ in 0..2 {
        let (status, again) = post_json(&app, &body).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(
            again,
            json!({"status": "duplicate", "inbox_id": first["inbox_id"]})
        );
    }
    // Authentik's sanitiser strips the dashes: still the same event.
    let mut undashed = body.clone();
    undashed["event_id"] = json!("0b7c3f0e4e5a4c1b9d2f6a7e8c9d0a1b");
    let (status, again) = post_json(&app, &undashed).await;
    assert_eq!((status, &again["inbox_id"]), (200, &first["inbox_id"]));
    assert_eq!(inbox_rows(&pool).await.len(), 1);
}

#[sqlx::test(migrations = false)]
async fn valid_but_not_a_user_or_group_event_is_ignored_and_not_stored(pool: PgPool) {
    let app = start(&pool).await;
    let application = default_body(
        "model_created: {'model': {'pk': 3, 'app': 'authentik_core', 'name': 'wiki', 'model_name': 'application'}, 'http_request': {'method': 'POST'}}",
    );
    let test_button = json!({"body": "custom_notification_test: {}", "severity": "notice", "user_email": "a@b.c", "user_username": "akadmin"});
    let mapping_provider = json!({"event_id": "e1", "action": "model_updated", "model_app": "authentik_providers_oauth2", "model_name": "oauth2provider", "model_pk": 4});
    let mapping_test = json!({"event_id": "e2", "action": "custom_notification_test", "model_app": null, "model_name": null, "model_pk": null});
    for body in [application, test_button, mapping_provider, mapping_test] {
        let (status, answer) = post_json(&app, &body).await;
        assert_eq!(status, 202, "{body} → {answer}");
        assert_eq!(answer["status"], "ignored");
        assert!(
            answer["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{answer}"
        );
    }
    assert!(inbox_rows(&pool).await.is_empty());
}

#[sqlx::test(migrations = false)]
async fn group_events_are_stored_in_every_format(pool: PgPool) {
    let app = start(&pool).await;
    let uuid = "0b7c3f0e-4e5a-4c1b-9d2f-6a7e8c9d0a1b";
    let default = default_body(
        "model_updated: {'model': {'pk': '0b7c3f0e4e5a4c1b9d2f6a7e8c9d0a1b', 'app': 'authentik_core', 'name': 'staff', 'model_name': 'group'}, 'http_request': {'method': 'PATCH'}}",
    );
    let mapping = json!({"event_id": "g1", "action": "model_deleted", "model_app": "authentik_core", "model_name": "group", "model_pk": "0b7c3f0e4e5a4c1b9d2f6a7e8c9d0a1b"});
    for body in [default, mapping.clone()] {
        let (status, answer) = post_json(&app, &body).await;
        assert_eq!(status, 202, "{body} → {answer}");
        assert_eq!(answer["status"], "accepted", "{answer}");
    }
    let (status, again) = post_json(&app, &mapping).await;
    assert_eq!((status, again["status"].as_str()), (200, Some("duplicate")));
    let rows: Vec<(i64, Option<uuid::Uuid>, String)> =
        sqlx::query_as("SELECT user_pk, group_pk, action FROM webhook_inbox ORDER BY seq")
            .fetch_all(&pool)
            .await
            .expect("rows");
    let group = uuid::Uuid::parse_str(uuid).expect("uuid");
    assert_eq!(
        rows,
        vec![
            (0, Some(group), "model_updated".to_owned()),
            (0, Some(group), "model_deleted".to_owned()),
        ]
    );
    // A group's pk that is not a uuid is a bad request, and writes nothing.
    let bad = json!({"event_id": "g2", "action": "model_updated", "model_app": "authentik_core", "model_name": "group", "model_pk": "staff"});
    let (status, answer) = post_json(&app, &bad).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_payload"))
    );
    assert_eq!(inbox_rows(&pool).await.len(), 2);
}

#[sqlx::test(migrations = false)]
async fn bad_requests_get_json_errors_and_write_nothing(pool: PgPool) {
    let app = start(&pool).await;
    let auth = format!("Bearer {SECRET}");
    let good = json!({"event_type": "model_created", "pk": 1}).to_string();

    /// One row of the contract's table: what is sent, and the status and error code expected.
    struct Case<'a> {
        name: &'a str,
        body: String,
        content_type: Option<&'a str>,
        auth: Option<String>,
        status: u16,
        error: &'a str,
    }
    let case = |name, body: String, content_type, auth: Option<String>, status, error| Case {
        name,
        body,
        content_type,
        auth,
        status,
        error,
    };
    let cases = vec![
        case("malformed JSON", "{\"event_type\": ".into(), Some("application/json"), Some(auth.clone()), 400, "invalid_payload"),
        case("missing pk", json!({"event_type": "model_created"}).to_string(), Some("application/json"), Some(auth.clone()), 400, "invalid_payload"),
        case("null pk", json!({"event_type": "model_created", "pk": null}).to_string(), Some("application/json"), Some(auth.clone()), 400, "invalid_payload"),
        case("zero pk", json!({"event_type": "model_created", "pk": 0}).to_string(), Some("application/json"), Some(auth.clone()), 400, "invalid_payload"),
        case("negative pk", json!({"action": "model_deleted", "model_app": "authentik_core", "model_name": "user", "model_pk": -4}).to_string(), Some("application/json"), Some(auth.clone()), 400, "invalid_payload"),
        case("unknown action", json!({"event_type": "model_exploded", "pk": 1}).to_string(), Some("application/json"), Some(auth.clone()), 400, "invalid_payload"),
        case("default body unreadable", json!({"body": "model_created: {'model': oops}"}).to_string(), Some("application/json"), Some(auth.clone()), 400, "invalid_payload"),
        case("no secret", good.clone(), Some("application/json"), None, 401, "unauthorized"),
        case("wrong secret", good.clone(), Some("application/json"), Some("Bearer nope".into()), 401, "unauthorized"),
        case("secret as basic auth", good.clone(), Some("application/json"), Some(format!("Basic {SECRET}")), 401, "unauthorized"),
        case("too large", format!("{{\"event_type\": \"model_created\", \"pk\": 1, \"pad\": \"{}\"}}", "x".repeat(65 * 1024)), Some("application/json"), Some(auth.clone()), 413, "payload_too_large"),
        case("text/plain", good.clone(), Some("text/plain"), Some(auth.clone()), 415, "unsupported_media_type"),
        case("no content type", good.clone(), None, Some(auth.clone()), 415, "unsupported_media_type"),
    ];
    for Case {
        name,
        body,
        content_type,
        auth,
        status: want_status,
        error: want_error,
    } in cases
    {
        let (status, answer) = post(&app, body, content_type, auth.as_deref()).await;
        assert_eq!(status, want_status, "{name}: {answer}");
        assert_eq!(answer["error"], want_error, "{name}: {answer}");
        assert!(
            answer["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{name}: {answer}"
        );
    }
    // Wrong secret is checked before anything else: an oversized body without the
    // secret is still just unauthorized.
    let (status, _) = post(&app, "x".repeat(70 * 1024), Some("text/plain"), None).await;
    assert_eq!(status, 401);
    assert!(
        inbox_rows(&pool).await.is_empty(),
        "nothing is written for any 4xx"
    );
}

#[sqlx::test(migrations = false)]
async fn database_down_answers_503_so_authentik_retries(pool: PgPool) {
    let db = database_of(&pool).await;
    pool.close().await;
    let app = spawn_app(&url_for(&db), &[]).await;
    app.wait_ready().await;

    let admin = admin().await;
    block_database(&admin, &db).await;
    let (status, answer) = post_json(&app, &json!({"event_type": "model_created", "pk": 1})).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"], "unavailable");

    // A steady stream meanwhile (Authentik sends on): every answer is a 503, and a fast
    // one. Queued requests must not wait for one failed batch after another.
    let mut tasks = tokio::task::JoinSet::new();
    let started = tokio::time::Instant::now();
    for n in 0..300u32 {
        tokio::time::sleep_until(started + std::time::Duration::from_millis(20) * n).await;
        let http = app.http.clone();
        let url = app.url("/authentik/webhook");
        tasks.spawn(async move {
            let t = std::time::Instant::now();
            let status = http
                .post(url)
                .bearer_auth(SECRET)
                .json(&json!({"event_type": "model_updated", "pk": n + 1}))
                .send()
                .await
                .map(|r| r.status().as_u16());
            (status.ok(), t.elapsed())
        });
    }
    let mut slowest = std::time::Duration::ZERO;
    while let Some(done) = tasks.join_next().await {
        let (status, took) = done.expect("task");
        assert_eq!(status, Some(503));
        slowest = slowest.max(took);
    }
    assert!(
        slowest < std::time::Duration::from_secs(5),
        "a 503 took {slowest:?} while the database was unreachable"
    );

    unblock_database(&admin, &db).await;
    // Authentik's retry, a moment later, then succeeds.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let (status, _) = post_json(&app, &json!({"event_type": "model_created", "pk": 1})).await;
    assert_eq!(status, 202);
}

#[sqlx::test(migrations = false)]
async fn without_authentik_items_wait_and_readyz_says_why(pool: PgPool) {
    let app = start(&pool).await;
    let (status, _) = post_json(&app, &json!({"event_type": "model_created", "pk": 3})).await;
    assert_eq!(status, 202);
    let (_, ready) = app.readyz().await;
    let warnings = ready["warnings"].to_string();
    assert!(warnings.contains("IDSYNC_AUTHENTIK_URL"), "{ready}");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let status: String = sqlx::query_scalar("SELECT status FROM webhook_inbox")
        .fetch_one(&pool)
        .await
        .expect("row");
    assert_eq!(status, "pending");

    let metrics = app.metrics().await;
    assert!(
        metrics.contains("idsync_webhooks_received_total{outcome=\"accepted\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("idsync_inbox_items{status=\"pending\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("idsync_inbox_oldest_unfinished_age_seconds"),
        "{metrics}"
    );
}
