//! Prometheus metrics. Counters are recorded where things happen; gauges that describe
//! the database (inbox by status, oldest pending item) are read at scrape time, so they
//! are true for the whole database, not just for this process.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `idsync_webhooks_received_total` | counter | `outcome`: accepted, duplicate, ignored, invalid, unauthorized, too_large, unsupported_media_type, unavailable |
//! | `idsync_inbox_items` | gauge | `status` |
//! | `idsync_inbox_oldest_unfinished_age_seconds` | gauge | |
//! | `idsync_authentik_requests_total` | counter | `result`: ok, not_found, auth, rate_limited, transient, malformed |
//! | `idsync_events_appended_total` | counter | `type` |
//! | `idsync_sync_items_finished_total` | counter | `outcome` |
//! | `idsync_sse_streams_open` | gauge | |
//! | `idsync_ws_connections_open` | gauge | |
//! | `idsync_feed_events_delivered_total` | counter | `transport`: sse, ws |
//! | `idsync_projection_lag_events` | gauge | `projection` |
//! | `idsync_projection_lag_seconds` | gauge | `projection` |
//! | `idsync_readiness_warning` | gauge | `component`: authentik, oidc, oidc_subject, webhook, projection (1 while `/readyz` warns) |
//! | `idsync_reconcile_runs_total` | counter | `outcome`: ok, error, skipped (another process held the reconcile lock) |
//! | `idsync_reconcile_last_run_timestamp_seconds` | gauge | |
//! | `idsync_reconcile_last_success` | gauge | |
//! | `idsync_reconcile_last_duration_seconds` | gauge | |
//! | `idsync_reconcile_last_users` | gauge | `result`: registered, updated, deleted, unchanged, conflict |

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use idsync_store::inbox;
use idsync_store::projections::Projection;
use idsync_store::projections::projector;
use idsync_store::projections::users::UsersProjection;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;

pub(crate) const WEBHOOKS_RECEIVED: &str = "idsync_webhooks_received_total";
pub(crate) const INBOX_ITEMS: &str = "idsync_inbox_items";
pub(crate) const INBOX_OLDEST_AGE: &str = "idsync_inbox_oldest_unfinished_age_seconds";
pub(crate) const AUTHENTIK_REQUESTS: &str = "idsync_authentik_requests_total";
pub(crate) const EVENTS_APPENDED: &str = "idsync_events_appended_total";
pub(crate) const SYNC_FINISHED: &str = "idsync_sync_items_finished_total";
pub(crate) const SSE_STREAMS_OPEN: &str = "idsync_sse_streams_open";
pub(crate) const WS_CONNECTIONS_OPEN: &str = "idsync_ws_connections_open";
pub(crate) const FEED_EVENTS_DELIVERED: &str = "idsync_feed_events_delivered_total";
pub(crate) const PROJECTION_LAG_EVENTS: &str = "idsync_projection_lag_events";
pub(crate) const PROJECTION_LAG_SECONDS: &str = "idsync_projection_lag_seconds";
pub(crate) const RECONCILE_RUNS: &str = "idsync_reconcile_runs_total";
pub(crate) const RECONCILE_LAST_RUN: &str = "idsync_reconcile_last_run_timestamp_seconds";
pub(crate) const RECONCILE_LAST_SUCCESS: &str = "idsync_reconcile_last_success";
pub(crate) const RECONCILE_LAST_DURATION: &str = "idsync_reconcile_last_duration_seconds";
pub(crate) const RECONCILE_LAST_USERS: &str = "idsync_reconcile_last_users";
pub(crate) const READINESS_WARNING: &str = "idsync_readiness_warning";
pub(crate) const USERS_CACHE_READS: &str = "idsync_users_cache_reads_total";

/// Install the process-wide recorder. Returns None if one is installed already.
pub(crate) fn install() -> Option<PrometheusHandle> {
    match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => {
            describe();
            Some(handle)
        }
        Err(err) => {
            tracing::warn!(error = %err, "metrics recorder not installed");
            None
        }
    }
}

fn describe() {
    metrics::describe_counter!(WEBHOOKS_RECEIVED, "Webhook requests received, by outcome");
    metrics::describe_gauge!(INBOX_ITEMS, "Inbox items in the database, by status");
    metrics::describe_gauge!(
        INBOX_OLDEST_AGE,
        "Age in seconds of the oldest pending or processing inbox item (0 when none)"
    );
    metrics::describe_counter!(AUTHENTIK_REQUESTS, "Calls to Authentik's API, by result");
    metrics::describe_gauge!(
        READINESS_WARNING,
        "1 while /readyz warns about a component (a downstream problem that does not stop intake)"
    );
    metrics::describe_counter!(
        EVENTS_APPENDED,
        "Events appended to the event store, by type"
    );
    metrics::describe_counter!(
        SYNC_FINISHED,
        "Inbox items finished by the sync workers, by outcome"
    );
    metrics::describe_counter!(
        RECONCILE_RUNS,
        "Periodic reconcile runs of this process, by outcome (skipped: another process held the lock)"
    );
    metrics::describe_gauge!(
        RECONCILE_LAST_RUN,
        "Unix time at which this process's last reconcile run ended"
    );
    metrics::describe_gauge!(
        RECONCILE_LAST_SUCCESS,
        "1 if this process's last reconcile run succeeded, 0 if it failed"
    );
    metrics::describe_gauge!(
        RECONCILE_LAST_DURATION,
        "Duration in seconds of this process's last reconcile run"
    );
    metrics::describe_gauge!(
        RECONCILE_LAST_USERS,
        "Users by result in this process's last successful reconcile run"
    );
    metrics::describe_counter!(
        USERS_CACHE_READS,
        "Reads of users by the API: hit (one user, from this process's cache), page_hit (a \
         page of users, from the cache), fill (one user from Postgres, then cached), miss \
         (one user from Postgres, not cacheable now: a notification not yet read, a lagging \
         projection, a resync)"
    );
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub(crate) async fn render(
    State(handle): State<Option<PrometheusHandle>>,
    State(pool): State<PgPool>,
) -> Response {
    let Some(handle) = &handle else {
        return (
            StatusCode::NOT_FOUND,
            "metrics are not enabled in this process\n",
        )
            .into_response();
    };
    // Database-wide gauges; if the database is down the scrape still answers, and the
    // stale values are the honest "last known".
    if let Ok(counts) = inbox::counts(&pool).await {
        for (status, n) in counts {
            metrics::gauge!(INBOX_ITEMS, "status" => status.as_str()).set(n as f64);
        }
    }
    if let Ok(age) = inbox::oldest_unfinished_age(&pool).await {
        metrics::gauge!(INBOX_OLDEST_AGE).set(age.as_secs_f64());
    }
    if let Ok(lag) = projector::lag(&pool, UsersProjection::NAME).await {
        metrics::gauge!(PROJECTION_LAG_EVENTS, "projection" => UsersProjection::NAME)
            .set(lag.events as f64);
        metrics::gauge!(PROJECTION_LAG_SECONDS, "projection" => UsersProjection::NAME)
            .set(lag.seconds);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}
