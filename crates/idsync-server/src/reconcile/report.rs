//! What a run reports: progress as it goes, and per user what it did (or, dry, would do).

use std::fmt;
use std::time::Duration;

/// How far a run is, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Users listed so far, of the `total` Authentik announced.
    Listed { users: u64, total: u64 },
    /// The listing is complete; `absent` users of the read model were not in it and are
    /// being fetched one by one.
    ListingDone { listed: u64, absent: u64 },
    /// Users checked or acted on, of those queued so far.
    Applied { done: u64, queued: u64 },
}

/// What a run did (or, dry, would do) to one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub pk: i64,
    pub username: String,
    pub kind: ChangeKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    /// Listed by Authentik, unknown here: `UserRegistered`.
    Register,
    /// Known here with other values: `UserUpdated` with these fields.
    Update(Vec<&'static str>),
    /// Gone from Authentik (confirmed by a 404 for its pk): `UserDeleted`.
    Delete,
    /// Still in Authentik but deleted here. Authentik never reuses a pk, so this is
    /// stale data; left as it is.
    Conflict,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { pk, username, kind } = self;
        match kind {
            ChangeKind::Register => write!(f, "register {pk} {username} (missing here)"),
            ChangeKind::Update(fields) => {
                write!(f, "update {pk} {username}: {}", fields.join(", "))
            }
            ChangeKind::Delete => write!(f, "delete {pk} {username} (gone from Authentik)"),
            ChangeKind::Conflict => write!(
                f,
                "conflict {pk} {username}: deleted here but still in Authentik; left as is"
            ),
        }
    }
}

/// Users by result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub registered: u64,
    pub updated: u64,
    pub deleted: u64,
    pub unchanged: u64,
    pub conflicts: u64,
}

impl Counts {
    /// `(result label, count)`, in the order of the summary and the metric's labels.
    pub fn by_result(&self) -> [(&'static str, u64); 5] {
        [
            ("registered", self.registered),
            ("updated", self.updated),
            ("deleted", self.deleted),
            ("unchanged", self.unchanged),
            ("conflict", self.conflicts),
        ]
    }

    pub(super) fn add(&mut self, kind: Option<&ChangeKind>) {
        match kind {
            None => self.unchanged += 1,
            Some(ChangeKind::Register) => self.registered += 1,
            Some(ChangeKind::Update(_)) => self.updated += 1,
            Some(ChangeKind::Delete) => self.deleted += 1,
            Some(ChangeKind::Conflict) => self.conflicts += 1,
        }
    }
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub dry_run: bool,
    /// Distinct users Authentik listed.
    pub listed: u64,
    pub counts: Counts,
    /// One entry per user that changed (or would change), and per conflict, by pk.
    pub changes: Vec<Change>,
    pub duration: Duration,
}

impl Report {
    /// One line: `registered 1, updated 1, deleted 1, unchanged 97, conflicts 0`, or
    /// for a dry run `would register 1, update 1, delete 1, unchanged 97, conflicts 0`.
    pub fn summary(&self) -> String {
        let c = &self.counts;
        let (prefix, register, update, delete) = if self.dry_run {
            ("would ", "register", "update", "delete")
        } else {
            ("", "registered", "updated", "deleted")
        };
        format!(
            "{prefix}{register} {}, {update} {}, {delete} {}, unchanged {}, conflicts {}",
            c.registered, c.updated, c.deleted, c.unchanged, c.conflicts
        )
    }
}
