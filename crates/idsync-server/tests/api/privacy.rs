//! Crypto-shredding and the right to erasure through the real binary
//! (docs/privacy.md): after erasure a full `pg_dump` holds none of the user's personal
//! strings, the API and replay show the user as erased, a moved ciphertext does not
//! open, a wrong or missing key is refused with nothing overwritten, erasure racing a
//! webhook or a replay ends consistent, and encrypting 100,000 users' events survives a
//! SIGKILL midway.

use std::process::Stdio;
use std::time::Duration;

use idsync_store::privacy::{self, Kek, Keyring};
use idsync_testkit::authentik::{AuthentikStub, fixtures};
use idsync_testkit::oidc::{TestIssuer, TokenSpec};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{App, STUB_TOKEN, binary, database_of, idsync, serve_with_stub, url_for};
use crate::intake::post_json;
use crate::projections::projected;

const ADMINS: &str = "authentik Admins";

/// Installs, in this test process, the development key the test binaries use.
pub(crate) fn development_keyring() {
    if privacy::keyring().is_none() {
        privacy::install(Some(Keyring::new(Kek::development(), Vec::new())));
    }
}

/// The personal strings of user `pk` in these tests: distinctive enough that finding
/// one anywhere in a dump can only mean it leaked.
fn personal(pk: i64) -> [String; 3] {
    [
        format!("zelda{pk}x7f3a"),
        format!("zelda{pk}.q9@privacy.example"),
        format!("Zelda Quux{pk}Vr"),
    ]
}

fn person(pk: i64) -> Value {
    let [username, email, name] = personal(pk);
    fixtures::user(pk)
        .username(username)
        .email(email)
        .name(name)
        .json()
}

struct World {
    app: App,
    issuer: TestIssuer,
    stub: AuthentikStub,
}

/// serve (erasure on delete: the default) with users `pks` synced by webhooks.
async fn world(pool: &PgPool, pks: &[i64], extra: &[(&str, &str)]) -> World {
    let stub = AuthentikStub::start(STUB_TOKEN).await;
    for pk in pks {
        stub.upsert(person(*pk));
    }
    let issuer = TestIssuer::start().await;
    let (iss, aud) = (issuer.issuer(), issuer.client_id());
    let mut env = vec![
        ("IDSYNC_OIDC_ISSUER", iss.as_str()),
        ("IDSYNC_OIDC_AUDIENCE", aud.as_str()),
        ("IDSYNC_ERASE_ON_DELETE", "true"),
    ];
    env.extend_from_slice(extra);
    let app = serve_with_stub(pool, &stub, &env).await;
    for pk in pks {
        webhook(&app, "model_created", *pk).await;
    }
    projected(pool, Duration::from_secs(20)).await;
    World { app, issuer, stub }
}

async fn webhook(app: &App, action: &str, pk: i64) {
    let (status, body) = post_json(app, &json!({"event_type": action, "pk": pk})).await;
    assert_eq!(status, 202, "{body}");
}

fn admin(issuer: &TestIssuer) -> String {
    issuer.token(&TokenSpec::new().sub("1").groups([ADMINS]))
}

async fn call(app: &App, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = app.http.request(method, app.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let body = resp.bytes().await.expect("body");
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// A full plain-text dump of the test database, as a backup would hold it.
async fn dump(pool: &PgPool) -> String {
    let db = database_of(pool).await;
    let out = tokio::process::Command::new("pg_dump")
        .arg(url_for(&db))
        .output()
        .await
        .expect("pg_dump runs");
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 dump")
}

async fn read_model(pool: &PgPool) -> Vec<Value> {
    sqlx::query_scalar("SELECT to_jsonb(u) - 'position' - 'updated_at' FROM users u ORDER BY pk")
        .fetch_all(pool)
        .await
        .expect("users")
}

#[sqlx::test(migrations = false)]
async fn after_erasure_a_full_dump_holds_no_personal_string_and_replay_agrees(pool: PgPool) {
    let w = world(&pool, &[7, 8, 9], &[]).await;
    let token = admin(&w.issuer);
    // A second event with personal fields: an email change.
    let [username, _, name] = personal(7);
    w.stub.upsert(
        fixtures::user(7)
            .username(username.clone())
            .email("zelda7.second@privacy.example")
            .name(name.clone())
            .json(),
    );
    webhook(&w.app, "model_updated", 7).await;
    projected(&pool, Duration::from_secs(20)).await;

    let (status, before) = call(&w.app, "GET", "/api/users/7", Some(&token)).await;
    assert_eq!(status, 200, "{before}");
    assert_eq!(before["username"], username.as_str());
    assert_eq!(before["erased"], false);
    let uid = before["uid"].as_str().expect("a uid").to_owned();
    let mut secrets: Vec<String> = personal(7).into();
    secrets.push("zelda7.second@privacy.example".to_owned());
    secrets.push(uid);
    // Stored encrypted, already before erasure: the log holds no plaintext.
    let raw: String = sqlx::query_scalar(
        "SELECT string_agg(payload::text, ' ') FROM events WHERE aggregate_id = '7'",
    )
    .fetch_one(&pool)
    .await
    .expect("payloads");
    assert!(!raw.contains(&username), "{raw}");

    // Who may erase: admins only; unknown users are 404.
    let path = "/api/users/7/personal-data";
    assert_eq!(call(&w.app, "DELETE", path, None).await.0, 401);
    let user_token = w.issuer.token(&TokenSpec::new().sub("7"));
    assert_eq!(call(&w.app, "DELETE", path, Some(&user_token)).await.0, 403);
    assert_eq!(
        call(
            &w.app,
            "DELETE",
            "/api/users/999/personal-data",
            Some(&token)
        )
        .await
        .0,
        404
    );
    assert_eq!(call(&w.app, "DELETE", path, Some(&token)).await.0, 204);
    assert_eq!(
        call(&w.app, "DELETE", path, Some(&token)).await.0,
        204,
        "idempotent"
    );
    // The CLI erases too; user 8 is deleted in Authentik and erased on delete.
    let (ok, out, err) = idsync(&pool, &["erase", "9"], &[]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("user 9: personal data erased"), "{out}");
    let (ok, _, err) = idsync(&pool, &["erase", "12345"], &[]).await;
    assert!(!ok && err.contains("no user 12345"), "{err}");
    w.stub.remove(8);
    webhook(&w.app, "model_deleted", 8).await;
    projected(&pool, Duration::from_secs(20)).await;

    for pk in [7, 8, 9] {
        let (status, user) = call(&w.app, "GET", &format!("/api/users/{pk}"), Some(&token)).await;
        assert_eq!(status, 200, "{user}");
        assert_eq!(user["erased"], true, "{user}");
        for field in ["username", "email", "name", "uid"] {
            assert_eq!(user[field], Value::Null, "{pk} {field}: {user}");
        }
    }
    let (status, page) = call(&w.app, "GET", "/api/users/7/events", Some(&token)).await;
    assert_eq!(status, 200, "{page}");
    let events = page["events"].as_array().expect("events");
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types, ["UserRegistered", "UserUpdated", "UserErased"]);
    assert_eq!(events[0]["data"]["username"], Value::Null);
    assert_eq!(events[0]["data"]["erased"], true);
    assert_eq!(
        events[0]["data"]["is_active"], true,
        "non-personal fields stay"
    );
    assert_eq!(events[1]["data"]["email"], Value::Null);
    let (status, log) = call(&w.app, "GET", "/api/events", Some(&token)).await;
    assert_eq!(status, 200);
    assert!(!log.to_string().contains("zelda"), "{log}");

    let text = dump(&pool).await;
    for pk in [8, 9] {
        secrets.extend(personal(pk));
    }
    for secret in &secrets {
        assert!(!text.contains(secret.as_str()), "{secret:?} is in the dump");
    }
    assert!(text.contains("UserErased"), "the dump is of this database");

    // Replay gives the same read model, and the API still answers.
    let before_replay = read_model(&pool).await;
    let (ok, out, err) = idsync(&pool, &["replay"], &[]).await;
    assert!(ok, "{out}{err}");
    assert_eq!(read_model(&pool).await, before_replay);
    let (status, user) = call(&w.app, "GET", "/api/users/7", Some(&token)).await;
    assert_eq!((status, &user["erased"]), (200, &json!(true)), "{user}");
    assert!(
        !dump(&pool).await.contains("zelda"),
        "no plaintext after replay either"
    );
}

#[sqlx::test(migrations = false)]
async fn a_ciphertext_copied_into_another_event_does_not_open(pool: PgPool) {
    let w = world(&pool, &[3, 4], &[]).await;
    drop(w);
    development_keyring();
    // User 3's sealed fields pasted into user 4's registration.
    sqlx::query(
        "UPDATE events SET payload = json_build_object('UserRegistered',
                (payload::jsonb -> 'UserRegistered') || jsonb_build_object('sealed',
                    (SELECT payload::jsonb -> 'UserRegistered' -> 'sealed' FROM events WHERE aggregate_id = '3')))::json
          WHERE aggregate_id = '4'",
    )
    .execute(&pool)
    .await
    .expect("tamper");
    let err = idsync_store::feed::read_user_after(
        &pool,
        idsync_store::UserPk(4),
        idsync_store::Position::START,
        10,
    )
    .await
    .expect_err("does not open");
    assert!(
        err.to_string().contains("moved or altered ciphertext"),
        "{err}"
    );
    assert!(
        idsync_store::feed::read_user_after(
            &pool,
            idsync_store::UserPk(3),
            idsync_store::Position::START,
            10
        )
        .await
        .is_ok()
    );
}

#[sqlx::test(migrations = false)]
async fn a_wrong_or_missing_key_is_refused_and_nothing_is_overwritten(pool: PgPool) {
    let w = world(&pool, &[5], &[]).await;
    drop(w);
    let state = || async {
        let keys: Vec<(i64, Vec<u8>, String)> =
            sqlx::query_as("SELECT user_pk, wrapped_key, kek_id FROM user_data_keys ORDER BY 1")
                .fetch_all(&pool)
                .await
                .expect("keys");
        let events: Vec<String> =
            sqlx::query_scalar("SELECT payload::text FROM events ORDER BY global_position")
                .fetch_all(&pool)
                .await
                .expect("events");
        (keys, events)
    };
    let before = state().await;
    assert_eq!(before.0.len(), 1);
    let wrong = privacy::generate();
    let db = database_of(&pool).await;
    for (key, expected) in [
        (
            Some(wrong.as_str()),
            "is not the key users' data keys are wrapped with",
        ),
        (
            None,
            "IDSYNC_DATA_KEY is not set, but the personal data of 1 users is encrypted",
        ),
        (Some("v1:short"), "IDSYNC_DATA_KEY: "),
    ] {
        let mut cmd = binary();
        cmd.arg("serve")
            .env("DATABASE_URL", url_for(&db))
            .env("IDSYNC_LISTEN", "127.0.0.1:0")
            .env("IDSYNC_WEBHOOK_SECRET", "s3cret-s3cret-s3cret")
            .env_remove("IDSYNC_DATA_KEY");
        if let Some(key) = key {
            cmd.env("IDSYNC_DATA_KEY", key);
        }
        let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
            .await
            .expect("serve refuses promptly")
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("error: ") && last.contains(expected),
            "{stderr}"
        );
        for args in [&["erase", "5"][..], &["replay"], &["encrypt-events"]] {
            let mut env = vec![];
            if let Some(key) = key {
                env.push(("IDSYNC_DATA_KEY", key));
            }
            let mut cmd = binary();
            cmd.args(args)
                .env("DATABASE_URL", url_for(&db))
                .env_remove("IDSYNC_DATA_KEY")
                .envs(env);
            let out = cmd.output().await.expect("runs");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?}");
            assert!(stderr.contains(expected), "{args:?}: {stderr}");
        }
    }
    assert_eq!(state().await, before, "nothing was overwritten");

    // The right key, rotated: every user key rewrapped, the old key then unneeded.
    let new = privacy::generate();
    let (ok, out, err) = idsync(
        &pool,
        &["rotate-data-key"],
        &[
            ("IDSYNC_DATA_KEY", new.as_str()),
            ("IDSYNC_DATA_KEY_PREVIOUS", "development"),
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("1 user keys rewrapped"), "{out}");
    let (ok, _, err) = idsync(&pool, &["replay"], &[("IDSYNC_DATA_KEY", new.as_str())]).await;
    assert!(ok, "{err}");
    let (ok, _, err) = idsync(&pool, &["replay"], &[]).await;
    assert!(
        !ok && err.contains("is not the key"),
        "the old key alone no longer fits: {err}"
    );
    let username: String = sqlx::query_scalar("SELECT username FROM users WHERE pk = 5")
        .fetch_one(&pool)
        .await
        .expect("user");
    assert_eq!(username, personal(5)[0]);
}

#[sqlx::test(migrations = false)]
async fn erasure_racing_webhooks_and_replay_ends_consistent(pool: PgPool) {
    let pks: Vec<i64> = (1..=12).collect();
    let w = world(&pool, &pks, &[]).await;
    let token = admin(&w.issuer);
    // Each user changes in Authentik, and its webhook and its erasure go out together;
    // half of them while a replay runs.
    for pk in &pks {
        let [username, _, name] = personal(*pk);
        w.stub.upsert(
            fixtures::user(*pk)
                .username(username)
                .email(format!("zelda{pk}.race@privacy.example"))
                .name(name)
                .active(false)
                .json(),
        );
    }
    let replay = {
        let pool = pool.clone();
        tokio::spawn(async move { idsync(&pool, &["replay"], &[]).await })
    };
    let erasures = pks.iter().map(|pk| {
        let (app, token) = (&w.app, token.clone());
        async move {
            let path = format!("/api/users/{pk}/personal-data");
            let ((), (status, _)) = tokio::join!(
                webhook(app, "model_updated", *pk),
                call(app, "DELETE", &path, Some(&token))
            );
            assert_eq!(status, 204);
        }
    });
    futures::future::join_all(erasures).await;
    let (ok, out, err) = replay.await.expect("replay task");
    assert!(ok, "{out}{err}");
    projected(&pool, Duration::from_secs(30)).await;

    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM user_data_keys")
        .fetch_one(&pool)
        .await
        .expect("keys");
    assert_eq!(keys, 0, "every key destroyed");
    assert!(
        !dump(&pool).await.contains("zelda"),
        "no personal string survives the race"
    );
    for pk in &pks {
        let (status, user) = call(&w.app, "GET", &format!("/api/users/{pk}"), Some(&token)).await;
        assert_eq!(status, 200);
        assert_eq!(user["erased"], true, "{user}");
        assert_eq!(
            user["is_active"], false,
            "the webhook's non-personal change landed: {user}"
        );
    }
    // The read model is what a replay of the final log gives.
    let live = read_model(&pool).await;
    let (ok, _, err) = idsync(&pool, &["replay"], &[]).await;
    assert!(ok, "{err}");
    assert_eq!(read_model(&pool).await, live);
}

/// 100,000 users' registrations written before encryption (straight into the table, as
/// the benchmark loads them), encrypted by `idsync encrypt-events`, which is SIGKILLed
/// midway and run again.
#[sqlx::test(migrations = false)]
async fn encrypting_100000_users_resumes_after_sigkill(pool: PgPool) {
    const USERS: i64 = 100_000;
    let db = database_of(&pool).await;
    let (ok, _, err) = idsync(&pool, &["migrate"], &[]).await;
    assert!(ok, "{err}");
    let mut tx = pool.begin().await.expect("tx");
    sqlx::query("ALTER TABLE events DISABLE TRIGGER events_global_position")
        .execute(&mut *tx)
        .await
        .expect("trigger off");
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, global_position, recorded_at)
         SELECT 'User', pk::text, 1, 'UserRegistered', '1.0',
                json_build_object('UserRegistered', json_build_object(
                    'pk', pk, 'uuid', md5(pk::text)::uuid, 'username', 'legacy' || pk,
                    'email', 'legacy' || pk || '@example.org', 'name', 'Legacy ' || pk,
                    'is_active', true, 'type', 'internal', 'groups', json_build_array('staff'),
                    'date_joined', '2026-01-01T00:00:00Z')),
                json_build_object('source', 'webhook', 'received_at', '2026-01-01T00:00:00Z'),
                pk, now()
           FROM generate_series(1, $1) AS pk",
    )
    .bind(USERS)
    .execute(&mut *tx)
    .await
    .expect("load");
    sqlx::query("UPDATE event_position_counter SET position = $1")
        .bind(USERS)
        .execute(&mut *tx)
        .await
        .expect("counter");
    sqlx::query("ALTER TABLE events ENABLE TRIGGER events_global_position")
        .execute(&mut *tx)
        .await
        .expect("trigger on");
    tx.commit().await.expect("commit");

    let sealed = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM events WHERE (payload::jsonb -> 'UserRegistered') ? 'sealed'",
        )
        .fetch_one(&pool)
        .await
        .expect("count")
    };
    let mut child = binary()
        .args(["encrypt-events", "--batch-size", "500"])
        .env("DATABASE_URL", url_for(&db))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while sealed().await < 5_000 {
        assert!(tokio::time::Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;
    let midway = sealed().await;
    assert!(midway < USERS, "killed midway ({midway})");
    // Whole batches only: every sealed event's user has its key.
    let keyless: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events e WHERE (payload::jsonb -> 'UserRegistered') ? 'sealed'
            AND NOT EXISTS (SELECT 1 FROM user_data_keys k WHERE k.user_pk = e.aggregate_id::bigint)",
    )
    .fetch_one(&pool)
    .await
    .expect("keyless");
    assert_eq!(keyless, 0);

    let (ok, out, err) = idsync(&pool, &["encrypt-events", "--batch-size", "2000"], &[]).await;
    assert!(ok, "{out}{err}");
    assert_eq!(sealed().await, USERS);
    let plaintext: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE payload::text LIKE '%legacy%'")
            .fetch_one(&pool)
            .await
            .expect("plaintext");
    assert_eq!(plaintext, 0);
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM user_data_keys")
        .fetch_one(&pool)
        .await
        .expect("keys");
    assert_eq!(keys, USERS, "one key per user, none twice");
    // Readable as before, with the key the binary used.
    development_keyring();
    for pk in [1, 4_999, 54_321, USERS] {
        let items = idsync_store::feed::read_user_after(
            &pool,
            idsync_store::UserPk(pk),
            idsync_store::Position::START,
            10,
        )
        .await
        .expect("opens");
        assert_eq!(items[0].data["email"], format!("legacy{pk}@example.org"));
        assert_eq!(items[0].data["name"], format!("Legacy {pk}"));
    }
}

/// Events written before encryption: `/readyz` warns until `idsync encrypt-events` ran,
/// and what it sealed reads back the same.
#[sqlx::test(migrations = false)]
async fn readyz_warns_about_plaintext_until_encrypt_events_ran(pool: PgPool) {
    let (ok, _, err) = idsync(&pool, &["migrate"], &[]).await;
    assert!(ok, "{err}");
    // Written by this process without a keyring: as an idsync before encryption wrote.
    let store = idsync_store::EventStore::new(pool.clone());
    let metadata =
        idsync_domain::EventMetadata::new(idsync_domain::Source::Webhook, None, chrono::Utc::now());
    let snapshot = |pk: i64| idsync_domain::UserSnapshot {
        pk,
        uuid: fixtures::user_uuid(pk),
        username: format!("legacy{pk}"),
        email: format!("legacy{pk}@example.org"),
        name: format!("Legacy {pk}"),
        is_active: true,
        user_type: "internal".into(),
        groups: vec![],
        date_joined: chrono::Utc::now(),
        uid: None,
    };
    for pk in 1..=3 {
        store
            .execute(
                pk,
                idsync_domain::UserCommand::ApplySnapshot(snapshot(pk)),
                &metadata,
            )
            .await
            .expect("legacy event");
    }
    let db = database_of(&pool).await;
    let app = crate::helpers::spawn_app(&url_for(&db), &[]).await;
    app.wait_ready().await;
    app.readyz_warns("the encrypt-events warning", |w| {
        w.contains("idsync encrypt-events")
    })
    .await;
    let (ok, out, err) = idsync(&pool, &["encrypt-events"], &[]).await;
    assert!(ok, "{err}");
    assert!(out.contains("3 events encrypted"), "{out}");
    let raw: String = sqlx::query_scalar("SELECT string_agg(payload::text, ' ') FROM events")
        .fetch_one(&pool)
        .await
        .expect("payloads");
    assert!(!raw.contains("legacy"), "{raw}");
    development_keyring();
    let items = idsync_store::feed::read_after(&pool, idsync_store::Position::START, 10)
        .await
        .expect("read");
    assert_eq!(items[1].data["username"], "legacy2");
    assert_eq!(items[1].data["email"], "legacy2@example.org");
}
