//! HTTP: the discovery document and the JWKS, with a timeout and a size cap each.

use std::error::Error as _;
use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;

use crate::VerifyError;

/// Per request, on top of whatever the caller's client sets: verification waits on these
/// fetches, so a hanging issuer must not hang requests for long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Discovery documents and JWKS are a few KiB; anything far larger is not one.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// What idsync reads from a discovery document.
pub(crate) struct Discovered {
    pub jwks_uri: String,
    pub issuer: Option<String>,
}

/// Reads the discovery document: its `jwks_uri` and `issuer`.
pub(crate) async fn discover(
    http: &reqwest::Client,
    url: &str,
    expected_issuer: &str,
) -> Result<Discovered, VerifyError> {
    #[derive(Deserialize)]
    struct Discovery {
        issuer: Option<String>,
        jwks_uri: Option<String>,
    }
    let body = get_document(http, url, "OIDC discovery document").await?;
    let discovery: Discovery = serde_json::from_slice(&body).map_err(|error| {
        VerifyError::Misconfigured(format!(
            "{url} is not an OpenID discovery document: {error}"
        ))
    })?;
    // Not an error: Authentik builds `issuer` from the Host header of the request, so a
    // discovery URL on an internal host reports the internal issuer while tokens carry
    // the public one. Tokens are still checked against the configured issuer.
    if let Some(issuer) = discovery.issuer.as_deref()
        && issuer != expected_issuer
    {
        tracing::warn!(
            discovery_issuer = issuer,
            expected_issuer,
            "the discovery document names another issuer; tokens must carry the configured one"
        );
    }
    match discovery.jwks_uri {
        Some(uri) if !uri.trim().is_empty() => Ok(Discovered {
            jwks_uri: uri,
            issuer: discovery.issuer,
        }),
        _ => Err(VerifyError::Misconfigured(format!(
            "the discovery document at {url} has no jwks_uri"
        ))),
    }
}

/// GETs `url` and returns its body. Unreachable or 5xx → `Unavailable` (may pass);
/// 4xx or oversized → `Misconfigured` (the URL is wrong).
pub(crate) async fn get_document(
    http: &reqwest::Client,
    url: &str,
    what: &str,
) -> Result<Vec<u8>, VerifyError> {
    let mut response = http
        .get(url)
        .timeout(REQUEST_TIMEOUT)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|error| {
            VerifyError::Unavailable(format!("{what} at {url}: {}", describe(&error)))
        })?;
    let status = response.status();
    if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
        return Err(VerifyError::Misconfigured(format!(
            "{what} at {url} answered {status}: check the issuer and discovery URL"
        )));
    }
    if !status.is_success() {
        return Err(VerifyError::Unavailable(format!(
            "{what} at {url} answered {status}"
        )));
    }
    let mut body = Vec::new();
    // Read chunk by chunk so an endless body stops at the cap instead of filling memory.
    while let Some(chunk) = response.chunk().await.map_err(|error| {
        VerifyError::Unavailable(format!("{what} at {url}: {}", describe(&error)))
    })? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(VerifyError::Misconfigured(format!(
                "{what} at {url} is larger than {MAX_DOCUMENT_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// reqwest's top-level message ("error sending request") hides the cause; add the chain.
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        format!("timed out ({error})")
    } else {
        error.to_string()
    };
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
