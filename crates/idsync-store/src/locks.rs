//! Session advisory locks: one process at a time for a job (the projector's leader, a
//! replay, a reconcile run). The lock lives on a connection of its own, detached from the
//! pool so it cannot be handed to someone else while held; if the process dies, the
//! server ends the session and the lock with it.

use std::ops::{Deref, DerefMut};

use sqlx::postgres::PgConnection;
use sqlx::{Connection, PgPool};

use crate::StoreError;

/// A held session advisory lock and the connection that holds it.
pub struct SessionLock {
    conn: PgConnection,
}

impl SessionLock {
    /// Take the lock named `key`, or `None` if another session holds it.
    pub async fn try_acquire(pool: &PgPool, key: &str) -> Result<Option<Self>, StoreError> {
        let mut conn = pool.acquire().await?.detach();
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                .bind(key)
                .fetch_one(&mut conn)
                .await?;
        if locked {
            Ok(Some(Self { conn }))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }

    /// Whether the lock is still ours: if its connection died, the server dropped it and
    /// another process may hold it now.
    pub async fn check(&mut self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&mut self.conn).await?;
        Ok(())
    }

    /// Give the lock back. Closing the session releases it; a close that fails ends
    /// the session too.
    pub async fn release(self) {
        if let Err(err) = self.conn.close().await {
            tracing::debug!(error = %err, "closing a lock's connection");
        }
    }
}

/// The lock's connection, for work that must run on it (a replay does).
impl Deref for SessionLock {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for SessionLock {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}
