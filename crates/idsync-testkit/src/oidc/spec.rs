//! What goes into a token the issuer mints.

use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

/// What goes into a token. `Default` is a valid token for user pk 7 ("jane"); the
/// builder methods change one thing each.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenSpec {
    /// `None` leaves `sub` out.
    pub sub: Option<String>,
    pub groups: Vec<String>,
    pub preferred_username: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    /// `exp` relative to now, in seconds; `None` leaves `exp` out.
    pub exp_offset: Option<i64>,
    /// `nbf` relative to now, in seconds; `None` (default) leaves it out, as Authentik does.
    pub nbf_offset: Option<i64>,
    /// Replaces `iss` (default: the issuer).
    pub iss: Option<String>,
    /// Replaces `aud` (default: the client id); any JSON, e.g. an array.
    pub aud: Option<Value>,
    /// Replaces the header `kid` (default: the current signing key's).
    pub kid: Option<String>,
    /// Leaves `kid` out of the header.
    pub omit_kid: bool,
    /// Replaces the header `alg` (default RS256; must suit an RSA key for [`TestIssuer::token`]).
    pub alg: Option<Algorithm>,
    /// Replaces the header `typ` (default `JWT`, as Authentik writes; RFC 9068 issuers
    /// write `at+jwt`).
    pub typ: Option<String>,
    /// Added last, so they may replace any claim.
    pub extra: Map<String, Value>,
}

impl Default for TokenSpec {
    fn default() -> Self {
        Self {
            sub: Some("7".into()),
            groups: Vec::new(),
            preferred_username: Some("jane".into()),
            email: Some("jane@example.org".into()),
            name: Some("Jane Doe".into()),
            exp_offset: Some(300),
            nbf_offset: None,
            iss: None,
            aud: None,
            kid: None,
            omit_kid: false,
            alg: None,
            typ: None,
            extra: Map::new(),
        }
    }
}

impl TokenSpec {
    pub fn new() -> Self {
        Self::default()
    }

    /// Named after the claim; not `std::ops::Sub`.
    #[allow(clippy::should_implement_trait)]
    pub fn sub(mut self, sub: impl Into<String>) -> Self {
        self.sub = Some(sub.into());
        self
    }

    pub fn without_sub(mut self) -> Self {
        self.sub = None;
        self
    }

    pub fn groups<S: Into<String>>(mut self, groups: impl IntoIterator<Item = S>) -> Self {
        self.groups = groups.into_iter().map(Into::into).collect();
        self
    }

    pub fn preferred_username(mut self, username: impl Into<String>) -> Self {
        self.preferred_username = Some(username.into());
        self
    }

    pub fn email(mut self, email: impl Into<String>) -> Self {
        self.email = Some(email.into());
        self
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// `exp` = now + `seconds` (negative: already expired).
    pub fn exp_in(mut self, seconds: i64) -> Self {
        self.exp_offset = Some(seconds);
        self
    }

    /// `nbf` = now + `seconds`.
    pub fn nbf_in(mut self, seconds: i64) -> Self {
        self.nbf_offset = Some(seconds);
        self
    }

    pub fn iss(mut self, iss: impl Into<String>) -> Self {
        self.iss = Some(iss.into());
        self
    }

    pub fn aud(mut self, aud: impl Into<Value>) -> Self {
        self.aud = Some(aud.into());
        self
    }

    pub fn kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    pub fn without_kid(mut self) -> Self {
        self.omit_kid = true;
        self
    }

    pub fn alg(mut self, alg: Algorithm) -> Self {
        self.alg = Some(alg);
        self
    }

    /// The header's `typ` (default `JWT`).
    pub fn typ(mut self, typ: impl Into<String>) -> Self {
        self.typ = Some(typ.into());
        self
    }

    pub fn claim(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extra.insert(name.into(), value.into());
        self
    }
}
