//! `POST /authentik/webhook`: the first step of the flow. A webhook is authenticated,
//! parsed, and stored in the inbox; 202 is sent only once that row has committed, so
//! anything Authentik was told we accepted survives a crash. Nothing is written for a
//! 4xx, and a database outage answers 503 so Authentik retries.

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use futures::StreamExt;
use idsync_authentik::webhook::{self, Parsed, Subject};
use idsync_store::inbox::{self, Inserted, NewItem};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

mod queue;
mod rejections;
pub(crate) mod schema;

pub(crate) use queue::IntakeQueue;
pub(crate) use rejections::Rejections;

use crate::ApiError;
use crate::metrics::WEBHOOKS_RECEIVED;

/// What the webhook handler needs; a sub-state of the router's state.
#[derive(Clone)]
pub struct IntakeState {
    pub webhook_secret: Arc<SecretString>,
    pub intake: IntakeQueue,
    /// Wakes this process's sync workers when intake stored an item.
    pub wake_sync: Arc<Notify>,
    /// Webhooks refused for their secret, for the log and `/readyz`.
    pub rejections: Rejections,
}

/// Largest body accepted. Authentik's bodies are well under 4 KiB.
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// Authentik's webhook: one of the three accepted bodies (docs/contract.md), with
/// `Authorization: Bearer <IDSYNC_WEBHOOK_SECRET>`.
#[utoipa::path(post, path = "/authentik/webhook", tag = "intake",
    security(("webhook_secret" = [])),
    request_body(content = schema::WebhookBody, content_type = "application/json",
        description = "`{\"event_type\", \"pk\"}`, idsync's mapping `{\"event_id\", \"action\", \"model_app\", \"model_name\", \"model_pk\", ...}`, or Authentik's default `{\"body\": \"model_created: {...}\", ...}`",
        examples(
            ("dotnet_sample" = (summary = "the .NET sample's mapping", value = json!({"event_type": "model_created", "pk": 7}))),
            ("mapping" = (summary = "idsync's blueprint mapping", value = json!({
                "event_id": "5c0b1f3e-6f7a-4b8c-9d0e-1f2a3b4c5d6e", "action": "model_updated",
                "model_app": "authentik_core", "model_name": "user", "model_pk": 7,
                "created": "2026-01-01T00:00:00Z", "actor": {"pk": 1, "username": "akadmin"}}))),
            ("mapping_group" = (summary = "a group's event (idsync's mapping)", value = json!({
                "event_id": "0b7c3f0e-4e5a-4c1b-9d2f-6a7e8c9d0a1b", "action": "model_updated",
                "model_app": "authentik_core", "model_name": "group",
                "model_pk": "9f1c4d1e000040008000000000000000"}))),
            ("default_body" = (summary = "Authentik's default body", value = json!({
                "body": "model_created: {'model': {'app': 'authentik_core', 'model_name': 'user', 'pk': 7}}",
                "severity": "notice"}))),
            ("test_button" = (summary = "the Test button (202 ignored)", value = json!({
                "body": "Test Notification from transport idsync", "severity": "notice"}))),
        )),
    responses(
        (status = 202, description = "stored (`accepted`), or valid but not a user or group lifecycle event (`ignored`)", body = schema::WebhookAccepted,
         example = json!({"status": "accepted", "inbox_id": "0192f3a4-5b6c-7d8e-9f0a-1b2c3d4e5f60"})),
        (status = 200, description = "a re-delivery of an event_id seen before", body = schema::WebhookDuplicate,
         example = json!({"status": "duplicate", "inbox_id": "0192f3a4-5b6c-7d8e-9f0a-1b2c3d4e5f60"})),
        (status = 400, description = "malformed JSON, or not one of the accepted bodies (missing or bad pk, unknown action)", body = crate::error::ErrorBody),
        (status = 401, description = "wrong or missing secret", body = crate::error::ErrorBody),
        (status = 413, description = "larger than 64 KiB", body = crate::error::ErrorBody),
        (status = 415, description = "not application/json", body = crate::error::ErrorBody),
        (status = 503, description = "database unavailable, or the process still starting; Authentik retries", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn receive(
    State(state): State<IntakeState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let result = handle(&state, &headers, body).await;
    if let Err(ApiError::Unauthorized(_)) = &result {
        state.rejections.record(peer.ip());
    }
    let outcome = Received::of(&result);
    metrics::counter!(WEBHOOKS_RECEIVED, "outcome" => outcome.label()).increment(1);
    result
}

/// What became of a delivery, as `idsync_webhooks_received_total{outcome}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Received {
    Accepted,
    Duplicate,
    Ignored,
    Unauthorized,
    Invalid,
    TooLarge,
    UnsupportedMediaType,
    Unavailable,
}

impl Received {
    fn of(result: &Result<(StatusCode, Json<Value>), ApiError>) -> Self {
        match result {
            Ok((StatusCode::OK, _)) => Received::Duplicate,
            Ok((_, body)) if body["status"] == "ignored" => Received::Ignored,
            Ok(_) => Received::Accepted,
            Err(ApiError::Unauthorized(_)) => Received::Unauthorized,
            Err(ApiError::InvalidPayload(_)) => Received::Invalid,
            Err(ApiError::PayloadTooLarge(_)) => Received::TooLarge,
            Err(ApiError::UnsupportedMediaType(_)) => Received::UnsupportedMediaType,
            Err(_) => Received::Unavailable,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Received::Accepted => "accepted",
            Received::Duplicate => "duplicate",
            Received::Ignored => "ignored",
            Received::Unauthorized => "unauthorized",
            Received::Invalid => "invalid",
            Received::TooLarge => "too_large",
            Received::UnsupportedMediaType => "unsupported_media_type",
            Received::Unavailable => "unavailable",
        }
    }
}

async fn handle(
    state: &IntakeState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    // The secret first: an unauthenticated sender learns nothing about the rest.
    if !authorized(headers, state.webhook_secret.expose_secret()) {
        drain(body).await;
        return Err(ApiError::Unauthorized(
            "missing or wrong bearer secret (Authorization: Bearer <IDSYNC_WEBHOOK_SECRET>)"
                .to_owned(),
        ));
    }
    if !is_json(headers) {
        drain(body).await;
        return Err(ApiError::UnsupportedMediaType(
            "Content-Type must be application/json".to_owned(),
        ));
    }
    let bytes = read_limited(headers, body).await?;
    let notice = match webhook::parse(&bytes).map_err(|e| ApiError::InvalidPayload(e.0))? {
        Parsed::Ignored { reason } => {
            tracing::debug!(%reason, "webhook ignored");
            return Ok((
                StatusCode::ACCEPTED,
                Json(json!({"status": "ignored", "reason": reason})),
            ));
        }
        Parsed::Notice(notice) => notice,
    };
    // serde_json accepted the bytes, so they are UTF-8.
    let body = String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    let inserted = state
        .intake
        .submit(NewItem {
            event_id: notice.event_id.clone(),
            action: notice.action.as_str(),
            subject: match notice.subject {
                Subject::User(pk) => inbox::Subject::User(pk),
                Subject::Group(uuid) => inbox::Subject::Group(uuid),
            },
            format: notice.format.as_str(),
            body,
        })
        .await
        .map_err(|e| {
            if e.is_unavailable() {
                ApiError::Unavailable("the database is unavailable; try again later".to_owned())
            } else {
                ApiError::Internal {
                    context: "storing a webhook",
                    source: e.into(),
                }
            }
        })?;
    match inserted {
        Inserted::New(id) => {
            tracing::info!(inbox_id = %id, subject = ?notice.subject, action = notice.action.as_str(), "webhook accepted");
            state.wake_sync.notify_waiters();
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({"status": "accepted", "inbox_id": id})),
            ))
        }
        Inserted::Duplicate(id) => {
            tracing::info!(inbox_id = %id, event_id = notice.event_id.as_deref(), "duplicate webhook");
            Ok((
                StatusCode::OK,
                Json(json!({"status": "duplicate", "inbox_id": id})),
            ))
        }
    }
}

/// `Authorization: Bearer <secret>`, compared in constant time.
fn authorized(headers: &HeaderMap, secret: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, token)) = value.trim().split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer")
        && bool::from(token.trim().as_bytes().ct_eq(secret.as_bytes()))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

async fn read_limited(headers: &HeaderMap, body: Body) -> Result<Vec<u8>, ApiError> {
    let too_large =
        || ApiError::PayloadTooLarge(format!("the body is larger than {MAX_BODY} bytes"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        drain(body).await;
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(declared.map_or(1024, |n| n as usize));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::InvalidPayload(format!("could not read the body: {e}")))?;
        if bytes.len() + chunk.len() > MAX_BODY {
            drain(Body::from_stream(stream)).await;
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Read and discard a bounded amount of a body we are refusing. Answering while the
/// client is still sending makes the server close the connection under it, and many
/// clients then report a broken connection instead of our JSON error. Past the bound
/// (or after a short time) we answer anyway: nobody gets to make us read forever.
async fn drain(body: Body) {
    const DRAIN_LIMIT: usize = 1024 * 1024;
    let mut stream = body.into_data_stream();
    let mut read = 0;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(chunk)) = stream.next().await {
            read += chunk.len();
            if read > DRAIN_LIMIT {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(value).expect("header"),
        );
        h
    }

    #[test]
    fn bearer_secret_must_match_exactly() {
        assert!(authorized(&with_auth("Bearer s3cret"), "s3cret"));
        assert!(authorized(&with_auth("bearer s3cret"), "s3cret"));
        assert!(!authorized(&with_auth("Bearer s3cre"), "s3cret"));
        assert!(!authorized(&with_auth("Bearer s3cret2"), "s3cret"));
        assert!(!authorized(&with_auth("Basic s3cret"), "s3cret"));
        assert!(!authorized(&with_auth("s3cret"), "s3cret"));
        assert!(!authorized(&HeaderMap::new(), "s3cret"));
    }

    #[test]
    fn json_content_type_with_parameters() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(is_json(&h));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(!is_json(&h));
        assert!(!is_json(&HeaderMap::new()));
    }
}
