//! Authentik's users API as it answers (schema.yml of 2026.2.2, components `User`,
//! `PartialGroup`, `Role`, `PaginatedUserList`, `Pagination`).
//!
//! Fields the schema lists as `required` are required here too, so a body that lacks one
//! is reported as malformed instead of turning into a default; `nullable` ones are
//! `Option`; the others default when absent. Unknown fields are ignored, so a newer
//! Authentik that adds fields still parses. Exceptions, on purpose: `roles`, `roles_obj`,
//! `password_change_date` and `last_updated` are tolerated when absent (idsync does not
//! use them, and older releases do not send all of them).

use chrono::{DateTime, Utc};
use idsync_domain::UserSnapshot;
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

/// One user as `GET /api/v3/core/users/{pk}/` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthentikUser {
    pub pk: i64,
    pub username: String,
    /// Display name; may be "".
    pub name: String,
    /// Not `required` in the schema; Authentik's model default is `true`.
    #[serde(default = "default_true")]
    pub is_active: bool,
    #[serde(default)]
    pub last_login: Option<DateTime<Utc>>,
    pub date_joined: DateTime<Utc>,
    pub is_superuser: bool,
    /// Uuids of the user's direct groups.
    #[serde(default)]
    pub groups: Vec<Uuid>,
    /// The groups themselves; `null` when the request asked `include_groups=false`.
    pub groups_obj: Option<Vec<PartialGroup>>,
    #[serde(default)]
    pub roles: Vec<Uuid>,
    /// `null` when the request asked `include_roles=false`.
    #[serde(default)]
    pub roles_obj: Option<Vec<Role>>,
    /// May be "" (Authentik does not require an email).
    #[serde(default)]
    pub email: String,
    /// An http(s) URL or a data URI.
    pub avatar: String,
    #[serde(default)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
    /// Hashed user id: what OIDC `sub` carries with the default `hashed_user_id` mode.
    pub uid: String,
    #[serde(default = "default_path")]
    pub path: String,
    /// `internal`, `external`, `service_account` or `internal_service_account`; kept as
    /// a string so a type added by a later release still parses.
    #[serde(rename = "type", default = "default_user_type")]
    pub user_type: String,
    pub uuid: Uuid,
    #[serde(default)]
    pub password_change_date: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_updated: Option<DateTime<Utc>>,
}

/// A group as the user's `groups_obj` lists it (schema component `PartialGroup`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartialGroup {
    pub pk: Uuid,
    /// A numerical, int32 id of the group.
    pub num_pk: i64,
    pub name: String,
    #[serde(default)]
    pub is_superuser: bool,
    #[serde(default)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

/// One group as `GET /api/v3/core/groups/{uuid}/?include_users=false` returns it
/// (schema component `Group`): only what idsync reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthentikGroup {
    pub pk: Uuid,
    pub name: String,
    /// The pks of the group's direct members, all of them (not paginated).
    pub users: Vec<i64>,
}

/// The token's own user, from `GET /api/v3/core/users/me/` (schema `UserSelf`): what
/// `idsync check` judges the token's privileges by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelfUser {
    pub pk: i64,
    pub username: String,
    pub is_superuser: bool,
    /// System-wide permissions (`authentik_rbac.*`, `authentik_admin.*`...): a sync
    /// account needs none.
    #[serde(default)]
    pub system_permissions: Vec<String>,
}

impl AuthentikUser {
    /// `(uuid, name)` of each of the user's direct groups, as `groups_obj` lists them.
    pub fn group_names(&self) -> impl Iterator<Item = (Uuid, &str)> {
        self.groups_obj
            .iter()
            .flatten()
            .map(|group| (group.pk, group.name.as_str()))
    }
}

/// The name used by the brief for an entry of `groups_obj`.
pub type GroupObj = PartialGroup;

/// A role as the user's `roles_obj` lists it (schema component `Role`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Role {
    pub pk: Uuid,
    pub name: String,
}

/// Authentik's `pagination` object. The schema types every field as `number`; Authentik
/// sends integers, and page numbers are 0 where there is no next/previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pagination {
    /// Next page number, 0 when this is the last page.
    #[serde(deserialize_with = "count")]
    pub next: u64,
    /// Previous page number, 0 when this is the first page.
    #[serde(deserialize_with = "count")]
    pub previous: u64,
    /// Number of items over all pages.
    #[serde(deserialize_with = "count")]
    pub count: u64,
    /// This page's number, from 1.
    #[serde(deserialize_with = "count")]
    pub current: u64,
    #[serde(deserialize_with = "count")]
    pub total_pages: u64,
    /// 1-based index of this page's first item over all pages; 0 when there is none.
    #[serde(deserialize_with = "count")]
    pub start_index: u64,
    /// 1-based index of this page's last item over all pages; 0 when there is none.
    #[serde(deserialize_with = "count")]
    pub end_index: u64,
}

impl Pagination {
    /// The next page's number, if there is one.
    pub fn next_page(&self) -> Option<u64> {
        (self.next > 0).then_some(self.next)
    }
}

/// One page of `GET /api/v3/core/users/` (schema component `PaginatedUserList`; its
/// `autocomplete` member is ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserPage {
    #[serde(rename = "results")]
    pub users: Vec<AuthentikUser>,
    pub pagination: Pagination,
}

impl AuthentikUser {
    /// The user as idsync keeps it. Groups are the names from `groups_obj` (none when
    /// Authentik sent `null`), sorted and deduplicated.
    pub fn to_snapshot(&self) -> UserSnapshot {
        let mut groups: Vec<String> = self
            .groups_obj
            .iter()
            .flatten()
            .map(|group| group.name.clone())
            .collect();
        groups.sort();
        groups.dedup();
        UserSnapshot {
            pk: self.pk,
            uuid: self.uuid,
            username: self.username.clone(),
            email: self.email.clone(),
            name: self.name.clone(),
            is_active: self.is_active,
            user_type: self.user_type.clone(),
            groups,
            date_joined: self.date_joined,
            uid: Some(self.uid.clone()),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_path() -> String {
    "users".to_owned()
}

fn default_user_type() -> String {
    "internal".to_owned()
}

/// A non-negative whole number sent as a JSON `number`: `3` or `3.0`.
fn count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Int(u64),
        Float(f64),
    }
    match Number::deserialize(deserializer)? {
        Number::Int(n) => Ok(n),
        Number::Float(f) if f >= 0.0 && f.fract() == 0.0 && f <= u64::MAX as f64 => Ok(f as u64),
        Number::Float(f) => Err(serde::de::Error::custom(format_args!(
            "expected a non-negative whole number, got {f}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body() -> serde_json::Value {
        json!({
            "pk": 7,
            "username": "jane",
            "name": "Jane Doe",
            "is_active": true,
            "last_login": null,
            "date_joined": "2026-01-02T03:04:05.123456Z",
            "is_superuser": false,
            "groups": ["6a4f3c0e-5c1b-4a8e-9b1f-2f6f0a1b2c3d", "0b1c2d3e-4f50-4612-8a3b-4c5d6e7f8091"],
            "groups_obj": [
                {"pk": "6a4f3c0e-5c1b-4a8e-9b1f-2f6f0a1b2c3d", "num_pk": 1234, "name": "staff",
                 "is_superuser": false, "attributes": {}},
                {"pk": "0b1c2d3e-4f50-4612-8a3b-4c5d6e7f8091", "num_pk": 99, "name": "authentik Admins",
                 "is_superuser": true, "attributes": {}}
            ],
            "roles": [],
            "roles_obj": [],
            "email": "",
            "avatar": "https://www.gravatar.com/avatar/00?size=158&rating=g&default=404",
            "attributes": {"settings": {"locale": "de"}},
            "uid": "f3b1",
            "path": "users",
            "type": "external",
            "uuid": "d9c1f3a2-1b2c-4d3e-8f40-5a6b7c8d9e0f",
            "password_change_date": "2026-01-02T03:04:05Z",
            "last_updated": "2026-01-03T00:00:00Z",
            "some_future_field": 1
        })
    }

    #[test]
    fn parses_a_real_shaped_user_and_maps_it() {
        let user: AuthentikUser = serde_json::from_value(body()).expect("parses");
        assert_eq!(user.email, "");
        let snapshot = user.to_snapshot();
        assert_eq!(snapshot.pk, 7);
        assert_eq!(snapshot.user_type, "external");
        assert_eq!(snapshot.groups, ["authentik Admins", "staff"]);
        assert_eq!(snapshot.date_joined, user.date_joined);
        assert_eq!(snapshot.uuid, user.uuid);
    }

    #[test]
    fn null_groups_obj_means_no_group_names() {
        let mut value = body();
        value["groups_obj"] = serde_json::Value::Null;
        let user: AuthentikUser = serde_json::from_value(value).expect("parses");
        assert!(user.to_snapshot().groups.is_empty());
    }

    #[test]
    fn a_required_field_is_required() {
        let mut value = body();
        value.as_object_mut().expect("object").remove("uuid");
        assert!(serde_json::from_value::<AuthentikUser>(value).is_err());
    }

    #[test]
    fn optional_fields_default_as_authentik_does() {
        let mut value = body();
        let object = value.as_object_mut().expect("object");
        for key in [
            "is_active",
            "email",
            "type",
            "path",
            "roles",
            "roles_obj",
            "last_login",
        ] {
            object.remove(key);
        }
        let user: AuthentikUser = serde_json::from_value(value).expect("parses");
        assert!(user.is_active);
        assert_eq!(user.user_type, "internal");
        assert_eq!(user.path, "users");
        assert_eq!(user.roles_obj, None);
    }

    #[test]
    fn pagination_accepts_integral_numbers() {
        let pagination: Pagination = serde_json::from_value(json!({
            "next": 2.0, "previous": 0, "count": 250, "current": 1, "total_pages": 3,
            "start_index": 1, "end_index": 100
        }))
        .expect("parses");
        assert_eq!(pagination.next_page(), Some(2));
        assert!(
            serde_json::from_value::<Pagination>(json!({
                "next": 1.5, "previous": 0, "count": 250, "current": 1, "total_pages": 3,
                "start_index": 1, "end_index": 100
            }))
            .is_err()
        );
    }
}
