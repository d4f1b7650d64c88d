//! The Authentik client against the testkit's stand-in for Authentik's users API.

use std::time::{Duration, Instant};

use idsync_authentik::{AuthentikClient, ClientConfig, ClientError};
use idsync_testkit::authentik::{AuthentikStub, fixtures};
use secrecy::SecretString;
use serde_json::json;

const TOKEN: &str = "s3cret-api-token-abc123";

fn client_for(url: &str, token: &str) -> AuthentikClient {
    AuthentikClient::new(
        url,
        SecretString::from(token),
        ClientConfig {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_millis(300),
        },
    )
    .expect("client")
}

async fn setup() -> (AuthentikStub, AuthentikClient) {
    let stub = AuthentikStub::start(TOKEN).await;
    let client = client_for(&stub.url(), TOKEN);
    (stub, client)
}

#[tokio::test]
async fn get_user_parses_and_maps_to_a_snapshot() {
    let (stub, client) = setup().await;
    let fixture = fixtures::user(7)
        .username("jane")
        .name("Jane Doe")
        .email("jane@example.org")
        .groups(&["staff", fixtures::ADMIN_GROUP])
        .user_type("external");
    stub.upsert(&fixture);

    let user = client.get_user(7).await.expect("user 7");
    assert_eq!(user.pk, 7);
    assert_eq!(user.username, "jane");
    assert!(user.is_superuser);
    assert_eq!(user.groups.len(), 2);
    assert_eq!(user.uuid, fixtures::user_uuid(7));
    assert_eq!(user.uid.len(), 64);
    assert_eq!(user.last_login, None);
    assert!(user.last_updated.is_some());

    let snapshot = user.to_snapshot();
    assert_eq!(snapshot.pk, 7);
    assert_eq!(snapshot.uuid, fixtures::user_uuid(7));
    assert_eq!(snapshot.username, "jane");
    assert_eq!(snapshot.email, "jane@example.org");
    assert_eq!(snapshot.name, "Jane Doe");
    assert!(snapshot.is_active);
    assert_eq!(snapshot.user_type, "external");
    assert_eq!(snapshot.groups, ["authentik Admins", "staff"]);
    assert_eq!(snapshot.date_joined, user.date_joined);
    assert_eq!(stub.fetches(7), 1);
}

#[tokio::test]
async fn empty_email_and_null_groups_obj_are_accepted() {
    let (stub, client) = setup().await;
    stub.upsert(
        fixtures::user(3)
            .email("")
            .groups(&["staff"])
            .without_groups_obj(),
    );
    let snapshot = client.get_user(3).await.expect("user 3").to_snapshot();
    assert_eq!(snapshot.email, "");
    assert!(snapshot.groups.is_empty());
}

#[tokio::test]
async fn unknown_user_is_not_found() {
    let (_stub, client) = setup().await;
    let error = client.get_user(404).await.expect_err("no such user");
    assert!(matches!(error, ClientError::NotFound), "{error:?}");
    assert!(!error.is_retryable());
    assert_eq!(error.kind(), "not_found");
}

#[tokio::test]
async fn wrong_token_is_auth_403() {
    let (stub, _client) = setup().await;
    stub.upsert(fixtures::user(1));
    let client = client_for(&stub.url(), "wrong");
    match client.get_user(1).await {
        Err(ClientError::Auth { status, detail }) => {
            assert_eq!(status, 403);
            assert_eq!(detail, "Token invalid/expired");
        }
        other => panic!("expected Auth, got {other:?}"),
    }

    // A token that expires while running (set_forbidden) reads the same.
    let right = client_for(&stub.url(), TOKEN);
    right.get_user(1).await.expect("right token");
    stub.set_forbidden(true);
    let error = right.get_user(1).await.expect_err("forbidden");
    assert!(
        matches!(error, ClientError::Auth { status: 403, .. }),
        "{error:?}"
    );
    assert!(error.is_retryable());
}

#[tokio::test]
async fn server_error_is_transient() {
    let (stub, client) = setup().await;
    stub.upsert(fixtures::user(1));
    stub.set_fail_ratio(1.0);
    let error = client.get_user(1).await.expect_err("500");
    assert!(
        matches!(&error, ClientError::Transient(m) if m.contains("500")),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert!(error.to_string().len() < 300, "short message: {error}");

    // Half the requests fail, alternately.
    stub.set_fail_ratio(0.5);
    assert!(client.get_user(1).await.is_ok());
    assert!(client.get_user(1).await.is_err());
    assert!(client.get_user(1).await.is_ok());
}

#[tokio::test]
async fn hang_past_the_timeout_is_transient() {
    let (stub, client) = setup().await;
    stub.upsert(fixtures::user(1));
    stub.set_fail_ratio(1.0);
    stub.set_hang(Duration::from_secs(10));
    let started = Instant::now();
    let error = client.get_user(1).await.expect_err("timeout");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(&error, ClientError::Transient(m) if m.contains("timed out")),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_delay_within_the_timeout_is_fine() {
    let (stub, client) = setup().await;
    stub.upsert(fixtures::user(1));
    stub.set_delay(Duration::from_millis(50));
    client.get_user(1).await.expect("slow but in time");
}

#[tokio::test]
async fn a_slow_ratio_delays_that_share_of_requests() {
    let (stub, client) = setup().await;
    stub.upsert(fixtures::user(1));
    // One in four waits 150 ms (the client's timeout here is 300 ms); the rest answer
    // at once.
    stub.set_slow_ratio(0.25, Duration::from_millis(150));
    let mut slow = 0;
    for _ in 0..8 {
        let started = Instant::now();
        client.get_user(1).await.expect("slow but in time");
        if started.elapsed() >= Duration::from_millis(150) {
            slow += 1;
        }
    }
    assert_eq!(slow, 2, "2 of 8 requests were slow");
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let client = client_for(&format!("http://{addr}"), TOKEN);
    let error = client.get_user(1).await.expect_err("refused");
    assert!(
        matches!(&error, ClientError::Transient(m) if m.contains("connect")),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_stopped_stub_refuses() {
    let (stub, client) = setup().await;
    stub.upsert(fixtures::user(1));
    client.get_user(1).await.expect("running");
    stub.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let error = client.get_user(1).await.expect_err("stopped");
    assert_eq!(error.kind(), "transient", "{error:?}");
}

#[tokio::test]
async fn too_many_requests_is_rate_limited_with_retry_after() {
    let (stub, client) = setup().await;
    stub.set_rate_limited(Some(7));
    match client.get_user(1).await {
        Err(ClientError::RateLimited { retry_after }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(7)));
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_bodies_are_malformed_and_name_the_field() {
    let (stub, client) = setup().await;
    stub.upsert_raw(5, fixtures::user(5).set("pk", json!("five")).json());
    let error = client.get_user(5).await.expect_err("pk is a string");
    assert!(
        matches!(&error, ClientError::Malformed(m) if m.contains("pk")),
        "{error:?}"
    );
    assert!(!error.is_retryable());

    stub.upsert(fixtures::user(6).remove("username"));
    let error = client.get_user(6).await.expect_err("no username");
    assert!(
        matches!(&error, ClientError::Malformed(m) if m.contains("username")),
        "{error:?}"
    );

    let mut bad_group = fixtures::user(8).groups(&["staff"]).json();
    bad_group["groups_obj"][0]["pk"] = json!("not-a-uuid");
    stub.upsert(bad_group);
    let error = client.get_user(8).await.expect_err("bad group pk");
    assert!(
        matches!(&error, ClientError::Malformed(m) if m.contains("groups_obj[0].pk")),
        "{error:?}"
    );

    stub.set_canned_response(Some((200, "<html>login</html>")));
    let error = client.get_user(5).await.expect_err("not JSON");
    assert_eq!(error.kind(), "malformed", "{error:?}");

    stub.set_canned_response(Some((
        400,
        r#"{"page_size": ["A valid integer is required."]}"#,
    )));
    let error = client.get_user(5).await.expect_err("400");
    assert!(
        matches!(&error, ClientError::Malformed(m) if m.contains("400")),
        "{error:?}"
    );
}

#[tokio::test]
async fn list_users_paginates() {
    let (stub, client) = setup().await;
    // Inserted out of order: pages are by pk.
    for pk in (1..=250).rev() {
        stub.upsert(fixtures::user(pk));
    }

    let first = client.list_users(1, 100).await.expect("page 1");
    assert_eq!(first.users.len(), 100);
    assert_eq!(first.users[0].pk, 1);
    let p = first.pagination;
    assert_eq!(
        (
            p.next,
            p.previous,
            p.count,
            p.current,
            p.total_pages,
            p.start_index,
            p.end_index
        ),
        (2, 0, 250, 1, 3, 1, 100)
    );

    let mut pks = Vec::new();
    let mut page = 1;
    let mut pages = 0;
    loop {
        let answer = client.list_users(page, 100).await.expect("page");
        pages += 1;
        pks.extend(answer.users.iter().map(|u| u.pk));
        match answer.pagination.next_page() {
            Some(next) => page = u32::try_from(next).expect("small"),
            None => {
                let p = answer.pagination;
                assert_eq!(
                    (p.current, p.previous, p.start_index, p.end_index),
                    (3, 2, 201, 250)
                );
                break;
            }
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(pks, (1..=250).collect::<Vec<_>>());

    let all = client.list_all_users(100).await.expect("all");
    assert_eq!(all.len(), 250);
    assert_eq!(stub.list_requests(), 1 + 3 + 3);

    let error = client.list_users(4, 100).await.expect_err("past the end");
    assert!(matches!(error, ClientError::NotFound), "{error:?}");

    let request = stub.last_request().expect("recorded");
    assert_eq!(request.uri, "/api/v3/core/users/?page=4&page_size=100");
}

#[tokio::test]
async fn requests_carry_the_expected_headers() {
    let (stub, client) = setup().await;
    stub.upsert(fixtures::user(1));
    client.get_user(1).await.expect("user");
    let request = stub.last_request().expect("recorded");
    assert_eq!(request.method, "GET");
    assert_eq!(request.uri, "/api/v3/core/users/1/");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(request.header("accept"), Some("application/json"));
    assert_eq!(
        request.header("user-agent"),
        Some(concat!("idsync/", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(stub.requests(), 1);
}

#[tokio::test]
async fn the_token_never_shows_in_debug_or_errors() {
    let (stub, client) = setup().await;
    let debug = format!("{client:?} {client:#?}");
    assert!(!debug.contains(TOKEN), "{debug}");
    assert!(debug.contains(&stub.url()), "{debug}");

    stub.set_forbidden(true);
    let error = client.get_user(1).await.expect_err("403");
    assert!(!format!("{error} {error:?}").contains(TOKEN));
}

#[test]
fn trailing_slash_is_trimmed() {
    let client = AuthentikClient::new(
        "http://127.0.0.1:9000///",
        SecretString::from(TOKEN),
        ClientConfig::default(),
    )
    .expect("client");
    assert_eq!(client.base_url(), "http://127.0.0.1:9000");
    assert!(matches!(
        AuthentikClient::new(
            "127.0.0.1:9000",
            SecretString::from(TOKEN),
            ClientConfig::default()
        ),
        Err(ClientError::Config(_))
    ));
}
