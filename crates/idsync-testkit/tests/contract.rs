//! The fixtures and the stub against Authentik's own OpenAPI document (vendored as
//! `authentik/reference/<version>/schema.yml`): what they serve must be what Authentik
//! documents, and the validator must be able to say no.

use idsync_testkit::authentik::{AuthentikStub, fixtures};
use idsync_testkit::reference;
use idsync_testkit::schema::{ComponentValidator, Strictness, validate_component};
use serde_json::{Value, json};

fn user_validator(doc: &Value) -> ComponentValidator {
    ComponentValidator::new(doc, "User", Strictness::Strict).expect("User compiles")
}

fn variety() -> Vec<Value> {
    let t = chrono::DateTime::parse_from_rfc3339("2026-02-01T10:11:12.345678Z")
        .expect("date")
        .to_utc();
    vec![
        fixtures::user(1).json(),
        fixtures::user(2)
            .username("jane")
            .name("Jane Doe")
            .email("")
            .groups(&["staff", fixtures::ADMIN_GROUP])
            .roles(&["auditor"])
            .last_login(Some(t))
            .attributes(json!({"settings": {"locale": "de"}}))
            .json(),
        fixtures::user(3).active(false).user_type("external").json(),
        fixtures::user(4)
            .user_type("service_account")
            .path("goauthentik.io/service-accounts")
            .without_groups_obj()
            .json(),
        fixtures::user(5)
            .user_type("internal_service_account")
            .json(),
    ]
}

#[test]
fn fixtures_are_valid_authentik_users() {
    let doc = reference::authentik_schema();
    let validator = user_validator(doc);
    for user in variety() {
        if let Err(errors) = validator.validate(&user) {
            panic!("fixture does not match schema.yml's User: {errors:#?}\n{user:#}");
        }
    }
}

#[tokio::test]
async fn stub_pages_are_valid_paginated_user_lists() {
    let doc = reference::authentik_schema();
    let page_validator =
        ComponentValidator::new(doc, "PaginatedUserList", Strictness::Strict).expect("compiles");
    let user_validator = user_validator(doc);

    let stub = AuthentikStub::start("secret").await;
    for user in variety() {
        stub.upsert(user);
    }
    for path in [
        "/api/v3/core/users/?page=1&page_size=2",
        "/api/v3/core/users/?page=3&page_size=2",
    ] {
        let body = get(&stub, path).await;
        if let Err(errors) = page_validator.validate(&body) {
            panic!("stub page does not match PaginatedUserList: {errors:#?}\n{body:#}");
        }
    }
    let user = get(&stub, "/api/v3/core/users/2/").await;
    user_validator.validate(&user).expect("stub user is a User");

    // An empty list is still a valid page.
    let empty = AuthentikStub::start("secret").await;
    let body = get(&empty, "/api/v3/core/users/").await;
    page_validator.validate(&body).expect("empty page is valid");
    assert_eq!(body["pagination"]["total_pages"], 1);
}

#[tokio::test]
async fn stub_groups_and_me_are_valid_authentik_answers() {
    let doc = reference::authentik_schema();
    let stub = AuthentikStub::start("secret").await;
    stub.upsert(fixtures::user(1).groups(&["staff", "ops"]).json());
    stub.upsert(fixtures::user(2).groups(&["staff"]).json());
    let staff = stub.group_uuid("staff").expect("staff");
    let group = get(
        &stub,
        &format!("/api/v3/core/groups/{staff}/?include_users=false"),
    )
    .await;
    ComponentValidator::new(doc, "Group", Strictness::Strict)
        .expect("Group compiles")
        .validate(&group)
        .expect("a valid Group");
    assert_eq!(group["users"], json!([1, 2]));
    let page = get(&stub, "/api/v3/core/groups/?page_size=1").await;
    ComponentValidator::new(doc, "PaginatedGroupList", Strictness::Strict)
        .expect("compiles")
        .validate(&page)
        .expect("a valid PaginatedGroupList");
    let me = get(&stub, "/api/v3/core/users/me/").await;
    ComponentValidator::new(doc, "SessionUser", Strictness::Strict)
        .expect("compiles")
        .validate(&me)
        .expect("a valid SessionUser");

    // A rename keeps the uuid and shows everywhere; a delete leaves every member.
    stub.rename_group("staff", "team");
    let renamed = get(&stub, &format!("/api/v3/core/groups/{staff}/")).await;
    assert_eq!(renamed["name"], "team");
    let user = get(&stub, "/api/v3/core/users/2/").await;
    assert_eq!(user["groups_obj"][0]["name"], "team");
    assert_eq!(user["groups"][0], staff.to_string());
    stub.delete_group("team");
    let user = get(&stub, "/api/v3/core/users/1/").await;
    assert_eq!(user["groups_obj"].as_array().map(Vec::len), Some(1));
    user_validator(doc)
        .validate(&user)
        .expect("still a valid User");
}

#[test]
fn broken_fixtures_fail() {
    let doc = reference::authentik_schema();
    let mut bad_group = fixtures::user(9).groups(&["staff"]).json();
    bad_group["groups_obj"][0]
        .as_object_mut()
        .expect("group object")
        .remove("name");
    let cases = [
        (
            "missing username",
            fixtures::user(9).remove("username").json(),
        ),
        (
            "pk as string",
            fixtures::user(9).set("pk", json!("9")).json(),
        ),
        ("groups_obj entry missing name", bad_group),
        (
            "uuid not a uuid",
            fixtures::user(9).set("uuid", json!("nine")).json(),
        ),
        (
            "date_joined not a date-time",
            fixtures::user(9)
                .set("date_joined", json!("yesterday"))
                .json(),
        ),
        ("unknown type", fixtures::user(9).user_type("robot").json()),
        (
            "is_active null",
            fixtures::user(9).set("is_active", Value::Null).json(),
        ),
        (
            "missing groups_obj",
            fixtures::user(9).remove("groups_obj").json(),
        ),
    ];
    for (what, value) in cases {
        match validate_component(doc, "User", &value) {
            Ok(()) => panic!("{what}: validated, but should not have"),
            Err(errors) => eprintln!("{what}: rejected: {errors:?}"),
        }
    }
    // Strict mode also catches invented members, which OpenAPI itself allows.
    let invented = fixtures::user(9).set("group_obj", json!([])).json();
    validate_component(doc, "User", &invented).expect("lenient allows extra members");
    assert!(user_validator(doc).validate(&invented).is_err());
}

#[tokio::test]
async fn the_control_api_builds_valid_users_from_partial_descriptions() {
    let doc = reference::authentik_schema();
    let stub = AuthentikStub::start("secret").await;
    let (status, body) = request(
        &stub,
        "PUT",
        "/_stub/users/42",
        r#"{"username": "ada", "name": "Ada Lovelace", "groups": ["staff"], "type": "external"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let user = get(&stub, "/api/v3/core/users/42/").await;
    user_validator(doc).validate(&user).expect("a valid User");
    assert_eq!(user["username"], "ada");
    assert_eq!(user["groups_obj"][0]["name"], "staff");
    assert_eq!(user["type"], "external");
    assert_eq!(serde_json::from_str::<Value>(&body).expect("JSON"), user);

    for bad in [
        r#"{"groups": "staff"}"#,
        r#"{"is_active": "yes"}"#,
        "[1]",
        "not json",
    ] {
        let (status, _) = request(&stub, "PUT", "/_stub/users/43", bad).await;
        assert_eq!(status, 400, "{bad}");
    }
    assert!(stub.user(43).is_none());

    // Fields left out keep their stored values.
    let (status, _) = request(&stub, "PUT", "/_stub/users/42", r#"{"name": "Ada King"}"#).await;
    assert_eq!(status, 200);
    let renamed = get(&stub, "/api/v3/core/users/42/").await;
    assert_eq!(renamed["name"], "Ada King");
    assert_eq!(renamed["username"], "ada");
    assert_eq!(renamed["groups_obj"][0]["name"], "staff");
    assert_eq!(renamed["type"], "external");

    let (status, _) = request(&stub, "DELETE", "/_stub/users/42", "").await;
    assert_eq!(status, 204);
    assert!(stub.user(42).is_none());
}

/// A tiny HTTP/1.1 request without a token (the control API needs none): status and body.
async fn request(stub: &AuthentikStub, method: &str, path: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(stub.addr())
        .await
        .expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        stub.addr(),
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let raw = String::from_utf8(raw).expect("utf-8");
    let (head, body) = raw.split_once("\r\n\r\n").expect("head and body");
    let status = head[9..12].parse().expect("status");
    (status, body.to_owned())
}

/// A tiny HTTP/1.1 GET with the stub's token, so the contract test does not depend on
/// the client under test.
async fn get(stub: &AuthentikStub, path: &str) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(stub.addr())
        .await
        .expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer secret\r\nConnection: close\r\n\r\n",
        stub.addr()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let raw = String::from_utf8(raw).expect("utf-8");
    let (head, body) = raw.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(body).expect("JSON body")
}
