//! `idsync replay [--projection NAME]`: rebuild a read model from the event log, with a
//! progress bar (events/s, ETA) on a terminal and plain lines otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use idsync_store::db;
use idsync_store::projections::Projection;
use idsync_store::projections::replay::{self, ReplayReport};
use idsync_store::projections::users::UsersProjection;
use indicatif::{ProgressBar, ProgressStyle};

use crate::CliError;
use crate::cli::{GlobalArgs, ReplayArgs};

/// Every projection `--projection` accepts.
pub const PROJECTIONS: &[&str] = &[UsersProjection::NAME];

pub async fn run(global: &GlobalArgs, args: ReplayArgs) -> Result<(), CliError> {
    let pool = db::lazy_pool(&global.database_url, &global.pool_config())?;
    let problems = db::migration_problems(&pool).await?;
    if !problems.is_empty() {
        return Err(CliError::Config(problems.join("; ")));
    }
    super::privacy::install(global, &pool).await?;
    let report = match args.projection.as_str() {
        UsersProjection::NAME => rebuild(&UsersProjection, &pool, args.batch_size).await?,
        other => {
            return Err(CliError::Config(format!(
                "unknown projection {other:?}; known: {}",
                PROJECTIONS.join(", ")
            )));
        }
    };
    println!(
        "replayed {} events into {} in {:.1} s ({:.0} events/s); checkpoint at position {}",
        report.events,
        args.projection,
        report.seconds,
        report.events as f64 / report.seconds.max(1e-9),
        report.position
    );
    pool.close().await;
    Ok(())
}

async fn rebuild<P: Projection>(
    projection: &P,
    pool: &sqlx::PgPool,
    batch: i64,
) -> Result<ReplayReport, CliError> {
    let mut display = Display::new(P::NAME);
    let report = replay::replay(projection, pool, batch, |done, head| {
        display.update(done, head)
    })
    .await;
    display.finish();
    Ok(report?)
}

/// A progress bar on a terminal; a line every 2 s otherwise (logs, CI).
struct Display {
    name: &'static str,
    bar: Option<ProgressBar>,
    started: Instant,
    last_line: Instant,
}

impl Display {
    fn new(name: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:40}] {human_pos}/{human_len} events  {per_sec}  ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_message(format!("replay {name}"));
            bar
        });
        Self {
            name,
            bar,
            started: Instant::now(),
            last_line: Instant::now(),
        }
    }

    fn update(&mut self, done: u64, head: i64) {
        let total = (head.max(0) as u64).max(done);
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_position(done);
            return;
        }
        if self.last_line.elapsed() >= Duration::from_secs(2) || done == total {
            let secs = self.started.elapsed().as_secs_f64().max(1e-9);
            let rate = done as f64 / secs;
            let eta = if rate > 0.0 {
                format!("{:.0} s", (total - done) as f64 / rate)
            } else {
                "?".to_owned()
            };
            eprintln!(
                "replay {}: {done}/{total} events, {rate:.0} events/s, ETA {eta}",
                self.name
            );
            self.last_line = Instant::now();
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
