//! The JWT header, read by this crate before any key is looked up: size, shape, `crit`,
//! `typ` (RFC 8725 §3.11, RFC 9068) and `alg` (never `none` or `HS*`).

use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;

use crate::{MAX_TOKEN_LEN, VerifyError, invalid, short};

/// What the token header says, read by this crate rather than trusted to the library, so
/// `none`/`HS*` are refused before any key is looked up.
pub(crate) struct TokenHeader {
    pub(crate) alg: Algorithm,
    pub(crate) kid: Option<String>,
}

pub(crate) fn parse_header(token: &str) -> Result<TokenHeader, VerifyError> {
    #[derive(Deserialize)]
    struct RawHeader {
        alg: String,
        kid: Option<String>,
        typ: Option<String>,
        crit: Option<serde_json::Value>,
    }

    if token.len() > MAX_TOKEN_LEN {
        return Err(invalid(format!("longer than {MAX_TOKEN_LEN} bytes")));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(
            "not a signed JWT (expected three dot-separated parts)",
        ));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| invalid("header is not base64url"))?;
    let raw: RawHeader = serde_json::from_slice(&bytes)
        .map_err(|_| invalid("header is not a JSON object with a string `alg`"))?;
    // RFC 7515 §4.1.11: extensions marked critical must be understood; none are here.
    if raw.crit.is_some() {
        return Err(invalid(
            "header has critical extensions (crit), none are supported",
        ));
    }
    // RFC 8725 §3.11 / RFC 9068 §2.1: explicit typing keeps other JWTs (logout tokens,
    // signed requests...) from being taken for access tokens. Authentik writes `JWT`,
    // RFC 9068 issuers `at+jwt`; media types compare case-insensitively.
    if let Some(typ) = &raw.typ {
        let typ = typ.to_ascii_lowercase();
        let typ = typ.strip_prefix("application/").unwrap_or(&typ);
        if typ != "jwt" && typ != "at+jwt" {
            return Err(invalid(format!(
                "typ {:?} is not an access token type (JWT or at+jwt)",
                short(&raw.typ.unwrap_or_default(), 32)
            )));
        }
    }
    if raw.alg.eq_ignore_ascii_case("none") {
        return Err(invalid("unsigned tokens (alg none) are never accepted"));
    }
    let alg = Algorithm::from_str(&raw.alg)
        .map_err(|_| invalid(format!("unsupported alg {:?}", short(&raw.alg, 16))))?;
    if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
        return Err(invalid(
            "HMAC-signed tokens (HS256/384/512) are never accepted: the issuer must sign with its private key",
        ));
    }
    Ok(TokenHeader { alg, kid: raw.kid })
}
