//! `idsync serve`: the HTTP server plus the background work, under one cancellation token.

use std::sync::Arc;
use std::time::Duration;

use idsync_authentik::{AuthentikClient, ClientConfig};
use idsync_store::db;
use idsync_store::{EventStore, Notifier};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::CliError;
use crate::cli::{GlobalArgs, ServeArgs};
use crate::http::{self, AppState, Readiness};
use crate::shutdown;
use crate::sync::{SyncConfig, Syncer};

/// How long shutdown waits for background tasks before giving up on them. SIGTERM must
/// end the process within 5 s (orchestrators then SIGKILL), so stay under that.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

/// Concurrent intake batches being written (see `intake::queue`).
const INTAKE_WRITERS: usize = 4;

/// Broadcast capacity of live notifications: how far a slow feed reader may fall behind
/// before it is told it lagged (and re-reads from the database).
const NOTIFY_CAPACITY: usize = 4096;

pub async fn run(global: &GlobalArgs, args: ServeArgs) -> Result<(), CliError> {
    let Some(webhook_secret) = args
        .webhook_secret
        .clone()
        .filter(|s| !s.expose_secret().trim().is_empty())
    else {
        return Err(CliError::Config(
            "IDSYNC_WEBHOOK_SECRET is not set: set it (or --webhook-secret) to the bearer secret \
             that Authentik's webhook headers mapping sends"
                .to_owned(),
        ));
    };
    let authentik = authentik_client(&args)?;

    let cancel = CancellationToken::new();
    shutdown::cancel_on_signal(cancel.clone());

    let pool = db::lazy_pool(&global.database_url, &global.pool_config())?;
    let readiness = Readiness::default();
    let tracker = TaskTracker::new();
    let notifier = Notifier::new(NOTIFY_CAPACITY);
    let wake_sync = Arc::new(tokio::sync::Notify::new());
    let store = Arc::new(EventStore::new(pool.clone()));
    let syncer = match authentik {
        Some(client) => Some(Arc::new(Syncer::new(
            pool.clone(),
            store.clone(),
            client,
            readiness.clone(),
            wake_sync.clone(),
            SyncConfig {
                concurrency: args.sync_concurrency,
                lease: args.sync_lease,
                deadline: args.sync_deadline,
                retry_min: args.sync_retry_min,
                retry_max: args.sync_retry_max,
                poll: Duration::from_secs(1),
            },
        ))),
        None => {
            readiness.warn(
                "authentik",
                "IDSYNC_AUTHENTIK_URL and IDSYNC_AUTHENTIK_TOKEN are not both set: webhooks are \
                 stored and wait in the inbox",
            );
            None
        }
    };

    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| CliError::Config(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener.local_addr()?;

    tracker.spawn(bootstrap(
        global.database_url.clone(),
        pool.clone(),
        readiness.clone(),
        notifier.clone(),
        syncer,
        cancel.clone(),
        tracker.clone(),
    ));

    let state = AppState {
        pool: pool.clone(),
        readiness,
        webhook_secret: Arc::new(webhook_secret),
        intake: crate::intake::IntakeQueue::start(pool.clone(), INTAKE_WRITERS),
        wake_sync,
        metrics: crate::metrics::install(),
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
    syncer: Option<Arc<Syncer>>,
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
    tracker.spawn(notifier.run(pool, cancel.clone()));
    if let Some(syncer) = syncer {
        for slot in 0..syncer.concurrency() {
            tracker.spawn(syncer.clone().run(slot, cancel.clone()));
        }
    }
}

/// The Authentik client, when both its URL and token are set. One without the other is
/// a configuration mistake worth refusing to start for.
fn authentik_client(args: &ServeArgs) -> Result<Option<AuthentikClient>, CliError> {
    let url = args
        .authentik_url
        .as_deref()
        .filter(|u| !u.trim().is_empty());
    let token = args
        .authentik_token
        .clone()
        .filter(|t| !t.expose_secret().trim().is_empty());
    match (url, token) {
        (Some(url), Some(token)) => AuthentikClient::new(
            url,
            token,
            ClientConfig {
                request_timeout: args.authentik_timeout,
                ..ClientConfig::default()
            },
        )
            .map(Some)
            .map_err(|e| CliError::Config(format!("IDSYNC_AUTHENTIK_URL: {e}"))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(CliError::Config(
            "IDSYNC_AUTHENTIK_URL is set but IDSYNC_AUTHENTIK_TOKEN is not: set the service account's API token".to_owned(),
        )),
        (None, Some(_)) => Err(CliError::Config(
            "IDSYNC_AUTHENTIK_TOKEN is set but IDSYNC_AUTHENTIK_URL is not: set Authentik's base URL".to_owned(),
        )),
    }
}
