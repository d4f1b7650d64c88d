//! What a verified token says: its claims, as Authentik writes them.

use serde::{Deserialize, Serialize};

/// `aud`: one string or an array of them (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn contains(&self, audience: &str) -> bool {
        self.iter().any(|a| a == audience)
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let items: &[String] = match self {
            Self::One(one) => std::slice::from_ref(one),
            Self::Many(many) => many,
        };
        items.iter().map(String::as_str)
    }
}

/// The claims of a verified Authentik access token: the ID-token claims plus `azp`,
/// `uid` and `scope`. `email`, `name`, `preferred_username` and `groups` are present only
/// when the provider's property mappings include their scopes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Audience,
    pub exp: i64,
    pub iat: Option<i64>,
    pub nbf: Option<i64>,
    pub auth_time: Option<i64>,
    pub azp: Option<String>,
    pub uid: Option<String>,
    pub scope: Option<String>,
    pub email: Option<String>,
    pub preferred_username: Option<String>,
    pub name: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

impl Claims {
    /// Whether `scope` (space-separated) contains `wanted`.
    pub fn has_scope(&self, wanted: &str) -> bool {
        self.scope
            .as_deref()
            .is_some_and(|scope| scope.split_ascii_whitespace().any(|s| s == wanted))
    }
}
