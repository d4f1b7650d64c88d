//! What this process reports about itself on `/readyz`, set by the components that
//! know (the sync worker, start-up checks) and read by the health handler. Below it
//! only the metric names.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use crate::metrics::READINESS_WARNING;

/// What a reason or a warning is about: the key each component sets and clears, and
/// the `component` label of `idsync_readiness_warning`. In the order `/readyz` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    /// Authentik's API (the sync worker's token).
    Authentik,
    /// The OIDC issuer (discovery, keys, issuer match).
    Oidc,
    /// Whether IDSYNC_OIDC_SUBJECT can resolve any synced user.
    OidcSubject,
    /// Events written before encryption still hold personal fields.
    Plaintext,
    /// The users projection lagging behind the event log.
    Projection,
    /// Migrations and the data-key check at start.
    Startup,
    /// Webhooks refused for their secret.
    Webhook,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Authentik => "authentik",
            Component::Oidc => "oidc",
            Component::OidcSubject => "oidc_subject",
            Component::Plaintext => "plaintext",
            Component::Projection => "projection",
            Component::Startup => "startup",
            Component::Webhook => "webhook",
        }
    }
}

/// `idsync_readiness_warning{component}`: 1 while a warning stands.
pub(crate) fn gauge(component: Component, on: bool) {
    metrics::gauge!(READINESS_WARNING, "component" => component.as_str()).set(if on {
        1.0
    } else {
        0.0
    });
}

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
    reasons: Arc<RwLock<BTreeMap<Component, String>>>,
    warnings: Arc<RwLock<BTreeMap<Component, String>>>,
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

    pub fn set(&self, component: Component, reason: impl Into<String>) {
        edit(&self.reasons, component, Some(reason.into()));
    }

    pub fn clear(&self, component: Component) {
        edit(&self.reasons, component, None);
    }

    pub fn warn(&self, component: Component, warning: impl Into<String>) {
        edit(&self.warnings, component, Some(warning.into()));
        gauge(component, true);
    }

    pub fn clear_warning(&self, component: Component) {
        edit(&self.warnings, component, None);
        gauge(component, false);
    }

    pub fn reasons(&self) -> Vec<String> {
        render(&self.reasons)
    }

    pub fn warnings(&self) -> Vec<String> {
        render(&self.warnings)
    }
}

/// Set (`Some`) or clear (`None`) one component's entry.
fn edit(map: &RwLock<BTreeMap<Component, String>>, component: Component, text: Option<String>) {
    if let Ok(mut map) = map.write() {
        match text {
            Some(text) => map.insert(component, text),
            None => map.remove(&component),
        };
    }
}

fn render(map: &RwLock<BTreeMap<Component, String>>) -> Vec<String> {
    map.read()
        .map(|map| {
            map.iter()
                .map(|(k, v)| format!("{}: {v}", k.as_str()))
                .collect()
        })
        .unwrap_or_default()
}
