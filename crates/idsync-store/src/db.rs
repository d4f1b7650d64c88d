//! Connecting, creating the database, and the migrations embedded in the binary.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use crate::StoreError;

/// The migrations in `migrations/`, compiled into the binary so a deployment needs no
/// files beside it.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// Pool settings. `acquire_timeout` is short on purpose: a request that cannot get a
/// connection in a few seconds should answer 503 (and Authentik retries), not hang.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(3),
        }
    }
}

/// A pool that connects lazily, so a process can start (and say it is not ready) while
/// the database is still down.
pub fn lazy_pool(url: &str, config: &PoolConfig) -> Result<PgPool, StoreError> {
    let options = PgConnectOptions::from_str(url).map_err(StoreError::Database)?;
    Ok(PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
        // sqlx pings every connection before handing it out by default: one extra round
        // trip per query, which halved intake throughput. Ping only connections that sat
        // idle a while: under load none do, and after a database restart the stale ones
        // are caught before a request uses them.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > Duration::from_millis(100) {
                    use sqlx::Connection;
                    let ping = tokio::time::timeout(Duration::from_secs(2), conn.ping()).await;
                    return Ok(matches!(ping, Ok(Ok(()))));
                }
                Ok(true)
            })
        })
        .connect_lazy_with(options.application_name("idsync")))
}

/// The name of the database `url` points at (for messages).
pub fn database_name(url: &str) -> Option<String> {
    PgConnectOptions::from_str(url)
        .ok()
        .and_then(|o| o.get_database().map(str::to_owned))
}

/// What `ensure_database` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseState {
    Created,
    Existed,
}

/// Create the database named in `url` if it does not exist. Two processes starting at
/// once may both see it missing; the loser's "already exists" is success.
pub async fn ensure_database(url: &str) -> Result<DatabaseState, StoreError> {
    if Postgres::database_exists(url).await? {
        return Ok(DatabaseState::Existed);
    }
    match Postgres::create_database(url).await {
        Ok(()) => Ok(DatabaseState::Created),
        Err(err) if Postgres::database_exists(url).await.unwrap_or(false) => {
            tracing::debug!(error = %err, "database appeared concurrently");
            Ok(DatabaseState::Existed)
        }
        Err(err) => Err(err.into()),
    }
}

/// Migrations applied by a `migrate` run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrateReport {
    pub database: Option<DatabaseState>,
    pub applied: Vec<i64>,
}

/// Create the database if needed and apply pending migrations. Safe to run twice and
/// from two processes at once (sqlx takes an advisory lock).
pub async fn migrate(url: &str, pool: &PgPool) -> Result<MigrateReport, StoreError> {
    let database = ensure_database(url).await?;
    let before = applied_versions(pool).await?;
    MIGRATOR.run(pool).await?;
    let after = applied_versions(pool).await?;
    Ok(MigrateReport {
        database: Some(database),
        applied: after.into_iter().filter(|v| !before.contains(v)).collect(),
    })
}

async fn applied_versions(pool: &PgPool) -> Result<Vec<i64>, StoreError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(Vec::new());
    }
    Ok(
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await?,
    )
}

/// Why the schema is not what this binary expects, or empty when it is.
pub async fn migration_problems(pool: &PgPool) -> Result<Vec<String>, StoreError> {
    let applied = applied_versions(pool).await?;
    let pending: Vec<String> = MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .filter(|m| !applied.contains(&m.version))
        .map(|m| format!("{} {}", m.version, m.description))
        .collect();
    let mut problems = Vec::new();
    if !pending.is_empty() {
        problems.push(format!(
            "migrations not applied: {} (run `idsync migrate`)",
            pending.join(", ")
        ));
    }
    let known: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
    let unknown: Vec<String> = applied
        .iter()
        .filter(|v| !known.contains(v))
        .map(i64::to_string)
        .collect();
    if !unknown.is_empty() {
        problems.push(format!(
            "database has migrations this binary does not know: {} (a newer idsync ran here)",
            unknown.join(", ")
        ));
    }
    Ok(problems)
}

/// A round trip that proves the database answers.
pub async fn ping(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}
