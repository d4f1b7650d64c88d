//! The two numbers that cross every layer: where an event stands in the global log, and
//! which user it is about. Newtypes, so a position cannot be passed where a pk is meant
//! (both are `bigint` in Postgres and `i64` in Rust). JSON and SQL see plain integers.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A position in the global event log (`events.global_position`): what feeds resume
/// from (`Last-Event-ID`, `after`) and what checkpoints record. Positions start at 1;
/// `Position::START` (0) is "before the first event".
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    sqlx::Type,
)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct Position(pub i64);

impl Position {
    /// Before the first event: reading after it reads everything.
    pub const START: Position = Position(0);

    /// The position right after this one.
    pub fn next(self) -> Position {
        Position(self.0 + 1)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An Authentik user's primary key, as webhooks, the API's `{pk}` and events name it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, sqlx::Type,
)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct UserPk(pub i64);

impl fmt::Display for UserPk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
