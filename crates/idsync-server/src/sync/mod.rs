//! Sync workers: inbox item → (fetch the user from Authentik) → domain command → events.
//! A group's item becomes one refresh item per user whose groups it changed
//! ([`groups`]), each then synced like a webhook for that user.
//!
//! Exactly-once comes from two halves. The inbox gives at-least-once: an item is only
//! finished after its events committed, and a crash in between leaves it to be
//! reclaimed when its lease expires. The aggregate gives idempotence: re-applying the
//! same snapshot, or deleting twice, appends nothing. Together every accepted webhook
//! becomes its events once.

mod groups;
pub(crate) mod on_demand;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use idsync_authentik::webhook::Action;
use idsync_authentik::{AuthentikClient, ClientError};
use idsync_domain::{EventKind, EventMetadata, Source, UserCommand, UserError};
use idsync_store::backoff::Backoff;
use idsync_store::inbox::{self, Claimed, NewItem, Status, Subject};
use idsync_store::{AppendedEvent, EventStore, StoreError};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::metrics::{AUTHENTIK_REQUESTS, EVENTS_APPENDED, SYNC_FINISHED};
use crate::readiness::{Component, Readiness};

#[derive(Debug, Clone)]
pub(crate) struct SyncConfig {
    pub concurrency: usize,
    /// How long a claimed item is ours; past it another worker may reclaim it.
    pub lease: Duration,
    /// Retry failures for this long after the webhook arrived, then give up.
    pub deadline: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// How often an idle worker looks for due items (retries, other processes' intake).
    pub poll: Duration,
}

pub(crate) struct Syncer {
    pool: PgPool,
    store: Arc<EventStore>,
    client: AuthentikClient,
    readiness: Readiness,
    wake: Arc<Notify>,
    config: SyncConfig,
    /// Distinguishes this process's workers in `locked_by`.
    process_id: String,
}

/// What is written back to the inbox for an item.
enum Record {
    Finish {
        status: Status,
        outcome: String,
        /// Items to store with the finish, in one transaction.
        followups: Vec<NewItem>,
    },
    RetryAt {
        at: chrono::DateTime<Utc>,
        error: String,
    },
    Fail {
        error: String,
    },
}

/// What a finished item came to: stored as the item's `outcome` (its `Display`) and
/// counted under `idsync_sync_finished_total{outcome}` (its label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finished {
    Registered,
    Updated,
    Deleted,
    /// A delete for a user idsync never registered (or already deleted).
    AlreadyAbsent,
    /// The snapshot equals what the events already say.
    Unchanged,
    /// Authentik no longer has the user; its delete webhook (or reconcile) follows.
    NotFound,
    /// A snapshot for a user deleted here: Authentik never reuses a pk, so it is stale.
    UserDeleted,
    /// A group idsync has never seen: no user it knows carries it.
    GroupUnknown,
    /// A group changed: its users are queued for a refresh.
    GroupRefresh {
        users: usize,
    },
    /// The user's personal data was erased (a delete with IDSYNC_ERASE_ON_DELETE appends
    /// `UserDeleted` first, so this is an erasure on its own).
    Erased,
}

impl Finished {
    fn label(self) -> &'static str {
        match self {
            Finished::Registered => "registered",
            Finished::Updated => "updated",
            Finished::Deleted => "deleted",
            Finished::AlreadyAbsent => "already_absent",
            Finished::Unchanged => "unchanged",
            Finished::NotFound => "not_found",
            Finished::UserDeleted => "user_deleted",
            Finished::GroupUnknown => "group_unknown",
            // The count stays out of the label: one series, not one per group size.
            Finished::GroupRefresh { .. } => "group_refresh",
            Finished::Erased => "erased",
        }
    }

    /// Which event a command appended first decides; none means nothing changed.
    fn of(action: &str, events: &[AppendedEvent]) -> Self {
        match events.first().map(AppendedEvent::kind) {
            Some(EventKind::UserRegistered) => Finished::Registered,
            Some(EventKind::UserUpdated) => Finished::Updated,
            Some(EventKind::UserDeleted) => Finished::Deleted,
            Some(EventKind::UserErased) => Finished::Erased,
            None if action == Action::Deleted.as_str() => Finished::AlreadyAbsent,
            None => Finished::Unchanged,
        }
    }
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finished::GroupRefresh { users } => write!(f, "refresh {users} user(s)"),
            other => f.write_str(other.label()),
        }
    }
}

/// What became of an item.
enum Outcome {
    Finished {
        status: Status,
        outcome: Finished,
        followups: Vec<NewItem>,
    },
    Retry {
        error: String,
        not_before: Option<Duration>,
    },
    Fail {
        error: String,
    },
}

impl Syncer {
    pub(crate) fn new(
        pool: PgPool,
        store: Arc<EventStore>,
        client: AuthentikClient,
        readiness: Readiness,
        wake: Arc<Notify>,
        config: SyncConfig,
    ) -> Self {
        Self {
            pool,
            store,
            client,
            readiness,
            wake,
            config,
            process_id: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
        }
    }

    pub(crate) fn concurrency(&self) -> usize {
        self.config.concurrency.max(1)
    }

    /// One worker's loop, until `cancel` fires.
    pub(crate) async fn run(self: Arc<Self>, slot: usize, cancel: CancellationToken) {
        let worker = format!("{}-{slot}", self.process_id);
        let mut db_backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        while !cancel.is_cancelled() {
            // Register for a wake-up before looking, so an item stored between the
            // look and the wait is not slept through.
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match inbox::claim(&self.pool, &worker, self.config.lease, 1).await {
                Ok(items) if !items.is_empty() => {
                    db_backoff.reset();
                    for item in items {
                        self.process(item, &worker, &cancel).await;
                    }
                    continue;
                }
                Ok(_) => {
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = &mut notified => {}
                        () = tokio::time::sleep(self.config.poll) => {}
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, %worker, "cannot claim inbox items");
                    if !db_backoff.wait(&cancel).await {
                        return;
                    }
                }
            }
        }
    }

    async fn process(&self, item: Claimed, worker: &str, cancel: &CancellationToken) {
        // Instrumented rather than entered: a guard held across an await would lend
        // this item's fields to whatever else ran on the thread meanwhile.
        let span = tracing::info_span!("sync", inbox_id = %item.id, subject = %item.subject, action = %item.action, attempt = item.attempts);
        self.process_in_span(item, worker, cancel)
            .instrument(span)
            .await;
    }

    async fn process_in_span(&self, item: Claimed, worker: &str, cancel: &CancellationToken) {
        let outcome = tokio::select! {
            // Shutdown: hand the item back rather than leave it leased.
            () = cancel.cancelled() => {
                if let Err(err) = inbox::release(&self.pool, item.id, worker).await {
                    tracing::warn!(error = %err, "could not release item on shutdown; it will be reclaimed after its lease");
                }
                return;
            }
            outcome = self.decide(&item) => outcome,
        };
        let record = self.settle(&item, outcome);
        // Recording is retried briefly: an item whose result is not recorded stays
        // leased until its lease expires, delaying it (and its user's later items).
        for attempt in 1..=5u32 {
            let written = match &record {
                Record::Finish {
                    status,
                    outcome,
                    followups,
                } if followups.is_empty() => {
                    inbox::finish(&self.pool, item.id, worker, *status, outcome).await
                }
                Record::Finish {
                    outcome, followups, ..
                } => {
                    let written = inbox::finish_with_followups(
                        &self.pool,
                        item.id,
                        worker,
                        outcome,
                        followups.clone(),
                    )
                    .await;
                    if matches!(written, Ok(true)) {
                        self.wake.notify_waiters();
                    }
                    written
                }
                Record::RetryAt { at, error } => {
                    inbox::retry_later(&self.pool, item.id, worker, *at, error).await
                }
                Record::Fail { error } => inbox::fail(&self.pool, item.id, worker, error).await,
            };
            match written {
                Ok(true) => return,
                Ok(false) => {
                    tracing::warn!(
                        "lease lost before the item was recorded; another worker owns it"
                    );
                    return;
                }
                Err(err) => {
                    tracing::warn!(error = %err, attempt, "could not record the item's result");
                    tokio::time::sleep(Duration::from_millis(100) * attempt).await;
                }
            }
        }
        // Still leased: reclaimed after the lease. Its events, if any, are committed and
        // a re-run appends nothing.
    }

    /// Turn an outcome into what is written to the inbox (deciding retry or give-up),
    /// logging and counting it once.
    fn settle(&self, item: &Claimed, outcome: Outcome) -> Record {
        match outcome {
            Outcome::Finished {
                status,
                outcome,
                followups,
            } => {
                metrics::counter!(SYNC_FINISHED, "outcome" => outcome.label()).increment(1);
                tracing::info!(%outcome, followups = followups.len(), "inbox item finished");
                Record::Finish {
                    status,
                    outcome: outcome.to_string(),
                    followups,
                }
            }
            Outcome::Retry { error, not_before } => {
                let age = (Utc::now() - item.received_at).to_std().unwrap_or_default();
                if age >= self.config.deadline {
                    metrics::counter!(SYNC_FINISHED, "outcome" => "failed").increment(1);
                    tracing::error!(%error, "giving up on inbox item after its deadline");
                    Record::Fail { error }
                } else {
                    let delay = self
                        .backoff(item.attempts)
                        .max(not_before.unwrap_or_default());
                    tracing::warn!(%error, retry_in = ?delay, "inbox item will be retried");
                    let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
                    Record::RetryAt { at, error }
                }
            }
            Outcome::Fail { error } => {
                metrics::counter!(SYNC_FINISHED, "outcome" => "failed").increment(1);
                tracing::error!(%error, "inbox item failed");
                Record::Fail { error }
            }
        }
    }

    async fn decide(&self, item: &Claimed) -> Outcome {
        match item.subject {
            Subject::User(pk) => self.decide_user(item, pk).await,
            Subject::Group(uuid) => self.decide_group(item, uuid).await,
        }
    }

    async fn decide_user(&self, item: &Claimed, pk: i64) -> Outcome {
        let metadata = EventMetadata::new(Source::Webhook, item.event_id.clone(), item.received_at);
        let command = match Action::parse(&item.action) {
            Some(Action::Deleted) => UserCommand::Delete { pk },
            Some(Action::Created | Action::Updated) => {
                let fetched = self.client.get_user(pk).await;
                let result = match &fetched {
                    Ok(_) => "ok",
                    Err(e) => e.kind(),
                };
                metrics::counter!(AUTHENTIK_REQUESTS, "result" => result).increment(1);
                match fetched {
                    Ok(user) => {
                        self.readiness.clear_warning(Component::Authentik);
                        // Best effort: the names are only needed after a later rename.
                        let names: Vec<_> = user.group_names().collect();
                        if let Err(err) = idsync_store::groups::remember(&self.pool, &names).await {
                            tracing::warn!(error = %err, "could not note the user's group names");
                        }
                        UserCommand::ApplySnapshot(user.to_snapshot())
                    }
                    Err(ClientError::NotFound) => {
                        self.readiness.clear_warning(Component::Authentik);
                        // Deleted in Authentik before we got to it: its model_deleted
                        // webhook (or reconcile) carries the rest.
                        return finished(Status::Done, Finished::NotFound);
                    }
                    Err(err) => return self.fetch_failed(err),
                }
            }
            None => {
                return Outcome::Fail {
                    error: format!("unknown action {:?}", item.action),
                };
            }
        };
        match self.store.execute(pk, command, &metadata).await {
            Ok(events) => {
                count_appended(&events);
                finished(Status::Done, Finished::of(&item.action, &events))
            }
            // Authentik never reuses a pk: a snapshot of a deleted user is stale.
            Err(StoreError::Domain(UserError::Deleted { .. })) => {
                finished(Status::Ignored, Finished::UserDeleted)
            }
            Err(StoreError::Domain(err)) => Outcome::Fail {
                error: err.to_string(),
            },
            Err(err) => retry(err, None),
        }
    }

    /// A failed call to Authentik: retried later, and an operator told when it is the
    /// token that was refused.
    fn fetch_failed(&self, err: ClientError) -> Outcome {
        match err {
            err @ ClientError::Auth { .. } => {
                tracing::error!(error = %err, "Authentik rejected idsync's API token: check IDSYNC_AUTHENTIK_TOKEN (intent api, not expired; it needs authentik_core.view_user and view_group)");
                self.readiness
                    .warn(Component::Authentik, format!("API token rejected: {err}"));
                retry(err, None)
            }
            ClientError::RateLimited { retry_after } => {
                retry(ClientError::RateLimited { retry_after }, retry_after)
            }
            err => retry(err, None),
        }
    }

    /// Exponential from `retry_min`, capped at `retry_max`, with jitter so a burst of
    /// items failing together does not retry together.
    fn backoff(&self, attempts: i32) -> Duration {
        Backoff::new(self.config.retry_min, self.config.retry_max)
            .with_jitter()
            .delay_after(u32::try_from(attempts).unwrap_or(0))
    }
}

fn finished(status: Status, outcome: Finished) -> Outcome {
    Outcome::Finished {
        status,
        outcome,
        followups: Vec::new(),
    }
}

fn retry(error: impl std::fmt::Display, not_before: Option<Duration>) -> Outcome {
    Outcome::Retry {
        error: error.to_string(),
        not_before,
    }
}

fn count_appended(events: &[AppendedEvent]) {
    for event in events {
        metrics::counter!(EVENTS_APPENDED, "type" => event.kind().as_str()).increment(1);
    }
}
