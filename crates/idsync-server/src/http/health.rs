use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::readiness::{self, Component};
use crate::state::AppState;

/// Alive as long as the process can answer; deliberately checks nothing else, so an
/// orchestrator does not restart a process whose database is merely down.
#[utoipa::path(get, path = "/livez", tag = "health",
    responses((status = 200, description = "the process runs", body = Object, example = json!({"status": "ok"}))))]
pub(super) async fn livez() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when this process can accept and store webhooks: the database answers a real
/// query and the schema is the one this binary expects. Downstream problems (Authentik's
/// API, the OIDC issuer, a lagging projection, refused webhooks) are `warnings`: they
/// do not fail readiness, because a load balancer acting on a 503 would stop intake too.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "ready: webhooks are accepted and stored; `warnings` lists downstream problems", body = Object,
         example = json!({"status": "ready", "warnings": ["authentik: API token rejected: ..."]})),
        (status = 503, description = "not ready; `reasons` says why", body = Object,
         example = json!({"status": "not_ready", "reasons": ["database: no answer within 3 s"]})),
    ))]
pub(super) async fn readyz(State(state): State<AppState>) -> axum::response::Response {
    let mut reasons = Vec::new();
    let mut warnings = Vec::new();
    let checked = tokio::time::timeout(Duration::from_secs(3), async {
        idsync_store::db::ping(&state.pool).await?;
        let problems = idsync_store::db::migration_problems(&state.pool).await?;
        let lag = if problems.is_empty() {
            projection_lag(&state).await?
        } else {
            None
        };
        Ok::<_, idsync_store::StoreError>((problems, lag))
    })
    .await;
    match checked {
        Ok(Ok((problems, lag))) => {
            reasons.extend(problems);
            // Only known when the database answered; otherwise the gauge keeps its value.
            readiness::gauge(Component::Projection, lag.is_some());
            warnings.extend(lag);
        }
        Ok(Err(err)) => reasons.push(format!("database: {err}")),
        Err(_) => reasons.push("database: no answer within 3 s".to_owned()),
    }
    reasons.extend(state.readiness.reasons());
    warnings.extend(state.readiness.warnings());
    let refused = state.intake.rejections.warning();
    readiness::gauge(Component::Webhook, refused.is_some());
    warnings.extend(refused.map(|w| format!("webhook: {w}")));
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
    let mut response = axum::response::IntoResponse::into_response((status, Json(body)));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        // Like every 503 of the service: temporary, come back soon.
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
    }
    response
}

/// How far behind a read model may fall before `/readyz` warns: readers would see
/// stale data (webhooks are still stored, so it is not a reason to fail readiness).
const MAX_PROJECTION_LAG: Duration = Duration::from_secs(30);

async fn projection_lag(state: &AppState) -> Result<Option<String>, idsync_store::StoreError> {
    use idsync_store::projections::{Projection, projector, users::UsersProjection};
    let lag = projector::lag(&state.pool, UsersProjection::NAME).await?;
    Ok((lag.seconds > MAX_PROJECTION_LAG.as_secs_f64()).then(|| {
        format!(
            "projection {}: {} events, {:.0} s behind the event log (is a projector running?)",
            UsersProjection::NAME,
            lag.events,
            lag.seconds
        )
    }))
}
