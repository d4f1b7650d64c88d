//! A client for the part of Authentik's API idsync reads: users (by pk, by page, by a
//! field) and groups (by uuid, with their members' pks).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Response, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;

use crate::model::{AuthentikGroup, AuthentikUser, SelfUser, UserPage};

/// The most of a response body that is read; an Authentik page of 100 users is far less.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// How much of an unexpected body an error message quotes.
const BODY_EXCERPT_CHARS: usize = 200;

/// Timeouts of the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    /// To establish the TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// For a whole request, from sending to the last byte of the body.
    pub request_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
        }
    }
}

/// Why a call to Authentik failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// 404: no such user (deleted, or never existed).
    #[error("not found")]
    NotFound,
    /// 401 or 403. Authentik answers 403 `{"detail": ...}` for a bad, expired or missing
    /// token, and for a token whose user may not read users.
    #[error("authentication failed: HTTP {status}: {detail}")]
    Auth { status: u16, detail: String },
    /// 429. `retry_after` is the server's `Retry-After`, when it sent one in seconds.
    #[error("rate limited{}", retry_after.map(|d| format!(", retry after {} s", d.as_secs())).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    /// 5xx, a timeout, a refused or reset connection, or another network error.
    #[error("transient: {0}")]
    Transient(String),
    /// A 2xx whose body does not match the schema, or a status that makes no sense here.
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// The client cannot be built or the request cannot be formed (bad base URL, ...).
    #[error("configuration: {0}")]
    Config(String),
}

impl ClientError {
    /// Whether trying again later may succeed. `Auth` counts: tokens rotate and an
    /// operator may fix one while the work waits.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Auth { .. } | Self::RateLimited { .. } | Self::Transient(_)
        )
    }

    /// A short stable name of the variant, for metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::Auth { .. } => "auth",
            Self::RateLimited { .. } => "rate_limited",
            Self::Transient(_) => "transient",
            Self::Malformed(_) => "malformed",
            Self::Config(_) => "config",
        }
    }
}

/// A client of Authentik's users API. Cloning is cheap and shares the connection pool.
#[derive(Clone)]
pub struct AuthentikClient {
    http: reqwest::Client,
    base_url: Arc<str>,
    token: Arc<SecretString>,
}

impl fmt::Debug for AuthentikClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthentikClient")
            .field("base_url", &self.base_url)
            .field("token", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl AuthentikClient {
    /// A client of the Authentik at `base_url` (e.g. `http://authentik-server:9000`; a
    /// path prefix is kept, a trailing `/` dropped), authenticating with an API-intent
    /// `token`.
    pub fn new(
        base_url: &str,
        token: SecretString,
        config: ClientConfig,
    ) -> Result<Self, ClientError> {
        let base_url = normalize_base_url(base_url)?;
        if token.expose_secret().trim().is_empty() {
            return Err(ClientError::Config(
                "the Authentik API token is empty".into(),
            ));
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let http = reqwest::Client::builder()
            .user_agent(concat!("idsync/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            // A redirect here means a wrong base URL (http→https, a login page, a proxy);
            // report it rather than follow it with the token.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base_url: base_url.into(),
            token: Arc::new(token),
        })
    }

    /// The base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `GET {base}/api/v3/core/users/{pk}/`.
    pub async fn get_user(&self, pk: i64) -> Result<AuthentikUser, ClientError> {
        let url = format!("{}/api/v3/core/users/{pk}/", self.base_url);
        self.get_json(&url).await
    }

    /// `GET {base}/api/v3/core/groups/{uuid}/?include_users=false`: the group's name and
    /// its members' pks (`users`), without the member objects. Needs the token's user to
    /// hold `authentik_core.view_group`.
    pub async fn get_group(&self, uuid: uuid::Uuid) -> Result<AuthentikGroup, ClientError> {
        let url = format!(
            "{}/api/v3/core/groups/{uuid}/?include_users=false",
            self.base_url
        );
        self.get_json(&url).await
    }

    /// The first page of `GET {base}/api/v3/core/groups/?page_size=1`, to learn whether
    /// the token may list groups (`idsync check`).
    pub async fn probe_groups(&self) -> Result<(), ClientError> {
        let url = format!(
            "{}/api/v3/core/groups/?page_size=1&include_users=false",
            self.base_url
        );
        self.get_json::<serde_json::Value>(&url).await.map(drop)
    }

    /// `GET {base}/api/v3/core/users/me/`: the user the token belongs to, with its
    /// superuser flag and system permissions (what `idsync check` judges privilege by).
    pub async fn me(&self) -> Result<SelfUser, ClientError> {
        #[derive(serde::Deserialize)]
        struct SessionUser {
            user: SelfUser,
        }
        let url = format!("{}/api/v3/core/users/me/", self.base_url);
        self.get_json::<SessionUser>(&url).await.map(|s| s.user)
    }

    /// The users whose `field` (`username`, `email` or `uuid`, filters of Authentik's
    /// user list) equals `value`: at most a page of them.
    pub async fn find_users(
        &self,
        field: &str,
        value: &str,
    ) -> Result<Vec<AuthentikUser>, ClientError> {
        let mut url = Url::parse(&format!("{}/api/v3/core/users/", self.base_url))
            .map_err(|e| ClientError::Config(format!("bad base URL: {e}")))?;
        url.query_pairs_mut()
            .append_pair(field, value)
            .append_pair("page_size", "20");
        self.get_json::<UserPage>(url.as_str())
            .await
            .map(|page| page.users)
    }

    /// `GET {base}/api/v3/core/users/?page={page}&page_size={page_size}`. Pages count
    /// from 1; Authentik caps `page_size` (100 by default) and answers 404 for a page
    /// past the last, which is reported as [`ClientError::NotFound`].
    pub async fn list_users(&self, page: u32, page_size: u32) -> Result<UserPage, ClientError> {
        let url = format!(
            "{}/api/v3/core/users/?page={page}&page_size={page_size}",
            self.base_url
        );
        self.get_json(&url).await
    }

    /// Every user, following `pagination.next` from page 1. Stops with
    /// [`ClientError::Malformed`] if the pages do not advance.
    pub async fn list_all_users(&self, page_size: u32) -> Result<Vec<AuthentikUser>, ClientError> {
        let mut users = Vec::new();
        let mut page: u32 = 1;
        loop {
            let answer = self.list_users(page, page_size).await?;
            users.extend(answer.users);
            let Some(next) = answer.pagination.next_page() else {
                return Ok(users);
            };
            match u32::try_from(next) {
                Ok(next) if next > page => page = next,
                _ => {
                    return Err(ClientError::Malformed(format!(
                        "pagination.next is {next} on page {page}"
                    )));
                }
            }
        }
    }

    async fn get_json<T: DeserializeOwned>(&self, url: &str) -> Result<T, ClientError> {
        let response = self
            .http
            .get(url)
            .bearer_auth(self.token.expose_secret())
            .send()
            .await
            .map_err(|e| network_error(&e))?;
        let status = response.status();
        tracing::debug!(%url, status = status.as_u16(), "authentik answered");
        if status.is_success() {
            let body = read_body(response).await?;
            let mut deserializer = serde_json::Deserializer::from_slice(&body);
            return serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
                let code = status.as_u16();
                if e.inner().is_syntax() || e.inner().is_eof() {
                    return ClientError::Malformed(format!(
                        "HTTP {code}: not JSON ({}): {}",
                        e.inner(),
                        excerpt(&body)
                    ));
                }
                let path = e.path().to_string();
                let path = if path == "." { "body" } else { path.as_str() };
                ClientError::Malformed(format!("HTTP {code}: {path}: {}", e.inner()))
            });
        }
        Err(error_for_status(status, response).await)
    }
}

fn normalize_base_url(base_url: &str) -> Result<String, ClientError> {
    let trimmed = base_url.trim().trim_end_matches('/');
    let url = Url::parse(trimmed)
        .map_err(|e| ClientError::Config(format!("invalid Authentik URL {trimmed:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ClientError::Config(format!(
            "Authentik URL {trimmed:?} must be http or https"
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ClientError::Config(format!(
            "Authentik URL {trimmed:?} has no host"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ClientError::Config(format!(
            "Authentik URL {trimmed:?} must not have a query or fragment"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ClientError::Config(
            "Authentik URL must not carry credentials".into(),
        ));
    }
    Ok(trimmed.to_owned())
}

fn network_error(error: &reqwest::Error) -> ClientError {
    if error.is_builder() {
        return ClientError::Config(format!("cannot form the request: {error}"));
    }
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    ClientError::Transient(format!("{what}: {}", error_chain(error)))
}

/// The error and its sources, which name the cause ("connection refused", ...).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

async fn read_body(mut response: Response) -> Result<Vec<u8>, ClientError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| network_error(&e))? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ClientError::Malformed(format!(
                "body larger than {MAX_BODY_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn error_for_status(status: StatusCode, response: Response) -> ClientError {
    let code = status.as_u16();
    match status {
        StatusCode::NOT_FOUND => ClientError::NotFound,
        StatusCode::TOO_MANY_REQUESTS => ClientError::RateLimited {
            retry_after: retry_after(response.headers()),
        },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            let body = read_body(response).await.unwrap_or_default();
            ClientError::Auth {
                status: code,
                detail: detail(&body),
            }
        }
        _ if status.is_server_error() => {
            let body = read_body(response).await.unwrap_or_default();
            ClientError::Transient(format!("HTTP {code}: {}", excerpt(&body)))
        }
        _ if status.is_redirection() => {
            let location = response
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(|l| excerpt(l.as_bytes()))
                .unwrap_or_default();
            ClientError::Malformed(format!(
                "unexpected HTTP {code} redirect to {location:?}; check the Authentik URL"
            ))
        }
        _ => {
            let body = read_body(response).await.unwrap_or_default();
            ClientError::Malformed(format!("unexpected HTTP {code}: {}", excerpt(&body)))
        }
    }
}

/// `Retry-After` in seconds (the form Authentik's throttling sends).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    // DRF may send a fractional number of seconds.
    value
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(86_400.0)))
}

/// The `detail` of a JSON error body, or an excerpt of the body.
fn detail(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
        .map(|d| excerpt(d.as_bytes()))
        .unwrap_or_else(|| excerpt(body))
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    // One line, for logs.
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    let mut chars = text.chars();
    let mut short: String = chars.by_ref().take(BODY_EXCERPT_CHARS).collect();
    if chars.next().is_some() {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(url: &str) -> Result<AuthentikClient, ClientError> {
        AuthentikClient::new(url, SecretString::from("t0ken"), ClientConfig::default())
    }

    #[test]
    fn base_url_is_validated_and_trimmed() {
        assert_eq!(
            client("http://authentik:9000/").expect("valid").base_url(),
            "http://authentik:9000"
        );
        assert_eq!(
            client("https://sso.example.org/auth//")
                .expect("valid")
                .base_url(),
            "https://sso.example.org/auth"
        );
        for bad in [
            "",
            "authentik:9000",
            "ftp://authentik",
            "http://",
            "http://a/?x=1",
            "http://u:p@a/",
        ] {
            assert!(
                matches!(client(bad), Err(ClientError::Config(_))),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn empty_token_is_refused() {
        let result =
            AuthentikClient::new("http://a", SecretString::from(" "), ClientConfig::default());
        assert!(matches!(result, Err(ClientError::Config(_))));
    }

    #[test]
    fn kinds_and_retryability() {
        let cases = [
            (ClientError::NotFound, "not_found", false),
            (
                ClientError::Auth {
                    status: 403,
                    detail: String::new(),
                },
                "auth",
                true,
            ),
            (
                ClientError::RateLimited { retry_after: None },
                "rate_limited",
                true,
            ),
            (ClientError::Transient(String::new()), "transient", true),
            (ClientError::Malformed(String::new()), "malformed", false),
            (ClientError::Config(String::new()), "config", false),
        ];
        for (error, kind, retryable) in cases {
            assert_eq!(error.kind(), kind);
            assert_eq!(error.is_retryable(), retryable, "{kind}");
        }
    }

    #[test]
    fn retry_after_parses_seconds() {
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1.5"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn excerpts_are_short() {
        let long = "x".repeat(1000);
        assert_eq!(
            excerpt(long.as_bytes()).chars().count(),
            BODY_EXCERPT_CHARS + 1
        );
        assert_eq!(
            detail(br#"{"detail": "Token invalid/expired"}"#),
            "Token invalid/expired"
        );
        assert_eq!(detail(b"<h1>nope</h1>"), "<h1>nope</h1>");
    }
}
