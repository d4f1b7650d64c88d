//! Start-up order: a process that listens before its migrations have run must not
//! answer 500 (and lose the webhook) for a table that does not exist yet.

use std::collections::BTreeSet;
use std::time::Duration;

use idsync_testkit::authentik::{AuthentikStub, fixtures};
use serde_json::json;
use sqlx::migrate::Migrate;
use sqlx::{Connection, Executor, PgConnection, PgPool};

use crate::helpers::{STUB_TOKEN, admin, spawn_app, url_for};
use crate::intake::post_json;
use crate::sync::{events, settled};

#[tokio::test]
async fn webhooks_while_migrations_are_held_back_get_503_then_every_202_becomes_an_event() {
    let name = format!("idsync_startup_{}", uuid::Uuid::new_v4().simple());
    let admin = admin().await;
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create database");
    // sqlx serialises migrations with an advisory lock per database; holding it keeps
    // serve's migrations from starting, as a long migration or a slow database would.
    let mut holder = PgConnection::connect(&url_for(&name))
        .await
        .expect("connect");
    holder.lock().await.expect("take the migration lock");

    let stub = AuthentikStub::start(STUB_TOKEN).await;
    stub.upsert_many(fixtures::users(1..=20));
    let stub_url = stub.url();
    let app = spawn_app(
        &url_for(&name),
        &[
            ("IDSYNC_AUTHENTIK_URL", stub_url.as_str()),
            ("IDSYNC_AUTHENTIK_TOKEN", STUB_TOKEN),
            ("IDSYNC_SYNC_RETRY_MIN", "50ms"),
            ("IDSYNC_SYNC_RETRY_MAX", "400ms"),
        ],
    )
    .await;

    let webhook = |pk: i64| {
        json!({"event_id": format!("startup-{pk}"), "action": "model_created",
               "model_app": "authentik_core", "model_name": "user", "model_pk": pk})
    };
    // From the first moment: while the lock is held, nothing can be stored.
    let mut held_answers = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    while tokio::time::Instant::now() < until {
        for pk in 1..=10 {
            let response = app
                .http
                .post(app.url("/authentik/webhook"))
                .bearer_auth(crate::helpers::SECRET)
                .json(&webhook(pk))
                .send()
                .await
                .expect("post");
            let status = response.status().as_u16();
            assert_eq!(status, 503, "while migrations are held back");
            assert_eq!(
                response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()),
                Some("1")
            );
            let body: serde_json::Value = response.json().await.expect("JSON error");
            assert_eq!(body["error"], "starting", "{body}");
            held_answers += 1;
        }
    }
    let (status, readyz) = app.readyz().await;
    assert_eq!(status, 503);
    assert!(
        readyz["reasons"].to_string().contains("migrations"),
        "{readyz}"
    );
    assert!(
        app.http
            .get(app.url("/livez"))
            .send()
            .await
            .expect("livez")
            .status()
            .is_success()
    );

    // Release the lock while webhooks keep coming; each is sent until accepted, as
    // Authentik's retries would.
    holder.unlock().await.expect("release the migration lock");
    let mut accepted = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while accepted.len() < 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all accepted in 30 s"
        );
        for pk in 1..=20 {
            if accepted.contains(&pk) {
                continue;
            }
            let (status, body) = post_json(&app, &webhook(pk)).await;
            match status {
                202 | 200 => {
                    accepted.insert(pk);
                }
                503 => {}
                other => panic!("answer {other} {body}: only 202 or 503 are acceptable"),
            }
        }
    }

    let pool = PgPool::connect(&url_for(&name)).await.expect("pool");
    settled(&pool, Duration::from_secs(30)).await;
    let registered: Vec<i64> = events(&pool)
        .await
        .into_iter()
        .filter(|(_, kind, _, _)| kind == "UserRegistered")
        .map(|(pk, _, _, _)| pk)
        .collect();
    let unique: BTreeSet<i64> = registered.iter().copied().collect();
    assert_eq!(
        unique, accepted,
        "every accepted webhook became exactly one registration"
    );
    assert_eq!(registered.len(), 20, "no user registered twice");
    assert!(held_answers > 0);
    assert!(
        !app.logs().contains("\"level\":\"ERROR\""),
        "no error logged: {}",
        app.logs()
    );

    drop(app);
    pool.close().await;
    drop(holder);
    admin
        .execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str())
        .await
        .expect("drop database");
}
