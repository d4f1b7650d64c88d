//! Reads are never staler than the read model: with each process caching users' rows,
//! an event is visible through every endpoint of every replica as soon as the
//! projection has it. Two real processes on one database, caches warmed before every
//! change.

use std::time::Duration;

use idsync_testkit::authentik::{AuthentikStub, fixtures};
use idsync_testkit::oidc::{TestIssuer, TokenSpec};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{App, STUB_TOKEN, idsync_ok, serve_with_issuer, serve_with_stub};
use crate::intake::post_json;

async fn get(app: &App, path: &str, token: &str) -> Value {
    let resp = app
        .http
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.expect("JSON")
}

/// The position of the last event once the projection has applied it.
async fn projected_head(pool: &PgPool) -> i64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (head, checkpoint, open): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT COALESCE(max(global_position), 0) FROM events),
                    (SELECT position FROM projection_checkpoints WHERE name = 'users'),
                    (SELECT count(*) FROM webhook_inbox WHERE status IN ('pending', 'processing'))",
        )
        .fetch_one(pool)
        .await
        .expect("positions");
        if open == 0 && checkpoint == head {
            return head;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not projected in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The first event an SSE stream resumed after `after` delivers.
async fn sse_first(app: &App, token: &str, after: i64) -> Value {
    use futures::StreamExt;
    let resp = app
        .http
        .get(app.url(&format!("/api/events/stream?after={after}")))
        .bearer_auth(token)
        .send()
        .await
        .expect("SSE");
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, body.next()).await {
        text.push_str(&String::from_utf8_lossy(&chunk));
        if let Some(line) = text.lines().find(|l| l.starts_with("data: ")) {
            return serde_json::from_str(&line["data: ".len()..]).expect("feed item");
        }
    }
    panic!("no event on the stream after {after}: {text}");
}

#[sqlx::test(migrations = false)]
async fn every_endpoint_of_every_replica_shows_an_event_once_the_projection_has_it(pool: PgPool) {
    let stub = AuthentikStub::start(STUB_TOKEN).await;
    stub.upsert(fixtures::user(7).name("v0").json());
    let issuer = TestIssuer::start().await;
    let (iss, aud) = (issuer.issuer(), issuer.client_id());
    let settings = [
        ("IDSYNC_OIDC_ISSUER", iss.as_str()),
        ("IDSYNC_OIDC_AUDIENCE", aud.as_str()),
    ];
    let a = serve_with_stub(&pool, &stub, &settings).await;
    let b = serve_with_stub(&pool, &stub, &settings).await;
    let user = issuer.token(&TokenSpec::new().sub("7").exp_in(3600));
    let admin = issuer.token(
        &TokenSpec::new()
            .sub("1")
            .groups(["authentik Admins"])
            .exp_in(3600),
    );
    let (status, _) = post_json(&a, &json!({"event_type": "model_created", "pk": 7})).await;
    assert_eq!(status, 202);
    projected_head(&pool).await;

    for round in 1..=25 {
        // Warm both caches with the current row.
        for app in [&a, &b] {
            for _ in 0..3 {
                get(app, "/api/me", &user).await;
                get(app, "/api/users/7", &user).await;
                get(app, "/api/users?limit=10", &admin).await;
            }
        }
        let name = format!("v{round}");
        stub.upsert(fixtures::user(7).name(&name).json());
        // Alternate which replica takes the webhook.
        let via = if round % 2 == 0 { &a } else { &b };
        let (status, _) = post_json(via, &json!({"event_type": "model_updated", "pk": 7})).await;
        assert_eq!(status, 202);
        let head = projected_head(&pool).await;
        // At once, no retries: every endpoint of every replica.
        for (replica, app) in [("a", &a), ("b", &b)] {
            let at = |what: &str| format!("round {round}, replica {replica}, {what}");
            assert_eq!(
                get(app, "/api/me", &user).await["name"],
                name,
                "{}",
                at("/api/me")
            );
            assert_eq!(
                get(app, "/api/users/7", &user).await["name"],
                name,
                "{}",
                at("/api/users/7")
            );
            let page = get(app, "/api/users?limit=10", &admin).await;
            assert_eq!(page["users"][0]["name"], name, "{}", at("/api/users"));
            let history = get(app, "/api/users/7/events?limit=1000", &user).await;
            let last = history["events"].as_array().and_then(|e| e.last()).cloned();
            assert_eq!(
                last.as_ref().map(|e| e["position"].clone()),
                Some(json!(head)),
                "{}",
                at("/api/users/7/events")
            );
            let log = get(app, &format!("/api/events?after={}", head - 1), &admin).await;
            assert_eq!(
                log["events"][0]["data"]["name"],
                name,
                "{}",
                at("/api/events")
            );
            let streamed = sse_first(app, &user, head - 1).await;
            assert_eq!(streamed["data"]["name"], name, "{}", at("SSE"));
        }
    }
    // The cache did serve: this test is about a cache, not about Postgres.
    for app in [&a, &b] {
        let metrics = app.metrics().await;
        let hits = metric_value_labelled(&metrics, "hit");
        assert!(hits > 50.0, "the cache answered {hits} reads:\n{metrics}");
        let page_hits = metric_value_labelled(&metrics, "page_hit");
        assert!(
            page_hits > 25.0,
            "the cache answered {page_hits} pages:\n{metrics}"
        );
    }
}

#[sqlx::test(migrations = false)]
async fn a_replay_elsewhere_voids_every_cached_row(pool: PgPool) {
    let stub = AuthentikStub::start(STUB_TOKEN).await;
    stub.upsert(fixtures::user(7).json());
    let issuer = TestIssuer::start().await;
    let app = serve_with_issuer(&pool, &stub, &issuer, &[]).await;
    let user = issuer.token(&TokenSpec::new().sub("7").exp_in(3600));
    let (status, _) = post_json(&app, &json!({"event_type": "model_created", "pk": 7})).await;
    assert_eq!(status, 202);
    projected_head(&pool).await;
    for _ in 0..5 {
        get(&app, "/api/me", &user).await;
    }
    let fills = |m: &str| metric_value_labelled(m, "fill");
    let before = fills(&app.metrics().await);

    idsync_ok(&pool, &["replay"], &[]).await;
    // The replay's resync reaches this process; its next read fills from the new table.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        get(&app, "/api/me", &user).await;
        if fills(&app.metrics().await) > before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "cache not voided by the replay"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn metric_value_labelled(metrics: &str, result: &str) -> f64 {
    metrics
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "idsync_users_cache_reads_total{{result=\"{result}\"}}"
            ))
        })
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
