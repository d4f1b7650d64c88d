//! The HTTP edge: the router and the state its handlers share.

mod health;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::routing::get;
use sqlx::PgPool;

/// What handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub readiness: Readiness,
}

/// Reasons background components give for the process not being ready (Authentik
/// rejecting our token, bootstrap still failing...). `/readyz` adds them to what it
/// checks itself. Keyed by component so each one sets and clears only its own.
#[derive(Clone, Default)]
pub struct Readiness {
    reasons: Arc<RwLock<BTreeMap<&'static str, String>>>,
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

    pub fn reasons(&self) -> Vec<String> {
        self.reasons
            .read()
            .map(|map| map.iter().map(|(k, v)| format!("{k}: {v}")).collect())
            .unwrap_or_default()
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .with_state(state)
}
