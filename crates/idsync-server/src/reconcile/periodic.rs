//! Serve's periodic reconcile: one run at a time per database (a session advisory lock),
//! on a timer, gentler than the CLI's, with its outcome in metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;

use idsync_authentik::AuthentikClient;
use idsync_store::locks::SessionLock;
use idsync_store::{EventStore, StoreError};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{LOCK_KEY, Options, Report, reconcile};
use crate::metrics::{
    RECONCILE_LAST_DURATION, RECONCILE_LAST_RUN, RECONCILE_LAST_SUCCESS, RECONCILE_LAST_USERS,
    RECONCILE_RUNS,
};

/// Take the reconcile lock, or None if another process holds it (a session advisory
/// lock: if this process dies, the lock goes with its session).
pub async fn try_lock(pool: &PgPool) -> Result<Option<SessionLock>, StoreError> {
    SessionLock::try_acquire(pool, LOCK_KEY).await
}

/// Options of serve's periodic runs: gentler than the CLI's, since the sync workers,
/// intake and the projector share the pool.
fn periodic_options() -> Options {
    Options {
        page_size: 100,
        dry_run: false,
        pages_in_flight: 4,
        commands_in_flight: 4,
        // Smaller than the CLI's: a batch holds the event writers' turn while it
        // commits, and webhooks' events wait behind it.
        batch_size: 100,
        batches_in_flight: 1,
    }
}

/// Serve's periodic reconcile.
pub struct Periodic {
    pool: PgPool,
    store: Arc<EventStore>,
    client: AuthentikClient,
    interval: Duration,
    start_delay: Duration,
}

impl Periodic {
    /// None when `interval` is zero (periodic reconcile disabled).
    pub fn new(
        pool: PgPool,
        store: Arc<EventStore>,
        client: AuthentikClient,
        interval: Duration,
        start_delay: Duration,
    ) -> Option<Self> {
        (!interval.is_zero()).then_some(Self {
            pool,
            store,
            client,
            interval,
            start_delay,
        })
    }

    /// Reconcile every interval until `cancel` fires. The first run comes `start_delay`
    /// after start (or one interval, if shorter): Authentik sends no webhook for some
    /// users (the bootstrap admin, those of blueprints, service accounts), and they
    /// should not wait an hour. A jitter of up to a quarter of the delay keeps a fleet
    /// that restarts together from listing Authentik at the same moment; the lock makes
    /// all but one of them skip anyway.
    pub async fn run(self, cancel: CancellationToken) {
        tracing::info!(interval = ?self.interval, start_delay = ?self.start_delay, "periodic reconcile enabled");
        let first = self.start_delay.min(self.interval);
        let first = first + first.mul_f64(rand::random::<f64>() / 4.0);
        let mut wait = first;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            self.run_once(&cancel).await;
            wait = self.interval;
        }
    }

    async fn run_once(&self, cancel: &CancellationToken) {
        let started = Instant::now();
        let lock = match try_lock(&self.pool).await {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                tracing::debug!("reconcile skipped: another process is running it");
                metrics::counter!(RECONCILE_RUNS, "outcome" => "skipped").increment(1);
                return;
            }
            Err(err) => {
                tracing::warn!(error = %err, "reconcile failed: cannot take its lock");
                record_failure(started.elapsed());
                return;
            }
        };
        let options = periodic_options();
        let result = tokio::select! {
            // Dropping a run midway is safe: each batch commits alone, and the next
            // run picks up what this one did not get to.
            () = cancel.cancelled() => None,
            result = reconcile(&self.pool, &self.store, &self.client, &options, &|_| {})
                .instrument(tracing::info_span!("reconcile", trigger = "periodic")) => Some(result),
        };
        lock.release().await;
        match result {
            None => {}
            Some(Ok(report)) => record_success(&report),
            Some(Err(err)) => {
                tracing::warn!(error = %err, "reconcile failed; retried at the next interval");
                record_failure(started.elapsed());
            }
        }
    }
}

fn record_success(report: &Report) {
    metrics::counter!(RECONCILE_RUNS, "outcome" => "ok").increment(1);
    metrics::gauge!(RECONCILE_LAST_RUN).set(now_seconds());
    metrics::gauge!(RECONCILE_LAST_SUCCESS).set(1.0);
    metrics::gauge!(RECONCILE_LAST_DURATION).set(report.duration.as_secs_f64());
    for (result, n) in report.counts.by_result() {
        metrics::gauge!(RECONCILE_LAST_USERS, "result" => result).set(n as f64);
    }
}

/// A failed run leaves `idsync_reconcile_last_users` at the last successful run's.
fn record_failure(duration: Duration) {
    metrics::counter!(RECONCILE_RUNS, "outcome" => "error").increment(1);
    metrics::gauge!(RECONCILE_LAST_RUN).set(now_seconds());
    metrics::gauge!(RECONCILE_LAST_SUCCESS).set(0.0);
    metrics::gauge!(RECONCILE_LAST_DURATION).set(duration.as_secs_f64());
}

fn now_seconds() -> f64 {
    Utc::now().timestamp_micros() as f64 / 1e6
}
