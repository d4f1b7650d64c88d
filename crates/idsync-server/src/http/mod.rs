//! The HTTP edge: the router and the state its handlers share.

mod health;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::{intake, metrics};

/// What handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub readiness: Readiness,
    pub webhook_secret: Arc<SecretString>,
    pub intake: intake::IntakeQueue,
    /// Wakes this process's sync workers when intake stored an item.
    pub wake_sync: Arc<Notify>,
    pub metrics: Option<PrometheusHandle>,
}

/// Reasons background components give for the process not being ready (Authentik
/// rejecting our token, bootstrap still failing...). `/readyz` adds them to what it
/// checks itself. Keyed by component so each one sets and clears only its own.
///
/// Warnings are shown by `/readyz` without failing it: conditions an operator should
/// see that do not stop the process from doing its job (webhooks are still stored).
#[derive(Clone, Default)]
pub struct Readiness {
    reasons: Arc<RwLock<BTreeMap<&'static str, String>>>,
    warnings: Arc<RwLock<BTreeMap<&'static str, String>>>,
}

impl Readiness {
    pub fn set(&self, component: &'static str, reason: impl Into<String>) {
        if let Ok(mut map) = self.reasons.write() {
            map.insert(component, reason.into());
        }
    }

    pub fn clear(&self, component: &'static str) {
        if let Ok(mut map) = self.reasons.write() {
            map.remove(component);
        }
    }

    pub fn warn(&self, component: &'static str, warning: impl Into<String>) {
        if let Ok(mut map) = self.warnings.write() {
            map.insert(component, warning.into());
        }
    }

    pub fn reasons(&self) -> Vec<String> {
        render(&self.reasons)
    }

    pub fn warnings(&self) -> Vec<String> {
        render(&self.warnings)
    }
}

fn render(map: &RwLock<BTreeMap<&'static str, String>>) -> Vec<String> {
    map.read()
        .map(|map| map.iter().map(|(k, v)| format!("{k}: {v}")).collect())
        .unwrap_or_default()
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::render))
        .route("/authentik/webhook", post(intake::receive))
        .with_state(state)
}
