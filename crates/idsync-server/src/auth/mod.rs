//! Who is calling: bearer tokens verified by `idsync-oidc`, mapped to a user of the read
//! model, with the admin flag from the token's `groups`. [`Identifier`] is the one
//! identification path (bearer, ticket, gateway); [`AuthUser`] is its extractor for
//! handlers that need a caller.

pub(crate) mod gateway;
mod identify;
pub(crate) mod tickets;

pub(crate) use identify::{Accepts, Identifier};

use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use clap::ValueEnum;
use idsync_oidc::{Claims, Verifier, VerifyError};
use idsync_store::UserPk;
use idsync_store::projections::users::{self, SubjectColumn};
use sqlx::PgPool;

use crate::ApiError;

/// How a caller was identified (the WebSocket `hello` reports it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    Bearer,
    Ticket,
    Gateway,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Bearer => "bearer",
            Via::Ticket => "ticket",
            Via::Gateway => "gateway",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub claims: Claims,
    /// The caller's pk in the read model, when their user is known (synced).
    pub user_pk: Option<UserPk>,
    pub is_admin: bool,
    pub via: Via,
}

impl Caller {
    /// How long the caller's credential stays valid: a stream or socket ends then.
    /// Capped at a year (a gateway identity has no expiry of its own).
    pub fn expires_in(&self) -> Duration {
        let seconds = self
            .claims
            .exp
            .saturating_sub(chrono::Utc::now().timestamp());
        Duration::from_secs(u64::try_from(seconds).unwrap_or(0).min(365 * 24 * 3600))
    }

    /// Admins may read anyone; others only themselves.
    pub fn may_read(&self, pk: UserPk) -> bool {
        self.is_admin || self.user_pk == Some(pk)
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "this needs membership of the admin group".to_owned(),
            ))
        }
    }

    pub fn require_read(&self, pk: UserPk) -> Result<(), ApiError> {
        if self.may_read(pk) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "only admins may read other users".to_owned(),
            ))
        }
    }
}

/// Token verification settings shared by every request.
pub struct Auth {
    pub verifier: Option<Verifier>,
    pub subject: SubjectField,
    pub admin_group: String,
}

impl Auth {
    /// Verify a raw token and resolve the caller.
    pub async fn authenticate(
        &self,
        pool: &PgPool,
        token: &str,
        via: Via,
    ) -> Result<Caller, ApiError> {
        let Some(verifier) = &self.verifier else {
            return Err(ApiError::OidcNotConfigured);
        };
        let claims = verifier.verify(token).await.map_err(|e| match e {
            VerifyError::Invalid(detail) => ApiError::InvalidToken(detail),
            VerifyError::Unavailable(detail) => {
                tracing::warn!(%detail, "cannot verify tokens: issuer unavailable");
                ApiError::AuthUnavailable(detail)
            }
            VerifyError::Misconfigured(detail) => {
                tracing::error!(%detail, "cannot verify tokens: OIDC misconfigured");
                ApiError::AuthUnavailable(detail)
            }
        })?;
        let user_pk = self.resolve(pool, &claims).await?;
        Ok(self.caller(claims, user_pk, via))
    }

    /// The one place a caller's admin flag is decided.
    pub fn caller(&self, claims: Claims, user_pk: Option<UserPk>, via: Via) -> Caller {
        let is_admin = claims.groups.iter().any(|g| g == &self.admin_group);
        Caller {
            claims,
            user_pk,
            is_admin,
            via,
        }
    }

    /// The caller's pk, from `sub` per IDSYNC_OIDC_SUBJECT.
    pub async fn resolve(
        &self,
        pool: &PgPool,
        claims: &Claims,
    ) -> Result<Option<UserPk>, ApiError> {
        let sub = claims.sub.as_str();
        let pk = match self.subject.column() {
            // sub_mode user_id: sub is the pk itself, no lookup needed.
            None => sub.parse::<i64>().ok().filter(|pk| *pk > 0),
            Some(column) => users::pk_by(pool, column, sub).await?,
        };
        Ok(pk.map(UserPk))
    }
}

/// How many synced users the configured subject field can find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SubjectCoverage {
    /// Users not deleted.
    pub users: i64,
    /// Of those, how many have the field (`uid` is missing before reconcile fills it).
    pub resolvable: i64,
}

impl SubjectCoverage {
    /// Why no caller can be resolved, when that is so: users exist but none has the
    /// field. `None` when all is well (or there is nobody yet).
    pub(crate) fn verdict(self, field: SubjectField) -> Option<String> {
        (self.users > 0 && self.resolvable == 0).then(|| {
            let fix = match field {
                SubjectField::Uid => "run `idsync reconcile` once to fill in Authentik's uid for users synced before idsync kept it",
                _ => "check that IDSYNC_OIDC_SUBJECT matches the provider's sub_mode",
            };
            format!(
                "IDSYNC_OIDC_SUBJECT={}: none of the {} synced users has that field, so no caller can be resolved and /api/me answers 404: {fix}",
                field.name(),
                self.users
            )
        })
    }
}

/// [`SubjectCoverage`] of `field` in the read model.
pub(crate) async fn subject_coverage(
    pool: &PgPool,
    field: SubjectField,
) -> Result<SubjectCoverage, idsync_store::StoreError> {
    let (users, resolvable) = users::column_coverage(pool, field.column()).await?;
    Ok(SubjectCoverage { users, resolvable })
}

/// `Authorization: Bearer <token>`.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Tokens in URLs end up in logs and browser history (docs/contract.md, "Live feeds"): refuse them outright
/// rather than silently ignoring them.
pub(crate) fn token_in_url(uri: &axum::http::Uri) -> bool {
    uri.query().is_some_and(|q| {
        q.split('&').any(|kv| {
            matches!(
                kv.split('=').next(),
                Some("access_token" | "token" | "id_token")
            )
        })
    })
}

/// A caller with a valid bearer token; 401 (or 503 without OIDC) otherwise.
pub(crate) struct AuthUser(pub Caller);

impl<S> FromRequestParts<S> for AuthUser
where
    Identifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Identifier::from_ref(state)
            .require(&parts.uri, &parts.headers, None, Accepts::BEARER)
            .await
            .map(AuthUser)
    }
}

/// `IDSYNC_OIDC_SUBJECT`: which field of a user a token's `sub` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SubjectField {
    Pk,
    Uuid,
    Uid,
    Username,
    Email,
}

impl SubjectField {
    /// The value as IDSYNC_OIDC_SUBJECT spells it.
    pub fn name(self) -> &'static str {
        match self {
            SubjectField::Pk => "pk",
            SubjectField::Uuid => "uuid",
            SubjectField::Uid => "uid",
            SubjectField::Username => "username",
            SubjectField::Email => "email",
        }
    }

    /// The read model's column holding it; `None` for the pk itself.
    pub fn column(self) -> Option<SubjectColumn> {
        match self {
            SubjectField::Pk => None,
            SubjectField::Uuid => Some(SubjectColumn::Uuid),
            SubjectField::Uid => Some(SubjectColumn::Uid),
            SubjectField::Username => Some(SubjectColumn::Username),
            SubjectField::Email => Some(SubjectColumn::Email),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_header_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc.def"),
        );
        assert_eq!(bearer(&h), Some("abc.def"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer   x"),
        );
        assert_eq!(bearer(&h), Some("x"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }
}
