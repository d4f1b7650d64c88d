//! One way to find out who is calling, for the API, the SSE feed and the WebSocket. In
//! order: a bearer token, a stream ticket, then a trusted gateway's headers; each entry
//! point says which of these it takes ([`Accepts`]). What differs between them is only
//! what they do with a refusal: the API and SSE answer 401, the WebSocket reports it
//! in-protocol (a browser cannot see why a handshake failed).

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, Uri};
use sqlx::PgPool;

use super::gateway::{self, TrustedProxies};
use super::{Auth, Caller, Via, bearer, tickets, token_in_url};
use crate::ApiError;

/// What identifying a caller needs; a sub-state of the router's state.
#[derive(Clone)]
pub struct Identifier {
    pub auth: Arc<Auth>,
    pub pool: PgPool,
    pub trusted_proxies: Arc<TrustedProxies>,
}

/// The credentials an entry point takes, besides a bearer token (always taken).
#[derive(Debug, Clone, Copy)]
pub struct Accepts {
    /// A stream ticket (`?ticket=`), for browsers' `EventSource` and `WebSocket`.
    pub ticket: bool,
    /// `X-Access-Token` / `X-Userinfo` from a trusted proxy.
    pub gateway: bool,
}

impl Accepts {
    pub const BEARER: Accepts = Accepts {
        ticket: false,
        gateway: false,
    };
    pub const BEARER_OR_TICKET: Accepts = Accepts {
        ticket: true,
        gateway: false,
    };
    pub const ANY: Accepts = Accepts {
        ticket: true,
        gateway: true,
    };
}

/// A credential that was presented and refused.
#[derive(Debug)]
pub struct Refused {
    /// `invalid_token` or `invalid_ticket`: the WebSocket's error code.
    pub code: &'static str,
    pub error: ApiError,
}

impl Identifier {
    /// Who presented what, if anyone. `Ok(None)`: nothing was presented (gateway headers
    /// from a peer that is not a trusted proxy count as nothing, with a warning).
    pub async fn identify(
        &self,
        headers: &HeaderMap,
        ticket: Option<&str>,
        peer: Option<IpAddr>,
        accepts: Accepts,
    ) -> Result<Option<Caller>, Refused> {
        if let Some(token) = bearer(headers) {
            return self.token(token, Via::Bearer).await;
        }
        if accepts.ticket
            && let Some(ticket) = ticket
        {
            return tickets::redeem(&self.pool, ticket)
                .await
                .map(Some)
                .map_err(|error| Refused {
                    code: "invalid_ticket",
                    error,
                });
        }
        if !accepts.gateway {
            return Ok(None);
        }
        let access_token = header(headers, "x-access-token");
        let userinfo = header(headers, "x-userinfo");
        if access_token.is_none() && userinfo.is_none() {
            return Ok(None);
        }
        let Some(peer) = peer.filter(|p| self.trusted_proxies.contains(*p)) else {
            tracing::warn!(
                peer = ?peer,
                "ignoring gateway identity headers from a peer not in IDSYNC_TRUSTED_PROXIES"
            );
            return Ok(None);
        };
        // The gateway's access token is proof; its userinfo is only a claim.
        if let Some(token) = access_token {
            return self.token(token, Via::Gateway).await;
        }
        let claims = userinfo
            .and_then(gateway::decode_userinfo)
            .and_then(|info| gateway::gateway_claims(&info));
        let Some(claims) = claims else {
            tracing::warn!(%peer, "undecodable X-Userinfo from the gateway; treating the caller as anonymous");
            return Ok(None);
        };
        let user_pk = self.auth.resolve(&self.pool, &claims).await.ok().flatten();
        Ok(Some(self.auth.caller(claims, user_pk, Via::Gateway)))
    }

    async fn token(&self, token: &str, via: Via) -> Result<Option<Caller>, Refused> {
        self.auth
            .authenticate(&self.pool, token, via)
            .await
            .map(Some)
            .map_err(|error| Refused {
                code: "invalid_token",
                error,
            })
    }

    /// A caller, or the error an HTTP answer gives: for endpoints that need one.
    pub async fn require(
        &self,
        uri: &Uri,
        headers: &HeaderMap,
        ticket: Option<&str>,
        accepts: Accepts,
    ) -> Result<Caller, ApiError> {
        if self.auth.verifier.is_none() {
            return Err(ApiError::OidcNotConfigured);
        }
        if token_in_url(uri) {
            return Err(ApiError::TokenInUrl);
        }
        match self.identify(headers, ticket, None, accepts).await {
            Ok(Some(caller)) => Ok(caller),
            Ok(None) => Err(ApiError::MissingToken),
            Err(refused) => Err(refused.error),
        }
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}
