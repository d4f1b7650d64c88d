use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::state::AppState;

/// Alive as long as the process can answer; deliberately checks nothing else, so an
/// orchestrator does not restart a process whose database is merely down.
#[utoipa::path(get, path = "/livez", tag = "health",
    responses((status = 200, description = "the process runs", body = Object, example = json!({"status": "ok"}))))]
pub(super) async fn livez() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the database answers a real query, the schema is the one this binary
/// expects, and no background component reports a problem.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "ready; `warnings` may list non-blocking problems", body = Object,
         example = json!({"status": "ready"})),
        (status = 503, description = "not ready; `reasons` says why", body = Object,
         example = json!({"status": "not_ready", "reasons": ["database: no answer within 3 s"]})),
    ))]
pub(super) async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let mut reasons = Vec::new();
    let checked = tokio::time::timeout(Duration::from_secs(3), async {
        idsync_store::db::ping(&state.pool).await?;
        let mut problems = idsync_store::db::migration_problems(&state.pool).await?;
        if problems.is_empty() {
            problems.extend(projection_lag(&state).await?);
        }
        Ok::<_, idsync_store::StoreError>(problems)
    })
    .await;
    match checked {
        Ok(Ok(problems)) => reasons.extend(problems),
        Ok(Err(err)) => reasons.push(format!("database: {err}")),
        Err(_) => reasons.push("database: no answer within 3 s".to_owned()),
    }
    reasons.extend(state.readiness.reasons());
    let mut warnings = state.readiness.warnings();
    warnings.extend(
        state
            .intake
            .rejections
            .warning()
            .map(|w| format!("webhook: {w}")),
    );
    let (status, mut body) = if reasons.is_empty() {
        (StatusCode::OK, json!({"status": "ready"}))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "not_ready", "reasons": reasons}),
        )
    };
    if !warnings.is_empty() {
        body["warnings"] = json!(warnings);
    }
    (status, Json(body))
}

/// How far behind a read model may fall before the process reports not ready: readers
/// would see stale data.
const MAX_PROJECTION_LAG: Duration = Duration::from_secs(30);

async fn projection_lag(state: &AppState) -> Result<Vec<String>, idsync_store::StoreError> {
    use idsync_store::projections::{Projection, projector, users::UsersProjection};
    let lag = projector::lag(&state.pool, UsersProjection::NAME).await?;
    Ok((lag.seconds > MAX_PROJECTION_LAG.as_secs_f64())
        .then(|| {
            format!(
                "projection {}: {} events, {:.0} s behind the event log (is a projector running?)",
                UsersProjection::NAME,
                lag.events,
                lag.seconds
            )
        })
        .into_iter()
        .collect())
}
