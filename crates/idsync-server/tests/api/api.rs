//! The JWT-protected API through the real binary, with a local OIDC issuer shaped like
//! Authentik's (discovery, JWKS, RSA keys, Authentik's claim set).

use std::time::Duration;

use idsync_testkit::authentik::{AuthentikStub, fixtures};
use idsync_testkit::oidc::{TestIssuer, TokenSpec};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{App, STUB_TOKEN, binary, database_of, serve_with_issuer, spawn_app, url_for};
use crate::intake::post_json;
use crate::projections::projected;

const TOKEN: &str = STUB_TOKEN;
const ADMINS: &str = "authentik Admins";

struct World {
    app: App,
    issuer: TestIssuer,
    _stub: AuthentikStub,
}

/// serve with an Authentik stub holding users 1..=5 (synced by webhooks) and a local issuer.
async fn world(pool: &PgPool) -> World {
    let stub = AuthentikStub::start(TOKEN).await;
    for pk in 1..=5 {
        stub.upsert(fixtures::user(pk).username(format!("user{pk}")).json());
    }
    let issuer = TestIssuer::start().await;
    let app = serve_with_issuer(pool, &stub, &issuer, &[]).await;
    for pk in 1..=5 {
        let (status, _) = post_json(&app, &json!({"event_type": "model_created", "pk": pk})).await;
        assert_eq!(status, 202);
    }
    projected(pool, Duration::from_secs(20)).await;
    World {
        app,
        issuer,
        _stub: stub,
    }
}

fn user_token(issuer: &TestIssuer, pk: i64) -> String {
    issuer.token(
        &TokenSpec::new()
            .sub(pk.to_string())
            .preferred_username(format!("user{pk}")),
    )
}

fn admin_token(issuer: &TestIssuer, pk: i64) -> String {
    issuer.token(&TokenSpec::new().sub(pk.to_string()).groups([ADMINS]))
}

async fn get(app: &App, path: &str, token: Option<&str>) -> (u16, Value, Option<String>) {
    let mut req = app.http.get(app.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("GET");
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, resp.json().await.unwrap_or(Value::Null), challenge)
}

#[sqlx::test(migrations = false)]
async fn a_valid_token_reads_its_own_user_and_admins_page_through_everyone(pool: PgPool) {
    let w = world(&pool).await;
    let (status, me, _) = get(&w.app, "/api/me", Some(&user_token(&w.issuer, 3))).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["pk"], 3);
    assert_eq!(me["username"], "user3");
    for field in [
        "uuid",
        "email",
        "name",
        "is_active",
        "type",
        "groups",
        "registered_at",
        "updated_at",
        "deleted_at",
    ] {
        assert!(me.get(field).is_some(), "{field} missing: {me}");
    }

    let (status, who, _) = get(&w.app, "/api/whoami", Some(&admin_token(&w.issuer, 1))).await;
    assert_eq!(status, 200, "{who}");
    assert_eq!(who["sub"], "1");
    assert_eq!(who["user_pk"], 1);
    assert_eq!(who["admin"], true);
    assert_eq!(who["via"], "bearer");
    let (_, who, _) = get(&w.app, "/api/whoami", Some(&user_token(&w.issuer, 3))).await;
    assert_eq!(who["admin"], false);

    let (status, own, _) = get(&w.app, "/api/users/3", Some(&user_token(&w.issuer, 3))).await;
    assert_eq!((status, &own["pk"]), (200, &json!(3)));
    let (status, events, _) = get(
        &w.app,
        "/api/users/3/events",
        Some(&user_token(&w.issuer, 3)),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(events["events"][0]["type"], "UserRegistered");

    // A non-admin reading another user, or the whole list: 403 insufficient_scope.
    for path in [
        "/api/users/4",
        "/api/users/4/events",
        "/api/users",
        "/api/events",
    ] {
        let (status, body, challenge) = get(&w.app, path, Some(&user_token(&w.issuer, 3))).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["error"], "forbidden");
        assert!(challenge.is_some_and(|c| c.contains(r#"error="insufficient_scope""#)));
    }

    // An admin pages through the users with keyset paging.
    let admin = admin_token(&w.issuer, 1);
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let (status, page, _) = get(
            &w.app,
            &format!("/api/users?after={after}&limit=2"),
            Some(&admin),
        )
        .await;
        assert_eq!(status, 200, "{page}");
        for u in page["users"].as_array().expect("users") {
            seen.push(u["pk"].as_i64().expect("pk"));
        }
        match page["next_after"].as_i64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(seen, vec![1, 2, 3, 4, 5]);
    let (status, log, _) = get(&w.app, "/api/events?after=2&limit=2", Some(&admin)).await;
    assert_eq!(status, 200);
    let positions: Vec<i64> = log["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["position"].as_i64().expect("pos"))
        .collect();
    assert_eq!(positions, vec![3, 4]);

    // Bad paging parameters are a clear 400.
    for q in ["limit=0", "limit=5000", "after=-1", "after=abc"] {
        let (status, body, _) = get(&w.app, &format!("/api/events?{q}"), Some(&admin)).await;
        assert_eq!(status, 400, "{q}: {body}");
        assert_eq!(body["error"], "invalid_request");
    }
    // Known token, unsynced user.
    let (status, body, _) = get(&w.app, "/api/me", Some(&user_token(&w.issuer, 99))).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
}

#[sqlx::test(migrations = false)]
async fn admins_search_users_by_prefix_and_type(pool: PgPool) {
    let stub = AuthentikStub::start(TOKEN).await;
    let people = [
        (11, "jane", "jane@example.org", "Jane Doe", "internal"),
        (12, "janet", "jt@example.org", "Janet Roe", "internal"),
        (13, "bob", "bob@jane.example", "Bob_Smith", "external"),
        (
            14,
            "ak-outpost-1",
            "",
            "Outpost",
            "internal_service_account",
        ),
        (15, "x%y", "percent@example.org", "Per Cent", "internal"),
    ];
    for (pk, username, email, name, user_type) in people {
        stub.upsert(
            fixtures::user(pk)
                .username(username)
                .email(email)
                .name(name)
                .user_type(user_type)
                .json(),
        );
    }
    let issuer = TestIssuer::start().await;
    let app = serve_with_issuer(&pool, &stub, &issuer, &[]).await;
    for (pk, ..) in people {
        let (status, _) = post_json(&app, &json!({"event_type": "model_created", "pk": pk})).await;
        assert_eq!(status, 202);
    }
    projected(&pool, Duration::from_secs(20)).await;
    let admin = admin_token(&issuer, 11);
    let pks = |page: &Value| -> Vec<i64> {
        page["users"]
            .as_array()
            .expect("users")
            .iter()
            .map(|u| u["pk"].as_i64().expect("pk"))
            .collect()
    };
    for (query, expected) in [
        ("q=jan", vec![11, 12]),  // username prefix
        ("q=JANE", vec![11, 12]), // case-insensitive; not bob@jane (not a prefix)
        ("q=jane%20d", vec![11]), // name prefix ("Jane Doe")
        ("q=jt%40", vec![12]),    // email prefix
        ("q=bob_", vec![13]),     // `_` is literal, not a wildcard
        ("q=x%25", vec![15]),     // so is `%`
        ("q=%25", vec![]),        // a bare `%` matches no prefix
        ("type=external", vec![13]),
        ("type=internal_service_account", vec![14]),
        ("q=j&type=internal", vec![11, 12]),
        ("q=nobody", vec![]),
    ] {
        let (status, page, _) = get(&app, &format!("/api/users?{query}"), Some(&admin)).await;
        assert_eq!(status, 200, "{query}: {page}");
        assert_eq!(pks(&page), expected, "{query}");
    }
    // Keyset paging works with a search.
    let (_, first, _) = get(&app, "/api/users?q=jan&limit=1", Some(&admin)).await;
    assert_eq!(
        (pks(&first), first["next_after"].as_i64()),
        (vec![11], Some(11))
    );
    let (_, second, _) = get(&app, "/api/users?q=jan&limit=1&after=11", Some(&admin)).await;
    assert_eq!(pks(&second), vec![12]);
    // Bad filters are a clear 400.
    let long = "a".repeat(101);
    for query in [format!("q={long}"), "type=robot".to_owned()] {
        let (status, body, _) = get(&app, &format!("/api/users?{query}"), Some(&admin)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_request")),
            "{body}"
        );
    }
    // Not for non-admins.
    let (status, _, _) = get(&app, "/api/users?q=jan", Some(&user_token(&issuer, 12))).await;
    assert_eq!(status, 403);
}

#[sqlx::test(migrations = false)]
async fn every_bad_token_is_a_401_with_the_right_challenge(pool: PgPool) {
    let w = world(&pool).await;
    let spec = TokenSpec::new().sub("3");
    let past = TokenSpec::new().sub("3").exp_in(-120);
    let cases: Vec<(&str, String)> = vec![
        ("alg none", w.issuer.token_alg_none(&spec)),
        (
            "HS256 with the public key",
            w.issuer.token_hs256_with_public_key(&spec),
        ),
        ("expired beyond leeway", w.issuer.token(&past)),
        (
            "nbf in the future",
            w.issuer.token(&TokenSpec::new().sub("3").nbf_in(600)),
        ),
        (
            "wrong iss",
            w.issuer.token(
                &TokenSpec::new()
                    .sub("3")
                    .iss("http://evil.example/application/o/idsync/"),
            ),
        ),
        (
            "wrong aud",
            w.issuer
                .token(&TokenSpec::new().sub("3").aud("someone-else")),
        ),
        ("no exp", w.issuer.token_without_exp(&spec)),
        ("unknown kid", w.issuer.token_with_unknown_kid(&spec)),
        ("garbage", "not.a.jwt".to_owned()),
        ("truncated", {
            let t = w.issuer.token(&spec);
            t[..t.len() - 10].to_owned()
        }),
        // Past the verifier's 16 KiB limit but inside the 32 KiB request head (a larger
        // head is answered 431 before any token is read: see hostile.rs).
        (
            "oversized",
            "a".repeat(8_000) + "." + &"b".repeat(8_000) + "." + &"c".repeat(8_000),
        ),
    ];
    for (name, token) in cases {
        let (status, body, challenge) = get(&w.app, "/api/me", Some(&token)).await;
        assert_eq!(status, 401, "{name}: {body}");
        assert_eq!(body["error"], "invalid_token", "{name}: {body}");
        let challenge = challenge.unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer") && challenge.contains(r#"error="invalid_token""#),
            "{name}: {challenge}"
        );
    }
    // No token at all: a bare challenge.
    let (status, _, challenge) = get(&w.app, "/api/me", None).await;
    assert_eq!(status, 401);
    assert_eq!(challenge.as_deref(), Some(r#"Bearer realm="idsync""#));
    // A token in the query string is refused, even a valid one.
    let valid = user_token(&w.issuer, 3);
    let (status, body, challenge) =
        get(&w.app, &format!("/api/me?access_token={valid}"), None).await;
    assert_eq!(status, 401, "{body}");
    assert!(challenge.is_some_and(|c| c.contains("invalid_request")));
    // The valid one in the header works.
    assert_eq!(get(&w.app, "/api/me", Some(&valid)).await.0, 200);
}

#[sqlx::test(migrations = false)]
async fn stream_tickets_are_single_use(pool: PgPool) {
    let w = world(&pool).await;
    let resp = w
        .app
        .http
        .post(w.app.url("/api/stream-tickets"))
        .bearer_auth(user_token(&w.issuer, 2))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["expires_in"], 30);
    assert!(body["ticket"].as_str().is_some_and(|t| t.len() >= 32));
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM stream_tickets")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(stored, 1);
    let leaked: i64 = sqlx::query_scalar("SELECT count(*) FROM stream_tickets WHERE encode(ticket_hash, 'escape') LIKE '%' || $1 || '%'")
        .bind(body["ticket"].as_str().expect("ticket"))
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(leaked, 0, "only a hash is stored");
    let unauthenticated = w
        .app
        .http
        .post(w.app.url("/api/stream-tickets"))
        .send()
        .await
        .expect("POST");
    assert_eq!(unauthenticated.status(), 401);
}

#[sqlx::test(migrations = false)]
async fn openapi_lists_every_route_and_docs_ship_with_the_binary(pool: PgPool) {
    let w = world(&pool).await;
    let (status, doc, _) = get(&w.app, "/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let paths = doc["paths"].as_object().expect("paths");
    // Every route of docs/contract.md is documented...
    for (method, path) in [
        ("post", "/authentik/webhook"),
        ("get", "/livez"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/api/me"),
        ("get", "/api/users"),
        ("get", "/api/users/{pk}"),
        ("get", "/api/users/{pk}/events"),
        ("delete", "/api/users/{pk}/personal-data"),
        ("get", "/api/events"),
        ("post", "/api/stream-tickets"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} not in the document"
        );
    }
    // ...and every documented route is served (no 404/405 from the router).
    let admin = admin_token(&w.issuer, 1);
    for (path, item) in paths {
        for method in item.as_object().expect("path item").keys() {
            let url = w.app.url(&path.replace("{pk}", "1"));
            let req = match method.as_str() {
                "get" => w.app.http.get(url),
                "post" => w
                    .app
                    .http
                    .post(url)
                    .header("content-type", "application/json")
                    .body("{}"),
                // User 1 exists: erasing it answers 204, not a 404 of the router.
                "delete" => w.app.http.delete(url),
                other => panic!("unexpected method {other}"),
            };
            let status = req
                .bearer_auth(&admin)
                .send()
                .await
                .expect("request")
                .status()
                .as_u16();
            assert!(status != 404 && status != 405, "{method} {path} → {status}");
        }
    }
    let docs = w
        .app
        .http
        .get(w.app.url("/docs/"))
        .send()
        .await
        .expect("docs");
    assert_eq!(docs.status(), 200);
    assert!(
        docs.text().await.expect("html").contains("swagger"),
        "the UI page is served"
    );

    // Valid OpenAPI 3.1, checked by a real validator (from the project's Python env).
    let file = std::env::temp_dir().join(format!("idsync-openapi-{}.json", std::process::id()));
    std::fs::write(&file, doc.to_string()).expect("write");
    let out = std::process::Command::new(idsync_testkit::tools::python())
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .expect("run openapi-spec-validator");
    let _ = std::fs::remove_file(file);
    assert!(
        out.status.success(),
        "invalid OpenAPI: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[sqlx::test(migrations = false)]
async fn without_an_issuer_protected_endpoints_say_what_to_set(pool: PgPool) {
    let db = database_of(&pool).await;
    let app = spawn_app(&url_for(&db), &[]).await;
    app.wait_ready().await;
    let (status, body, _) = get(&app, "/api/me", Some("anything")).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"], "oidc_not_configured");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("IDSYNC_OIDC_ISSUER"))
    );
}

#[sqlx::test(migrations = false)]
async fn issuer_down_with_an_empty_cache_is_503_not_500(pool: PgPool) {
    // Down from the start, so serve's own check at start cannot have fetched the keys.
    let stub = AuthentikStub::start(TOKEN).await;
    let issuer = TestIssuer::start().await;
    issuer.set_down(true);
    let app = serve_with_issuer(&pool, &stub, &issuer, &[]).await;
    let token = user_token(&issuer, 3);
    let (status, body, _) = get(&app, "/api/me", Some(&token)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "auth_unavailable");
    // And /readyz says why, as a warning (webhooks are still stored).
    app.readyz_warns("an issuer warning", |w| w.contains("oidc"))
        .await;
}

#[sqlx::test(migrations = false)]
async fn check_reports_each_dependency(pool: PgPool) {
    let w = world(&pool).await;
    let db = database_of(&pool).await;
    let run = |extra: Vec<(&'static str, String)>| {
        let db = db.clone();
        async move {
            let out = binary()
                .arg("check")
                .env("DATABASE_URL", url_for(&db))
                .env("IDSYNC_WEBHOOK_SECRET", "x")
                .envs(extra)
                .output()
                .await
                .expect("run check");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        }
    };
    let good = vec![
        ("IDSYNC_AUTHENTIK_URL", w._stub.url()),
        ("IDSYNC_AUTHENTIK_TOKEN", TOKEN.to_owned()),
        ("IDSYNC_OIDC_ISSUER", w.issuer.issuer()),
        ("IDSYNC_OIDC_AUDIENCE", w.issuer.client_id()),
    ];
    let (ok, out) = run(good.clone()).await;
    assert!(ok, "{out}");
    for name in ["database", "authentik api", "oidc issuer"] {
        assert!(
            out.lines().any(|l| l.starts_with("OK") && l.contains(name)),
            "{name}: {out}"
        );
    }
    let mut bad = good.clone();
    bad[1].1 = "wrong-token".to_owned();
    let (ok, out) = run(bad).await;
    assert!(!ok);
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("authentik api") && l.contains("403")),
        "{out}"
    );
}
