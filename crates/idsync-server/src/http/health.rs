use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;

/// Alive as long as the process can answer; deliberately checks nothing else, so an
/// orchestrator does not restart a process whose database is merely down.
pub async fn livez() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the database answers a real query, the schema is the one this binary
/// expects, and no background component reports a problem.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let mut reasons = Vec::new();
    let checked = tokio::time::timeout(Duration::from_secs(3), async {
        idsync_store::db::ping(&state.pool).await?;
        idsync_store::db::migration_problems(&state.pool).await
    })
    .await;
    match checked {
        Ok(Ok(problems)) => reasons.extend(problems),
        Ok(Err(err)) => reasons.push(format!("database: {err}")),
        Err(_) => reasons.push("database: no answer within 3 s".to_owned()),
    }
    reasons.extend(state.readiness.reasons());
    let warnings = state.readiness.warnings();
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
