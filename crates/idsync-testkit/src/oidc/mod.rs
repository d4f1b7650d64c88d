//! A local OIDC issuer shaped like an Authentik OAuth2 provider, for tests.
//!
//! [`TestIssuer::start`] serves, on `127.0.0.1:<free port>`:
//! - `/application/o/idsync/.well-known/openid-configuration`: the discovery document,
//!   with `issuer` = `http://127.0.0.1:PORT/application/o/idsync/` (trailing slash, like
//!   Authentik's) and `jwks_uri` = `{issuer}jwks/`;
//! - `/application/o/idsync/jwks/`: the public RSA keys (RS256, `use: sig`, a `kid`).
//!
//! It mints access tokens with Authentik's claim set ([`TokenSpec`]), and the attack
//! tokens of RFC 8725 (`alg: none`, HS256 keyed with the public key, a foreign key behind
//! a known `kid`...). Knobs: [`rotate`](TestIssuer::rotate),
//! [`set_publish_previous_keys`](TestIssuer::set_publish_previous_keys),
//! [`set_down`](TestIssuer::set_down), [`set_empty_jwks`](TestIssuer::set_empty_jwks)
//! (Authentik's `{}` when a provider has no signing key). Counters:
//! [`jwks_fetches`](TestIssuer::jwks_fetches), [`discovery_fetches`](TestIssuer::discovery_fetches).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
pub use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Map, Value, json};
use tokio::sync::watch;

mod key;
mod spec;

pub use key::TestKey;
pub use spec::TokenSpec;

/// The application slug in the paths, as in the project's blueprint.
pub const SLUG: &str = "idsync";
/// The OAuth2 client id, which Authentik puts in `aud` and `azp`.
pub const CLIENT_ID: &str = "idsync-frontend";

/// A running issuer. Clones share the server; it stops when the last clone is dropped.
#[derive(Clone)]
pub struct TestIssuer {
    shared: Arc<Shared>,
    guard: Arc<ShutdownGuard>,
    addr: SocketAddr,
}

impl std::fmt::Debug for TestIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestIssuer")
            .field("issuer", &self.issuer())
            .field("jwks_fetches", &self.jwks_fetches())
            .finish_non_exhaustive()
    }
}

struct ShutdownGuard {
    shutdown: watch::Sender<bool>,
}

impl Drop for ShutdownGuard {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

struct Shared {
    base: String,
    state: Mutex<IssuerState>,
    jwks_fetches: AtomicU64,
    discovery_fetches: AtomicU64,
}

struct IssuerState {
    /// Oldest first; the last one signs.
    keys: Vec<Arc<TestKey>>,
    publish_previous: bool,
    down: bool,
    empty_jwks: bool,
    /// Signs "right kid, wrong key" tokens; generated on first use.
    foreign: Option<Arc<TestKey>>,
    next_kid: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, IssuerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn issuer(&self) -> String {
        format!("{}/application/o/{SLUG}/", self.base)
    }
}

impl TestIssuer {
    /// Starts an issuer on `127.0.0.1:<free port>` with one signing key.
    ///
    /// # Panics
    ///
    /// When no local port can be bound (test support: the test cannot go on).
    pub async fn start() -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), None)
            .await
            .expect("bind 127.0.0.1:0 for the test OIDC issuer")
    }

    /// Starts an issuer on `addr` (port 0: a free one) signing with `key`, or a fresh
    /// key when `None`. The development issuer uses this to keep its address and key, and
    /// so its tokens, across restarts.
    ///
    /// # Errors
    ///
    /// When `addr` cannot be bound.
    pub async fn start_on(addr: SocketAddr, key: Option<TestKey>) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let first = Arc::new(
            key.unwrap_or_else(|| TestKey::generate(format!("idsync-key-1-{}", addr.port()))),
        );
        let shared = Arc::new(Shared {
            base: format!("http://{addr}"),
            state: Mutex::new(IssuerState {
                keys: vec![first],
                publish_previous: true,
                down: false,
                empty_jwks: false,
                foreign: None,
                next_kid: 2,
            }),
            jwks_fetches: AtomicU64::new(0),
            discovery_fetches: AtomicU64::new(0),
        });
        let app = Router::new()
            .route(
                &format!("/application/o/{SLUG}/.well-known/openid-configuration"),
                get(discovery),
            )
            .route(&format!("/application/o/{SLUG}/jwks/"), get(jwks))
            .with_state(shared.clone());
        let (sender, mut stopped) = watch::channel(false);
        tokio::spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|stopped| *stopped).await;
            });
            if let Err(error) = server.await {
                eprintln!("test OIDC issuer stopped: {error}");
            }
        });
        Ok(Self {
            shared,
            guard: Arc::new(ShutdownGuard { shutdown: sender }),
            addr,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/application/o/idsync/` (with the trailing slash).
    pub fn issuer(&self) -> String {
        self.shared.issuer()
    }

    pub fn discovery_url(&self) -> String {
        format!("{}.well-known/openid-configuration", self.issuer())
    }

    pub fn jwks_url(&self) -> String {
        format!("{}jwks/", self.issuer())
    }

    pub fn client_id(&self) -> String {
        CLIENT_ID.to_owned()
    }

    /// JWKS requests received so far (also those answered 500 while down).
    pub fn jwks_fetches(&self) -> u64 {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Discovery requests received so far.
    pub fn discovery_fetches(&self) -> u64 {
        self.shared.discovery_fetches.load(Ordering::SeqCst)
    }

    /// The `kid` of the key that signs now.
    pub fn signing_kid(&self) -> String {
        self.current_key().kid.clone()
    }

    /// The key that signs now (to sign hand-made headers in tests).
    pub fn signing_key(&self) -> Arc<TestKey> {
        self.current_key()
    }

    /// A new key with a new `kid` becomes the signing key; returns its `kid`. The JWKS
    /// publishes the previous keys too unless
    /// [`set_publish_previous_keys(false)`](Self::set_publish_previous_keys).
    pub fn rotate(&self) -> String {
        let number = {
            let mut state = self.shared.lock();
            state.next_kid += 1;
            state.next_kid - 1
        };
        // Generate outside the lock: it takes a while.
        let key = Arc::new(TestKey::generate(format!(
            "idsync-key-{number}-{}",
            self.addr.port()
        )));
        let kid = key.kid.clone();
        self.shared.lock().keys.push(key);
        kid
    }

    /// Whether the JWKS lists the keys replaced by [`rotate`](Self::rotate) (default true,
    /// as during a graceful rotation).
    pub fn set_publish_previous_keys(&self, publish: bool) {
        self.shared.lock().publish_previous = publish;
    }

    /// While down, discovery and JWKS answer 500 with `Connection: close`.
    pub fn set_down(&self, down: bool) {
        self.shared.lock().down = down;
    }

    /// Serves `{}` as the JWKS, as Authentik does for a provider without a signing key.
    pub fn set_empty_jwks(&self, empty: bool) {
        self.shared.lock().empty_jwks = empty;
    }

    /// Stops accepting connections (for "issuer unreachable").
    pub fn stop(&self) {
        self.guard.shutdown.send_replace(true);
    }

    /// The JWKS as served now.
    pub fn jwks(&self) -> Value {
        jwks_document(&self.shared.lock())
    }

    /// The claims Authentik puts in an access token, per `spec`.
    pub fn claims(&self, spec: &TokenSpec) -> Value {
        let now = unix_now();
        let mut claims = Map::new();
        claims.insert(
            "iss".into(),
            json!(spec.iss.clone().unwrap_or_else(|| self.issuer())),
        );
        if let Some(sub) = &spec.sub {
            claims.insert("sub".into(), json!(sub));
        }
        claims.insert(
            "aud".into(),
            spec.aud.clone().unwrap_or_else(|| json!(CLIENT_ID)),
        );
        if let Some(offset) = spec.exp_offset {
            claims.insert("exp".into(), json!(now + offset));
        }
        claims.insert("iat".into(), json!(now));
        claims.insert("auth_time".into(), json!(now - 5));
        if let Some(offset) = spec.nbf_offset {
            claims.insert("nbf".into(), json!(now + offset));
        }
        claims.insert("azp".into(), json!(CLIENT_ID));
        claims.insert(
            "uid".into(),
            json!(fake_uid(spec.sub.as_deref().unwrap_or(""))),
        );
        claims.insert("scope".into(), json!("openid email profile"));
        for (name, value) in [
            ("email", &spec.email),
            ("preferred_username", &spec.preferred_username),
            ("name", &spec.name),
        ] {
            if let Some(value) = value {
                claims.insert(name.into(), json!(value));
            }
        }
        if spec.email.is_some() {
            // Authentik always sends false.
            claims.insert("email_verified".into(), json!(false));
        }
        claims.insert("groups".into(), json!(spec.groups));
        for (name, value) in &spec.extra {
            claims.insert(name.clone(), value.clone());
        }
        Value::Object(claims)
    }

    /// A valid access token per `spec`, signed with the current key.
    pub fn token(&self, spec: &TokenSpec) -> String {
        self.sign(&self.current_key(), spec, &self.claims(spec))
    }

    /// An ID token as Authentik issues it beside the access token: the same header,
    /// issuer, audience and profile claims, but no `azp`, `uid` or `scope`.
    pub fn id_token(&self, spec: &TokenSpec) -> String {
        let mut claims = self.claims(spec);
        if let Some(claims) = claims.as_object_mut() {
            for name in ["azp", "uid", "scope"] {
                claims.remove(name);
            }
            claims.insert("at_hash".into(), json!("x1b2c3d4e5f6g7h8i9j0kA"));
        }
        self.sign(&self.current_key(), spec, &claims)
    }

    /// `alg: none`, empty signature.
    pub fn token_alg_none(&self, spec: &TokenSpec) -> String {
        let header = json!({
            "alg": "none",
            "typ": "JWT",
            "kid": spec.kid.clone().unwrap_or_else(|| self.signing_kid()),
        });
        format!("{}.{}.", b64_json(&header), b64_json(&self.claims(spec)))
    }

    /// The classic key-confusion attack: HS256 with the RSA public key's PEM as the
    /// HMAC secret, naming the real `kid`. A verifier that takes `alg` from the token and
    /// feeds "the key" to HMAC accepts it.
    pub fn token_hs256_with_public_key(&self, spec: &TokenSpec) -> String {
        let key = self.current_key();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(spec.kid.clone().unwrap_or_else(|| key.kid.clone()));
        let secret = EncodingKey::from_secret(key.public_pem.as_bytes());
        jsonwebtoken::encode(&header, &self.claims(spec), &secret).expect("sign HS256")
    }

    /// A correctly signed token without `exp`.
    pub fn token_without_exp(&self, spec: &TokenSpec) -> String {
        let mut claims = self.claims(spec);
        if let Some(claims) = claims.as_object_mut() {
            claims.remove("exp");
        }
        self.sign(&self.current_key(), spec, &claims)
    }

    /// Signed with the current key, but naming a `kid` the JWKS does not have.
    pub fn token_with_unknown_kid(&self, spec: &TokenSpec) -> String {
        let spec = TokenSpec {
            kid: Some(format!("unknown-{}", uuid::Uuid::new_v4())),
            ..spec.clone()
        };
        self.sign(&self.current_key(), &spec, &self.claims(&spec))
    }

    /// Signed by a key the issuer never published, naming the current signing `kid`.
    pub fn token_signed_by_foreign_key(&self, spec: &TokenSpec) -> String {
        let existing = self.shared.lock().foreign.clone();
        let foreign = existing.unwrap_or_else(|| {
            let key = Arc::new(TestKey::generate("foreign"));
            self.shared.lock().foreign.get_or_insert(key).clone()
        });
        let spec = TokenSpec {
            kid: Some(spec.kid.clone().unwrap_or_else(|| self.signing_kid())),
            ..spec.clone()
        };
        self.sign(&foreign, &spec, &self.claims(&spec))
    }

    /// Signs arbitrary claims with the current key (header from `spec`: `kid`, `alg`).
    pub fn sign_claims(&self, spec: &TokenSpec, claims: &Value) -> String {
        self.sign(&self.current_key(), spec, claims)
    }

    fn current_key(&self) -> Arc<TestKey> {
        let state = self.shared.lock();
        state
            .keys
            .last()
            .cloned()
            .expect("the issuer always has a key")
    }

    fn sign(&self, key: &TestKey, spec: &TokenSpec, claims: &Value) -> String {
        let mut header = Header::new(spec.alg.unwrap_or(Algorithm::RS256));
        if let Some(typ) = &spec.typ {
            header.typ = Some(typ.clone());
        }
        if !spec.omit_kid {
            header.kid = Some(spec.kid.clone().unwrap_or_else(|| key.kid.clone()));
        }
        jsonwebtoken::encode(&header, claims, &key.encoding).expect("sign the test token")
    }
}

fn jwks_document(state: &IssuerState) -> Value {
    if state.empty_jwks {
        return json!({});
    }
    let published: Vec<&Jwk> = if state.publish_previous {
        state.keys.iter().map(|k| &k.jwk).collect()
    } else {
        state.keys.last().map(|k| &k.jwk).into_iter().collect()
    };
    json!({ "keys": published })
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Response {
    shared.discovery_fetches.fetch_add(1, Ordering::SeqCst);
    if shared.lock().down {
        return down();
    }
    let issuer = shared.issuer();
    let base = &shared.base;
    axum::Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{base}/application/o/authorize/"),
        "token_endpoint": format!("{base}/application/o/token/"),
        "userinfo_endpoint": format!("{base}/application/o/userinfo/"),
        "end_session_endpoint": format!("{issuer}end-session/"),
        "introspection_endpoint": format!("{base}/application/o/introspect/"),
        "revocation_endpoint": format!("{base}/application/o/revoke/"),
        "jwks_uri": format!("{issuer}jwks/"),
        "response_types_supported": ["code", "id_token", "id_token token", "code token", "code id_token", "code id_token token"],
        "grant_types_supported": ["authorization_code", "refresh_token", "implicit", "client_credentials", "password"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "subject_types_supported": ["public"],
        "scopes_supported": ["openid", "email", "profile"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "acr", "amr", "nonce", "email", "email_verified", "name", "given_name", "preferred_username", "nickname", "groups"],
        "code_challenge_methods_supported": ["plain", "S256"],
    }))
    .into_response()
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    shared.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let state = shared.lock();
    if state.down {
        return down();
    }
    axum::Json(jwks_document(&state)).into_response()
}

fn down() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONNECTION, "close")],
        "issuer down",
    )
        .into_response()
}

fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Stands in for Authentik's `uid` (a SHA-256 hex digest of the user id and install id):
/// 64 hex digits, stable per `sub`.
fn fake_uid(sub: &str) -> String {
    (0..4u8)
        .map(|round| {
            let mut hasher = DefaultHasher::new();
            (round, sub, "idsync-test-install").hash(&mut hasher);
            format!("{:016x}", hasher.finish())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn discovery_and_jwks_look_like_authentiks() {
        let issuer = TestIssuer::start().await;
        assert!(issuer.issuer().ends_with("/application/o/idsync/"));
        let http = http_get(&issuer.discovery_url()).await;
        assert_eq!(http["issuer"], issuer.issuer());
        assert_eq!(http["jwks_uri"], issuer.jwks_url());
        let jwks = http_get(&issuer.jwks_url()).await;
        assert_eq!(jwks["keys"][0]["kty"], "RSA");
        assert_eq!(jwks["keys"][0]["alg"], "RS256");
        assert_eq!(jwks["keys"][0]["use"], "sig");
        assert_eq!(jwks["keys"][0]["kid"], issuer.signing_kid());
        assert_eq!(issuer.jwks_fetches(), 1);
        assert_eq!(issuer.discovery_fetches(), 1);

        let old = issuer.signing_kid();
        let new = issuer.rotate();
        assert_ne!(old, new);
        assert_eq!(issuer.jwks()["keys"].as_array().map(Vec::len), Some(2));
        issuer.set_publish_previous_keys(false);
        assert_eq!(issuer.jwks()["keys"][0]["kid"], new);
        issuer.set_empty_jwks(true);
        assert_eq!(http_get(&issuer.jwks_url()).await, json!({}));
    }

    #[tokio::test]
    async fn tokens_carry_authentiks_claims() {
        let issuer = TestIssuer::start().await;
        let spec = TokenSpec::new().groups(["authentik Admins"]);
        let claims = issuer.claims(&spec);
        for name in [
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "azp",
            "uid",
            "scope",
            "email",
            "preferred_username",
            "name",
            "groups",
        ] {
            assert!(claims.get(name).is_some(), "{name}");
        }
        assert_eq!(claims["aud"], CLIENT_ID);
        assert_eq!(claims["uid"].as_str().map(str::len), Some(64));
        let token = issuer.token(&spec);
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(header.kid, Some(issuer.signing_kid()));
        assert!(issuer.token_alg_none(&spec).ends_with('.'));
        let hs = jsonwebtoken::decode_header(issuer.token_hs256_with_public_key(&spec))
            .expect("HS256 header");
        assert_eq!(hs.alg, Algorithm::HS256);
        assert!(
            !issuer
                .claims(&TokenSpec::new().without_sub())
                .as_object()
                .is_some_and(|c| c.contains_key("sub"))
        );
    }

    /// A minimal HTTP GET over a raw socket, so the testkit needs no HTTP client.
    async fn http_get(url: &str) -> Value {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rest = url.strip_prefix("http://").expect("http URL");
        let (host, path) = rest.split_once('/').expect("path");
        let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
        let request = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        let (_, body) = response.split_once("\r\n\r\n").expect("body");
        serde_json::from_str(body).expect("JSON body")
    }
}
