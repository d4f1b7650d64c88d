//! Reconcile: make the event store agree with Authentik when webhooks never came.
//!
//! Authentik gives up on a webhook after a few minutes of retries, emits none for users
//! created by blueprints or background tasks, and idsync may have been down. Reconcile
//! closes those gaps: it lists every user from Authentik, compares them with the
//! `users` read model, and for each difference sends the sync worker's own commands
//! (`ApplySnapshot`, `Delete`) with metadata `source: reconcile`. The aggregate decides
//! what the command means, exactly as for a webhook, so a run over a store that is
//! already right appends nothing, and two runs racing each other (or a webhook) cannot
//! produce duplicates.
//!
//! The flow, built to handle 100,000 users in seconds:
//!
//! ```text
//!  read model (one query) ─┐
//!  page 1 ─▶ total_pages ──┴▶ pages 2..N, a few in flight ─▶ compare ─┐
//!                                                                    │ channel
//!            users in the read model but not listed, after paging ───┤
//!                                                                    ▼
//!                  rechecks by pk, bounded concurrency ─▶ commands in batches ─▶ report
//! ```
//!
//! Listing and commands overlap: a difference is acted on as soon as its page arrives.
//! Commands go to the event store in batches (`EventStore::execute_many`): whatever is
//! ready, up to [`Options::batch_size`], committed in one transaction. Event writers
//! are serialised until they commit, so one transaction per user would cap a run at
//! one WAL flush per user (under 900 users/s on the benchmark machine); a batch shares
//! one flush.
//!
//! Two rules guard against acting on a stale or shifting listing. Authentik's list is
//! not ordered by pk and users change while we page, so a user can move between pages
//! and be missed. A user the read model has but the listing lacks is therefore fetched
//! again by pk and deleted only if Authentik answers 404. And a user listed with
//! differences is fetched again before the update, so a listing taken seconds ago does
//! not overwrite what a webhook just wrote.

mod periodic;
mod report;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::stream::{FuturesUnordered, StreamExt, TryStreamExt};
use idsync_authentik::{AuthentikClient, AuthentikUser, ClientError, UserPage};
use idsync_domain::{EventMetadata, Source, UserChanges, UserCommand, UserEvent, UserSnapshot};
use idsync_store::backoff::Backoff;
use idsync_store::projections::users::{self, UserRow};
use idsync_store::{EventStore, StoreError};
use sqlx::PgPool;
use tokio::sync::mpsc;

pub use periodic::{Periodic, try_lock};
pub use report::{Change, ChangeKind, Counts, Progress, Report};

use crate::metrics::{AUTHENTIK_REQUESTS, EVENTS_APPENDED};

/// The session advisory lock that keeps reconcile runs to one at a time per database.
pub const LOCK_KEY: &str = "idsync:reconcile";

/// Attempts per Authentik call. A 100,000-user run makes a thousand calls; one 502 on
/// the way should not throw the run away.
const AUTHENTIK_ATTEMPTS: u32 = 4;

/// Work items waiting between the listing and the command runner. Bounded so a slow
/// database applies back-pressure to the listing instead of buffering everything.
const QUEUE: usize = 4096;

/// How a run is done.
#[derive(Debug, Clone)]
pub struct Options {
    /// Users per listing page (Authentik caps it, 100 by default).
    pub page_size: u32,
    /// Decide and report, write nothing.
    pub dry_run: bool,
    /// Listing pages fetched at once.
    pub pages_in_flight: usize,
    /// Users rechecked against Authentik (one call each) at once.
    pub commands_in_flight: usize,
    /// Most commands committed together in one transaction.
    pub batch_size: usize,
    /// Batches loading, deciding or committing at once. Each holds a database
    /// connection; the commits themselves take turns (event writers are serialised).
    pub batches_in_flight: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            page_size: 100,
            dry_run: false,
            pages_in_flight: 8,
            commands_in_flight: 16,
            batch_size: 500,
            batches_in_flight: 2,
        }
    }
}

/// Where users come from: Authentik's API, or a stand-in in tests.
pub trait Directory: Send + Sync {
    /// One page of the user list, pages counted from 1.
    fn list_users(
        &self,
        page: u32,
        page_size: u32,
    ) -> impl Future<Output = Result<UserPage, ClientError>> + Send;

    /// One user by pk; [`ClientError::NotFound`] when Authentik has no such user.
    fn get_user(&self, pk: i64) -> impl Future<Output = Result<AuthentikUser, ClientError>> + Send;
}

impl Directory for AuthentikClient {
    fn list_users(
        &self,
        page: u32,
        page_size: u32,
    ) -> impl Future<Output = Result<UserPage, ClientError>> + Send {
        AuthentikClient::list_users(self, page, page_size)
    }

    fn get_user(&self, pk: i64) -> impl Future<Output = Result<AuthentikUser, ClientError>> + Send {
        AuthentikClient::get_user(self, pk)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("Authentik, {what}: {source}{}", hint(source))]
    Authentik {
        what: String,
        #[source]
        source: ClientError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an operator should look at, for the errors that have one obvious cause.
fn hint(error: &ClientError) -> &'static str {
    match error {
        ClientError::Auth { .. } => {
            " (check IDSYNC_AUTHENTIK_TOKEN: an API-intent token of a user allowed to read users, not expired)"
        }
        ClientError::NotFound => " (check IDSYNC_AUTHENTIK_URL)",
        _ => "",
    }
}

/// One thing to look at, from the listing to the command runner.
enum Work {
    /// Listed by Authentik, not in the read model.
    Missing(UserSnapshot),
    /// In the read model, and listed with other values or not listed at all: fetched
    /// again by pk before anything is decided.
    Recheck(Box<UserRow>),
}

/// Run one reconcile. `progress` is called from the listing and the command runner as
/// they go (possibly concurrently); it should be cheap.
pub async fn reconcile<D: Directory>(
    pool: &PgPool,
    store: &EventStore,
    directory: &D,
    options: &Options,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Report, ReconcileError> {
    let started = Instant::now();
    let page_size = options.page_size.max(1);
    // Every event of a run carries the run's start as its `received_at`.
    let metadata = EventMetadata::new(Source::Reconcile, None, Utc::now());
    // The read model and the first page (which tells how many pages there are) at once.
    let (known, first) = tokio::try_join!(
        async { users::all_active(pool).await.map_err(ReconcileError::from) },
        fetch_page(directory, 1, page_size),
    )?;
    let known: HashMap<i64, UserRow> = known.into_iter().map(|row| (row.pk, row)).collect();
    let runner = Runner {
        store,
        directory,
        metadata: &metadata,
        dry_run: options.dry_run,
        progress,
        queued: AtomicU64::new(0),
        done: AtomicU64::new(0),
    };

    let (tx, mut rx) = mpsc::channel::<Work>(QUEUE);
    let listing = list(&runner, options, page_size, first, known, tx);
    let applying = futures::stream::poll_fn(|cx| rx.poll_recv(cx))
        .map(|work| runner.prepare(work))
        .buffer_unordered(options.commands_in_flight.max(1))
        .ready_chunks(options.batch_size.max(1))
        .map(|batch| runner.run_batch(batch))
        .buffer_unordered(options.batches_in_flight.max(1))
        .try_fold(
            (Counts::default(), Vec::new()),
            |(mut counts, mut changes), batch| async move {
                for change in batch {
                    counts.add(change.as_ref().map(|c| &c.kind));
                    changes.extend(change);
                }
                Ok((counts, changes))
            },
        );
    // Either side failing ends the run at once (try_join drops the other side). What
    // was already committed stays: each batch commits alone and the next run goes on.
    let ((listed, unchanged_in_listing), (mut counts, mut changes)) =
        tokio::try_join!(listing, applying)?;
    counts.unchanged += unchanged_in_listing;
    changes.sort_by_key(|c| c.pk);
    let report = Report {
        dry_run: options.dry_run,
        listed,
        counts,
        changes,
        duration: started.elapsed(),
    };
    tracing::info!(
        dry_run = report.dry_run,
        listed = report.listed,
        registered = counts.registered,
        updated = counts.updated,
        deleted = counts.deleted,
        unchanged = counts.unchanged,
        conflicts = counts.conflicts,
        duration_ms = report.duration.as_millis() as u64,
        "reconcile finished"
    );
    Ok(report)
}

/// Page through Authentik's users, queueing every difference with the read model.
/// Returns (distinct users listed, users listed that equal the read model).
async fn list<D: Directory>(
    runner: &Runner<'_, D>,
    options: &Options,
    page_size: u32,
    first: UserPage,
    mut known: HashMap<i64, UserRow>,
    tx: mpsc::Sender<Work>,
) -> Result<(u64, u64), ReconcileError> {
    let mut seen: HashSet<i64> = HashSet::with_capacity(known.len());
    let mut unchanged = 0u64;
    let mut total_pages = first.pagination.total_pages.max(1);
    let mut announced = first.pagination.count;
    let mut queue = Queue {
        tx: &tx,
        runner,
        open: true,
    };
    queue
        .page(first, &mut known, &mut seen, &mut unchanged)
        .await;
    (runner.progress)(Progress::Listed {
        users: seen.len() as u64,
        total: announced,
    });

    let mut next: u64 = 2;
    let mut in_flight = FuturesUnordered::new();
    loop {
        while queue.open && in_flight.len() < options.pages_in_flight.max(1) && next <= total_pages
        {
            let number = u32::try_from(next).map_err(|_| ReconcileError::Authentik {
                what: "listing users".to_owned(),
                source: ClientError::Malformed(format!("total_pages {total_pages} is absurd")),
            })?;
            in_flight.push(async move {
                (
                    number,
                    fetch_page(runner.directory, number, page_size).await,
                )
            });
            next += 1;
        }
        let Some((number, result)) = in_flight.next().await else {
            break;
        };
        let page = match result {
            Ok(page) => page,
            // A page past the end: users were deleted while we paged and the list
            // shrank. Whoever was on it shifted to an earlier page or is gone; the
            // recheck of unlisted users below settles which.
            Err(ReconcileError::Authentik {
                source: ClientError::NotFound,
                ..
            }) if number > 1 => continue,
            Err(err) => return Err(err),
        };
        // The list grew while we paged: follow it, or the last users are never seen.
        total_pages = total_pages.max(page.pagination.total_pages);
        announced = announced.max(page.pagination.count);
        queue
            .page(page, &mut known, &mut seen, &mut unchanged)
            .await;
        (runner.progress)(Progress::Listed {
            users: seen.len() as u64,
            total: announced,
        });
    }

    // Known here, not listed: deleted in Authentik, or just moved between pages while
    // we listed. The runner fetches each by pk and deletes only on a 404.
    (runner.progress)(Progress::ListingDone {
        listed: seen.len() as u64,
        absent: known.len() as u64,
    });
    let mut absent: Vec<UserRow> = known.into_values().collect();
    absent.sort_by_key(|row| row.pk);
    for row in absent {
        queue.push(Work::Recheck(Box::new(row))).await;
    }
    Ok((seen.len() as u64, unchanged))
}

/// The sending end of the work queue. Once the runner has stopped (it failed, and its
/// error is what the run returns), sending is pointless and the listing winds down.
struct Queue<'a, 'r, D> {
    tx: &'a mpsc::Sender<Work>,
    runner: &'a Runner<'r, D>,
    open: bool,
}

impl<D> Queue<'_, '_, D> {
    async fn push(&mut self, work: Work) {
        if !self.open {
            return;
        }
        self.runner.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(work).await.is_err() {
            self.open = false;
        }
    }

    /// Compare one page with the read model; queue what differs.
    async fn page(
        &mut self,
        page: UserPage,
        known: &mut HashMap<i64, UserRow>,
        seen: &mut HashSet<i64>,
        unchanged: &mut u64,
    ) {
        for user in page.users {
            // A user can be listed twice when the list shifts under us; once is enough.
            if !seen.insert(user.pk) {
                continue;
            }
            let listed = user.to_snapshot();
            match known.remove(&user.pk) {
                None => self.push(Work::Missing(listed)).await,
                Some(row) if UserChanges::between(&row.to_snapshot(), &listed).is_empty() => {
                    *unchanged += 1;
                }
                Some(row) => self.push(Work::Recheck(Box::new(row))).await,
            }
        }
    }
}

/// Turns work items into commands (or, dry, into decisions).
struct Runner<'a, D> {
    store: &'a EventStore,
    directory: &'a D,
    metadata: &'a EventMetadata,
    dry_run: bool,
    progress: &'a (dyn Fn(Progress) + Send + Sync),
    queued: AtomicU64,
    done: AtomicU64,
}

/// A work item made ready for the event store.
#[allow(clippy::large_enum_variant)] // short-lived, one per user in flight
enum Prepared {
    /// Settled without a command: the listing was older than the read model.
    Settled,
    /// This command, for this user.
    Command {
        pk: i64,
        username: String,
        command: UserCommand,
    },
}

impl<D: Directory> Runner<'_, D> {
    /// Turn a work item into a command; a recheck fetches the user from Authentik first.
    async fn prepare(&self, work: Work) -> Result<Prepared, ReconcileError> {
        Ok(match work {
            Work::Missing(snapshot) => Prepared::Command {
                pk: snapshot.pk,
                username: snapshot.username.clone(),
                command: UserCommand::ApplySnapshot(snapshot),
            },
            Work::Recheck(row) => match fetch_user(self.directory, row.pk).await {
                Ok(user) => {
                    let fresh = user.to_snapshot();
                    // Equal to what we have: the listing was older than the read model.
                    if UserChanges::between(&row.to_snapshot(), &fresh).is_empty() {
                        return Ok(Prepared::Settled);
                    }
                    Prepared::Command {
                        pk: fresh.pk,
                        username: fresh.username.clone(),
                        command: UserCommand::ApplySnapshot(fresh),
                    }
                }
                Err(ReconcileError::Authentik {
                    source: ClientError::NotFound,
                    ..
                }) => Prepared::Command {
                    pk: row.pk,
                    username: row.username.clone(),
                    command: UserCommand::Delete { pk: row.pk },
                },
                Err(err) => return Err(err),
            },
        })
    }

    /// Run a batch of commands (or, dry, decide them) and say what became of each user:
    /// None when nothing changed.
    async fn run_batch(
        &self,
        batch: Vec<Result<Prepared, ReconcileError>>,
    ) -> Result<Vec<Option<Change>>, ReconcileError> {
        let size = batch.len() as u64;
        let mut settled = 0usize;
        let mut users = Vec::with_capacity(batch.len());
        let mut items = Vec::with_capacity(batch.len());
        for prepared in batch {
            match prepared? {
                Prepared::Settled => settled += 1,
                Prepared::Command {
                    pk,
                    username,
                    command,
                } => {
                    users.push((pk, username));
                    items.push((pk, command));
                }
            }
        }
        let outcomes: Vec<Result<Vec<UserEvent>, StoreError>> = if self.dry_run {
            // The aggregates' own rules on their current state, without the commit.
            self.store.preview_many(items).await?
        } else {
            self.store
                .execute_many(items, self.metadata)
                .await?
                .into_iter()
                .map(|outcome| {
                    outcome.map(|appended| {
                        for event in &appended {
                            metrics::counter!(EVENTS_APPENDED, "type" => event.kind().as_str())
                                .increment(1);
                        }
                        appended.into_iter().map(|a| a.event).collect()
                    })
                })
                .collect()
        };
        let mut changes = vec![None; settled];
        for ((pk, username), outcome) in users.into_iter().zip(outcomes) {
            changes.push(self.change(pk, username, outcome)?);
        }
        let done = self.done.fetch_add(size, Ordering::Relaxed) + size;
        (self.progress)(Progress::Applied {
            done,
            queued: self.queued.load(Ordering::Relaxed),
        });
        Ok(changes)
    }

    /// What one command's outcome means for the report.
    fn change(
        &self,
        pk: i64,
        username: String,
        outcome: Result<Vec<UserEvent>, StoreError>,
    ) -> Result<Option<Change>, ReconcileError> {
        let events = match outcome {
            Ok(events) => events,
            Err(StoreError::Domain(err)) => {
                if !self.dry_run {
                    tracing::warn!(pk, error = %err, "reconcile: user deleted here but still in Authentik; left as is");
                }
                return Ok(Some(conflict(pk, username)));
            }
            Err(err) => return Err(err.into()),
        };
        let mut kind = None;
        for event in &events {
            kind = Some(match event {
                UserEvent::UserRegistered(_) => ChangeKind::Register,
                UserEvent::UserUpdated { changes, .. } => ChangeKind::Update(fields(changes)),
                UserEvent::UserDeleted(_) => ChangeKind::Delete,
                // Follows a delete (IDSYNC_ERASE_ON_DELETE): the change is the delete.
                UserEvent::UserErased(_) => continue,
            });
        }
        if let Some(kind) = &kind {
            tracing::debug!(pk, ?kind, dry_run = self.dry_run, "reconcile change");
        }
        Ok(kind.map(|kind| Change { pk, username, kind }))
    }
}

fn conflict(pk: i64, username: String) -> Change {
    Change {
        pk,
        username,
        kind: ChangeKind::Conflict,
    }
}

/// The names (as in the contract's user (docs/contract.md)) of the fields an update changes.
fn fields(changes: &UserChanges) -> Vec<&'static str> {
    let UserChanges {
        uuid,
        username,
        email,
        name,
        is_active,
        user_type,
        groups,
        date_joined,
        uid,
    } = changes;
    [
        ("uuid", uuid.is_some()),
        ("username", username.is_some()),
        ("email", email.is_some()),
        ("name", name.is_some()),
        ("is_active", is_active.is_some()),
        ("type", user_type.is_some()),
        ("groups", groups.is_some()),
        ("date_joined", date_joined.is_some()),
        ("uid", uid.is_some()),
    ]
    .into_iter()
    .filter_map(|(field, changed)| changed.then_some(field))
    .collect()
}

async fn fetch_page<D: Directory>(
    directory: &D,
    page: u32,
    page_size: u32,
) -> Result<UserPage, ReconcileError> {
    with_retries(|| directory.list_users(page, page_size))
        .await
        .map_err(|source| ReconcileError::Authentik {
            what: format!("listing users (page {page})"),
            source,
        })
}

async fn fetch_user<D: Directory>(directory: &D, pk: i64) -> Result<AuthentikUser, ReconcileError> {
    with_retries(|| directory.get_user(pk))
        .await
        .map_err(|source| ReconcileError::Authentik {
            what: format!("fetching user {pk}"),
            source,
        })
}

/// A call, retried a few times on errors that pass by themselves (5xx, timeouts, 429).
/// Not on a rejected token: that needs an operator, and retrying a thousand pages
/// would only hide it.
async fn with_retries<T, F, Fut>(mut call: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let mut attempt = 1;
    loop {
        let result = call().await;
        let label = match &result {
            Ok(_) => "ok",
            Err(err) => err.kind(),
        };
        metrics::counter!(AUTHENTIK_REQUESTS, "result" => label).increment(1);
        let delay = match &result {
            Err(ClientError::Transient(_)) => {
                Backoff::new(Duration::from_millis(250), Duration::from_secs(2))
                    .delay_after(attempt)
            }
            Err(ClientError::RateLimited { retry_after }) => retry_after
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(30)),
            _ => return result,
        };
        if attempt >= AUTHENTIK_ATTEMPTS {
            return result;
        }
        if let Err(err) = &result {
            tracing::debug!(error = %err, attempt, retry_in = ?delay, "Authentik call failed; retrying");
        }
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests;
