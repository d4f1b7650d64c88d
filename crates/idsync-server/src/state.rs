//! The router's state: one field per part of the HTTP edge, each a sub-state that the
//! part's handlers and extractors ask for (axum `FromRef`), so a handler sees only what
//! it needs and no module below `http` depends on this one.

use axum::extract::FromRef;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::api::ApiState;
use crate::auth::Identifier;
use crate::feeds::FeedState;
use crate::intake::IntakeState;
use crate::readiness::Readiness;

/// What handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub readiness: Readiness,
    pub metrics: Option<PrometheusHandle>,
    pub intake: IntakeState,
    pub identifier: Identifier,
    pub api: ApiState,
    pub feeds: FeedState,
}

macro_rules! sub_state {
    ($($field:ident: $ty:ty),* $(,)?) => {$(
        impl FromRef<AppState> for $ty {
            fn from_ref(state: &AppState) -> Self {
                state.$field.clone()
            }
        }
    )*};
}

sub_state! {
    pool: PgPool,
    readiness: Readiness,
    metrics: Option<PrometheusHandle>,
    intake: IntakeState,
    identifier: Identifier,
    api: ApiState,
    feeds: FeedState,
}
