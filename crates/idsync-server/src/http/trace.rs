//! Request logging: one line per request with its method, matched route, status and
//! latency, inside a span that carries a request id. The id is echoed in `X-Request-Id`
//! so a caller (or the gateway in front) can quote it when reporting a problem.

use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::trace::{
    DefaultOnBodyChunk, DefaultOnEos, DefaultOnRequest, HttpMakeClassifier, TraceLayer,
};
use tracing::Span;

pub(super) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request id a request carries through its span and back in its answer.
#[derive(Clone, Debug)]
struct RequestId(HeaderValue);

/// Keeps a caller's (or the gateway's) `X-Request-Id` when it looks like an id, so one
/// id follows a request across hops; anything else is replaced by a fresh UUID rather
/// than copied into logs.
pub(super) async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&X_REQUEST_ID)
        .filter(|v| acceptable(v.as_bytes()))
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .expect("a UUID is a valid header value")
        });
    request
        .headers_mut()
        .insert(X_REQUEST_ID.clone(), id.clone());
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    response.headers_mut().insert(X_REQUEST_ID.clone(), id);
    response
}

fn acceptable(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

type OnResponse = fn(&Response, Duration, &Span);
type OnFailure = fn(ServerErrorsFailureClass, Duration, &Span);
type MakeSpan = fn(&Request) -> Span;

/// The request span and its one log line. Probes and scrapes (`/livez`, `/readyz`,
/// `/metrics`) get a debug span and no line at the default level: a load balancer
/// checking every second would drown everything else.
pub(super) fn layer() -> TraceLayer<
    HttpMakeClassifier,
    MakeSpan,
    DefaultOnRequest,
    OnResponse,
    DefaultOnBodyChunk,
    DefaultOnEos,
    OnFailure,
> {
    TraceLayer::new_for_http()
        .make_span_with(make_span as MakeSpan)
        .on_response(on_response as OnResponse)
        .on_failure(on_failure as OnFailure)
}

fn make_span(request: &Request) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("(unmatched)", MatchedPath::as_str);
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.0.to_str().ok())
        .unwrap_or("");
    if matches!(route, "/livez" | "/readyz" | "/metrics") {
        tracing::debug_span!("request", method = %request.method(), route, request_id)
    } else {
        tracing::info_span!("request", method = %request.method(), route, request_id)
    }
}

fn on_response(response: &Response, latency: Duration, span: &Span) {
    if span.is_disabled() {
        return;
    }
    let status = response.status().as_u16();
    let latency_ms = latency.as_secs_f64() * 1e3;
    tracing::info!(parent: span, status, latency_ms, "request");
}

/// 5xx answers are already logged by `on_response`; this only adds the failure class
/// for errors below HTTP (a body that failed midway).
fn on_failure(failure: ServerErrorsFailureClass, latency: Duration, span: &Span) {
    if let ServerErrorsFailureClass::Error(error) = failure {
        let latency_ms = latency.as_secs_f64() * 1e3;
        tracing::warn!(parent: span, error, latency_ms, "request failed");
    }
}
