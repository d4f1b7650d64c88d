use std::sync::Arc;

use super::*;

#[test]
fn change_lines_and_summaries() {
    let change = |kind| Change {
        pk: 8,
        username: "bob".into(),
        kind,
    };
    assert_eq!(
        change(ChangeKind::Register).to_string(),
        "register 8 bob (missing here)"
    );
    assert_eq!(
        change(ChangeKind::Update(vec!["email", "name"])).to_string(),
        "update 8 bob: email, name"
    );
    assert_eq!(
        change(ChangeKind::Delete).to_string(),
        "delete 8 bob (gone from Authentik)"
    );
    let mut report = Report {
        dry_run: false,
        listed: 100,
        counts: Counts {
            registered: 1,
            updated: 2,
            deleted: 3,
            unchanged: 94,
            conflicts: 0,
        },
        changes: Vec::new(),
        duration: Duration::ZERO,
    };
    assert_eq!(
        report.summary(),
        "registered 1, updated 2, deleted 3, unchanged 94, conflicts 0"
    );
    report.dry_run = true;
    assert_eq!(
        report.summary(),
        "would register 1, update 2, delete 3, unchanged 94, conflicts 0"
    );
}

#[test]
fn update_fields_use_contract_names() {
    let changes = UserChanges {
        email: Some("a@b.c".into()),
        user_type: Some("external".into()),
        groups: Some(vec![]),
        ..UserChanges::default()
    };
    assert_eq!(fields(&changes), vec!["email", "type", "groups"]);
}

#[tokio::test]
async fn zero_interval_disables() {
    // Building a pool needs no server: it connects lazily.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy("postgres://nobody@127.0.0.1:1/none")
        .expect("lazy pool");
    let store = Arc::new(EventStore::new(pool.clone()));
    let client = AuthentikClient::new(
        "http://127.0.0.1:1",
        secrecy::SecretString::from("t"),
        idsync_authentik::ClientConfig::default(),
    )
    .expect("client");
    assert!(
        Periodic::new(
            pool.clone(),
            store.clone(),
            client.clone(),
            Duration::ZERO,
            Duration::ZERO
        )
        .is_none()
    );
    assert!(Periodic::new(pool, store, client, Duration::from_secs(1), Duration::ZERO).is_some());
}
