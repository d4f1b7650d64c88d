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

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use idsync_store::inbox;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::http::AppState;

pub const WEBHOOKS_RECEIVED: &str = "idsync_webhooks_received_total";
pub const INBOX_ITEMS: &str = "idsync_inbox_items";
pub const INBOX_OLDEST_AGE: &str = "idsync_inbox_oldest_unfinished_age_seconds";
pub const AUTHENTIK_REQUESTS: &str = "idsync_authentik_requests_total";
pub const EVENTS_APPENDED: &str = "idsync_events_appended_total";
pub const SYNC_FINISHED: &str = "idsync_sync_items_finished_total";

/// Install the process-wide recorder. Returns None if one is installed already.
pub fn install() -> Option<PrometheusHandle> {
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
    metrics::describe_counter!(
        EVENTS_APPENDED,
        "Events appended to the event store, by type"
    );
    metrics::describe_counter!(
        SYNC_FINISHED,
        "Inbox items finished by the sync workers, by outcome"
    );
}

pub async fn render(State(state): State<AppState>) -> Response {
    let Some(handle) = &state.metrics else {
        return (
            StatusCode::NOT_FOUND,
            "metrics are not enabled in this process\n",
        )
            .into_response();
    };
    // Database-wide gauges; if the database is down the scrape still answers, and the
    // stale values are the honest "last known".
    if let Ok(counts) = inbox::counts(&state.pool).await {
        for (status, n) in counts {
            metrics::gauge!(INBOX_ITEMS, "status" => status.as_str()).set(n as f64);
        }
    }
    if let Ok(age) = inbox::oldest_unfinished_age(&state.pool).await {
        metrics::gauge!(INBOX_OLDEST_AGE).set(age.as_secs_f64());
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
