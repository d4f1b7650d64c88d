//! `idsync serve`: the HTTP server plus the background work, under one cancellation token.

use std::time::Duration;

use idsync_store::Notifier;
use idsync_store::db::{self, PoolConfig};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::CliError;
use crate::cli::{GlobalArgs, ServeArgs};
use crate::http::{self, AppState, Readiness};
use crate::shutdown;

/// How long shutdown waits for background tasks before giving up on them. SIGTERM must
/// end the process within 5 s (orchestrators then SIGKILL), so stay under that.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

/// Broadcast capacity of live notifications: how far a slow feed reader may fall behind
/// before it is told it lagged (and re-reads from the database).
const NOTIFY_CAPACITY: usize = 4096;

pub async fn run(global: &GlobalArgs, args: ServeArgs) -> Result<(), CliError> {
    let has_secret = args
        .webhook_secret
        .as_ref()
        .is_some_and(|s| !s.expose_secret().trim().is_empty());
    if !has_secret {
        return Err(CliError::Config(
            "IDSYNC_WEBHOOK_SECRET is not set: set it (or --webhook-secret) to the bearer secret \
             that Authentik's webhook headers mapping sends"
                .to_owned(),
        ));
    }

    let cancel = CancellationToken::new();
    shutdown::cancel_on_signal(cancel.clone());

    let pool = db::lazy_pool(&global.database_url, &PoolConfig::default())?;
    let readiness = Readiness::default();
    let tracker = TaskTracker::new();
    let notifier = Notifier::new(NOTIFY_CAPACITY);

    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| CliError::Config(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener.local_addr()?;

    tracker.spawn(bootstrap(
        global.database_url.clone(),
        pool.clone(),
        readiness.clone(),
        notifier.clone(),
        cancel.clone(),
        tracker.clone(),
    ));

    let state = AppState {
        pool: pool.clone(),
        readiness,
    };
    tracing::info!(
        %addr,
        database = db::database_name(&global.database_url).as_deref().unwrap_or("?"),
        version = env!("CARGO_PKG_VERSION"),
        "listening"
    );
    axum::serve(listener, http::router(state))
        .with_graceful_shutdown(cancel.clone().cancelled_owned())
        .await?;

    // The server stopped (signal, or a listener error): stop everything else too.
    cancel.cancel();
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks did not stop in time; exiting anyway");
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), pool.close()).await;
    tracing::info!("stopped");
    Ok(())
}

/// Bring the database up to date, then start the work that needs it. Retried with
/// backoff rather than fatal: in a compose stack idsync may start before Postgres
/// accepts connections, and meanwhile `/readyz` says why it is not ready.
async fn bootstrap(
    url: String,
    pool: PgPool,
    readiness: Readiness,
    notifier: Notifier,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match db::migrate(&url, &pool).await {
            Ok(report) => {
                if !report.applied.is_empty() {
                    tracing::info!(applied = ?report.applied, "migrations applied");
                }
                readiness.clear("startup");
                break;
            }
            Err(err) => {
                tracing::warn!(error = %err, retry_in = ?backoff, "cannot prepare the database yet");
                readiness.set("startup", format!("cannot prepare the database: {err}"));
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    tracker.spawn(notifier.run(pool, cancel));
}
