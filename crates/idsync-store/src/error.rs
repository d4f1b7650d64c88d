use idsync_domain::UserError;

/// The one error type of the storage layer. Callers mostly need to tell three things
/// apart: the domain refused (not retryable), the database is unavailable (retry later,
/// answer 503), anything else (a bug or corrupt data: log it).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Domain(#[from] UserError),
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("concurrent writers on user {pk}: gave up after {attempts} attempts")]
    Conflict { pk: i64, attempts: u32 },
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("event store: {0}")]
    EventStore(String),
    /// Another process holds what this needs (a replay of the same projection...).
    #[error("{0}")]
    Busy(String),
    #[error("stored event at position {position} is unreadable: {reason}")]
    Corrupt { position: i64, reason: String },
    /// Personal data that cannot be sealed or opened: no key, a wrong key, a moved or
    /// altered ciphertext (docs/privacy.md).
    #[error(transparent)]
    Privacy(#[from] crate::privacy::PrivacyError),
}

impl StoreError {
    /// True when trying again later may succeed (connection refused, pool timeout...).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if is_connectivity(&err) {
            StoreError::Unavailable(err)
        } else {
            StoreError::Database(err)
        }
    }
}

/// Errors that say "the database is not there right now" rather than "the query is wrong".
pub(crate) fn is_connectivity(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            // Class 08 connection exceptions, 57P0x shutdown (57P01 admin_shutdown on a
            // fast shutdown, 57P03 cannot_connect_now while it starts), 3D000 database
            // missing, class 53 insufficient resources (too many connections, disk
            // full, out of memory), class 58 system errors (I/O).
            db.code().is_some_and(|code| {
                code.starts_with("08")
                    || code.starts_with("57P0")
                    || code == "3D000"
                    || code.starts_with("53")
                    || code.starts_with("58")
                    || code == "55000" // object_not_in_prerequisite_state: ALLOW_CONNECTIONS false
            })
        }
        _ => false,
    }
}
