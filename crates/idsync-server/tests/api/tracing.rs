//! Request logs: one line per request carrying its request id (echoed to the caller),
//! and nothing of other tasks' spans (a sync item's inbox id must not leak into a
//! request's line).

use std::time::Duration;

use idsync_testkit::authentik::{AuthentikStub, fixtures};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{App, STUB_TOKEN, serve_with_stub};
use crate::intake::post_json;
use crate::sync::settled;

/// The request log lines (one per request) of the request with this id.
fn lines_of(app: &App, request_id: &str) -> Vec<Value> {
    app.logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "request" && l["span"]["request_id"] == request_id)
        .collect()
}

#[sqlx::test(migrations = false)]
async fn a_request_line_carries_its_request_id_and_no_foreign_span(pool: PgPool) {
    let stub = AuthentikStub::start(STUB_TOKEN).await;
    stub.upsert(fixtures::user(7).json());
    let app = serve_with_stub(&pool, &stub, &[]).await;

    // Sync work in flight while requests are served: its spans must stay its own.
    for i in 0..20 {
        let body = json!({
            "event_id": uuid::Uuid::new_v4().to_string(), "action": "model_updated",
            "model_app": "authentik_core", "model_name": "user", "model_pk": 7,
            "created": format!("2026-11-22T10:00:{i:02}Z"),
        });
        let (status, answer) = post_json(&app, &body).await;
        assert_eq!(status, 202, "{answer}");
    }

    let get = |path: &str, request_id: &str| {
        app.http
            .get(app.url(path))
            .header("x-request-id", request_id)
            .send()
    };
    // A caller's own id is kept and echoed.
    let response = get("/api/users/7", "caller-chosen-42")
        .await
        .expect("request");
    assert_eq!(
        response.status(),
        503,
        "no OIDC configured: 503 oidc_not_configured"
    );
    assert_eq!(response.headers()["x-request-id"], "caller-chosen-42");

    // A missing or unusable id is replaced by a fresh one.
    let response = get("/api/whoami", "spaces and \"quotes\"")
        .await
        .expect("request");
    let generated = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");

    settled(&pool, Duration::from_secs(30)).await;
    // The line is written when the answer is; give the pipe a moment.
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = lines_of(&app, "caller-chosen-42");
        if !lines.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        lines.len(),
        1,
        "one line per request; logs:\n{}",
        app.logs()
    );
    let line = &lines[0];
    assert_eq!(line["status"], 503);
    assert_eq!(line["span"]["method"], "GET");
    assert_eq!(line["span"]["route"], "/api/users/{pk}");
    assert!(line["latency_ms"].as_f64().is_some(), "{line}");
    // Only the request's own span: nothing from sync (inbox_id, subject) or elsewhere.
    let spans = line["spans"].as_array().expect("span list");
    assert_eq!(spans.len(), 1, "{line}");
    assert_eq!(spans[0]["name"], "request");
    for foreign in ["inbox_id", "subject", "attempt", "projection"] {
        assert!(
            line.get(foreign).is_none() && line["span"].get(foreign).is_none(),
            "{line}"
        );
    }
    assert_eq!(lines_of(&app, &generated).len(), 1);

    // And the sync lines, meanwhile, carry their own span and no request id.
    let sync_lines: Vec<Value> = app
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["span"]["name"] == "sync")
        .collect();
    assert!(
        !sync_lines.is_empty(),
        "sync logged nothing; logs:\n{}",
        app.logs()
    );
    assert!(
        sync_lines
            .iter()
            .all(|l| l["span"].get("request_id").is_none())
    );
}

#[sqlx::test(migrations = false)]
async fn probes_are_not_logged_at_the_default_level(pool: PgPool) {
    let stub = AuthentikStub::start(STUB_TOKEN).await;
    let app = serve_with_stub(&pool, &stub, &[]).await;
    for _ in 0..5 {
        let r = app.http.get(app.url("/livez")).send().await.expect("livez");
        assert!(r.headers().contains_key("x-request-id"));
    }
    let (status, _) = post_json(&app, &json!({"nonsense": true})).await;
    assert_eq!(status, 400);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let routes: Vec<String> = app
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "request")
        .filter_map(|l| l["span"]["route"].as_str().map(str::to_owned))
        .collect();
    assert!(
        !routes.iter().any(|r| r == "/livez" || r == "/readyz"),
        "{routes:?}"
    );
    assert!(
        routes.iter().any(|r| r == "/authentik/webhook"),
        "{routes:?}"
    );
}
