use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use idsync_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// The contract's error body (docs/contract.md): what every error answer carries, and
/// what the OpenAPI document says they carry.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// A stable code: `invalid_token`, `forbidden`, `not_found`, `invalid_request`...
    pub error: &'static str,
    /// For people: what went wrong and what to do about it.
    pub detail: String,
}

/// The error of the HTTP edge. Every variant becomes the contract's JSON error (docs/contract.md)
/// `{"error": "<code>", "detail": "<human text>"}`; internals are logged, never sent.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidPayload(String),
    #[error("{0}")]
    Unauthorized(String),
    /// No bearer token (RFC 6750: the challenge carries no error code).
    #[error("a bearer token is required")]
    MissingToken,
    #[error("{0}")]
    InvalidToken(String),
    #[error("tokens are not accepted in the URL")]
    TokenInUrl,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("IDSYNC_OIDC_ISSUER is not set")]
    OidcNotConfigured,
    #[error("{0}")]
    AuthUnavailable(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unavailable(String),
    /// The process has not brought the database schema up to date yet.
    #[error("starting: the database schema is not ready yet")]
    Starting,
    /// Logged in full; the client sees only "internal error".
    #[error("{context}: {source}")]
    Internal {
        context: &'static str,
        #[source]
        source: BoxError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            ApiError::InvalidPayload(d) => (StatusCode::BAD_REQUEST, "invalid_payload", d.clone()),
            ApiError::Unauthorized(d) => (StatusCode::UNAUTHORIZED, "unauthorized", d.clone()),
            ApiError::MissingToken => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a bearer token is required (Authorization: Bearer <access token>)".to_owned(),
            ),
            ApiError::InvalidToken(d) => (StatusCode::UNAUTHORIZED, "invalid_token", d.clone()),
            ApiError::TokenInUrl => (
                StatusCode::UNAUTHORIZED,
                "invalid_request",
                "tokens are not accepted in the URL (they end up in logs): send Authorization: Bearer, or use a stream ticket".to_owned(),
            ),
            ApiError::Forbidden(d) => (StatusCode::FORBIDDEN, "forbidden", d.clone()),
            ApiError::InvalidRequest(d) => (StatusCode::BAD_REQUEST, "invalid_request", d.clone()),
            ApiError::OidcNotConfigured => (
                StatusCode::SERVICE_UNAVAILABLE,
                "oidc_not_configured",
                "IDSYNC_OIDC_ISSUER is not set: protected endpoints need the OIDC issuer (and IDSYNC_OIDC_AUDIENCE)".to_owned(),
            ),
            ApiError::AuthUnavailable(d) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "auth_unavailable",
                format!("tokens cannot be verified right now: {d}"),
            ),
            ApiError::NotFound(d) => (StatusCode::NOT_FOUND, "not_found", d.clone()),
            ApiError::PayloadTooLarge(d) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                d.clone(),
            ),
            ApiError::UnsupportedMediaType(d) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                d.clone(),
            ),
            ApiError::Unavailable(d) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", d.clone()),
            ApiError::Starting => (
                StatusCode::SERVICE_UNAVAILABLE,
                "starting",
                "idsync is starting: its database schema is not ready yet; try again in a moment"
                    .to_owned(),
            ),
            ApiError::Internal { .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error".to_owned(),
            ),
            ApiError::Store(e) if e.is_unavailable() => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the database is unavailable; try again later".to_owned(),
            ),
            ApiError::Store(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error".to_owned(),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, detail) = self.parts();
        match &self {
            // Expected while the process starts; the client is told to retry.
            ApiError::Starting => tracing::debug!("request refused: schema not ready yet"),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                tracing::warn!(error = %self, "request refused: temporarily unavailable");
            }
            _ if status.is_server_error() => tracing::error!(error = %self, "request failed"),
            _ => {}
        }
        // RFC 6750 §3: the challenge tells the client what to do about its token.
        let challenge = match &self {
            ApiError::MissingToken => Some(r#"Bearer realm="idsync""#.to_owned()),
            ApiError::InvalidToken(_) | ApiError::TokenInUrl => Some(format!(
                r#"Bearer realm="idsync", error="{code}", error_description="{}""#,
                detail.replace(['"', '\\'], "'")
            )),
            ApiError::Forbidden(_) => {
                Some(r#"Bearer realm="idsync", error="insufficient_scope""#.to_owned())
            }
            _ => None,
        };
        let mut response = (
            status,
            Json(ErrorBody {
                error: code,
                detail,
            }),
        )
            .into_response();
        if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        // Every 503 is temporary: say when to come back (RFC 9110 §10.2.3).
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// What a lower layer failed with, kept whole (not flattened into text) so the source
/// chain reaches the log.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The error of a CLI command: printed as one line on stderr, exit status 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A setting or argument is missing or inconsistent, or what was asked is not
    /// possible; the text says which and what to do.
    #[error("{0}")]
    Config(String),
    /// A setting's value was refused by what reads it (a URL, a key...).
    #[error("{setting}: {source}")]
    Setting {
        setting: &'static str,
        #[source]
        source: BoxError,
    },
    /// An HTTP request (or building its client) failed.
    #[error("{what}: {source}")]
    Http {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Reading from Authentik failed (reconcile).
    #[error("{0}")]
    Authentik(#[source] BoxError),
    /// A data key is malformed or does not open what the database holds.
    #[error(transparent)]
    Privacy(#[from] idsync_store::privacy::PrivacyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
