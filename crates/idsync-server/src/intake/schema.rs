//! The webhook's bodies as JSON Schema, for `/openapi.json`: exactly what
//! `idsync_authentik::webhook::parse` accepts, so an API fuzzer generating "valid" bodies
//! gets 2xx and "invalid" ones get 400 (docs/contract.md, "Webhook intake").
//!
//! The parser picks the format by key: `action` → idsync's mapping; else `event_type` →
//! the .NET sample's; else `body` → Authentik's default body. So each format excludes
//! the keys of the ones before it, and within a format the Test button and other models
//! (answered 202 `ignored`) are branches of their own.
//!
//! Written as JSON rather than with utoipa's builders: the schema needs `not` and
//! `const`, which utoipa's schema model does not have. The JSON goes in unchanged
//! through `Object`'s flattened extension map (its builder would prefix the keys with
//! `x-`; the map itself does not).

use std::borrow::Cow;

use serde_json::{Value, json};
use utoipa::openapi::RefOr;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::schema::{Object, Schema, SchemaType};
use utoipa::{PartialSchema, ToSchema};

const ACTIONS: [&str; 3] = ["model_created", "model_updated", "model_deleted"];
const TEST_ACTION: &str = "custom_notification_test";

/// A user's pk: a positive 64-bit integer.
fn user_pk() -> Value {
    json!({"type": "integer", "format": "int64", "minimum": 1, "maximum": i64::MAX})
}

/// A group's uuid, hyphenated or as the 32 hex digits Authentik's event sanitiser writes.
fn group_uuid() -> Value {
    json!({
        "type": "string",
        "pattern": "^([0-9a-fA-F]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$",
    })
}

fn non_empty() -> Value {
    json!({"type": "string", "minLength": 1})
}

/// The mapping's `event_id`: optional, and when a string, something besides blanks,
/// at most 128 characters, no NUL. Duplicate detection keys on it.
fn event_id() -> Value {
    json!({
        "type": ["string", "null"],
        "minLength": 1,
        "maxLength": 128,
        "pattern": "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$",
    })
}

fn webhook_body() -> Value {
    let mapping = json!({
        "title": "idsync's blueprint mapping",
        "oneOf": [
            {
                "description": "Authentik's Test button: answered 202 ignored",
                "type": "object",
                "required": ["action"],
                "properties": {"action": {"const": TEST_ACTION}},
            },
            {
                "description": "a user's lifecycle event",
                "type": "object",
                "required": ["action", "model_app", "model_name", "model_pk"],
                "properties": {
                    "event_id": event_id(),
                    "action": {"enum": ACTIONS},
                    "model_app": {"const": "authentik_core"},
                    "model_name": {"const": "user"},
                    "model_pk": user_pk(),
                    "created": {"description": "when Authentik recorded the event (not read)"},
                    "actor": {"description": "who did it (not read)"},
                },
            },
            {
                "description": "a group's lifecycle event",
                "type": "object",
                "required": ["action", "model_app", "model_name", "model_pk"],
                "properties": {
                    "event_id": event_id(),
                    "action": {"enum": ACTIONS},
                    "model_app": {"const": "authentik_core"},
                    "model_name": {"const": "group"},
                    "model_pk": group_uuid(),
                },
            },
            {
                "description": "another model's event: answered 202 ignored",
                "type": "object",
                "required": ["action", "model_app", "model_name"],
                "properties": {
                    "action": {"enum": ACTIONS},
                    "model_app": non_empty(),
                    "model_name": non_empty(),
                },
                "not": {
                    "required": ["model_app", "model_name"],
                    "properties": {
                        "model_app": {"const": "authentik_core"},
                        "model_name": {"enum": ["user", "group"]},
                    },
                },
            },
        ],
    });
    let dotnet = json!({
        "title": "the .NET sample's mapping (always a user)",
        "not": {"required": ["action"]},
        "oneOf": [
            {
                "description": "Authentik's Test button: answered 202 ignored",
                "type": "object",
                "required": ["event_type"],
                "properties": {"event_type": {"const": TEST_ACTION}},
            },
            {
                "type": "object",
                "required": ["event_type", "pk"],
                "properties": {"event_type": {"enum": ACTIONS}, "pk": user_pk()},
            },
        ],
    });
    // The context is a Python literal; a pattern can only give its simplest spelling
    // (the parser also takes other key orders and extra keys, documented in words).
    let default_body = json!({
        "title": "Authentik's default body, no mapping",
        "type": "object",
        "required": ["body"],
        "not": {"anyOf": [{"required": ["action"]}, {"required": ["event_type"]}]},
        "properties": {
            "body": {
                "type": "string",
                "description": "`<action>: <the event's context as a Python literal>`, e.g. \
                    `model_created: {'model': {'app': 'authentik_core', 'model_name': 'user', 'pk': 7}}`; \
                    keys in any order, other keys allowed. `Test Notification...` and \
                    `custom_notification_test: ...` are answered 202 ignored.",
                "pattern": "^(Test Notification[\\s\\S]*|custom_notification_test: [\\s\\S]*|(model_created|model_updated|model_deleted): \\{'model': \\{'app': 'authentik_core', (('model_name': 'user', 'pk': [1-9][0-9]{0,17})|('model_name': 'group', 'pk': '[0-9a-f]{32}'))\\}\\})$",
            },
        },
    });
    json!({
        "description": "One of the three bodies Authentik can send (docs/contract.md, \"Webhook intake\"); \
            at most 64 KiB.",
        "oneOf": [mapping, dotnet, default_body],
    })
}

/// A schema written as JSON (see the module's comment).
pub(crate) fn raw(schema: Value) -> RefOr<Schema> {
    let Value::Object(map) = schema else {
        unreachable!("schemas here are JSON objects")
    };
    let mut object = Object::with_type(SchemaType::AnyValue);
    object.extensions = Some(Extensions::from_iter(map));
    RefOr::T(Schema::Object(object))
}

/// The request body of `POST /authentik/webhook`.
pub(crate) struct WebhookBody;

impl PartialSchema for WebhookBody {
    fn schema() -> RefOr<Schema> {
        raw(webhook_body())
    }
}

impl ToSchema for WebhookBody {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("WebhookBody")
    }
}

/// 202: stored, or valid but not a user or group lifecycle event.
pub(crate) struct WebhookAccepted;

impl PartialSchema for WebhookAccepted {
    fn schema() -> RefOr<Schema> {
        raw(json!({
            "oneOf": [
                {
                    "type": "object",
                    "required": ["status", "inbox_id"],
                    "properties": {
                        "status": {"const": "accepted"},
                        "inbox_id": {"type": "string", "format": "uuid"},
                    },
                },
                {
                    "type": "object",
                    "required": ["status", "reason"],
                    "properties": {
                        "status": {"const": "ignored"},
                        "reason": {"type": "string"},
                    },
                },
            ],
        }))
    }
}

impl ToSchema for WebhookAccepted {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("WebhookAccepted")
    }
}

/// 200: a re-delivery of an `event_id` seen before.
pub(crate) struct WebhookDuplicate;

impl PartialSchema for WebhookDuplicate {
    fn schema() -> RefOr<Schema> {
        raw(json!({
            "type": "object",
            "required": ["status", "inbox_id"],
            "properties": {
                "status": {"const": "duplicate"},
                "inbox_id": {"type": "string", "format": "uuid"},
            },
        }))
    }
}

impl ToSchema for WebhookDuplicate {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("WebhookDuplicate")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema and the parser agree on the examples the contract gives.
    #[test]
    fn contract_examples_match_the_schema_and_the_parser() {
        let schema = webhook_body();
        let validator = jsonschema::validator_for(&schema).expect("a valid schema");
        for (body, valid) in [
            (json!({"event_type": "model_created", "pk": 1}), true),
            (
                json!({"event_type": "custom_notification_test", "pk": null}),
                true,
            ),
            (
                json!({"event_id": "5c0b1f3e-6f7a-4b8c-9d0e-1f2a3b4c5d6e", "action": "model_created",
                    "model_app": "authentik_core", "model_name": "user", "model_pk": 7,
                    "created": "2026-01-01T00:00:00Z", "actor": {}}),
                true,
            ),
            (
                json!({"action": "model_updated", "model_app": "authentik_core",
                    "model_name": "group", "model_pk": "9f1c4d1e000040008000000000000000"}),
                true,
            ),
            (
                json!({"action": "model_created", "model_app": "authentik_core",
                    "model_name": "application", "model_pk": 3}),
                true,
            ),
            (
                json!({"body": "model_created: {'model': {'app': 'authentik_core', 'model_name': 'user', 'pk': 7}}"}),
                true,
            ),
            (json!({}), false),
            (json!({"event_type": "model_created", "pk": 0}), false),
            (
                json!({"event_type": "model_created", "pk": 1, "action": "model_created"}),
                false,
            ),
            (
                json!({"action": "model_created", "model_app": "authentik_core", "model_name": "user"}),
                false,
            ),
            (json!({"body": ""}), false),
            (
                json!({"event_id": "a\u{0}b", "action": "model_created", "model_app": "authentik_core",
                    "model_name": "user", "model_pk": 7}),
                false,
            ),
        ] {
            let parsed = idsync_authentik::webhook::parse(body.to_string().as_bytes()).is_ok();
            assert_eq!(parsed, valid, "parser on {body}");
            assert_eq!(validator.is_valid(&body), valid, "schema on {body}");
        }
    }
}
