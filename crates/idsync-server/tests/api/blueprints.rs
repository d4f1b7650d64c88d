//! The webhook mappings of `authentik/blueprints/idsync-sync.yaml`, run as Authentik's
//! worker runs them, against the real binary: what they produce for user events, group
//! events and the transport's Test button must be what idsync's intake accepts.
//!
//! The test takes the body and headers mappings out of the blueprint (following the
//! transport's `!KeyOf`s, so a renamed or rewired mapping is what gets tested), and hands
//! them with stand-in events to `authentik/tests/webhook_mappings.py` (Python, standard
//! library only), which resolves the blueprint's `!Format`/`!Env`, wraps each expression
//! in `def handler(user, request, notification):`, executes it, sanitises the result and
//! serialises the body as Authentik does. The bodies and headers it prints are POSTed here
//! as Authentik would send them.

use std::collections::BTreeSet;
use std::time::Duration;

use idsync_testkit::authentik::{AuthentikStub, fixtures};
use idsync_testkit::reference;
use serde_json::{Map, Value, json};
use serde_norway::Value as Yaml;
use sqlx::PgPool;

use crate::helpers::{App, SECRET, database_of, serve_with_stub, spawn_app, url_for};

/// What Authentik 2026.2.2 sends as `User-Agent`.
const USER_AGENT: &str = "authentik@2026.2.2";

/// The blueprint `idsync-sync.yaml` as YAML.
fn sync_blueprint() -> Yaml {
    let path = reference::repo_root()
        .join("authentik")
        .join("blueprints")
        .join("idsync-sync.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A YAML value as JSON, with tags as `{"$tag": "!Name", "value": ...}` for the harness.
fn tagged_json(value: &Yaml) -> Value {
    match value {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(*b),
        Yaml::Number(n) => serde_json::to_value(n).expect("number"),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Sequence(items) => Value::Array(items.iter().map(tagged_json).collect()),
        Yaml::Mapping(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.as_str().expect("string key").to_owned(), tagged_json(v)))
                .collect::<Map<_, _>>(),
        ),
        Yaml::Tagged(tagged) => {
            json!({"$tag": tagged.tag.to_string(), "value": tagged_json(&tagged.value)})
        }
    }
}

/// `{"body": {"name", "expression"}, "headers": {...}}`: the mappings the blueprint's
/// webhook transport uses.
fn transport_mappings() -> Value {
    let doc = sync_blueprint();
    let entries = doc["entries"].as_sequence().expect("entries");
    let transports: Vec<&Yaml> = entries
        .iter()
        .filter(|e| e["model"] == "authentik_events.notificationtransport")
        .collect();
    assert_eq!(transports.len(), 1, "one webhook transport");
    let transport = transports[0];
    let mut out = Map::new();
    for (part, field) in [
        ("body", "webhook_mapping_body"),
        ("headers", "webhook_mapping_headers"),
    ] {
        let Yaml::Tagged(key_of) = &transport["attrs"][field] else {
            panic!("the transport's {field} is not a !KeyOf");
        };
        assert!(key_of.tag == "KeyOf", "{field}: {key_of:?}");
        let id = key_of.value.as_str().expect("id");
        let mapping = entries
            .iter()
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("no entry with id {id}"));
        assert_eq!(
            mapping["model"], "authentik_events.notificationwebhookmapping",
            "{field}"
        );
        out.insert(
            part.to_owned(),
            json!({
                "name": tagged_json(&mapping["identifiers"]["name"]),
                "expression": tagged_json(&mapping["attrs"]["expression"]),
            }),
        );
    }
    Value::Object(out)
}

/// One delivery as the mappings render it.
#[derive(Debug)]
struct Rendered {
    body: String,
    headers: Vec<(String, String)>,
}

/// Runs the mappings for `cases` with `env` as the worker's environment at apply time;
/// one result per case, `Err` with the mapping's exception.
async fn render(env: Value, cases: Vec<Value>) -> Vec<Result<Rendered, String>> {
    let input = json!({"mappings": transport_mappings(), "env": env, "cases": cases});
    let script = reference::repo_root()
        .join("authentik")
        .join("tests")
        .join("webhook_mappings.py");
    let output = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new("python3")
            .arg(&script)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs (the tests need Python 3, standard library only)");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.to_string().as_bytes())
            .expect("write to python3");
        child.wait_with_output().expect("python3 output")
    })
    .await
    .expect("join");
    assert!(
        output.status.success(),
        "webhook_mappings.py failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).expect("JSON from the harness");
    answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| match r.get("error") {
            Some(e) => Err(e.as_str().unwrap_or_default().to_owned()),
            None => Ok(Rendered {
                body: r["body"].as_str().expect("body").to_owned(),
                headers: r["headers"]
                    .as_object()
                    .expect("headers")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().expect("header value").to_owned()))
                    .collect(),
            }),
        })
        .collect()
}

fn env(secret: &str) -> Value {
    json!({"IDSYNC_WEBHOOK_SECRET": secret})
}

/// The notified user: the service account, as the rule's destination group holds it.
fn recipient() -> Value {
    json!({"pk": 5, "username": "idsync-sync", "email": "", "name": "idsync sync (service account)",
           "type": "service_account"})
}

/// An audit event of a model change as Authentik stores it, made inside an API request by
/// the admin (`Event.new(...).from_http(request)`).
fn model_event(id: &str, action: &str, model_name: &str, pk: Value, name: &str) -> Value {
    let path = if model_name == "user" {
        "/api/v3/core/users/"
    } else {
        "/api/v3/core/groups/"
    };
    json!({
        "name": format!("{action} {model_name} {pk}"),
        "recipient": recipient(),
        "event": {
            "pk": id,
            "action": action,
            "app": "authentik.events.middleware",
            "created": "2026-11-22T10:00:00.123456Z",
            "user": {"pk": 1, "username": "akadmin", "email": "admin@example.org"},
            "context": {
                "asn": {"asn": 64496, "as_org": null, "network": "192.0.2.0/24"},
                "geo": {"city": "", "country": "GB", "continent": "EU", "lat": 51.5, "long": -0.12},
                "model": {"pk": pk, "app": "authentik_core", "name": name, "model_name": model_name},
                "http_request": {"args": {}, "path": path, "method": "POST",
                                 "request_id": "2c4d", "user_agent": "Mozilla/5.0"}
            }
        }
    })
}

/// What the transport's Test button builds: `Event.new(action="notification_test",
/// user=..., context={"foo": "bar"})` (so the action gains the `custom_` prefix, and the
/// keyword arguments land in the context), sent to the admin who pressed it.
fn test_button_event(id: &str) -> Value {
    json!({
        "name": "Test button",
        "recipient": {"pk": 1, "username": "akadmin", "email": "admin@example.org"},
        "body": "Test Notification from transport idsync",
        "event": {
            "pk": id,
            "action": "custom_notification_test",
            "app": "authentik.events.api.notification_transports",
            "created": "2026-11-22T10:05:00Z",
            "user": {},
            "context": {"user": {"pk": 1, "username": "akadmin", "email": "admin@example.org"},
                        "context": {"foo": "bar"}}
        }
    })
}

/// POST as Authentik's webhook transport does: `requests.post(url, json=body,
/// headers=mapped)`, i.e. the mapped headers plus JSON content type and its user agent.
async fn deliver(app: &App, rendered: &Rendered) -> (u16, Value) {
    let mut req = app
        .http
        .post(app.url("/authentik/webhook"))
        .header("content-type", "application/json")
        .header("user-agent", USER_AGENT)
        .body(rendered.body.clone());
    for (name, value) in &rendered.headers {
        req = req.header(name, value);
    }
    let resp = req.send().await.expect("POST webhook");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn rendered(result: &Result<Rendered, String>) -> &Rendered {
    result
        .as_ref()
        .unwrap_or_else(|e| panic!("the mapping failed: {e}"))
}

/// (user pk, event type, metadata) in global order.
async fn events(pool: &PgPool) -> Vec<(String, String, Value)> {
    sqlx::query_as(
        "SELECT aggregate_id, event_type, metadata::jsonb FROM events ORDER BY global_position",
    )
    .fetch_all(pool)
    .await
    .expect("events")
}

async fn inbox(pool: &PgPool) -> Vec<(String, i64, String, Option<String>)> {
    sqlx::query_as("SELECT action, user_pk, format, event_id FROM webhook_inbox ORDER BY seq")
        .fetch_all(pool)
        .await
        .expect("inbox")
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[sqlx::test(migrations = false)]
async fn user_events_rendered_by_the_mappings_become_idsync_events(pool: PgPool) {
    let stub = AuthentikStub::start(crate::helpers::STUB_TOKEN).await;
    stub.upsert(
        fixtures::user(7)
            .username("jane")
            .name("Jane O'Brien")
            .email("jane@example.org")
            .groups(&["staff"])
            .json(),
    );
    let app = serve_with_stub(&pool, &stub, &[("IDSYNC_AUTHENTIK_TIMEOUT", "2s")]).await;

    // Creating a user through Authentik's API logs model_updated, then model_created.
    let (updated_first, created, updated, deleted) = (uuid(), uuid(), uuid(), uuid());
    let results = render(
        env(SECRET),
        vec![
            model_event(
                &updated_first,
                "model_updated",
                "user",
                json!(7),
                "Jane O'Brien",
            ),
            model_event(&created, "model_created", "user", json!(7), "Jane O'Brien"),
            model_event(&updated, "model_updated", "user", json!(7), "Jane O'Brien"),
            model_event(&deleted, "model_deleted", "user", json!(7), "Jane O'Brien"),
        ],
    )
    .await;

    // The body is idsync's own format, with the event's id as Authentik's UUID text.
    let body: Value = serde_json::from_str(&rendered(&results[1]).body).expect("JSON body");
    assert_eq!(
        body.as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([
            "event_id",
            "action",
            "model_app",
            "model_name",
            "model_pk",
            "created",
            "actor"
        ])
    );
    assert_eq!(body["event_id"], created.as_str());
    assert_eq!(
        (
            &body["action"],
            &body["model_app"],
            &body["model_name"],
            &body["model_pk"]
        ),
        (
            &json!("model_created"),
            &json!("authentik_core"),
            &json!("user"),
            &json!(7)
        )
    );
    assert!(
        chrono::DateTime::parse_from_rfc3339(body["created"].as_str().expect("created")).is_ok(),
        "{body}"
    );
    assert_eq!(body["actor"], json!({"pk": 1, "username": "akadmin"}));
    assert_eq!(
        rendered(&results[1]).headers,
        vec![("Authorization".to_owned(), format!("Bearer {SECRET}"))]
    );

    let mut inbox_ids = Vec::new();
    for result in &results[..2] {
        let (status, answer) = deliver(&app, rendered(result)).await;
        assert_eq!(
            (status, &answer["status"]),
            (202, &json!("accepted")),
            "{answer}"
        );
        inbox_ids.push(answer["inbox_id"].clone());
    }
    // Authentik retries a delivery it thinks failed: the same event id again.
    let (status, answer) = deliver(&app, rendered(&results[1])).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"status": "duplicate", "inbox_id": inbox_ids[1]})
    );
    crate::sync::settled(&pool, Duration::from_secs(20)).await;

    stub.upsert(
        fixtures::user(7)
            .username("jane")
            .name("Jane O'Brien")
            .email("jane@new.example")
            .groups(&["staff"])
            .json(),
    );
    let (status, answer) = deliver(&app, rendered(&results[2])).await;
    assert_eq!(
        (status, &answer["status"]),
        (202, &json!("accepted")),
        "{answer}"
    );
    crate::sync::settled(&pool, Duration::from_secs(20)).await;
    stub.remove(7);
    let (status, answer) = deliver(&app, rendered(&results[3])).await;
    assert_eq!(
        (status, &answer["status"]),
        (202, &json!("accepted")),
        "{answer}"
    );
    crate::sync::settled(&pool, Duration::from_secs(20)).await;

    assert_eq!(
        inbox(&pool).await,
        vec![
            (
                "model_updated".into(),
                7,
                "mapping".into(),
                Some(updated_first.clone())
            ),
            (
                "model_created".into(),
                7,
                "mapping".into(),
                Some(created.clone())
            ),
            (
                "model_updated".into(),
                7,
                "mapping".into(),
                Some(updated.clone())
            ),
            (
                "model_deleted".into(),
                7,
                "mapping".into(),
                Some(deleted.clone())
            ),
        ]
    );
    let events = events(&pool).await;
    let summary: Vec<(&str, &str)> = events
        .iter()
        .map(|(pk, t, _)| (pk.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("7", "UserRegistered"),
            ("7", "UserUpdated"),
            ("7", "UserDeleted")
        ],
        "two deliveries for one creation are one registration; logs:\n{}",
        app.logs()
    );
    assert_eq!(events[0].2["event_id"], updated_first.as_str());
    assert_eq!(events[1].2["event_id"], updated.as_str());
    assert_eq!(events[2].2["event_id"], deleted.as_str());
}

#[sqlx::test(migrations = false)]
async fn group_events_rendered_by_the_mappings_reach_the_members(pool: PgPool) {
    let stub = AuthentikStub::start(crate::helpers::STUB_TOKEN).await;
    stub.upsert(fixtures::user(1).groups(&["staff"]).json());
    stub.upsert(fixtures::user(2).groups(&["staff", "ops"]).json());
    stub.upsert(fixtures::user(3).groups(&["ops"]).json());
    let app = serve_with_stub(&pool, &stub, &[]).await;
    for pk in 1..=3 {
        let (status, answer) =
            crate::intake::post_json(&app, &json!({"event_type": "model_created", "pk": pk})).await;
        assert_eq!(status, 202, "{answer}");
    }
    crate::sync::settled(&pool, Duration::from_secs(20)).await;
    let group = stub.group_uuid("staff").expect("staff");
    let group_pk = group.simple().to_string();

    // Renamed in Authentik; only the group's model_updated tells idsync.
    stub.rename_group("staff", "team");
    let deliver_group = async |action: &str| {
        let results = render(
            env(SECRET),
            vec![model_event(
                &uuid(),
                action,
                "group",
                json!(group_pk),
                "team",
            )],
        )
        .await;
        let rendered = rendered(&results[0]);
        let body: Value = serde_json::from_str(&rendered.body).expect("JSON body");
        assert_eq!(body["model_name"], "group");
        assert_eq!(
            body["model_pk"],
            group_pk.as_str(),
            "the group's UUID, 32 hex"
        );
        let (status, answer) = deliver(&app, rendered).await;
        assert_eq!(
            (status, answer["status"].as_str()),
            (202, Some("accepted")),
            "{answer}"
        );
        crate::sync::settled(&pool, Duration::from_secs(20)).await;
    };
    deliver_group("model_updated").await;
    // Then deleted: it leaves its members.
    stub.delete_group("team");
    deliver_group("model_deleted").await;

    let updates: Vec<(i64, Value)> = crate::sync::events(&pool)
        .await
        .into_iter()
        .filter(|(_, kind, _, _)| kind == "UserUpdated")
        .map(|(pk, _, data, _)| (pk, data["groups"].clone()))
        .collect();
    let mut renamed: Vec<_> = updates[..2].to_vec();
    renamed.sort_by_key(|(pk, _)| *pk);
    let mut deleted: Vec<_> = updates[2..].to_vec();
    deleted.sort_by_key(|(pk, _)| *pk);
    assert_eq!(
        renamed,
        vec![(1, json!(["team"])), (2, json!(["ops", "team"]))]
    );
    assert_eq!(deleted, vec![(1, json!([])), (2, json!(["ops"]))]);
}

#[sqlx::test(migrations = false)]
async fn the_test_button_is_answered_ignored(pool: PgPool) {
    let db = database_of(&pool).await;
    let app = spawn_app(&url_for(&db), &[]).await;
    app.wait_ready().await;
    let results = render(env(SECRET), vec![test_button_event(&uuid())]).await;
    let rendered = rendered(&results[0]);
    let (status, answer) = deliver(&app, rendered).await;
    assert_eq!(
        (status, answer.clone()),
        (
            202,
            json!({"status": "ignored", "reason": "test notification"})
        ),
        "{}",
        rendered.body
    );
    assert!(inbox(&pool).await.is_empty());
}

#[sqlx::test(migrations = false)]
async fn the_headers_mapping_carries_the_secret_of_the_environment_verbatim(pool: PgPool) {
    // Quotes, backslashes and a format sequence must neither break nor alter the
    // expression the blueprint writes the secret into.
    let secret = r#"s3cr'e"t\%s{0}"#;
    let db = database_of(&pool).await;
    let app = spawn_app(&url_for(&db), &[("IDSYNC_WEBHOOK_SECRET", secret)]).await;
    app.wait_ready().await;

    let results = render(env(secret), vec![test_button_event(&uuid())]).await;
    let rendered_ok = rendered(&results[0]);
    assert_eq!(
        rendered_ok.headers,
        vec![("Authorization".to_owned(), format!("Bearer {secret}"))]
    );
    let (status, answer) = deliver(&app, rendered_ok).await;
    assert_eq!(status, 202, "{answer}");

    // Another secret at apply time than idsync's: refused.
    let results = render(env("not-the-secret"), vec![test_button_event(&uuid())]).await;
    let (status, answer) = deliver(&app, rendered(&results[0])).await;
    assert_eq!((status, &answer["error"]), (401, &json!("unauthorized")));

    // No secret at apply time: every delivery fails, saying why.
    let results = render(json!({}), vec![test_button_event(&uuid())]).await;
    let error = results[0].as_ref().expect_err("must fail without a secret");
    assert!(error.contains("IDSYNC_WEBHOOK_SECRET"), "{error}");
}
