//! `idsync reconcile [--dry-run]`: compare Authentik's users with the read model and
//! append what webhooks never delivered. The work is in `crate::reconcile`; this is the
//! operator's view of it: progress on stderr, differences and the summary on stdout.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use idsync_store::{EventStore, db};

use crate::CliError;
use crate::cli::{GlobalArgs, ReconcileArgs};
use crate::reconcile::{self, Options, Progress, ReconcileError};

/// How often progress lines are printed while a run goes on.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

pub async fn run(global: &GlobalArgs, args: ReconcileArgs) -> Result<(), CliError> {
    let Some(client) = args.authentik.client()? else {
        return Err(CliError::Config(
            "reconcile needs Authentik's API: set IDSYNC_AUTHENTIK_URL and IDSYNC_AUTHENTIK_TOKEN \
             (or --authentik-url and --authentik-token)"
                .to_owned(),
        ));
    };
    if args.page_size == 0 {
        return Err(CliError::Config(
            "--page-size must be at least 1".to_owned(),
        ));
    }
    let pool = db::lazy_pool(&global.database_url, &global.pool_config())?;
    let problems = db::migration_problems(&pool).await?;
    if !problems.is_empty() {
        return Err(CliError::Config(problems.join("; ")));
    }
    super::privacy::install(global, &pool).await?;
    // A dry run writes nothing, so it may run beside a real one; a real run must not
    // race serve's periodic reconcile (harmless, the aggregate decides, but twice the
    // work and confusing summaries).
    let lock = if args.dry_run {
        None
    } else {
        match reconcile::try_lock(&pool).await? {
            Some(lock) => Some(lock),
            None => {
                return Err(CliError::Config(
                    "another reconcile is running on this database (serve's periodic one, or \
                     another `idsync reconcile`); try again when it has finished"
                        .to_owned(),
                ));
            }
        }
    };

    // Batches hold a database connection each; one more is the lock's (detached).
    let connections = global
        .pool_config()
        .max_connections
        .saturating_sub(1)
        .max(1) as usize;
    let options = Options {
        page_size: args.page_size,
        dry_run: args.dry_run,
        batches_in_flight: Options::default().batches_in_flight.min(connections),
        ..Options::default()
    };
    let store = EventStore::new(pool.clone()).with_erase_on_delete(global.erase_on_delete);
    let printer = ProgressPrinter::new();
    let result = reconcile::reconcile(&pool, &store, &client, &options, &|p| printer.show(p)).await;
    if let Some(lock) = lock {
        lock.release().await;
    }
    pool.close().await;
    let report = result.map_err(|err| match err {
        ReconcileError::Store(err) => CliError::Store(err),
        err @ ReconcileError::Authentik { .. } => CliError::Authentik(err.into()),
    })?;

    if report.dry_run {
        for change in &report.changes {
            println!("{change}");
        }
    }
    println!("{}", report.summary());
    Ok(())
}

/// Progress lines on stderr, each kind at most every [`PROGRESS_EVERY`] (a run over
/// 100,000 users lists a thousand pages), plus the end of the listing.
struct ProgressPrinter {
    /// When the last "fetched" and "checked" lines were printed.
    last: Mutex<[Option<Instant>; 2]>,
}

impl ProgressPrinter {
    fn new() -> Self {
        Self {
            last: Mutex::new([None, None]),
        }
    }

    /// Whether a line of kind `slot` is due, and if so, note that it is printed now.
    fn due(&self, slot: usize) -> bool {
        let Ok(mut last) = self.last.lock() else {
            return false;
        };
        let due = last[slot].is_none_or(|at| at.elapsed() >= PROGRESS_EVERY);
        if due {
            last[slot] = Some(Instant::now());
        }
        due
    }

    fn show(&self, progress: Progress) {
        match progress {
            Progress::Listed { users, total } if self.due(0) => {
                eprintln!("fetched {users}/{total} users");
            }
            Progress::ListingDone { listed, absent } => {
                eprintln!("fetched {listed} users");
                if absent > 0 {
                    eprintln!("checking {absent} user(s) known here but not in Authentik's list");
                }
            }
            Progress::Applied { done, queued } if self.due(1) => {
                eprintln!("checked {done}/{queued} differences");
            }
            _ => {}
        }
    }
}
