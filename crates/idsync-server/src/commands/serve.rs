//! `idsync serve`: the HTTP server plus the background work, under one cancellation token.

use std::sync::Arc;
use std::time::Duration;

use idsync_store::backoff::Backoff;
use idsync_store::db;
use idsync_store::projections::projector::{self, ProjectorConfig};
use idsync_store::projections::users::UsersProjection;
use idsync_store::{EventStore, Notifier};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::CliError;
use crate::api::ApiState;
use crate::auth::Identifier;
use crate::cli::{GlobalArgs, ServeArgs};
use crate::feeds::FeedState;
use crate::http;
use crate::intake::IntakeState;
use crate::readiness::{Component, Readiness};
use crate::shutdown;
use crate::state::AppState;
use crate::sync::{SyncConfig, Syncer};

/// How long shutdown waits for background tasks before giving up on them. SIGTERM must
/// end the process within 5 s (orchestrators then SIGKILL), so stay under that.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);
/// Of that, how long requests in flight get to finish. Open feeds end at once.
const HTTP_GRACE: Duration = Duration::from_secs(2);

/// Concurrent intake batches being written (see `intake::queue`).
const INTAKE_WRITERS: usize = 4;

/// Broadcast capacity of live notifications: how far a slow feed reader may fall behind
/// before it is told it lagged (and re-reads from the database).
const NOTIFY_CAPACITY: usize = 4096;

/// `idsync serve`: build, then run until SIGTERM or Ctrl-C.
pub async fn run(global: &GlobalArgs, args: ServeArgs) -> Result<(), CliError> {
    build(global, args).await?.run().await
}

/// A serve process that is built and bound but not serving yet. [`build`] does all that
/// can fail at start (settings, the listening socket) and starts the background work;
/// [`Server::run`] serves until shutdown. The bound address is known in between, so a
/// caller that asked for port 0 learns the port without reading logs.
pub struct Server {
    listener: TcpListener,
    router: axum::Router,
    addr: std::net::SocketAddr,
    cancel: CancellationToken,
    tracker: TaskTracker,
    pool: PgPool,
    /// Why bootstrap stopped the process, if it did (the data key does not fit the data).
    fatal: Arc<std::sync::Mutex<Option<String>>>,
}

impl Server {
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Cancelling it shuts the server down as SIGTERM does.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Serve until shutdown, then give the background work its grace and close the pool.
    pub async fn run(self) -> Result<(), CliError> {
        let Server {
            listener,
            router,
            addr: _,
            cancel,
            tracker,
            pool,
            fatal,
        } = self;
        http::server::serve(listener, router, cancel.clone(), HTTP_GRACE).await;

        // The server returns once shutdown began. The background tasks were told at the
        // same moment and have been stopping meanwhile; the two waits together stay within
        // SHUTDOWN_GRACE.
        tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE - HTTP_GRACE, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("background tasks did not stop in time; exiting anyway");
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), pool.close()).await;
        tracing::info!("stopped");
        let fatal = fatal.lock().unwrap_or_else(|e| e.into_inner()).take();
        match fatal {
            Some(why) => Err(CliError::Config(why)),
            None => Ok(()),
        }
    }
}

/// Check the settings, bind the listening socket and start the background work.
pub async fn build(global: &GlobalArgs, args: ServeArgs) -> Result<Server, CliError> {
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
    let authentik = args.authentik.client()?;
    let trusted_proxies = crate::auth::gateway::TrustedProxies::parse(&args.trusted_proxies)
        .map_err(CliError::Config)?;
    let notifier = Notifier::new(NOTIFY_CAPACITY);
    let users_cache = Arc::new(idsync_store::projections::users_cache::UsersCache::new(
        notifier.watermarks(),
    ));
    let hub = crate::feeds::Hub::new(args.feed_buffer, users_cache.clone());
    let auth = Arc::new(crate::auth::Auth {
        verifier: args.oidc_verifier()?,
        subject: args.oidc_subject,
        admin_group: args.admin_group.clone(),
    });

    // A malformed IDSYNC_DATA_KEY stops us here; whether it fits the data is checked
    // once the database answers (bootstrap). A configured key serves readers at once.
    if let Some(keyring) = super::privacy::configured(global)? {
        idsync_store::privacy::install(Some(keyring));
    }
    let cancel = CancellationToken::new();
    shutdown::cancel_on_signal(cancel.clone());
    let fatal: Arc<std::sync::Mutex<Option<String>>> = Arc::default();

    let pool = db::lazy_pool(&global.database_url, &global.pool_config())?;
    let readiness = Readiness::default();
    let tracker = TaskTracker::new();
    let wake_sync = Arc::new(tokio::sync::Notify::new());
    let store =
        Arc::new(EventStore::new(pool.clone()).with_erase_on_delete(global.erase_on_delete));
    // Periodic reconcile shares the Syncer's client; none without Authentik or with interval 0.
    let reconcile = authentik.clone().and_then(|client| {
        crate::reconcile::Periodic::new(
            pool.clone(),
            store.clone(),
            client,
            args.reconcile_interval,
            args.reconcile_start_delay,
        )
    });
    let on_demand = authentik.clone().map(|client| {
        Arc::new(crate::sync::on_demand::OnDemand::new(
            client,
            args.oidc_subject,
            wake_sync.clone(),
        ))
    });
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
                Component::Authentik,
                "IDSYNC_AUTHENTIK_URL and IDSYNC_AUTHENTIK_TOKEN are not both set: webhooks are \
                 stored and wait in the inbox",
            );
            None
        }
    };

    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| CliError::Listen {
            addr: args.listen,
            source,
        })?;
    let addr = listener.local_addr()?;

    tracker.spawn(bootstrap(
        global.clone(),
        Background {
            pool: pool.clone(),
            notifier: notifier.clone(),
            hub: hub.clone(),
            syncer,
            reconcile,
            auth: auth.clone(),
            store: store.clone(),
            erase_after: args.erase_after.filter(|d| !d.is_zero()),
            fatal: fatal.clone(),
        },
        readiness.clone(),
        cancel.clone(),
        tracker.clone(),
    ));

    if auth.verifier.is_none() {
        readiness.warn(
            Component::Oidc,
            "IDSYNC_OIDC_ISSUER is not set: the protected API answers 503",
        );
    }
    let state = AppState {
        pool: pool.clone(),
        readiness,
        metrics: crate::metrics::install(),
        intake: IntakeState {
            webhook_secret: Arc::new(webhook_secret),
            intake: crate::intake::IntakeQueue::start(pool.clone(), INTAKE_WRITERS, &tracker),
            wake_sync,
            rejections: crate::intake::Rejections::default(),
        },
        identifier: Identifier {
            auth,
            pool: pool.clone(),
            trusted_proxies: Arc::new(trusted_proxies),
        },
        api: ApiState {
            pool: pool.clone(),
            users_cache,
            on_demand,
            store,
        },
        feeds: FeedState {
            pool: pool.clone(),
            hub: hub.clone(),
            shutdown: cancel.clone(),
        },
    };
    tracing::info!(
        %addr,
        database = db::database_name(&global.database_url).as_deref().unwrap_or("?"),
        version = env!("CARGO_PKG_VERSION"),
        "listening"
    );
    let router = http::router(state, &args.cors_origins);
    Ok(Server {
        listener,
        router,
        addr,
        cancel,
        tracker,
        pool,
        fatal,
    })
}

/// The work that runs beside the HTTP server once the database is ready.
struct Background {
    pool: PgPool,
    notifier: Notifier,
    hub: crate::feeds::Hub,
    syncer: Option<Arc<Syncer>>,
    reconcile: Option<crate::reconcile::Periodic>,
    auth: Arc<crate::auth::Auth>,
    store: Arc<EventStore>,
    erase_after: Option<Duration>,
    fatal: Arc<std::sync::Mutex<Option<String>>>,
}

/// Bring the database up to date, then start the work that needs it. Retried with
/// backoff rather than fatal: in a compose stack idsync may start before Postgres
/// accepts connections, and meanwhile `/readyz` says why it is not ready.
async fn bootstrap(
    global: GlobalArgs,
    background: Background,
    readiness: Readiness,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let Background {
        pool,
        notifier,
        hub,
        syncer,
        reconcile,
        auth,
        store,
        erase_after,
        fatal,
    } = background;
    let url = global.database_url.clone();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    readiness.set(Component::Startup, "applying database migrations");
    loop {
        match db::migrate(&url, &pool).await {
            Ok(report) => {
                if !report.applied.is_empty() {
                    tracing::info!(applied = ?report.applied, "migrations applied");
                }
                break;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot prepare the database yet; retrying");
                readiness.set(
                    Component::Startup,
                    format!("cannot prepare the database: {err}"),
                );
                if !backoff.wait(&cancel).await {
                    return;
                }
            }
        }
    }
    // Nothing reads or writes events before the key is known to fit the data: a wrong
    // key must stop the process, not seal new events with a key nobody has.
    loop {
        match super::privacy::install(&global, &pool).await {
            Ok(()) => break,
            Err(CliError::Store(err)) if err.is_unavailable() => {
                readiness.set(
                    Component::Startup,
                    format!("cannot check the data key: {err}"),
                );
                if !backoff.wait(&cancel).await {
                    return;
                }
            }
            Err(err) => {
                let why = err.to_string();
                tracing::error!("{why}");
                *fatal.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
                cancel.cancel();
                return;
            }
        }
    }
    readiness.mark_schema_ready();
    readiness.clear(Component::Startup);
    tracker.spawn(privacy_jobs(
        pool.clone(),
        store,
        erase_after,
        readiness.clone(),
        cancel.clone(),
    ));
    tracker.spawn(projector::run(
        UsersProjection,
        pool.clone(),
        notifier.clone(),
        ProjectorConfig::default(),
        Arc::default(),
        cancel.clone(),
    ));
    tracker.spawn(hub.run(pool.clone(), notifier.clone(), cancel.clone()));
    tracker.spawn(startup_checks(
        pool.clone(),
        auth,
        readiness.clone(),
        cancel.clone(),
    ));
    tracker.spawn(notifier.run(pool, cancel.clone()));
    if let Some(periodic) = reconcile {
        tracker.spawn(periodic.run(cancel.clone()));
    }
    if let Some(syncer) = syncer {
        for slot in 0..syncer.concurrency() {
            tracker.spawn(syncer.clone().run(slot, cancel.clone()));
        }
    }
}

/// Until `idsync encrypt-events` has run, `/readyz` warns that personal fields written
/// before encryption are still in plaintext (checked every minute until none is left).
/// With IDSYNC_ERASE_AFTER, erases users deleted longer ago than that (every 5 minutes;
/// erasure is idempotent, so two processes doing it at once is only wasted work).
async fn privacy_jobs(
    pool: PgPool,
    store: Arc<EventStore>,
    erase_after: Option<Duration>,
    readiness: Readiness,
    cancel: CancellationToken,
) {
    const PLAINTEXT_CHECK: Duration = Duration::from_secs(60);
    const ERASE_EVERY: Duration = Duration::from_secs(300);
    let mut plaintext = true;
    let mut next_erase = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if plaintext {
            match idsync_store::erasure::plaintext_remains(&pool).await {
                Ok(true) => readiness.warn(
                    Component::Plaintext,
                    "events written before encryption still hold personal fields in plaintext:                      run `idsync encrypt-events`",
                ),
                Ok(false) => {
                    readiness.clear_warning(Component::Plaintext);
                    plaintext = false;
                }
                Err(err) => tracing::debug!(error = %err, "cannot check for plaintext events"),
            }
        }
        if let Some(after) = erase_after
            && tokio::time::Instant::now() >= next_erase
        {
            next_erase = tokio::time::Instant::now() + ERASE_EVERY;
            match idsync_store::erasure::due_for_erasure(&pool, after, 1000).await {
                Ok(pks) => {
                    let metadata = idsync_domain::EventMetadata::new(
                        idsync_domain::Source::Erasure,
                        None,
                        chrono::Utc::now(),
                    );
                    for pk in pks {
                        match store.erase(pk, &metadata).await {
                            Ok(_) => tracing::info!(
                                pk,
                                "erased: deleted longer ago than IDSYNC_ERASE_AFTER"
                            ),
                            Err(err) => tracing::warn!(pk, error = %err, "cannot erase user yet"),
                        }
                    }
                }
                Err(err) => tracing::warn!(error = %err, "cannot list users due for erasure"),
            }
        }
        if !plaintext && erase_after.is_none() {
            return;
        }
        let pause = if plaintext {
            PLAINTEXT_CHECK
        } else {
            ERASE_EVERY
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Settings that cannot work are told at start, not by the first user's 401 or 404:
/// whether the token subject field can resolve any synced user, and whether the OIDC
/// issuer's discovery document matches IDSYNC_OIDC_ISSUER. Both become `/readyz`
/// warnings (webhooks are still stored meanwhile). The issuer is asked again until it
/// answers as expected: in a compose stack Authentik may come up (and apply its
/// blueprints) long after idsync.
async fn startup_checks(
    pool: PgPool,
    auth: Arc<crate::auth::Auth>,
    readiness: Readiness,
    cancel: CancellationToken,
) {
    match crate::auth::subject_coverage(&pool, auth.subject).await {
        Ok(coverage) => {
            if let Some(why) = coverage.verdict(auth.subject) {
                tracing::warn!("{why}");
                readiness.warn(Component::OidcSubject, why);
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot check IDSYNC_OIDC_SUBJECT against the read model")
        }
    }
    let Some(verifier) = &auth.verifier else {
        return;
    };
    let mut backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(300));
    loop {
        let delay = backoff.next_delay();
        match verifier.check().await {
            Ok(summary) => {
                tracing::info!(%summary, "OIDC issuer checked");
                readiness.clear_warning(Component::Oidc);
                return;
            }
            Err(err) => {
                let text = format!("{err} (checked again in {} s)", delay.as_secs());
                if matches!(err, idsync_oidc::VerifyError::Misconfigured(_)) {
                    tracing::error!(error = %err, "the OIDC issuer does not match the settings: tokens will be refused");
                } else {
                    tracing::warn!(error = %err, "cannot reach the OIDC issuer yet");
                }
                readiness.warn(Component::Oidc, text);
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}
