//! The three webhook bodies idsync accepts (docs/contract.md, "Webhook intake"), parsed into one
//! meaning: "user `pk` (or group `uuid`) was created/updated/deleted", or "valid, but not
//! for us". Group events matter because Authentik reports a change of membership or a
//! group's rename only as an event of the group, never of its users.
//!
//! 1. The .NET sample's mapping: `{"event_type": "model_created", "pk": 1}`.
//! 2. idsync's own blueprint mapping: `{"event_id", "action", "model_app", "model_name",
//!    "model_pk", "created", "actor"}`.
//! 3. Authentik's default body, with no mapping: `{"body": "model_created: {...}", ...}`
//!    where the part after the action is the *Python repr* of the event context. It is
//!    parsed as a Python literal (not scraped with string searches), so keys may come in
//!    any order, `asn`/`geo` may come first and names may hold quotes.

pub mod python_literal;

use serde_json::{Map, Value};

/// A user lifecycle action Authentik reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Created,
    Updated,
    Deleted,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "model_created",
            Action::Updated => "model_updated",
            Action::Deleted => "model_deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "model_created" => Some(Action::Created),
            "model_updated" => Some(Action::Updated),
            "model_deleted" => Some(Action::Deleted),
            _ => None,
        }
    }
}

/// Which of the accepted bodies a webhook used (kept with the inbox row for diagnosis).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    DotnetSample,
    Mapping,
    DefaultBody,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::DotnetSample => "dotnet_sample",
            Format::Mapping => "mapping",
            Format::DefaultBody => "default_body",
        }
    }
}

/// What a webhook is about: one of Authentik's users (its integer pk) or groups (its
/// uuid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    User(i64),
    Group(uuid::Uuid),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub action: Action,
    pub subject: Subject,
    /// Authentik's notification event id (mapping format only), canonical UUID form when
    /// it is one; the inbox's duplicate detection keys on it.
    pub event_id: Option<String>,
    pub format: Format,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Notice(Notice),
    /// Well-formed, but not a user or group lifecycle event (another model, the Test
    /// button).
    Ignored {
        reason: String,
    },
}

/// Why a body was refused; the text goes to the sender as the error's `detail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidPayload(pub String);

fn invalid(msg: impl Into<String>) -> InvalidPayload {
    InvalidPayload(msg.into())
}

/// The action Authentik's "Test" button sends.
const TEST_ACTION: &str = "custom_notification_test";
const CORE_APP: &str = "authentik_core";
const USER_MODEL: &str = "user";
const GROUP_MODEL: &str = "group";
const MAX_EVENT_ID_LEN: usize = 128;

pub fn parse(body: &[u8]) -> Result<Parsed, InvalidPayload> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| invalid(format!("malformed JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(invalid("the body must be a JSON object"));
    };
    if obj.contains_key("action") {
        parse_mapping(&obj)
    } else if obj.contains_key("event_type") {
        parse_dotnet(&obj)
    } else if obj.contains_key("body") {
        parse_default_body(&obj)
    } else {
        Err(invalid(
            "unrecognised body: expected \"event_type\" and \"pk\", idsync's mapping with \
             \"action\" and \"model_pk\", or Authentik's default body with \"body\"",
        ))
    }
}

/// `None` for the Test button, an error for actions we do not know.
fn action_of(name: &str) -> Result<Option<Action>, InvalidPayload> {
    if name == TEST_ACTION {
        return Ok(None);
    }
    Action::parse(name).map(Some).ok_or_else(|| {
        invalid(format!(
            "unknown action {name:?}: expected model_created, model_updated or model_deleted"
        ))
    })
}

fn test_ignored() -> Parsed {
    Parsed::Ignored {
        reason: "test notification".to_owned(),
    }
}

fn not_ours(app: &str, model: &str) -> Parsed {
    Parsed::Ignored {
        reason: format!("not a user or group: model {app}.{model}"),
    }
}

/// Which kind of object `app`.`model` is, if one idsync follows.
#[derive(Clone, Copy)]
enum Model {
    User,
    Group,
}

fn model_of(app: &str, model: &str) -> Option<Model> {
    match (app, model) {
        (CORE_APP, USER_MODEL) => Some(Model::User),
        (CORE_APP, GROUP_MODEL) => Some(Model::Group),
        _ => None,
    }
}

/// The subject of a `model` event: users have positive integer pks, groups uuids
/// (Authentik's event sanitiser writes them as 32 hex digits, without dashes).
fn subject_of(model: Model, pk: Option<&Value>, field: &str) -> Result<Subject, InvalidPayload> {
    match model {
        Model::User => positive_pk(pk, field).map(Subject::User),
        Model::Group => match pk {
            None | Some(Value::Null) => Err(invalid(format!("{field} is missing"))),
            Some(Value::String(text)) => uuid::Uuid::try_parse(text.trim())
                .map(Subject::Group)
                .map_err(|_| invalid(format!("{field} must be a group's uuid, got {text:?}"))),
            Some(other) => Err(invalid(format!(
                "{field} must be a group's uuid (a string), got {}",
                kind(other)
            ))),
        },
    }
}

fn positive_pk(value: Option<&Value>, field: &str) -> Result<i64, InvalidPayload> {
    match value {
        None | Some(Value::Null) => Err(invalid(format!("{field} is missing"))),
        // `7.0` is the integer 7 to JSON (and to JSON Schema's "integer"); only a
        // fraction, or a value past the 64-bit range, is not a pk.
        Some(Value::Number(n)) => match n.as_i64().or_else(|| integral(n.as_f64()?)) {
            Some(pk) if pk > 0 => Ok(pk),
            _ => Err(invalid(format!(
                "{field} must be a positive integer, got {n}"
            ))),
        },
        Some(other) => Err(invalid(format!(
            "{field} must be a positive integer, got {}",
            kind(other)
        ))),
    }
}

/// `f` as an `i64` when it is a whole number within range.
fn integral(f: f64) -> Option<i64> {
    // 2^63 is exactly representable; every finite f64 below it casts without saturating.
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    (f.fract() == 0.0 && (-TWO_POW_63..TWO_POW_63).contains(&f)).then_some(f as i64)
}

fn required_str<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<&'a str, InvalidPayload> {
    match obj.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        None | Some(Value::Null) => Err(invalid(format!("{field} is missing"))),
        Some(Value::String(_)) => Err(invalid(format!("{field} is empty"))),
        Some(other) => Err(invalid(format!(
            "{field} must be a string, got {}",
            kind(other)
        ))),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_dotnet(obj: &Map<String, Value>) -> Result<Parsed, InvalidPayload> {
    let Some(action) = action_of(required_str(obj, "event_type")?)? else {
        return Ok(test_ignored());
    };
    let pk = positive_pk(obj.get("pk"), "pk")?;
    Ok(Parsed::Notice(Notice {
        action,
        subject: Subject::User(pk),
        event_id: None,
        format: Format::DotnetSample,
    }))
}

fn parse_mapping(obj: &Map<String, Value>) -> Result<Parsed, InvalidPayload> {
    let Some(action) = action_of(required_str(obj, "action")?)? else {
        return Ok(test_ignored());
    };
    let app = required_str(obj, "model_app")?;
    let model_name = required_str(obj, "model_name")?;
    let Some(model) = model_of(app, model_name) else {
        return Ok(not_ours(app, model_name));
    };
    let subject = subject_of(model, obj.get("model_pk"), "model_pk")?;
    let event_id = match obj.get("event_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(canonical_event_id(s)?),
        Some(other) => {
            return Err(invalid(format!(
                "event_id must be a string, got {}",
                kind(other)
            )));
        }
    };
    Ok(Parsed::Notice(Notice {
        action,
        subject,
        event_id,
        format: Format::Mapping,
    }))
}

/// Authentik's sanitiser strips a UUID's dashes; `str(event.pk)` keeps them. Either way
/// the same event must dedupe to one key, so UUIDs are stored in their hyphenated form.
fn canonical_event_id(raw: &str) -> Result<String, InvalidPayload> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(invalid("event_id is empty"));
    }
    // Stored as PostgreSQL text, which cannot hold NUL.
    if raw.contains('\0') {
        return Err(invalid("event_id must not contain NUL characters"));
    }
    // Characters, as the message (and the OpenAPI document's maxLength) say, not bytes.
    if raw.chars().count() > MAX_EVENT_ID_LEN {
        return Err(invalid(format!(
            "event_id is longer than {MAX_EVENT_ID_LEN} characters"
        )));
    }
    Ok(match uuid::Uuid::try_parse(raw) {
        Ok(id) => id.hyphenated().to_string(),
        Err(_) => raw.to_owned(),
    })
}

fn parse_default_body(obj: &Map<String, Value>) -> Result<Parsed, InvalidPayload> {
    let summary = required_str(obj, "body")?;
    // Older Authentik releases word the Test button's body this way.
    if summary.starts_with("Test Notification") {
        return Ok(test_ignored());
    }
    let (action_name, context) = summary
        .split_once(": ")
        .ok_or_else(|| invalid("body must read \"<action>: <context>\""))?;
    let Some(action) = action_of(action_name.trim())? else {
        return Ok(test_ignored());
    };
    let context = python_literal::parse(context)
        .map_err(|e| invalid(format!("body context is not a Python dict: {e}")))?;
    let Value::Object(context) = context else {
        return Err(invalid("body context must be a dict"));
    };
    let model = match context.get("model") {
        Some(Value::Object(model)) => model,
        Some(_) => return Err(invalid("body context's 'model' must be a dict")),
        None => return Err(invalid("body context has no 'model'")),
    };
    let app = required_str(model, "app").map_err(|e| invalid(format!("model: {e}")))?;
    let name = required_str(model, "model_name").map_err(|e| invalid(format!("model: {e}")))?;
    let Some(kind) = model_of(app, name) else {
        return Ok(not_ours(app, name));
    };
    let subject = subject_of(kind, model.get("pk"), "model pk")?;
    Ok(Parsed::Notice(Notice {
        action,
        subject,
        event_id: None,
        format: Format::DefaultBody,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(action: Action, pk: i64, event_id: Option<&str>, format: Format) -> Parsed {
        Parsed::Notice(Notice {
            action,
            subject: Subject::User(pk),
            event_id: event_id.map(str::to_owned),
            format,
        })
    }

    fn group(action: Action, uuid: &str, event_id: Option<&str>, format: Format) -> Parsed {
        Parsed::Notice(Notice {
            action,
            subject: Subject::Group(uuid::Uuid::parse_str(uuid).expect("uuid")),
            event_id: event_id.map(str::to_owned),
            format,
        })
    }

    fn parse_json(v: Value) -> Result<Parsed, InvalidPayload> {
        parse(v.to_string().as_bytes())
    }

    #[test]
    fn dotnet_sample_body() {
        assert_eq!(
            parse_json(json!({"event_type": "model_created", "pk": 1})),
            Ok(user(Action::Created, 1, None, Format::DotnetSample))
        );
        assert_eq!(
            parse_json(json!({"event_type": "model_deleted", "pk": 12})),
            Ok(user(Action::Deleted, 12, None, Format::DotnetSample))
        );
        // A whole number written with a fraction is still that integer (JSON Schema agrees).
        assert_eq!(
            parse_json(json!({"event_type": "model_created", "pk": 7.0})),
            Ok(user(Action::Created, 7, None, Format::DotnetSample))
        );
    }

    #[test]
    fn dotnet_sample_with_null_fields_is_invalid() {
        // The sample's mapping returns None when it cannot find them.
        assert!(parse_json(json!({"event_type": null, "pk": null})).is_err());
        assert!(parse_json(json!({"event_type": "model_created", "pk": null})).is_err());
        assert!(parse_json(json!({"event_type": "model_created", "pk": 0})).is_err());
        assert!(parse_json(json!({"event_type": "model_created", "pk": -3})).is_err());
        assert!(parse_json(json!({"event_type": "model_created", "pk": "7"})).is_err());
        assert!(parse_json(json!({"event_type": "model_created", "pk": 1.5})).is_err());
        assert!(parse_json(json!({"event_type": "model_created", "pk": 1e19})).is_err());
        assert!(parse_json(json!({"event_type": "login", "pk": 1})).is_err());
    }

    #[test]
    fn project_mapping_body() {
        let id = "5c0b1f3e-6f7a-4b8c-9d0e-1f2a3b4c5d6e";
        let body = json!({
            "event_id": id, "action": "model_updated", "model_app": "authentik_core",
            "model_name": "user", "model_pk": 7, "created": "2026-01-01T00:00:00Z",
            "actor": {"pk": 1, "username": "akadmin"}
        });
        assert_eq!(
            parse_json(body),
            Ok(user(Action::Updated, 7, Some(id), Format::Mapping))
        );
    }

    #[test]
    fn mapping_event_id_dashes_are_canonical() {
        let body = json!({
            "event_id": "5C0B1F3E6F7A4B8C9D0E1F2A3B4C5D6E", "action": "model_created",
            "model_app": "authentik_core", "model_name": "user", "model_pk": 7
        });
        assert_eq!(
            parse_json(body),
            Ok(user(
                Action::Created,
                7,
                Some("5c0b1f3e-6f7a-4b8c-9d0e-1f2a3b4c5d6e"),
                Format::Mapping
            ))
        );
    }

    #[test]
    fn mapping_for_another_model_is_ignored() {
        for (app, model) in [
            ("authentik_core", "application"),
            ("authentik_providers_oauth2", "oauth2provider"),
            ("authentik_core", "token"),
        ] {
            let body = json!({
                "event_id": "x", "action": "model_created", "model_app": app,
                "model_name": model, "model_pk": 3
            });
            assert_eq!(parse_json(body), Ok(not_ours(app, model)));
        }
    }

    #[test]
    fn mapping_for_a_group_names_its_uuid() {
        let uuid = "9f1c4d1e-0000-4000-8000-000000000000";
        for pk in [uuid, "9f1c4d1e000040008000000000000000"] {
            let body = json!({
                "event_id": "e1", "action": "model_updated", "model_app": "authentik_core",
                "model_name": "group", "model_pk": pk
            });
            assert_eq!(
                parse_json(body),
                Ok(group(Action::Updated, uuid, Some("e1"), Format::Mapping))
            );
        }
        for bad in [json!(7), json!("staff"), json!(null), json!("")] {
            let body = json!({
                "action": "model_deleted", "model_app": "authentik_core",
                "model_name": "group", "model_pk": bad
            });
            assert!(parse_json(body).is_err(), "accepted group pk {bad}");
        }
    }

    #[test]
    fn test_button_is_ignored_in_every_format() {
        assert_eq!(
            parse_json(json!({"action": "custom_notification_test", "event_id": "e"})),
            Ok(test_ignored())
        );
        assert_eq!(
            parse_json(json!({"event_type": "custom_notification_test", "pk": null})),
            Ok(test_ignored())
        );
        assert_eq!(
            parse_json(
                json!({"body": "custom_notification_test: {'foo': 'bar'}", "severity": "notice"})
            ),
            Ok(test_ignored())
        );
        assert_eq!(
            parse_json(
                json!({"body": "Test Notification from transport idsync", "severity": "notice"})
            ),
            Ok(test_ignored())
        );
    }

    #[test]
    fn default_body_realistic() {
        let summary = "model_created: {'asn': {'asn': 64496, 'as_org': None, 'network': '192.0.2.0/24'}, \
            'geo': {'lat': 51.5, 'city': '', 'long': -0.12, 'country': 'GB', 'continent': 'EU'}, \
            'model': {'pk': 7, 'app': 'authentik_core', 'name': \"O'Brien\", 'model_name': 'user'}, \
            'http_request': {'args': {}, 'path': '/api/v3/core/users/', 'method': 'POST', \
            'request_id': 'a1b2', 'user_agent': 'Mozilla/5.0'}}";
        let body = json!({
            "body": summary, "severity": "notice",
            "user_email": "admin@example.org", "user_username": "akadmin",
            "event_user_email": "admin@example.org", "event_user_username": "akadmin"
        });
        assert_eq!(
            parse_json(body),
            Ok(user(Action::Created, 7, None, Format::DefaultBody))
        );
    }

    #[test]
    fn default_body_keys_in_any_order_and_escaped_names() {
        let summary = r#"model_deleted: {'model': {'model_name': 'user', 'name': 'Jane \'JJ\' Doe, "the" first', 'pk': 42, 'app': 'authentik_core'}, 'extra': [1, 2.5, True, None, (3, 4)]}"#;
        assert_eq!(
            parse_json(json!({"body": summary})),
            Ok(user(Action::Deleted, 42, None, Format::DefaultBody))
        );
    }

    #[test]
    fn default_body_group_names_its_uuid() {
        let summary = "model_updated: {'model': {'pk': '0b7c3f0e4e5a4c1b9d2f6a7e8c9d0a1b', 'app': 'authentik_core', 'name': 'staff', 'model_name': 'group'}}";
        assert_eq!(
            parse_json(json!({"body": summary})),
            Ok(group(
                Action::Updated,
                "0b7c3f0e-4e5a-4c1b-9d2f-6a7e8c9d0a1b",
                None,
                Format::DefaultBody
            ))
        );
        let other = "model_created: {'model': {'pk': 3, 'app': 'authentik_core', 'name': 'x', 'model_name': 'application'}}";
        assert_eq!(
            parse_json(json!({"body": other})),
            Ok(not_ours("authentik_core", "application"))
        );
    }

    #[test]
    fn default_body_is_read_strictly() {
        // A name that merely contains the marker the .NET sample scrapes for.
        let tricky = "model_created: {'model': {'name': \"'model': {'pk': 5, \", 'pk': 'abc', 'app': 'authentik_core', 'model_name': 'user'}}";
        assert!(parse_json(json!({"body": tricky})).is_err());
        for bad in [
            "model_created",
            "model_created: not a dict",
            "model_created: {'model': {'pk': 7, 'app': 'authentik_core'}}",
            "model_created: {'http_request': {}}",
            "model_created: {'model': {'pk': 7, 'app': 'authentik_core', 'model_name': 'user'}} trailing",
            "model_created: {'model': {'pk': UUID('x'), 'app': 'authentik_core', 'model_name': 'user'}}",
            "model_created: {'model': {'pk': 0, 'app': 'authentik_core', 'model_name': 'user'}}",
            "login: {'model': {'pk': 7, 'app': 'authentik_core', 'model_name': 'user'}}",
        ] {
            assert!(
                parse_json(json!({"body": bad})).is_err(),
                "accepted {bad:?}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_a_crash() {
        let deep = format!(
            "model_created: {}{}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(parse_json(json!({"body": deep})).is_err());
    }

    #[test]
    fn malformed_json_and_shapes() {
        assert!(parse(b"{not json").is_err());
        assert!(parse(b"[]").is_err());
        assert!(parse(b"{}").is_err());
        assert!(parse(b"").is_err());
        assert!(parse_json(json!({"action": "model_created", "model_app": "authentik_core", "model_name": "user"})).is_err());
        assert!(parse_json(json!({"action": 5})).is_err());
    }

    #[test]
    fn python_literal_values() {
        assert_eq!(
            python_literal::parse(
                r#"{'a': "it's", 'b': [1, -2, 3.5], 'c': (True, False, None), 'd': '\xe9\u00e9'}"#
            ),
            Ok(json!({"a": "it's", "b": [1, -2, 3.5], "c": [true, false, null], "d": "éé"}))
        );
        assert_eq!(python_literal::parse("'naïve ✓'"), Ok(json!("naïve ✓")));
        assert!(python_literal::parse("{'a': 1,").is_err());
        assert!(python_literal::parse("'unterminated").is_err());
    }
}
