//! Group events reach the users: Authentik reports a membership change, a rename or a
//! deletion only as an event of the group, and the users' `groups` must follow. Through
//! the real binary, against the Authentik stub's groups API.

use std::collections::BTreeMap;
use std::time::Duration;

use idsync_testkit::authentik::{AuthentikStub, fixtures};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{App, STUB_TOKEN, serve_with_stub};
use crate::intake::post_json;
use crate::sync::{events, settled};

fn user_event(action: &str, pk: i64) -> Value {
    json!({"event_id": uuid::Uuid::new_v4().to_string(), "action": action,
           "model_app": "authentik_core", "model_name": "user", "model_pk": pk})
}

/// A group event as idsync's own mapping sends it: the uuid without dashes.
fn group_event(action: &str, uuid: uuid::Uuid) -> Value {
    json!({"event_id": uuid::Uuid::new_v4().to_string(), "action": action,
           "model_app": "authentik_core", "model_name": "group",
           "model_pk": uuid.simple().to_string()})
}

async fn send(app: &App, body: &Value) {
    let (status, answer) = post_json(app, body).await;
    assert!(status == 202 || status == 200, "{status} {answer}");
    assert_eq!(answer["status"], "accepted", "{answer}");
}

/// The read model's groups per user, once the projector has caught up.
async fn groups_by_user(pool: &PgPool) -> BTreeMap<i64, Vec<String>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (checkpoint, head): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT position FROM projection_checkpoints WHERE name = 'users'),
                    (SELECT COALESCE(max(global_position), 0) FROM events)",
        )
        .fetch_one(pool)
        .await
        .expect("positions");
        if checkpoint == head {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "projector behind");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sqlx::query_as::<_, (i64, Vec<String>)>(
        "SELECT pk, groups FROM users WHERE deleted_at IS NULL ORDER BY pk",
    )
    .fetch_all(pool)
    .await
    .expect("users")
    .into_iter()
    .collect()
}

/// `UserUpdated` events appended since `after` (an index into the event list), as
/// (pk, new groups), by pk (users are refreshed concurrently).
async fn group_updates_since(pool: &PgPool, after: usize) -> Vec<(i64, Value)> {
    let mut updates: Vec<(i64, Value)> = events(pool)
        .await
        .into_iter()
        .skip(after)
        .map(|(pk, kind, data, _)| {
            assert_eq!(kind, "UserUpdated", "only updates expected: {data}");
            assert_eq!(
                data.as_object()
                    .map(|o| o.keys().cloned().collect::<Vec<_>>()),
                Some(vec!["groups".to_owned(), "pk".to_owned()]),
                "a group change updates only groups: {data}"
            );
            (pk, data["groups"].clone())
        })
        .collect();
    updates.sort_by_key(|(pk, _)| *pk);
    updates
}

async fn registered(pool: &PgPool, app: &App, pks: impl IntoIterator<Item = i64>) -> usize {
    for pk in pks {
        send(app, &user_event("model_created", pk)).await;
    }
    settled(pool, Duration::from_secs(20)).await;
    events(pool).await.len()
}

#[sqlx::test(migrations = false)]
async fn add_remove_rename_and_delete_reach_exactly_the_users_concerned(pool: PgPool) {
    let stub = AuthentikStub::start(STUB_TOKEN).await;
    stub.upsert(fixtures::user(1).groups(&["staff"]).json());
    stub.upsert(fixtures::user(2).groups(&["staff", "ops"]).json());
    stub.upsert(fixtures::user(3).json());
    stub.upsert(fixtures::user(4).groups(&["ops"]).json());
    let app = serve_with_stub(&pool, &stub, &[]).await;
    let mut seen = registered(&pool, &app, 1..=4).await;
    let staff = stub.group_uuid("staff").expect("staff");

    // User 3 joins staff: only a group event tells.
    stub.upsert(fixtures::user(3).groups(&["staff"]).json());
    send(&app, &group_event("model_updated", staff)).await;
    settled(&pool, Duration::from_secs(20)).await;
    assert_eq!(
        group_updates_since(&pool, seen).await,
        vec![(3, json!(["staff"]))]
    );
    seen = events(&pool).await.len();

    // User 1 leaves it.
    stub.upsert(fixtures::user(1).json());
    send(&app, &group_event("model_updated", staff)).await;
    settled(&pool, Duration::from_secs(20)).await;
    assert_eq!(group_updates_since(&pool, seen).await, vec![(1, json!([]))]);
    seen = events(&pool).await.len();

    // staff is renamed team: its members 2 and 3 change, 4 (ops only) does not.
    stub.rename_group("staff", "team");
    send(&app, &group_event("model_updated", staff)).await;
    settled(&pool, Duration::from_secs(20)).await;
    assert_eq!(
        group_updates_since(&pool, seen).await,
        vec![(2, json!(["ops", "team"])), (3, json!(["team"]))]
    );
    seen = events(&pool).await.len();

    // A group event that changes nothing appends nothing.
    send(&app, &group_event("model_updated", staff)).await;
    settled(&pool, Duration::from_secs(20)).await;
    assert_eq!(group_updates_since(&pool, seen).await, vec![]);

    // team is deleted: it leaves its former members.
    stub.delete_group("team");
    send(&app, &group_event("model_deleted", staff)).await;
    settled(&pool, Duration::from_secs(20)).await;
    assert_eq!(
        group_updates_since(&pool, seen).await,
        vec![(2, json!(["ops"])), (3, json!([]))]
    );
    assert_eq!(
        groups_by_user(&pool).await,
        BTreeMap::from([
            (1, vec![]),
            (2, vec!["ops".to_owned()]),
            (3, vec![]),
            (4, vec!["ops".to_owned()]),
        ])
    );
    // The group's items and the refresh items they made all finished.
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM webhook_inbox WHERE status NOT IN ('done', 'ignored')",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(open, 0);
}

#[sqlx::test(migrations = false)]
async fn every_format_of_a_group_event_is_acted_on(pool: PgPool) {
    let stub = AuthentikStub::start(STUB_TOKEN).await;
    stub.upsert(fixtures::user(1).groups(&["staff"]).json());
    let app = serve_with_stub(&pool, &stub, &[]).await;
    let seen = registered(&pool, &app, [1]).await;
    let staff = stub.group_uuid("staff").expect("staff");
    stub.rename_group("staff", "Staff O'Hara");
    let body = format!(
        "model_updated: {{'model': {{'pk': '{}', 'app': 'authentik_core', 'name': \"Staff O'Hara\", 'model_name': 'group'}}}}",
        staff.simple()
    );
    send(&app, &json!({"body": body, "severity": "notice"})).await;
    settled(&pool, Duration::from_secs(20)).await;
    assert_eq!(
        group_updates_since(&pool, seen).await,
        vec![(1, json!(["Staff O'Hara"]))]
    );
}

#[sqlx::test(migrations = false)]
async fn a_group_of_a_thousand_members_is_renamed_for_all_of_them(pool: PgPool) {
    let stub = AuthentikStub::start(STUB_TOKEN).await;
    stub.upsert_many((1..=1000).map(|pk| fixtures::user(pk).groups(&["everyone"]).json()));
    stub.upsert(fixtures::user(1001).groups(&["others"]).json());
    // Registered by reconcile here (a thousand webhooks would only take longer).
    let app = serve_with_stub(&pool, &stub, &[("IDSYNC_SYNC_CONCURRENCY", "8")]).await;
    let stub_url = stub.url();
    crate::helpers::idsync_ok(
        &pool,
        &["reconcile"],
        &[
            ("IDSYNC_AUTHENTIK_URL", stub_url.as_str()),
            ("IDSYNC_AUTHENTIK_TOKEN", STUB_TOKEN),
        ],
    )
    .await;
    let seen = events(&pool).await.len();
    assert_eq!(seen, 1001);

    let everyone = stub.group_uuid("everyone").expect("group");
    stub.rename_group("everyone", "all staff");
    send(&app, &group_event("model_updated", everyone)).await;
    settled(&pool, Duration::from_secs(120)).await;
    let updates = group_updates_since(&pool, seen).await;
    assert_eq!(
        updates.len(),
        1000,
        "one update per member, none for user 1001"
    );
    assert!(
        updates
            .iter()
            .all(|(pk, groups)| *pk <= 1000 && *groups == json!(["all staff"]))
    );
    let by_user = groups_by_user(&pool).await;
    assert_eq!(by_user[&1001], vec!["others".to_owned()]);
    assert!((1..=1000).all(|pk| by_user[&pk] == vec!["all staff".to_owned()]));
}

#[sqlx::test(migrations = false)]
async fn a_group_event_while_a_members_user_event_is_in_flight_ends_in_authentiks_state(
    pool: PgPool,
) {
    let stub = AuthentikStub::start(STUB_TOKEN).await;
    stub.upsert(fixtures::user(1).name("Ann").groups(&["staff"]).json());
    stub.upsert(fixtures::user(2).groups(&["staff"]).json());
    let app = serve_with_stub(&pool, &stub, &[("IDSYNC_SYNC_CONCURRENCY", "4")]).await;
    registered(&pool, &app, [1, 2]).await;
    let staff = stub.group_uuid("staff").expect("staff");

    // Every answer now takes a while, so the user's item is still in flight when the
    // group's arrives; meanwhile Authentik's state moves on twice.
    stub.set_delay(Duration::from_millis(300));
    stub.upsert(fixtures::user(1).name("Ann Lee").groups(&["staff"]).json());
    send(&app, &user_event("model_updated", 1)).await;
    stub.rename_group("staff", "crew");
    stub.upsert(fixtures::user(2).json());
    send(&app, &group_event("model_updated", staff)).await;
    settled(&pool, Duration::from_secs(30)).await;
    stub.set_delay(Duration::ZERO);

    let by_user = groups_by_user(&pool).await;
    assert_eq!(by_user[&1], vec!["crew".to_owned()]);
    assert_eq!(by_user[&2], Vec::<String>::new());
    let name: String = sqlx::query_scalar("SELECT name FROM users WHERE pk = 1")
        .fetch_one(&pool)
        .await
        .expect("name");
    assert_eq!(name, "Ann Lee");
    // And nothing was registered twice.
    let registrations: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'UserRegistered'")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(registrations, 2);
}
