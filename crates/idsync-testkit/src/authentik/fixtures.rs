//! Users as Authentik's API returns them (schema.yml's `User`, every field, real
//! formats), built deterministically: the same builder calls give the same JSON, and a
//! user's `uuid`, `uid` and dates, and a group's `pk`, follow from the pk or the name.
//!
//! ```
//! use idsync_testkit::authentik::fixtures;
//! let jane = fixtures::user(7).username("jane").groups(&["authentik Admins"]).json();
//! assert_eq!(jane["groups_obj"][0]["name"], "authentik Admins");
//! assert_eq!(jane["is_superuser"], true);
//! ```

use chrono::{DateTime, Duration, SecondsFormat, TimeZone, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// The group whose members Authentik makes superusers in a fresh install.
pub const ADMIN_GROUP: &str = "authentik Admins";

/// A user with pk `pk`: username `user<pk>`, name `User <pk>`, email
/// `user<pk>@example.org`, active, `internal`, no groups, never logged in.
pub fn user(pk: i64) -> UserFixture {
    let date_joined = base_time()
        + Duration::minutes(pk)
        + Duration::microseconds(mix(pk as u64) as i64 % 1_000_000);
    UserFixture {
        pk,
        username: format!("user{pk}"),
        name: format!("User {pk}"),
        email: format!("user{pk}@example.org"),
        is_active: true,
        user_type: "internal".to_owned(),
        groups: Vec::new(),
        groups_obj_null: false,
        roles: Vec::new(),
        path: "users".to_owned(),
        attributes: Map::new(),
        last_login: None,
        date_joined,
        last_updated: date_joined,
        password_change_date: date_joined,
        uuid: user_uuid(pk),
        overrides: Map::new(),
        removed: Vec::new(),
    }
}

/// `user(pk).json()` for each pk.
pub fn users(pks: impl IntoIterator<Item = i64>) -> Vec<Value> {
    pks.into_iter().map(|pk| user(pk).json()).collect()
}

/// The uuid a fixture user with this pk gets.
pub fn user_uuid(pk: i64) -> Uuid {
    uuid_from(0x7573_6572, pk as u64)
}

/// The uuid (`pk`) a fixture group with this name gets.
pub fn group_uuid(name: &str) -> Uuid {
    uuid_from(0x6772_6f75, fnv1a(name))
}

/// The `groups_obj` entry (schema `PartialGroup`) of a group with this name.
pub fn group_obj(name: &str) -> Value {
    json!({
        "pk": group_uuid(name),
        // Authentik's num_pk is an int32 derived from the uuid.
        "num_pk": (mix(fnv1a(name)) % (i32::MAX as u64)) as i64,
        "name": name,
        "is_superuser": name == ADMIN_GROUP,
        "attributes": {},
    })
}

/// A group as `GET /api/v3/core/groups/{uuid}/?include_users=false` returns it (schema
/// `Group`): `members` are its users' pks.
pub fn group_json(uuid: Uuid, name: &str, members: &[i64]) -> Value {
    json!({
        "pk": uuid,
        "num_pk": (mix(fnv1a(&uuid.to_string())) % (i32::MAX as u64)) as i64,
        "name": name,
        "is_superuser": name == ADMIN_GROUP,
        "parents": [],
        "parents_obj": null,
        "users": members,
        "users_obj": null,
        "attributes": {},
        "roles": [],
        "roles_obj": [],
        "inherited_roles_obj": null,
        "children": [],
        "children_obj": null,
    })
}

/// The `roles_obj` entry (schema `Role`) of a role with this name.
pub fn role_obj(name: &str) -> Value {
    json!({ "pk": uuid_from(0x726f_6c65, fnv1a(name)), "name": name })
}

/// Builder of one user's JSON. Setters consume and return the builder.
#[derive(Debug, Clone, PartialEq)]
pub struct UserFixture {
    pk: i64,
    username: String,
    name: String,
    email: String,
    is_active: bool,
    user_type: String,
    groups: Vec<String>,
    groups_obj_null: bool,
    roles: Vec<String>,
    path: String,
    attributes: Map<String, Value>,
    last_login: Option<DateTime<Utc>>,
    date_joined: DateTime<Utc>,
    last_updated: DateTime<Utc>,
    password_change_date: DateTime<Utc>,
    uuid: Uuid,
    overrides: Map<String, Value>,
    removed: Vec<String>,
}

impl UserFixture {
    pub fn pk(&self) -> i64 {
        self.pk
    }

    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = username.into();
        self
    }

    /// `""` is what Authentik sends for a user without an address.
    pub fn email(mut self, email: impl Into<String>) -> Self {
        self.email = email.into();
        self
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn active(mut self, is_active: bool) -> Self {
        self.is_active = is_active;
        self
    }

    /// Direct groups, by name: `groups` gets their uuids, `groups_obj` the entries, and
    /// `is_superuser` is true when one of them is [`ADMIN_GROUP`].
    pub fn groups(mut self, names: &[&str]) -> Self {
        self.groups = names.iter().map(|n| (*n).to_owned()).collect();
        self
    }

    /// `groups_obj: null`, as Authentik answers to `include_groups=false`.
    pub fn without_groups_obj(mut self) -> Self {
        self.groups_obj_null = true;
        self
    }

    pub fn roles(mut self, names: &[&str]) -> Self {
        self.roles = names.iter().map(|n| (*n).to_owned()).collect();
        self
    }

    /// `internal`, `external`, `service_account` or `internal_service_account`.
    pub fn user_type(mut self, user_type: impl Into<String>) -> Self {
        self.user_type = user_type.into();
        self
    }

    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Replaces `attributes` (a JSON object; anything else is ignored).
    pub fn attributes(mut self, attributes: Value) -> Self {
        if let Value::Object(map) = attributes {
            self.attributes = map;
        }
        self
    }

    pub fn last_login(mut self, at: Option<DateTime<Utc>>) -> Self {
        self.last_login = at;
        self
    }

    /// Also moves `last_updated` and `password_change_date` to the same instant.
    pub fn date_joined(mut self, at: DateTime<Utc>) -> Self {
        self.date_joined = at;
        self.last_updated = at;
        self.password_change_date = at;
        self
    }

    pub fn last_updated(mut self, at: DateTime<Utc>) -> Self {
        self.last_updated = at;
        self
    }

    pub fn uuid(mut self, uuid: Uuid) -> Self {
        self.uuid = uuid;
        self
    }

    /// Sets a top-level member to any value, after everything else (to build bodies
    /// Authentik would not send, or fields of a later release).
    pub fn set(mut self, key: &str, value: Value) -> Self {
        self.removed.retain(|k| k != key);
        self.overrides.insert(key.to_owned(), value);
        self
    }

    /// Leaves a top-level member out.
    pub fn remove(mut self, key: &str) -> Self {
        self.overrides.remove(key);
        self.removed.push(key.to_owned());
        self
    }

    /// The user as `GET /api/v3/core/users/{pk}/` returns it.
    pub fn json(&self) -> Value {
        let is_superuser = self.groups.iter().any(|g| g == ADMIN_GROUP);
        let groups_obj = if self.groups_obj_null {
            Value::Null
        } else {
            Value::Array(self.groups.iter().map(|g| group_obj(g)).collect())
        };
        let mut user = json!({
            "pk": self.pk,
            "username": self.username,
            "name": self.name,
            "is_active": self.is_active,
            "last_login": self.last_login.map(drf_time),
            "date_joined": drf_time(self.date_joined),
            "is_superuser": is_superuser,
            "groups": self.groups.iter().map(|g| group_uuid(g)).collect::<Vec<_>>(),
            "groups_obj": groups_obj,
            "roles": self.roles.iter().map(|r| role_obj(r)["pk"].clone()).collect::<Vec<_>>(),
            "roles_obj": self.roles.iter().map(|r| role_obj(r)).collect::<Vec<_>>(),
            "email": self.email,
            "avatar": format!(
                "https://www.gravatar.com/avatar/{:016x}{:016x}?size=158&rating=g&default=404",
                mix(fnv1a(&self.email)),
                mix(fnv1a(&self.email) ^ 1)
            ),
            "attributes": self.attributes,
            "uid": uid(self.pk),
            "path": self.path,
            "type": self.user_type,
            "uuid": self.uuid,
            "password_change_date": drf_time(self.password_change_date),
            "last_updated": drf_time(self.last_updated),
        });
        if let Value::Object(object) = &mut user {
            for key in &self.removed {
                object.remove(key);
            }
            for (key, value) in &self.overrides {
                object.insert(key.clone(), value.clone());
            }
        }
        user
    }
}

/// A user from a partial description, as test harnesses outside Rust send it (the
/// stub's control API): `username`, `name`, `email`, `groups` (names), `is_active` and
/// `type` are taken when present; the others keep their values in `existing` (the user
/// as stored, if any), else follow [`user`]'s defaults.
///
/// # Errors
///
/// When a present field has the wrong JSON type.
pub fn user_from_partial(
    pk: i64,
    partial: &Value,
    existing: Option<&Value>,
) -> Result<UserFixture, String> {
    let Some(given) = partial.as_object() else {
        return Err("expected a JSON object".to_owned());
    };
    // Start from what is stored, in the same partial shape, then lay the new fields over.
    let mut fields = Map::new();
    if let Some(existing) = existing.and_then(Value::as_object) {
        for key in ["username", "name", "email", "is_active", "type"] {
            if let Some(value) = existing.get(key) {
                fields.insert(key.to_owned(), value.clone());
            }
        }
        if let Some(groups) = existing.get("groups_obj").and_then(Value::as_array) {
            let names = groups
                .iter()
                .filter_map(|g| g.get("name").cloned())
                .collect();
            fields.insert("groups".to_owned(), Value::Array(names));
        }
    }
    for (key, value) in given {
        fields.insert(key.clone(), value.clone());
    }
    let text = |key: &str| -> Result<Option<String>, String> {
        match fields.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("{key} must be a string")),
        }
    };
    let mut fixture = user(pk);
    if let Some(v) = text("username")? {
        fixture = fixture.username(v);
    }
    if let Some(v) = text("name")? {
        fixture = fixture.name(v);
    }
    if let Some(v) = text("email")? {
        fixture = fixture.email(v);
    }
    if let Some(v) = text("type")? {
        fixture = fixture.user_type(v);
    }
    match fields.get("is_active") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => fixture = fixture.active(*b),
        Some(_) => return Err("is_active must be a boolean".to_owned()),
    }
    match fields.get("groups") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            let names = items
                .iter()
                .map(|g| g.as_str().ok_or("groups must be a list of names"))
                .collect::<Result<Vec<_>, _>>()?;
            fixture = fixture.groups(&names);
        }
        Some(_) => return Err("groups must be a list of names".to_owned()),
    }
    Ok(fixture)
}

impl From<UserFixture> for Value {
    fn from(fixture: UserFixture) -> Self {
        fixture.json()
    }
}

impl From<&UserFixture> for Value {
    fn from(fixture: &UserFixture) -> Self {
        fixture.json()
    }
}

/// Datetimes as Django REST framework writes them: ISO 8601, microseconds when not
/// zero, `Z` for UTC.
pub fn drf_time(at: DateTime<Utc>) -> String {
    let format = if at.timestamp_subsec_micros() == 0 {
        SecondsFormat::Secs
    } else {
        SecondsFormat::Micros
    };
    at.to_rfc3339_opts(format, true)
}

fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 9, 0, 0)
        .single()
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// Authentik's `uid` is a sha256 hex digest (64 characters); this is as long and as
/// stable, not a real digest.
fn uid(pk: i64) -> String {
    let seed = mix(0x7569_6400 ^ pk as u64);
    (0..4u64)
        .map(|i| format!("{:016x}", mix(seed.wrapping_add(i))))
        .collect()
}

fn uuid_from(tag: u64, value: u64) -> Uuid {
    let high = mix(tag ^ value.rotate_left(17));
    let low = mix(high ^ value);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&high.to_be_bytes());
    bytes[8..].copy_from_slice(&low.to_be_bytes());
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// splitmix64's finalizer.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_distinct() {
        assert_eq!(user(3).groups(&["a"]).json(), user(3).groups(&["a"]).json());
        assert_ne!(user(3).json()["uuid"], user(4).json()["uuid"]);
        assert_ne!(user(3).json()["uid"], user(4).json()["uid"]);
        assert_eq!(user(3).json()["uid"].as_str().map(str::len), Some(64));
        assert_eq!(group_uuid("staff"), group_uuid("staff"));
        assert_ne!(group_uuid("staff"), group_uuid("staff2"));
        assert_eq!(user_uuid(3).get_version_num(), 4);
    }

    #[test]
    fn groups_line_up() {
        let value = user(1).groups(&["staff", ADMIN_GROUP]).json();
        assert_eq!(value["groups"][1], value["groups_obj"][1]["pk"]);
        assert_eq!(value["groups_obj"][0]["name"], "staff");
        assert_eq!(value["is_superuser"], true);
        assert_eq!(
            user(1).without_groups_obj().json()["groups_obj"],
            Value::Null
        );
    }

    #[test]
    fn set_and_remove() {
        let value = user(1).set("pk", json!("1")).remove("username").json();
        assert_eq!(value["pk"], "1");
        assert!(value.get("username").is_none());
        let value = user(1).remove("email").set("email", json!("x@y.z")).json();
        assert_eq!(value["email"], "x@y.z");
    }

    #[test]
    fn datetimes_look_like_drf() {
        let at = Utc
            .with_ymd_and_hms(2026, 2, 3, 4, 5, 6)
            .single()
            .expect("date");
        assert_eq!(drf_time(at), "2026-02-03T04:05:06Z");
        assert_eq!(
            drf_time(at + Duration::microseconds(1500)),
            "2026-02-03T04:05:06.001500Z"
        );
    }
}
