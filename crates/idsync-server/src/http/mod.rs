//! The HTTP edge: the router and the state its handlers share.

mod health;
pub mod server;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, header};
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::sync::Notify;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

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
    pub auth: Arc<crate::auth::Auth>,
    pub hub: crate::feeds::Hub,
    pub trusted_proxies: Arc<crate::feeds::identity::TrustedProxies>,
    /// Cancelled on SIGTERM: open streams and sockets end so shutdown is prompt.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Webhooks refused for their secret, for the log and `/readyz`.
    pub rejections: intake::Rejections,
    /// Syncs a caller's user at once when it is unknown (with Authentik configured).
    pub on_demand: Option<Arc<crate::sync::on_demand::OnDemand>>,
    /// Users' rows as the API sends them, kept correct by the hub.
    pub users_cache: Arc<idsync_store::projections::users_cache::UsersCache>,
    /// Commands of the admin API (erasure).
    pub store: Arc<idsync_store::EventStore>,
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
    /// Set once this process has brought the schema up to date. Until then every route
    /// that touches the database answers 503 (see [`schema_gate`]).
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

    pub fn clear_warning(&self, component: &'static str) {
        if let Ok(mut map) = self.warnings.write() {
            map.remove(component);
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

/// Every route and its OpenAPI description come from one list, so the two cannot
/// drift apart. `/openapi.json` and the `/docs` UI are added around it.
pub fn router(state: AppState, cors_origins: &[String]) -> Router {
    let (router, api) = documented_routes().split_for_parts();
    router
        .merge(SwaggerUi::new("/docs").url("/openapi.json", api))
        .layer(axum::middleware::from_fn_with_state(
            state.readiness.clone(),
            schema_gate,
        ))
        .layer(cors(cors_origins))
        .with_state(state)
}

/// Until this process has applied its migrations, a request that would touch a table
/// could meet a missing one and fail with a 500, losing a webhook. Such requests are
/// answered 503 with `Retry-After` instead (Authentik and HTTP clients retry), so no
/// start-up order makes a 500. Routes that need no schema stay open: health, metrics
/// and the API document.
async fn schema_gate(
    axum::extract::State(readiness): axum::extract::State<Readiness>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = request.uri().path();
    let schema_free = matches!(path, "/livez" | "/readyz" | "/metrics" | "/openapi.json")
        || path == "/docs"
        || path.starts_with("/docs/");
    if schema_free || readiness.is_schema_ready() {
        next.run(request).await
    } else {
        axum::response::IntoResponse::into_response(crate::ApiError::Starting)
    }
}

/// The OpenAPI document as served, for tests and tools.
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented_routes().into_openapi()
}

fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::livez))
        .routes(routes!(health::readyz))
        .routes(routes!(metrics::render))
        .routes(routes!(intake::receive))
        .merge(crate::api::routes())
        .routes(routes!(crate::feeds::sse::stream))
        .routes(routes!(crate::feeds::ws::upgrade))
}

#[derive(OpenApi)]
#[openapi(
    info(title = "idsync", description = "Event-sourced identity sync backend for Authentik"),
    modifiers(&SecuritySchemes),
    tags(
        (name = "intake", description = "Authentik's webhook"),
        (name = "users", description = "The users read model"),
        (name = "events", description = "The event log"),
        (name = "feeds", description = "Live feeds"),
        (name = "health", description = "Liveness, readiness, metrics"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("An access token issued by Authentik (OIDC)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "webhook_secret",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "IDSYNC_WEBHOOK_SECRET, sent by Authentik's headers mapping",
                    ))
                    .build(),
            ),
        );
    }
}

/// Browser origins from IDSYNC_CORS_ORIGINS; `*` is refused (credentials-bearing API).
fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .map(|o| o.trim().trim_end_matches('/'))
        .filter(|o| !o.is_empty() && *o != "*")
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("last-event-id"),
        ])
        .max_age(std::time::Duration::from_secs(600))
}
