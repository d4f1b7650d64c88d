//! The OpenAPI shapes of the store's rows, as the API sends them. The store serialises
//! its rows itself (`UserRow`'s hand-written `Serialize` and `users_json`, `FeedItem`'s
//! derive) and knows nothing of OpenAPI; these types only describe that JSON. The test
//! below serialises real rows and checks that the members match, so the two cannot drift
//! apart unnoticed (Schemathesis checks every answer against them too).

#![allow(dead_code, reason = "documentation only: never built, only described")]

use chrono::{DateTime, Utc};
use utoipa::ToSchema;
use uuid::Uuid;

/// A user of the read model (docs/contract.md). An erased user's personal fields are
/// `null`, with `"erased": true`.
#[derive(ToSchema)]
#[schema(as = User)]
pub(crate) struct UserSchema {
    pk: i64,
    uuid: Uuid,
    /// null once erased
    username: Option<String>,
    /// null once erased
    email: Option<String>,
    /// null once erased
    name: Option<String>,
    is_active: bool,
    #[schema(rename = "type")]
    user_type: String,
    groups: Vec<String>,
    registered_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    deleted_at: Option<DateTime<Utc>>,
    /// Authentik's hashed user id (what `sub` carries under its default `sub_mode`);
    /// null for a user registered before idsync kept it, until the next reconcile.
    uid: Option<String>,
    /// The user's personal data was forgotten (right to erasure): `username`, `email`,
    /// `name` and `uid` are null.
    erased: bool,
}

/// One event of the log (docs/contract.md): what SSE `data:`, a WebSocket `event`
/// message and an `/api/events` entry carry.
#[derive(ToSchema)]
#[schema(as = FeedItem)]
pub(crate) struct FeedItemSchema {
    position: i64,
    #[schema(rename = "type")]
    event_type: String,
    user_pk: i64,
    sequence: i64,
    recorded_at: DateTime<Utc>,
    /// `UserRegistered`: the user; `UserUpdated`: `pk` and the changed fields;
    /// `UserDeleted`, `UserErased`: `pk`. An erased user's personal fields are `null`,
    /// with `"erased": true`.
    #[schema(value_type = Object)]
    data: serde_json::Value,
    /// `source` (`webhook` or `reconcile`), `event_id` when known, `received_at`.
    #[schema(value_type = Object)]
    metadata: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use idsync_store::FeedItem;
    use idsync_store::projections::users::UserRow;
    use utoipa::PartialSchema;
    use utoipa::openapi::{RefOr, Schema};

    use super::*;

    fn documented<T: PartialSchema>() -> (BTreeSet<String>, BTreeSet<String>) {
        let RefOr::T(Schema::Object(object)) = T::schema() else {
            panic!("an object schema");
        };
        (
            object.properties.keys().cloned().collect(),
            object.required.iter().cloned().collect(),
        )
    }

    fn members(value: &serde_json::Value) -> BTreeSet<String> {
        value
            .as_object()
            .expect("a JSON object")
            .keys()
            .cloned()
            .collect()
    }

    fn user_row(erased: bool) -> UserRow {
        UserRow {
            pk: 7,
            uuid: Uuid::nil(),
            username: "jane".to_owned(),
            email: "jane@example.com".to_owned(),
            name: "Jane".to_owned(),
            is_active: true,
            user_type: "internal".to_owned(),
            groups: vec!["staff".to_owned()],
            registered_at: Utc::now(),
            updated_at: Utc::now(),
            deleted_at: None,
            uid: Some("abc".to_owned()),
            position: 3,
            erased,
        }
    }

    #[test]
    fn the_user_schema_names_exactly_the_members_a_user_row_serialises() {
        let (properties, required) = documented::<UserSchema>();
        for erased in [false, true] {
            let json = serde_json::to_value(user_row(erased)).expect("serialise");
            assert_eq!(members(&json), properties, "erased: {erased}");
            // Required members are never null; nullable ones are not required.
            for name in &required {
                assert!(
                    !json[name].is_null(),
                    "{name} is required but null ({json})"
                );
            }
        }
    }

    #[test]
    fn the_feed_item_schema_names_exactly_the_members_a_feed_item_serialises() {
        let (properties, required) = documented::<FeedItemSchema>();
        let item = FeedItem {
            position: idsync_store::Position(1),
            event_type: "UserRegistered".to_owned(),
            user_pk: idsync_store::UserPk(7),
            sequence: 1,
            recorded_at: Utc::now(),
            data: serde_json::json!({"pk": 7}),
            metadata: serde_json::json!({"source": "webhook"}),
        };
        let json = serde_json::to_value(item).expect("serialise");
        assert_eq!(members(&json), properties);
        assert_eq!(
            required, properties,
            "every member of a feed item is always there"
        );
    }
}
