use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The user as idsync keeps it: the fields of the contract's user (docs/contract.md) that come from
/// Authentik. A snapshot is what a fetch from Authentik's API produced; `UserRegistered`
/// carries one whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSnapshot {
    pub pk: i64,
    pub uuid: Uuid,
    pub username: String,
    pub email: String,
    pub name: String,
    pub is_active: bool,
    #[serde(rename = "type")]
    pub user_type: String,
    /// Group names. Authentik does not promise an order, so they are kept sorted: a
    /// reordering alone is not a change.
    pub groups: Vec<String>,
    pub date_joined: DateTime<Utc>,
    /// Authentik's hashed user id: what OIDC `sub` carries under the provider's default
    /// `sub_mode` (`hashed_user_id`). Absent from events written before idsync kept it;
    /// reconcile fills it in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

impl UserSnapshot {
    /// Empties the personal fields ([`PERSONAL_FIELDS`]): what is left of an erased user.
    pub fn forget_personal(&mut self) {
        self.username.clear();
        self.email.clear();
        self.name.clear();
        self.uid = None;
    }

    fn normalized(mut self) -> Self {
        self.groups.sort();
        self.groups.dedup();
        self
    }
}

/// The fields of a `UserUpdated` event: only what changed, with its new value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserChanges {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_active: Option<bool>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub user_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_joined: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

impl UserChanges {
    /// What must change in `current` to become `next`.
    pub fn between(current: &UserSnapshot, next: &UserSnapshot) -> Self {
        fn differ<T: PartialEq + Clone>(a: &T, b: &T) -> Option<T> {
            (a != b).then(|| b.clone())
        }
        Self {
            uuid: differ(&current.uuid, &next.uuid),
            username: differ(&current.username, &next.username),
            email: differ(&current.email, &next.email),
            name: differ(&current.name, &next.name),
            is_active: differ(&current.is_active, &next.is_active),
            user_type: differ(&current.user_type, &next.user_type),
            groups: differ(&current.groups, &next.groups),
            date_joined: differ(&current.date_joined, &next.date_joined),
            // A snapshot without a uid (none of Authentik's have none) says nothing
            // about it, rather than clearing it.
            uid: next
                .uid
                .clone()
                .filter(|uid| current.uid.as_ref() != Some(uid)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// Writes the changed fields into `user`: the aggregate's snapshot or a read
    /// model's row. The one place that knows which fields an update can change.
    pub fn apply_to(self, user: &mut impl UserFieldsMut) {
        let Self {
            uuid,
            username,
            email,
            name,
            is_active,
            user_type,
            groups,
            date_joined,
            uid,
        } = self;
        let fields = user.fields_mut();
        if let Some(v) = uuid {
            *fields.uuid = v;
        }
        if let Some(v) = username {
            *fields.username = v;
        }
        if let Some(v) = email {
            *fields.email = v;
        }
        if let Some(v) = name {
            *fields.name = v;
        }
        if let Some(v) = is_active {
            *fields.is_active = v;
        }
        if let Some(v) = user_type {
            *fields.user_type = v;
        }
        if let Some(v) = groups {
            *fields.groups = v;
        }
        if let Some(v) = date_joined {
            *fields.date_joined = v;
        }
        if let Some(v) = uid {
            *fields.uid = Some(v);
        }
    }
}

/// The user's fields inside something that holds them, borrowed for an update.
pub struct UserFields<'a> {
    pub uuid: &'a mut Uuid,
    pub username: &'a mut String,
    pub email: &'a mut String,
    pub name: &'a mut String,
    pub is_active: &'a mut bool,
    pub user_type: &'a mut String,
    pub groups: &'a mut Vec<String>,
    pub date_joined: &'a mut DateTime<Utc>,
    pub uid: &'a mut Option<String>,
}

/// Anything that holds a user's fields and can take a [`UserChanges`].
pub trait UserFieldsMut {
    fn fields_mut(&mut self) -> UserFields<'_>;
}

impl UserFieldsMut for UserSnapshot {
    fn fields_mut(&mut self) -> UserFields<'_> {
        UserFields {
            uuid: &mut self.uuid,
            username: &mut self.username,
            email: &mut self.email,
            name: &mut self.name,
            is_active: &mut self.is_active,
            user_type: &mut self.user_type,
            groups: &mut self.groups,
            date_joined: &mut self.date_joined,
            uid: &mut self.uid,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDeleted {
    pub pk: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserErased {
    pub pk: i64,
}

/// The fields of a user (in `UserRegistered` and `UserUpdated` payloads) a person can be
/// identified by: stored encrypted with the user's data key, forgotten by erasure
/// (docs/privacy.md says why these and not the others).
pub const PERSONAL_FIELDS: [&str; 4] = ["username", "email", "name", "uid"];

/// Events as stored by postgres-es: `{"UserRegistered": {...}}`. The variant name is
/// the stored `event_type`; the inner object is what feeds publish as `data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserEvent {
    UserRegistered(UserSnapshot),
    UserUpdated {
        pk: i64,
        #[serde(flatten)]
        changes: UserChanges,
    },
    UserDeleted(UserDeleted),
    /// The user's personal data was forgotten: its data key is destroyed, and no
    /// later event of this user carries personal fields again.
    UserErased(UserErased),
}

/// Which event an event is, without its data: for metric labels, stored outcomes and
/// comparisons, where a string could be misspelt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    UserRegistered,
    UserUpdated,
    UserDeleted,
    UserErased,
}

impl EventKind {
    /// The stored `event_type` (the variant name of [`UserEvent`]).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::UserRegistered => "UserRegistered",
            EventKind::UserUpdated => "UserUpdated",
            EventKind::UserDeleted => "UserDeleted",
            EventKind::UserErased => "UserErased",
        }
    }
}

impl UserEvent {
    pub fn kind(&self) -> EventKind {
        match self {
            UserEvent::UserRegistered(_) => EventKind::UserRegistered,
            UserEvent::UserUpdated { .. } => EventKind::UserUpdated,
            UserEvent::UserDeleted(_) => EventKind::UserDeleted,
            UserEvent::UserErased(_) => EventKind::UserErased,
        }
    }
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        self.kind().as_str().to_owned()
    }

    /// Bump when an event's stored shape changes, and teach the readers the old one.
    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserCommand {
    /// "This is the user as Authentik has it now."
    ApplySnapshot(UserSnapshot),
    /// "Authentik deleted this user."
    Delete { pk: i64 },
    /// "Forget this user's personal data" (right to erasure).
    Erase { pk: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// Authentik never reuses a pk, so a snapshot for a deleted user is stale data (a
    /// late `model_updated` fetched before the delete); the caller records it and moves on.
    #[error("user {pk} is deleted; snapshot not applied")]
    Deleted { pk: i64 },
    #[error("snapshot for user {got} sent to user {expected}")]
    PkMismatch { expected: i64, got: i64 },
    /// Erasing a user idsync never saw.
    #[error("user {pk} is unknown")]
    Unknown { pk: i64 },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
enum State {
    #[default]
    Unknown,
    Registered(UserSnapshot),
    Deleted {
        pk: i64,
    },
}

/// The aggregate. Its id is Authentik's `pk` rendered as a decimal string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    state: State,
    /// Erased (`UserErased`): the personal fields are empty here and stay empty.
    #[serde(default)]
    erased: bool,
}

impl User {
    pub fn current(&self) -> Option<&UserSnapshot> {
        match &self.state {
            State::Registered(user) => Some(user),
            _ => None,
        }
    }

    pub fn is_deleted(&self) -> bool {
        matches!(self.state, State::Deleted { .. })
    }

    pub fn is_erased(&self) -> bool {
        self.erased
    }

    /// The events `command` produces, without applying them. `handle` is this plus the
    /// sink; keeping it synchronous and separate lets callers preview a command
    /// (reconcile's dry run) with the exact same rules.
    pub fn decide(&self, command: UserCommand) -> Result<Vec<UserEvent>, UserError> {
        match (command, &self.state) {
            (UserCommand::ApplySnapshot(next), State::Unknown) => {
                Ok(vec![UserEvent::UserRegistered(next.normalized())])
            }
            (UserCommand::ApplySnapshot(next), State::Registered(current)) => {
                if next.pk != current.pk {
                    return Err(UserError::PkMismatch {
                        expected: current.pk,
                        got: next.pk,
                    });
                }
                let mut next = next.normalized();
                if self.erased {
                    // Erasure is for good: a snapshot of an erased user (Authentik still
                    // has it) brings its non-personal fields up to date, never its
                    // personal ones back. Authentik never reuses a pk, so a person who
                    // signs up again is a new user with a new key.
                    next.username.clone_from(&current.username);
                    next.email.clone_from(&current.email);
                    next.name.clone_from(&current.name);
                    next.uid.clone_from(&current.uid);
                }
                let changes = UserChanges::between(current, &next);
                if changes.is_empty() {
                    Ok(vec![])
                } else {
                    Ok(vec![UserEvent::UserUpdated {
                        pk: current.pk,
                        changes,
                    }])
                }
            }
            (UserCommand::ApplySnapshot(_), State::Deleted { pk }) => {
                Err(UserError::Deleted { pk: *pk })
            }
            (UserCommand::Delete { .. }, State::Registered(current)) => {
                Ok(vec![UserEvent::UserDeleted(UserDeleted { pk: current.pk })])
            }
            // Deleting a user we never saw, or twice, changes nothing: deliveries
            // are duplicated and reordered, and deletion is idempotent.
            (UserCommand::Delete { .. }, State::Unknown | State::Deleted { .. }) => Ok(vec![]),
            (UserCommand::Erase { pk }, State::Unknown) => Err(UserError::Unknown { pk }),
            // Erasing twice changes nothing more.
            (UserCommand::Erase { .. }, _) if self.erased => Ok(vec![]),
            (UserCommand::Erase { .. }, State::Registered(UserSnapshot { pk, .. }))
            | (UserCommand::Erase { .. }, State::Deleted { pk }) => {
                Ok(vec![UserEvent::UserErased(UserErased { pk: *pk })])
            }
        }
    }
}

impl Aggregate for User {
    const TYPE: &'static str = "User";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            UserEvent::UserRegistered(user) => self.state = State::Registered(user),
            UserEvent::UserUpdated { changes, .. } => {
                if let State::Registered(user) = &mut self.state {
                    changes.apply_to(user);
                }
            }
            UserEvent::UserDeleted(UserDeleted { pk }) => self.state = State::Deleted { pk },
            UserEvent::UserErased(_) => {
                self.erased = true;
                if let State::Registered(user) = &mut self.state {
                    user.forget_personal();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type Fw = TestFramework<User>;

    fn jane() -> UserSnapshot {
        UserSnapshot {
            pk: 7,
            uuid: Uuid::from_u128(0x1234),
            username: "jane".into(),
            email: "jane@example.org".into(),
            name: "Jane Doe".into(),
            is_active: true,
            user_type: "internal".into(),
            groups: vec!["users".into(), "authentik Admins".into()],
            date_joined: DateTime::from_timestamp(1_700_000_000, 0).expect("valid timestamp"),
            uid: Some("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into()),
        }
    }

    fn registered() -> UserEvent {
        UserEvent::UserRegistered(jane().normalized())
    }

    #[test]
    fn unknown_user_snapshot_registers_with_every_field() {
        Fw::with(())
            .given_no_previous_events()
            .when(UserCommand::ApplySnapshot(jane()))
            .then_expect_events(vec![registered()]);
    }

    #[test]
    fn registered_event_serializes_all_contract_fields() {
        let value = serde_json::to_value(registered()).expect("serializes");
        let inner = &value["UserRegistered"];
        for field in [
            "pk",
            "uuid",
            "username",
            "email",
            "name",
            "is_active",
            "type",
            "groups",
            "date_joined",
        ] {
            assert!(inner.get(field).is_some(), "missing {field} in {inner}");
        }
        assert_eq!(
            inner["groups"],
            serde_json::json!(["authentik Admins", "users"])
        );
    }

    #[test]
    fn changed_fields_only_are_in_the_update() {
        let mut next = jane();
        next.email = "jane@new.example".into();
        next.is_active = false;
        Fw::with(())
            .given(vec![registered()])
            .when(UserCommand::ApplySnapshot(next))
            .then_expect_events(vec![UserEvent::UserUpdated {
                pk: 7,
                changes: UserChanges {
                    email: Some("jane@new.example".into()),
                    is_active: Some(false),
                    ..UserChanges::default()
                },
            }]);
    }

    #[test]
    fn update_serializes_pk_and_changed_fields_only() {
        let event = UserEvent::UserUpdated {
            pk: 7,
            changes: UserChanges {
                name: Some("J. Doe".into()),
                ..UserChanges::default()
            },
        };
        let value = serde_json::to_value(&event).expect("serializes");
        assert_eq!(
            value,
            serde_json::json!({"UserUpdated": {"pk": 7, "name": "J. Doe"}})
        );
        let back: UserEvent = serde_json::from_value(value).expect("deserializes");
        assert_eq!(back, event);
    }

    #[test]
    fn a_uid_is_filled_in_but_never_cleared() {
        let without = UserSnapshot {
            uid: None,
            ..jane()
        };
        // A user registered before idsync kept uids gets it from the next snapshot...
        Fw::with(())
            .given(vec![UserEvent::UserRegistered(
                without.clone().normalized(),
            )])
            .when(UserCommand::ApplySnapshot(jane()))
            .then_expect_events(vec![UserEvent::UserUpdated {
                pk: 7,
                changes: UserChanges {
                    uid: jane().uid,
                    ..UserChanges::default()
                },
            }]);
        // ...and a snapshot without one does not take it away.
        Fw::with(())
            .given(vec![registered()])
            .when(UserCommand::ApplySnapshot(without))
            .then_expect_events(vec![]);
    }

    #[test]
    fn identical_snapshot_emits_nothing() {
        Fw::with(())
            .given(vec![registered()])
            .when(UserCommand::ApplySnapshot(jane()))
            .then_expect_events(vec![]);
    }

    #[test]
    fn group_order_alone_is_not_a_change() {
        let mut next = jane();
        next.groups.reverse();
        Fw::with(())
            .given(vec![registered()])
            .when(UserCommand::ApplySnapshot(next))
            .then_expect_events(vec![]);
    }

    #[test]
    fn updates_accumulate_in_state() {
        let mut renamed = jane();
        renamed.name = "Jane Roe".into();
        // The second snapshot equals the state after the first update, so no event.
        Fw::with(())
            .given(vec![
                registered(),
                UserEvent::UserUpdated {
                    pk: 7,
                    changes: UserChanges {
                        name: Some("Jane Roe".into()),
                        ..UserChanges::default()
                    },
                },
            ])
            .when(UserCommand::ApplySnapshot(renamed))
            .then_expect_events(vec![]);
    }

    #[test]
    fn snapshot_of_deleted_user_is_a_typed_error() {
        Fw::with(())
            .given(vec![
                registered(),
                UserEvent::UserDeleted(UserDeleted { pk: 7 }),
            ])
            .when(UserCommand::ApplySnapshot(jane()))
            .then_expect_error(UserError::Deleted { pk: 7 });
    }

    #[test]
    fn snapshot_for_another_pk_is_refused() {
        let mut other = jane();
        other.pk = 8;
        Fw::with(())
            .given(vec![registered()])
            .when(UserCommand::ApplySnapshot(other))
            .then_expect_error(UserError::PkMismatch {
                expected: 7,
                got: 8,
            });
    }

    #[test]
    fn delete_registered_user() {
        Fw::with(())
            .given(vec![registered()])
            .when(UserCommand::Delete { pk: 7 })
            .then_expect_events(vec![UserEvent::UserDeleted(UserDeleted { pk: 7 })]);
    }

    #[test]
    fn delete_unknown_user_emits_nothing() {
        Fw::with(())
            .given_no_previous_events()
            .when(UserCommand::Delete { pk: 7 })
            .then_expect_events(vec![]);
    }

    #[test]
    fn delete_twice_emits_nothing() {
        Fw::with(())
            .given(vec![
                registered(),
                UserEvent::UserDeleted(UserDeleted { pk: 7 }),
            ])
            .when(UserCommand::Delete { pk: 7 })
            .then_expect_events(vec![]);
    }

    #[test]
    fn events_are_versioned() {
        assert_eq!(registered().event_version(), "1.0");
        assert_eq!(registered().event_type(), "UserRegistered");
    }

    #[test]
    fn erase_appends_user_erased_once() {
        Fw::with(())
            .given(vec![registered()])
            .when(UserCommand::Erase { pk: 7 })
            .then_expect_events(vec![UserEvent::UserErased(UserErased { pk: 7 })]);
        Fw::with(())
            .given(vec![
                registered(),
                UserEvent::UserErased(UserErased { pk: 7 }),
            ])
            .when(UserCommand::Erase { pk: 7 })
            .then_expect_events(vec![]);
        Fw::with(())
            .given(vec![
                registered(),
                UserEvent::UserDeleted(UserDeleted { pk: 7 }),
            ])
            .when(UserCommand::Erase { pk: 7 })
            .then_expect_events(vec![UserEvent::UserErased(UserErased { pk: 7 })]);
        Fw::with(())
            .given_no_previous_events()
            .when(UserCommand::Erase { pk: 7 })
            .then_expect_error(UserError::Unknown { pk: 7 });
    }

    #[test]
    fn a_snapshot_after_erasure_never_brings_personal_fields_back() {
        let mut next = jane();
        next.is_active = false;
        next.email = "new@example.org".into();
        Fw::with(())
            .given(vec![
                registered(),
                UserEvent::UserErased(UserErased { pk: 7 }),
            ])
            .when(UserCommand::ApplySnapshot(next))
            .then_expect_events(vec![UserEvent::UserUpdated {
                pk: 7,
                changes: UserChanges {
                    is_active: Some(false),
                    ..UserChanges::default()
                },
            }]);
        Fw::with(())
            .given(vec![
                registered(),
                UserEvent::UserErased(UserErased { pk: 7 }),
            ])
            .when(UserCommand::ApplySnapshot(jane()))
            .then_expect_events(vec![]);
    }
}
