//! Strict verification of OIDC access tokens (JWTs) issued by Authentik.
//!
//! The rules are RFC 8725's (JWT best current practice) and the product brief's §6:
//! - the algorithm comes from the issuer's key, never from the token: `none` and every
//!   `HS*` are rejected outright, and a token's `alg` must be one its key allows;
//! - keys come only from the issuer's JWKS, chosen by `kid` (the `jku`, `x5u` and `jwk`
//!   header fields are never read);
//! - `iss` must equal the configured issuer, `aud` must contain a configured audience,
//!   `exp` and `sub` are required, `nbf` is checked when present, leeway is at most 60 s;
//! - an unknown `kid` refreshes the JWKS (the issuer may have rotated its key), but at
//!   most once per [`OidcConfig::min_refresh_interval`], and concurrent refreshes are
//!   single-flighted, so a flood of made-up `kid`s cannot hammer the issuer. An unknown
//!   `kid` that arrives while the interval is not over waits for the next permitted
//!   fetch (at most one interval) instead of failing at once: otherwise one made-up
//!   `kid` would make a genuinely new key fail for a whole interval after a rotation.
//!
//! [`Verifier::verify`] returns the [`Claims`] or a [`VerifyError`] whose variant says
//! which HTTP answer fits: `Invalid` → 401, `Unavailable` and `Misconfigured` → 503.

mod claims;
mod fetch;
mod header;
pub mod issuer;
mod keys;

pub use claims::{Audience, Claims};

use sha2::Digest as _;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};

use crate::header::{TokenHeader, parse_header};
use crate::keys::{KeySet, Lookup, VerifyKey};

/// Longest token accepted, in bytes. Authentik's access tokens are well under 2 KiB even
/// with many groups; the cap bounds the work an anonymous caller can cause.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Largest clock-skew allowance RFC 8725 deployments use; [`Verifier::new`] clamps to it.
pub const MAX_LEEWAY: Duration = Duration::from_secs(60);

/// The message for Authentik's `{}` JWKS, which it serves when the provider has no signing
/// key (it then signs HS256 with the client secret, which a resource server must never
/// accept).
pub const EMPTY_JWKS_MESSAGE: &str = "the issuer's JWKS has no keys: give the Authentik provider a signing key (it signs HS256 with the client secret otherwise)";

/// Where and how to verify tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// The expected `iss`, compared as an exact string. Authentik's ends with `/`
    /// (`http://localhost:9000/application/o/idsync/`) and is built from the Host header
    /// the browser used, so configure the public one.
    pub issuer: String,
    /// Where to fetch the discovery document; may name an internal host. Default:
    /// `issuer` + `.well-known/openid-configuration`.
    pub discovery_url: Option<String>,
    /// Accepted `aud` values (the client id). Empty is a configuration error, reported by
    /// [`Verifier::verify`] as [`VerifyError::Misconfigured`].
    pub audiences: Vec<String>,
    /// Clock-skew allowance for `exp` and `nbf`; clamped to [`MAX_LEEWAY`]. Default 30 s.
    pub leeway: Duration,
    /// An unknown `kid` triggers at most one JWKS refetch per this interval; a failed
    /// fetch is not retried sooner either. An unknown `kid` seen before the interval is
    /// over waits for the next refetch, so a token signed by a newly published key is
    /// accepted within this interval even while made-up kids keep arriving. Default 5 s.
    pub min_refresh_interval: Duration,
    /// Keys older than this are refetched on the next verification. Default 10 min.
    pub refresh_interval: Duration,
    /// A verified token is remembered this long (never past its `exp`), so repeated
    /// requests with it skip the signature check; it is also how long a key withdrawn
    /// from the JWKS keeps working for tokens already seen. Default 60 s; zero disables.
    pub verified_cache_ttl: Duration,
}

impl OidcConfig {
    /// A configuration with the default intervals.
    pub fn new(
        issuer: impl Into<String>,
        audiences: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            issuer: issuer.into(),
            audiences: audiences.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// The discovery URL in use: the configured one, or the issuer's well-known URL.
    pub fn effective_discovery_url(&self) -> String {
        match &self.discovery_url {
            Some(url) if !url.trim().is_empty() => url.trim().to_owned(),
            _ if self.issuer.ends_with('/') => {
                format!("{}.well-known/openid-configuration", self.issuer)
            }
            _ => format!("{}/.well-known/openid-configuration", self.issuer),
        }
    }
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            discovery_url: None,
            audiences: Vec::new(),
            leeway: Duration::from_secs(30),
            min_refresh_interval: Duration::from_secs(5),
            refresh_interval: Duration::from_secs(600),
            verified_cache_ttl: Duration::from_secs(60),
        }
    }
}

/// Why a token was not accepted. Messages never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The token is bad: answer 401 `invalid_token`. The message is safe to show.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The issuer (discovery or JWKS) cannot be reached and no keys are cached: 503.
    #[error("OIDC issuer unavailable: {0}")]
    Unavailable(String),
    /// The setup is wrong (no audience, a `{}` JWKS, discovery without `jwks_uri`...):
    /// 503 naming the problem, and an operator must act.
    #[error("OIDC misconfigured: {0}")]
    Misconfigured(String),
}

/// Verifies access tokens against one issuer. Cheap to clone: clones share the key cache.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.inner.config.issuer)
            .field("discovery_url", &self.inner.discovery_url)
            .field("audiences", &self.inner.config.audiences)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: OidcConfig,
    discovery_url: String,
    http: reqwest::Client,
    /// The current keys. A plain lock: readers only clone the `Arc`, and it is never held
    /// across an `.await`.
    keys: RwLock<Option<Arc<KeySet>>>,
    /// Held while fetching, so concurrent verifications wait for one fetch instead of
    /// each starting their own (single flight).
    refresh: tokio::sync::Mutex<RefreshState>,
    config_error_logged: AtomicBool,
    /// Tokens already verified, by SHA-256 of the token: a client sends the same access
    /// token on every request, and an RSA signature check costs ten times a whole simple
    /// request. An entry is used only until the token's `exp` (plus leeway) and at most
    /// `verified_cache_ttl` after it was verified.
    verified: quick_cache::sync::Cache<[u8; 32], (Claims, std::time::Instant)>,
    /// Verifications waiting for the next permitted refetch (see
    /// [`Inner::refresh_for_unknown_kid`]); past [`MAX_KID_WAITERS`] they fail at once.
    kid_waiters: std::sync::atomic::AtomicUsize,
}

/// Most verifications that may wait at once for a refetch for their unknown `kid`.
/// Waiting costs a parked task each; the bound keeps a flood from parking without limit.
const MAX_KID_WAITERS: usize = 4096;

/// How many verified tokens are remembered.
const VERIFIED_CACHE_ENTRIES: usize = 10_000;

#[derive(Default)]
struct RefreshState {
    /// From the discovery document; fetched once, again only after a failed JWKS fetch
    /// that suggests it moved.
    jwks_uri: Option<String>,
    /// The `issuer` of that discovery document.
    discovered_issuer: Option<String>,
    /// The last failed fetch, returned again (instead of refetching) until
    /// `min_refresh_interval` has passed, so a down issuer is not hammered either.
    last_failure: Option<(Instant, VerifyError)>,
    /// The last refetch caused by an unknown `kid`: the rate limit against made-up kids.
    last_kid_refetch: Option<Instant>,
    generation: u64,
}

/// Counts a waiting verification out when it ends (returns or is cancelled).
struct WaiterGuard<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Verifier {
    /// No I/O: discovery and the JWKS are fetched on first use (or by [`check`](Self::check)).
    /// `http` should have connect timeouts; each request here also has a 5 s timeout.
    pub fn new(mut config: OidcConfig, http: reqwest::Client) -> Self {
        // Select the RustCrypto backend explicitly. jsonwebtoken 11 otherwise picks its
        // backend from crate features at the first sign/verify and panics there if none or
        // both are enabled; naming the provider turns "none" into a compile error and makes
        // "both" harmless. Err only means a provider is already installed, which is fine.
        let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
            &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER,
        );
        config.leeway = config.leeway.min(MAX_LEEWAY);
        let discovery_url = config.effective_discovery_url();
        Self {
            inner: Arc::new(Inner {
                config,
                discovery_url,
                http,
                keys: RwLock::new(None),
                refresh: tokio::sync::Mutex::new(RefreshState::default()),
                config_error_logged: AtomicBool::new(false),
                verified: quick_cache::sync::Cache::new(VERIFIED_CACHE_ENTRIES),
                kid_waiters: std::sync::atomic::AtomicUsize::new(0),
            }),
        }
    }

    /// The configuration in effect (with the leeway clamped).
    pub fn config(&self) -> &OidcConfig {
        &self.inner.config
    }

    /// Verifies `token` (without the `Bearer ` prefix) and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        self.inner.check_config()?;
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid(format!("longer than {MAX_TOKEN_LEN} bytes")));
        }
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        if let Some((claims, verified_at)) = self.inner.verified.get(&digest) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let leeway = self.inner.config.leeway.as_secs() as i64;
            if verified_at.elapsed() < self.inner.config.verified_cache_ttl
                && now <= claims.exp + leeway
            {
                return Ok(claims);
            }
            self.inner.verified.remove(&digest);
            if now > claims.exp + leeway {
                return Err(invalid("expired".to_owned()));
            }
        }
        let header = parse_header(token)?;
        let key = self.inner.key_for(&header).await?;
        let claims = self.inner.decode(token, &key, header.alg)?;
        if !self.inner.config.verified_cache_ttl.is_zero() {
            self.inner
                .verified
                .insert(digest, (claims.clone(), Instant::now()));
        }
        Ok(claims)
    }

    /// Fetches discovery and the JWKS now, ignoring caches and rate limits (for
    /// `idsync check` and serve's start), and keeps the keys for later verifications.
    /// Returns e.g. `"1 key (RS256) from http://.../jwks/"`, with a note when discovery
    /// names another host (the expected public/internal split). A discovery document
    /// whose issuer no token could match (see [`issuer::compare`]) is
    /// [`VerifyError::Misconfigured`], saying what differs.
    pub async fn check(&self) -> Result<String, VerifyError> {
        self.inner.check_config()?;
        let mut state = self.inner.refresh.lock().await;
        state.jwks_uri = None;
        let set = self.inner.refresh_locked(&mut state).await?;
        let keys = set.describe();
        let Some(discovered) = state.discovered_issuer.clone() else {
            return Ok(format!("{keys}; the discovery document names no issuer"));
        };
        match issuer::compare(
            &self.inner.config.issuer,
            &discovered,
            &self.inner.discovery_url,
        ) {
            issuer::IssuerMatch::Same => Ok(format!("{keys}; issuer {discovered}")),
            issuer::IssuerMatch::PublicInternalSplit { discovered } => Ok(format!(
                "{keys}; discovery at {} names the issuer {discovered}, the host it was asked                  on: the expected public/internal split (tokens must carry {}, as they do when                  browsers reach the provider there)",
                self.inner.discovery_url, self.inner.config.issuer
            )),
            issuer::IssuerMatch::Mismatch(why) => Err(VerifyError::Misconfigured(why)),
        }
    }
}

impl Inner {
    fn check_config(&self) -> Result<(), VerifyError> {
        let problem = if self.config.issuer.trim().is_empty() {
            "no issuer configured (IDSYNC_OIDC_ISSUER)"
        } else if self.config.audiences.iter().all(|a| a.trim().is_empty()) {
            "no accepted audience configured (IDSYNC_OIDC_AUDIENCE, the client id): every token would be rejected"
        } else {
            return Ok(());
        };
        if !self.config_error_logged.swap(true, Ordering::Relaxed) {
            tracing::error!(problem, "OIDC verification is misconfigured");
        }
        Err(VerifyError::Misconfigured(problem.to_owned()))
    }

    fn cached(&self) -> Option<Arc<KeySet>> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn key_for(&self, header: &TokenHeader) -> Result<Arc<VerifyKey>, VerifyError> {
        let kid = header.kid.as_deref();
        // `just_loaded`: the keys were fetched during this call, so an unknown kid cannot
        // be explained by a rotation since then and needs no second fetch.
        let (mut set, mut just_loaded) = match self.cached() {
            Some(set) => (set, false),
            None => (self.load_initial().await?, true),
        };
        // Inline rather than in a background task: only the one caller that wins the
        // try_lock waits for it; everyone else keeps using the current keys.
        if !just_loaded
            && set.fetched_at.elapsed() >= self.config.refresh_interval
            && let Some(fresh) = self.refresh_stale(&set).await
        {
            set = fresh;
            just_loaded = true;
        }
        match set.find(kid, header.alg) {
            Lookup::Found(key) => return Ok(key),
            Lookup::NotFound if !just_loaded => {}
            other => return Err(other.into_error(kid)),
        }
        // An unknown kid: the issuer may have rotated its key since the last fetch.
        match self.refresh_for_unknown_kid(&set).await {
            Some(fresh) => match fresh.find(kid, header.alg) {
                Lookup::Found(key) => Ok(key),
                other => Err(other.into_error(kid)),
            },
            None => Err(Lookup::NotFound.into_error(kid)),
        }
    }

    /// First use, or every fetch so far failed.
    async fn load_initial(&self) -> Result<Arc<KeySet>, VerifyError> {
        let mut state = self.refresh.lock().await;
        // Another verification may have loaded the keys while this one waited.
        if let Some(set) = self.cached() {
            return Ok(set);
        }
        if let Some((at, error)) = &state.last_failure
            && at.elapsed() < self.config.min_refresh_interval
        {
            return Err(error.clone());
        }
        self.refresh_locked(&mut state).await
    }

    /// The keys are older than `refresh_interval`. Best effort: if another task is
    /// already fetching, or the fetch fails, the cached keys stay in use.
    async fn refresh_stale(&self, seen: &KeySet) -> Option<Arc<KeySet>> {
        let mut state = self.refresh.try_lock().ok()?;
        if let Some(current) = self.cached()
            && current.generation != seen.generation
        {
            return Some(current);
        }
        if let Some((at, _)) = &state.last_failure
            && at.elapsed() < self.config.min_refresh_interval
        {
            return None;
        }
        self.refresh_locked(&mut state).await.ok()
    }

    /// The keys after a refetch for an unknown `kid`, or None when none may happen (or it
    /// failed). At most one such refetch per `min_refresh_interval`: inside the interval
    /// the caller waits for its end and then shares one refetch with every other waiter.
    /// Failing at once instead (as this did before) let one made-up `kid` block the
    /// refetch a genuinely new key needs, so tokens signed by it were refused for up to a
    /// whole interval after a rotation.
    async fn refresh_for_unknown_kid(&self, seen: &KeySet) -> Option<Arc<KeySet>> {
        let wait_until = {
            let mut state = self.refresh.lock().await;
            // Someone refetched while this task waited for the lock: look there first
            // instead of fetching again (this keeps concurrent unknown kids to one fetch).
            if let Some(current) = self.cached()
                && current.generation != seen.generation
            {
                return Some(current);
            }
            match state.last_kid_refetch {
                Some(at) if at.elapsed() < self.config.min_refresh_interval => {
                    at + self.config.min_refresh_interval
                }
                _ => {
                    state.last_kid_refetch = Some(Instant::now());
                    return self.refresh_locked(&mut state).await.ok();
                }
            }
        };
        let waiters = self.kid_waiters.fetch_add(1, Ordering::Relaxed);
        let _waiting = WaiterGuard(&self.kid_waiters);
        if waiters >= MAX_KID_WAITERS {
            return None;
        }
        tokio::time::sleep_until(wait_until.into()).await;
        let mut state = self.refresh.lock().await;
        if let Some(current) = self.cached()
            && current.generation != seen.generation
        {
            return Some(current);
        }
        match state.last_kid_refetch {
            // Another waiter fetched first and it failed (or found nothing new): do not
            // try again inside the new interval.
            Some(at) if at.elapsed() < self.config.min_refresh_interval => None,
            _ => {
                state.last_kid_refetch = Some(Instant::now());
                self.refresh_locked(&mut state).await.ok()
            }
        }
    }

    /// Fetches (discovery if needed, then) the JWKS and installs the keys. On failure the
    /// cached keys, if any, stay in place. Callers hold the refresh lock.
    async fn refresh_locked(&self, state: &mut RefreshState) -> Result<Arc<KeySet>, VerifyError> {
        match self.fetch_keys(state).await {
            Ok(parsed) => {
                state.generation += 1;
                state.last_failure = None;
                let set = Arc::new(parsed.into_set(state.generation));
                tracing::info!(
                    keys = %set.describe(),
                    ignored = set.ignored.len(),
                    "fetched the OIDC issuer's signing keys"
                );
                for reason in &set.ignored {
                    tracing::debug!(reason = %reason, "ignored a JWKS entry");
                }
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Some(set.clone());
                Ok(set)
            }
            Err(error) => {
                let cached = self.cached().is_some();
                match &error {
                    VerifyError::Misconfigured(_) => {
                        tracing::error!(%error, keeping_cached_keys = cached, "OIDC key refresh failed");
                    }
                    _ => {
                        tracing::warn!(%error, keeping_cached_keys = cached, "OIDC key refresh failed")
                    }
                }
                state.last_failure = Some((Instant::now(), error.clone()));
                Err(error)
            }
        }
    }

    async fn fetch_keys(&self, state: &mut RefreshState) -> Result<keys::ParsedKeys, VerifyError> {
        let jwks_uri = match &state.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let discovered =
                    fetch::discover(&self.http, &self.discovery_url, &self.config.issuer).await?;
                state.jwks_uri = Some(discovered.jwks_uri.clone());
                state.discovered_issuer = discovered.issuer;
                discovered.jwks_uri
            }
        };
        let result = async {
            let body = fetch::get_document(&self.http, &jwks_uri, "JWKS").await?;
            keys::parse_jwks(&body, &jwks_uri)
        }
        .await;
        if let Err(VerifyError::Misconfigured(_)) = &result {
            // The JWKS may have moved or the provider changed: read discovery again next time.
            state.jwks_uri = None;
        }
        result
    }

    fn decode(&self, token: &str, key: &VerifyKey, alg: Algorithm) -> Result<Claims, VerifyError> {
        let mut validation = Validation::new(alg);
        validation.leeway = self.config.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&self.config.audiences);
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(invalid_from_jwt)?
            .claims;
        // jsonwebtoken has checked these already; repeat the ones that decide who the
        // caller is, so a library change cannot silently loosen them.
        if claims.iss != self.config.issuer {
            return Err(invalid("wrong issuer (iss)"));
        }
        if !self.config.audiences.iter().any(|a| claims.aud.contains(a)) {
            return Err(invalid("wrong audience (aud)"));
        }
        if claims.sub.is_empty() {
            return Err(invalid("empty subject (sub)"));
        }
        // Authentik's ID tokens share the access token's header, issuer and audience;
        // only access tokens carry `scope`. An ID token says who signed in to the client,
        // it is not meant as a credential for an API (OIDC Core §2, RFC 9068 §1).
        if claims.scope.is_none() {
            return Err(invalid(
                "this looks like an ID token (no scope claim): send the access token",
            ));
        }
        Ok(claims)
    }
}

fn invalid(why: impl Into<String>) -> VerifyError {
    VerifyError::Invalid(why.into())
}

/// At most `max` characters of attacker-supplied text, for error messages.
fn short(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max).collect();
        format!("{cut}...")
    }
}

/// The JWT header reader, for the `cargo fuzz` targets in `fuzz/` (not an API).
#[doc(hidden)]
pub mod fuzzing {
    /// What [`super::parse_header`] makes of `token`: the alg's name and the kid, or
    /// why not.
    pub fn token_header(token: &str) -> Result<(String, Option<String>), String> {
        super::parse_header(token)
            .map(|header| (format!("{:?}", header.alg), header.kid))
            .map_err(|e| e.to_string())
    }
}

fn invalid_from_jwt(error: jsonwebtoken::errors::Error) -> VerifyError {
    invalid(match error.kind() {
        ErrorKind::ExpiredSignature => "expired (exp)".to_owned(),
        ErrorKind::ImmatureSignature => "not valid yet (nbf)".to_owned(),
        ErrorKind::InvalidIssuer => "wrong issuer (iss)".to_owned(),
        ErrorKind::InvalidAudience => "wrong audience (aud)".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("missing claim `{claim}`"),
        ErrorKind::InvalidClaimFormat(claim) => format!("malformed claim `{claim}`"),
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey => "bad signature".to_owned(),
        ErrorKind::InvalidAlgorithm => "alg does not match the key".to_owned(),
        // serde's messages name the field and the expected type; the token is the
        // caller's own, so echoing its shape leaks nothing.
        ErrorKind::Json(error) => format!("malformed JSON in the token: {error}"),
        _ => "malformed token".to_owned(),
    })
}

#[cfg(test)]
mod tests;
