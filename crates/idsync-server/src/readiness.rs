//! What this process reports about itself on `/readyz`, set by the components that
//! know (the sync worker, start-up checks) and read by the health handler. Below it
//! only the metric names.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use crate::metrics::READINESS_WARNING;

/// Readiness means one thing: this process can accept and store webhooks (the database
/// answers, the schema is ready). Reasons are what stops that (bootstrap still failing);
/// `/readyz` adds them to what it checks itself and answers 503. Keyed by component so
/// each one sets and clears only its own.
///
/// Warnings are shown by `/readyz` without failing it: downstream problems an operator
/// must see (Authentik refusing our token, the OIDC issuer unreachable) that do not stop
/// webhooks from being stored. Failing readiness for them would make a load balancer
/// take the process out of service and so stop intake too. Each warning is also the
/// gauge `idsync_readiness_warning{component}` (1 while it stands).
#[derive(Clone, Default)]
pub struct Readiness {
    reasons: Arc<RwLock<BTreeMap<&'static str, String>>>,
    warnings: Arc<RwLock<BTreeMap<&'static str, String>>>,
    /// Set once this process has brought the schema up to date. Until then every route
    /// that touches the database answers 503 (see `http::schema_gate`).
    schema_ready: Arc<AtomicBool>,
}

impl Readiness {
    pub fn mark_schema_ready(&self) {
        self.schema_ready.store(true, Ordering::Release);
    }

    pub fn is_schema_ready(&self) -> bool {
        self.schema_ready.load(Ordering::Acquire)
    }

    pub fn set(&self, component: &'static str, reason: impl Into<String>) {
        edit(&self.reasons, component, Some(reason.into()));
    }

    pub fn clear(&self, component: &'static str) {
        edit(&self.reasons, component, None);
    }

    pub fn warn(&self, component: &'static str, warning: impl Into<String>) {
        edit(&self.warnings, component, Some(warning.into()));
        metrics::gauge!(READINESS_WARNING, "component" => component).set(1.0);
    }

    pub fn clear_warning(&self, component: &'static str) {
        edit(&self.warnings, component, None);
        metrics::gauge!(READINESS_WARNING, "component" => component).set(0.0);
    }

    pub fn reasons(&self) -> Vec<String> {
        render(&self.reasons)
    }

    pub fn warnings(&self) -> Vec<String> {
        render(&self.warnings)
    }
}

/// Set (`Some`) or clear (`None`) one component's entry.
fn edit(
    map: &RwLock<BTreeMap<&'static str, String>>,
    component: &'static str,
    text: Option<String>,
) {
    if let Ok(mut map) = map.write() {
        match text {
            Some(text) => map.insert(component, text),
            None => map.remove(component),
        };
    }
}

fn render(map: &RwLock<BTreeMap<&'static str, String>>) -> Vec<String> {
    map.read()
        .map(|map| map.iter().map(|(k, v)| format!("{k}: {v}")).collect())
        .unwrap_or_default()
}
