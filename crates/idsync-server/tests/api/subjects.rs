//! Who the caller is, in every way Authentik's `sub_mode` can say it, and callers whose
//! user Authentik never sent a webhook for. Through the real binary, with the Authentik
//! stub and a local issuer.

use std::time::Duration;

use idsync_testkit::authentik::{AuthentikStub, fixtures};
use idsync_testkit::oidc::{TestIssuer, TokenSpec};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{App, STUB_TOKEN, serve_with_issuer};
use crate::intake::post_json;
use crate::projections::projected;

async fn me(app: &App, token: &str) -> (u16, Value) {
    let resp = app
        .http
        .get(app.url("/api/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET /api/me");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn jane() -> Value {
    fixtures::user(7)
        .username("jane")
        .email("jane@example.org")
        .groups(&["staff"])
        .json()
}

/// serve with `subject` as IDSYNC_OIDC_SUBJECT, jane (pk 7) synced by a webhook.
async fn serve(pool: &PgPool, subject: &str) -> (App, TestIssuer, AuthentikStub) {
    let stub = AuthentikStub::start(STUB_TOKEN).await;
    stub.upsert(jane());
    let issuer = TestIssuer::start().await;
    let app = serve_with_issuer(pool, &stub, &issuer, &[("IDSYNC_OIDC_SUBJECT", subject)]).await;
    let (status, _) = post_json(&app, &json!({"event_type": "model_created", "pk": 7})).await;
    assert_eq!(status, 202);
    projected(pool, Duration::from_secs(20)).await;
    (app, issuer, stub)
}

#[sqlx::test(migrations = false)]
async fn every_sub_mode_resolves_the_caller(pool: PgPool) {
    let user = jane();
    let uid = user["uid"].as_str().expect("uid").to_owned();
    assert_eq!(uid.len(), 64, "Authentik's uid is 64 hex");
    // (IDSYNC_OIDC_SUBJECT, the `sub` Authentik would put in the token for that mode)
    for (mode, sub) in [
        ("pk", "7".to_owned()),
        ("uid", uid.clone()),
        ("username", "jane".to_owned()),
        ("email", "jane@example.org".to_owned()),
        ("uuid", fixtures::user_uuid(7).to_string()),
    ] {
        // One serve per mode, on the same database (jane is synced once, then unchanged).
        let (app, issuer, _stub) = serve(&pool, mode).await;
        let token = issuer.token(&TokenSpec::new().sub(sub.clone()));
        let (status, body) = me(&app, &token).await;
        assert_eq!(status, 200, "{mode}: {body}");
        assert_eq!(body["pk"], 7, "{mode}");
        assert_eq!(
            body["uid"],
            uid.as_str(),
            "{mode}: the read model keeps the uid"
        );
    }
}

#[sqlx::test(migrations = false)]
async fn an_authentik_shaped_id_token_is_refused(pool: PgPool) {
    let (app, issuer, _stub) = serve(&pool, "pk").await;
    let resp = app
        .http
        .get(app.url("/api/me"))
        .bearer_auth(issuer.id_token(&TokenSpec::new().sub("7")))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 401);
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(challenge.contains("ID token"), "{challenge}");
    // The access token beside it works.
    let (status, _) = me(&app, &issuer.token(&TokenSpec::new().sub("7"))).await;
    assert_eq!(status, 200);
}

#[sqlx::test(migrations = false)]
async fn a_caller_whose_user_sent_no_webhook_is_synced_on_their_first_request(pool: PgPool) {
    let (app, issuer, stub) = serve(&pool, "pk").await;
    // The bootstrap admin: in Authentik, never announced by a webhook.
    stub.upsert(
        fixtures::user(1)
            .username("akadmin")
            .groups(&["authentik Admins"])
            .json(),
    );
    let token = issuer.token(&TokenSpec::new().sub("1"));
    let (status, body) = me(&app, &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["username"], "akadmin");
    let format: String = sqlx::query_scalar("SELECT format FROM webhook_inbox WHERE user_pk = 1")
        .fetch_one(&pool)
        .await
        .expect("the on-demand item");
    assert_eq!(format, "on_demand");

    // A subject Authentik does not know: 404, and it is not asked again at once.
    let unknown = issuer.token(&TokenSpec::new().sub("404"));
    for _ in 0..5 {
        let (status, body) = me(&app, &unknown).await;
        assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    }
    assert_eq!(stub.fetches(404), 1, "negative answers are remembered");
}

#[sqlx::test(migrations = false)]
async fn by_username_a_caller_is_looked_up_with_authentiks_filter(pool: PgPool) {
    let (app, issuer, stub) = serve(&pool, "username").await;
    stub.upsert(fixtures::user(12).username("outpost-svc").json());
    let (status, body) = me(&app, &issuer.token(&TokenSpec::new().sub("outpost-svc"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pk"], 12);
}

#[sqlx::test(migrations = false)]
async fn serve_reconciles_shortly_after_it_starts(pool: PgPool) {
    let stub = AuthentikStub::start(STUB_TOKEN).await;
    stub.upsert_many(fixtures::users(1..=3));
    let db = crate::helpers::database_of(&pool).await;
    let app = crate::helpers::spawn_app(
        &crate::helpers::url_for(&db),
        &[
            ("IDSYNC_AUTHENTIK_URL", stub.url().as_str()),
            ("IDSYNC_AUTHENTIK_TOKEN", STUB_TOKEN),
            ("IDSYNC_RECONCILE_START_DELAY", "1s"),
        ],
    )
    .await;
    app.wait_ready().await;
    // No webhook at all.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let synced: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
            .fetch_one(&pool)
            .await
            .expect("count");
        if synced == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "users not reconciled after start; logs:\n{}",
            app.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sources: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT metadata->>'source' FROM events")
            .fetch_all(&pool)
            .await
            .expect("sources");
    assert_eq!(sources, vec!["reconcile".to_owned()]);
}
