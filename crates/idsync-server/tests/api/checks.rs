//! Settings that cannot work are told at once: a wrong webhook secret leaves a log line
//! and a `/readyz` warning, `idsync check` judges the Authentik token's privileges and
//! the OIDC issuer as tokens will see it, and serve says so at start.

use std::time::Duration;

use idsync_testkit::authentik::{AuthentikStub, fixtures};
use idsync_testkit::oidc::{TestIssuer, TokenSpec};
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::{STUB_TOKEN, binary, database_of, serve_with_stub, url_for};
use crate::intake::post_json;

#[sqlx::test(migrations = false)]
async fn a_wrong_webhook_secret_is_logged_and_shown_by_readyz(pool: PgPool) {
    let stub = AuthentikStub::start(STUB_TOKEN).await;
    let app = serve_with_stub(&pool, &stub, &[]).await;
    let (status, body) = app.readyz().await;
    assert_eq!(status, 200);
    assert!(!body["warnings"].to_string().contains("webhook"), "{body}");

    for _ in 0..3 {
        let resp = app
            .http
            .post(app.url("/authentik/webhook"))
            .bearer_auth("not-the-secret")
            .json(&json!({"event_type": "model_created", "pk": 1}))
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), 401);
    }
    let (status, body) = app.readyz().await;
    assert_eq!(status, 200, "intake still works: ready, with a warning");
    let warnings = body["warnings"].to_string();
    assert!(warnings.contains("3 webhook(s) refused"), "{body}");
    assert!(warnings.contains("127.0.0.1"), "names the peer: {body}");
    let logs = app.logs();
    let refusals: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("webhook refused"))
        .collect();
    // Rate-limited: one line for the burst, with the peer, never the secret sent.
    assert_eq!(refusals.len(), 1, "{logs}");
    assert!(refusals[0].contains("127.0.0.1"), "{}", refusals[0]);
    assert!(
        !logs.contains("not-the-secret"),
        "the presented secret is never logged"
    );
    assert!(
        !logs.contains(crate::helpers::SECRET),
        "the secret is never logged"
    );
}

/// `idsync check` with serve's settings; (success, stdout).
async fn check(db: &str, env: &[(&str, &str)]) -> (bool, String) {
    let out = binary()
        .arg("check")
        .env("DATABASE_URL", url_for(db))
        .env("IDSYNC_WEBHOOK_SECRET", "s")
        .envs(env.iter().copied())
        .output()
        .await
        .expect("idsync check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn line<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| l.contains(&format!(" {name}: ")))
        .unwrap_or_else(|| panic!("no {name} line in:\n{out}"))
}

#[sqlx::test(migrations = "../../migrations")]
async fn check_judges_the_token_and_the_issuer_as_tokens_will_see_them(pool: PgPool) {
    let db = database_of(&pool).await;
    let stub = AuthentikStub::start(STUB_TOKEN).await;
    stub.upsert(fixtures::user(1).json());
    let issuer = TestIssuer::start().await;
    let stub_url = stub.url();
    let iss = issuer.issuer();
    let aud = issuer.client_id();
    let base = [
        ("IDSYNC_AUTHENTIK_URL", stub_url.as_str()),
        ("IDSYNC_AUTHENTIK_TOKEN", STUB_TOKEN),
        ("IDSYNC_OIDC_AUDIENCE", aud.as_str()),
    ];
    let with = |extra: &[(&'static str, String)]| -> Vec<(&str, String)> {
        base.iter()
            .map(|(k, v)| (*k, (*v).to_owned()))
            .chain(extra.iter().cloned())
            .collect()
    };
    let run = |env: Vec<(&'static str, String)>| {
        let db = db.clone();
        async move {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            check(&db, &env).await
        }
    };

    // All well: a least-privilege account, the exact issuer.
    let (ok, out) = run(with(&[("IDSYNC_OIDC_ISSUER", iss.clone())])).await;
    assert!(ok, "{out}");
    assert!(
        line(&out, "authentik api").contains("users")
            && line(&out, "authentik api").contains("groups"),
        "{out}"
    );
    assert!(line(&out, "authentik token").starts_with("OK"), "{out}");
    assert!(line(&out, "oidc issuer").starts_with("OK"), "{out}");

    // A superuser's token works, but is called out.
    stub.set_me(
        json!({"user": {"pk": 1, "username": "akadmin", "name": "", "is_active": true,
        "is_superuser": true, "groups": [], "roles": [], "email": "", "avatar": "", "uid": "x",
        "settings": {}, "system_permissions": ["authentik_rbac.assign_role_permissions"]}}),
    );
    let (ok, out) = run(with(&[("IDSYNC_OIDC_ISSUER", iss.clone())])).await;
    assert!(ok, "a warning is not a failure: {out}");
    let token_line = line(&out, "authentik token");
    assert!(
        token_line.starts_with("WARN") && token_line.contains("superuser"),
        "{out}"
    );

    // The issuer without its trailing slash cannot match any token: FAIL, saying so.
    let (ok, out) = run(with(&[(
        "IDSYNC_OIDC_ISSUER",
        iss.trim_end_matches('/').to_owned(),
    )]))
    .await;
    assert!(!ok, "{out}");
    let issuer_line = line(&out, "oidc issuer");
    assert!(
        issuer_line.starts_with("FAIL") && issuer_line.contains("slash"),
        "{out}"
    );

    // A public issuer with an internal discovery URL: the expected split.
    let public = format!(
        "http://localhost:{}/application/o/idsync/",
        issuer.addr().port()
    );
    let (ok, out) = run(with(&[
        ("IDSYNC_OIDC_ISSUER", public),
        ("IDSYNC_OIDC_DISCOVERY_URL", issuer.discovery_url()),
    ]))
    .await;
    assert!(ok, "{out}");
    assert!(
        line(&out, "oidc issuer").contains("public/internal split"),
        "{out}"
    );

    // A token that cannot read groups fails the API line, naming the permission.
    stub.set_forbidden(true);
    let (ok, out) = run(with(&[("IDSYNC_OIDC_ISSUER", iss.clone())])).await;
    assert!(!ok);
    assert!(line(&out, "authentik api").contains("view_user"), "{out}");
    stub.set_forbidden(false);

    // uid as subject while no synced user has one yet: nobody could be resolved.
    sqlx::query(
        "INSERT INTO users (pk, uuid, username, email, name, is_active, type, groups, registered_at, updated_at, position)
         VALUES (1, gen_random_uuid(), 'u', '', '', true, 'internal', '{}', now(), now(), 1)",
    )
    .execute(&pool)
    .await
    .expect("a user without uid");
    let (ok, out) = run(with(&[
        ("IDSYNC_OIDC_ISSUER", iss.clone()),
        ("IDSYNC_OIDC_SUBJECT", "uid".to_owned()),
    ]))
    .await;
    assert!(!ok, "{out}");
    let subject_line = line(&out, "oidc subject");
    assert!(subject_line.contains("idsync reconcile"), "{out}");
}

#[sqlx::test(migrations = false)]
async fn serve_warns_at_start_when_no_token_can_match_the_issuer(pool: PgPool) {
    let stub = AuthentikStub::start(STUB_TOKEN).await;
    let issuer = TestIssuer::start().await;
    let no_slash = issuer.issuer().trim_end_matches('/').to_owned();
    let aud = issuer.client_id();
    let app = serve_with_stub(
        &pool,
        &stub,
        &[
            ("IDSYNC_OIDC_ISSUER", no_slash.as_str()),
            ("IDSYNC_OIDC_AUDIENCE", aud.as_str()),
        ],
    )
    .await;
    let (_, body) = app
        .readyz_warns("an issuer warning", |w| w.contains("oidc"))
        .await;
    let warnings = body["warnings"].to_string();
    assert!(warnings.contains("slash"), "{warnings}");
    // Ready all the same: webhooks are still stored.
    let (status, _) = app.readyz().await;
    assert_eq!(status, 200);
    let (status, _) = post_json(&app, &json!({"event_type": "model_created", "pk": 1})).await;
    assert_eq!(status, 202);
}

#[sqlx::test(migrations = false)]
async fn with_the_public_internal_split_serve_accepts_public_tokens(pool: PgPool) {
    let stub = AuthentikStub::start(STUB_TOKEN).await;
    stub.upsert(fixtures::user(7).json());
    let issuer = TestIssuer::start().await;
    // What the compose stack sets: the issuer as the browser sees it, discovery by the
    // internal name (here 127.0.0.1 plays the internal host, localhost the public one).
    let public = format!(
        "http://localhost:{}/application/o/idsync/",
        issuer.addr().port()
    );
    let discovery = issuer.discovery_url();
    let aud = issuer.client_id();
    let app = serve_with_stub(
        &pool,
        &stub,
        &[
            ("IDSYNC_OIDC_ISSUER", public.as_str()),
            ("IDSYNC_OIDC_DISCOVERY_URL", discovery.as_str()),
            ("IDSYNC_OIDC_AUDIENCE", aud.as_str()),
        ],
    )
    .await;
    let token = issuer.token(&TokenSpec {
        iss: Some(public.clone()),
        ..TokenSpec::new().sub("7")
    });
    let resp = app
        .http
        .get(app.url("/api/whoami"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("whoami");
    assert_eq!(resp.status(), 200);
    // The check at start found the split expected: no warning.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = app.readyz().await;
    assert_eq!(status, 200);
    assert!(
        !body["warnings"].to_string().contains("oidc"),
        "no issuer warning: {body}"
    );
    assert!(
        app.logs().contains("public/internal split"),
        "{}",
        app.logs()
    );
}
