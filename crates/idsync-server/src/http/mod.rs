//! The HTTP edge: the router and its OpenAPI document, CORS, the schema gate, request
//! logging, health and the server loop.

mod health;
pub(crate) mod server;
mod trace;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::readiness::Readiness;
use crate::state::AppState;
use crate::{intake, metrics};

/// Every route and its OpenAPI description come from one list, so the two cannot
/// drift apart. `/openapi.json` and the `/docs` UI are added around it.
pub(crate) fn router(state: AppState, cors_origins: &[String]) -> Router {
    let (router, mut api) = documented_routes().split_for_parts();
    document_shared_answers(&mut api);
    router
        .merge(SwaggerUi::new("/docs").url("/openapi.json", api))
        .layer(axum::middleware::from_fn_with_state(
            state.readiness.clone(),
            schema_gate,
        ))
        .layer(cors(cors_origins))
        // Outermost: the span covers everything above, CORS and the schema gate included.
        .layer(trace::layer())
        .layer(axum::middleware::from_fn(trace::request_id))
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
    let schema_free = SCHEMA_FREE.contains(&path) || path == "/docs" || path.starts_with("/docs/");
    if schema_free || readiness.is_schema_ready() {
        next.run(request).await
    } else {
        axum::response::IntoResponse::into_response(crate::ApiError::Starting)
    }
}

/// Routes that answer before the schema is ready (with `/docs`); every other route
/// answers `503 starting` until then.
const SCHEMA_FREE: [&str; 4] = ["/livez", "/readyz", "/metrics", "/openapi.json"];

/// Answers that do not come from a handler, added to every operation they can reach so
/// the document lists every status a client can get: `503 starting` from
/// [`schema_gate`] (with `Retry-After`, like every `ApiError` 503) and `431` from the
/// HTTP server when a request head is too large (before any route is chosen).
fn document_shared_answers(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, HeaderBuilder, Ref, ResponseBuilder, schema::Type};
    const STARTING: &str = "`starting`: the process has not applied its migrations yet";
    for (path, item) in api.paths.paths.iter_mut() {
        let gated = !SCHEMA_FREE.contains(&path.as_str());
        for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
            let responses = &mut operation.responses.responses;
            if gated {
                let response = responses.entry("503".to_owned()).or_insert_with(|| {
                    ResponseBuilder::new()
                        .description("temporarily unavailable")
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("ErrorBody")))
                                .build(),
                        )
                        .into()
                });
                if let utoipa::openapi::RefOr::T(response) = response {
                    response.description = format!("{}; or {STARTING}", response.description);
                    response.headers.insert(
                        "Retry-After".to_owned(),
                        HeaderBuilder::new()
                            .schema(Some(utoipa::openapi::schema::Object::with_type(
                                Type::Integer,
                            )))
                            .description(Some("seconds to wait before trying again"))
                            .build()
                            .into(),
                    );
                }
            }
            responses.entry("431".to_owned()).or_insert_with(|| {
                ResponseBuilder::new()
                    .description(
                        "the request head (headers) is too large; answered by the HTTP server",
                    )
                    .into()
            });
        }
    }
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
