//! The issuer's JWKS: which entries are usable, which algorithms each allows, and key
//! lookup by `kid`.

use std::sync::Arc;
use std::time::Instant;

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind};
use serde::Deserialize;

use crate::{EMPTY_JWKS_MESSAGE, VerifyError, invalid, short};

/// RSA keys shorter than this are ignored (NIST SP 800-131A; Authentik generates 4096).
const MIN_RSA_BITS: usize = 2048;

/// One usable verification key.
pub(crate) struct VerifyKey {
    pub(crate) kid: Option<String>,
    /// What a token signed with this key may say in `alg`: the JWK's `alg` when it has
    /// one, else every algorithm of its key type (RFC 8725 §3.1: from the key, never from
    /// the token).
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) key: DecodingKey,
    label: String,
}

/// The keys of one JWKS fetch.
pub(crate) struct ParsedKeys {
    keys: Vec<Arc<VerifyKey>>,
    ignored: Vec<String>,
    source: String,
}

impl ParsedKeys {
    pub(crate) fn into_set(self, generation: u64) -> KeySet {
        KeySet {
            keys: self.keys,
            ignored: self.ignored,
            source: self.source,
            fetched_at: Instant::now(),
            generation,
        }
    }
}

pub(crate) struct KeySet {
    keys: Vec<Arc<VerifyKey>>,
    /// Why entries were skipped (for logs and `idsync check`).
    pub(crate) ignored: Vec<String>,
    /// The JWKS URL.
    source: String,
    pub(crate) fetched_at: Instant,
    /// Increases with every successful fetch; tells a waiting task that someone else has
    /// refreshed meanwhile.
    pub(crate) generation: u64,
}

pub(crate) enum Lookup {
    Found(Arc<VerifyKey>),
    NotFound,
    AlgMismatch,
    Ambiguous,
}

impl Lookup {
    pub(crate) fn into_error(self, kid: Option<&str>) -> VerifyError {
        match (self, kid) {
            (Self::NotFound, Some(kid)) => invalid(format!(
                "no key with kid {:?} in the issuer's JWKS",
                short(kid, 64)
            )),
            (Self::NotFound, None) => invalid("no kid, and no issuer key fits the token's alg"),
            (Self::AlgMismatch, _) => invalid("the token's alg is not the one its key is for"),
            (Self::Ambiguous, _) => {
                invalid("no kid, and the issuer publishes several keys for the token's alg")
            }
            (Self::Found(_), _) => invalid("internal: key found"),
        }
    }
}

impl KeySet {
    /// The key for a token: by `kid` only; without a `kid`, the single key that allows
    /// `alg`, if there is exactly one.
    pub(crate) fn find(&self, kid: Option<&str>, alg: Algorithm) -> Lookup {
        match kid {
            Some(kid) => {
                let mut with_kid = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .peekable();
                if with_kid.peek().is_none() {
                    return Lookup::NotFound;
                }
                with_kid
                    .find(|k| k.algorithms.contains(&alg))
                    .map_or(Lookup::AlgMismatch, |k| Lookup::Found(k.clone()))
            }
            None => {
                let mut fitting = self.keys.iter().filter(|k| k.algorithms.contains(&alg));
                match (fitting.next(), fitting.next()) {
                    (Some(key), None) => Lookup::Found(key.clone()),
                    (None, _) => Lookup::NotFound,
                    (Some(_), Some(_)) => Lookup::Ambiguous,
                }
            }
        }
    }

    /// `"2 keys (RS256, RS256) from <jwks_uri>"`, plus what was ignored.
    pub(crate) fn describe(&self) -> String {
        let labels: Vec<&str> = self.keys.iter().map(|k| k.label.as_str()).collect();
        let mut text = format!(
            "{} key{} ({}) from {}",
            labels.len(),
            if labels.len() == 1 { "" } else { "s" },
            labels.join(", "),
            self.source
        );
        if !self.ignored.is_empty() {
            text.push_str(&format!("; ignored: {}", self.ignored.join("; ")));
        }
        text
    }
}

/// Parses a JWKS body. A missing or empty `keys` array (Authentik's `{}`) and a JWKS with
/// no usable key are configuration errors.
pub(crate) fn parse_jwks(body: &[u8], source: &str) -> Result<ParsedKeys, VerifyError> {
    #[derive(Deserialize)]
    struct RawJwks {
        keys: Option<Vec<serde_json::Value>>,
    }
    let raw: RawJwks = serde_json::from_slice(body).map_err(|error| {
        VerifyError::Misconfigured(format!(
            "the JWKS at {source} is not a JSON object: {error}"
        ))
    })?;
    let entries = match raw.keys {
        Some(entries) if !entries.is_empty() => entries,
        _ => return Err(VerifyError::Misconfigured(EMPTY_JWKS_MESSAGE.to_owned())),
    };
    let mut keys = Vec::new();
    let mut ignored = Vec::new();
    // Each entry on its own: one odd key (an encryption key, a P-521 key...) must not
    // make the others unusable.
    for entry in entries {
        let kid = entry
            .get("kid")
            .and_then(|kid| kid.as_str())
            .map(|kid| short(kid, 64));
        match usable_key(entry) {
            Ok(key) => keys.push(Arc::new(key)),
            Err(why) => ignored.push(match kid {
                Some(kid) => format!("key {kid:?}: {why}"),
                None => format!("key without kid: {why}"),
            }),
        }
    }
    if keys.is_empty() {
        return Err(VerifyError::Misconfigured(format!(
            "the issuer's JWKS at {source} has no usable signing key ({})",
            ignored.join("; ")
        )));
    }
    Ok(ParsedKeys {
        keys,
        ignored,
        source: source.to_owned(),
    })
}

fn usable_key(entry: serde_json::Value) -> Result<VerifyKey, String> {
    let jwk: Jwk = serde_json::from_value(entry).map_err(|_| "not a JWK".to_owned())?;
    if let Some(usage) = &jwk.common.public_key_use
        && *usage != PublicKeyUse::Signature
    {
        return Err("not a signature key (use)".into());
    }
    if let Some(operations) = &jwk.common.key_operations
        && !operations.contains(&KeyOperations::Verify)
    {
        return Err("key_ops does not include verify".into());
    }
    let by_type: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa.algorithms(),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => return Err("unsupported EC curve".into()),
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
            _ => return Err("unsupported OKP curve".into()),
        },
        // A symmetric key in a JWKS would make HS* verifiable with a published secret.
        AlgorithmParameters::OctetKey(_) => return Err("symmetric (oct) key".into()),
        _ => return Err("unsupported key type".into()),
    };
    let algorithms = match jwk.common.key_algorithm {
        None => by_type.to_vec(),
        Some(declared) => match signature_algorithm(declared) {
            Some(alg) if by_type.contains(&alg) => vec![alg],
            Some(_) => return Err("alg does not fit the key type".into()),
            None => return Err("alg is not an asymmetric signature algorithm".into()),
        },
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| "malformed key parameters".to_owned())?;
    if let DecodingKeyKind::RsaModulusExponent { n, .. } = key.kind() {
        let bits = modulus_bits(n);
        if bits < MIN_RSA_BITS {
            return Err(format!("RSA key of {bits} bits, fewer than {MIN_RSA_BITS}"));
        }
    }
    let label = match jwk.common.key_algorithm {
        Some(_) => format!("{:?}", algorithms[0]),
        None => match key.family() {
            AlgorithmFamily::Rsa => "RSA".to_owned(),
            _ => format!("{:?}", algorithms[0]),
        },
    };
    Ok(VerifyKey {
        kid: jwk.common.key_id,
        algorithms,
        key,
        label,
    })
}

/// The JWS algorithm a JWK's `alg` names, if it is one accepted here (asymmetric only).
fn signature_algorithm(declared: KeyAlgorithm) -> Option<Algorithm> {
    Some(match declared {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Significant bits of a big-endian unsigned integer.
fn modulus_bits(n: &[u8]) -> usize {
    match n.iter().position(|&byte| byte != 0) {
        Some(first) => (n.len() - first) * 8 - n[first].leading_zeros() as usize,
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> Result<ParsedKeys, VerifyError> {
        parse_jwks(json.to_string().as_bytes(), "http://issuer/jwks/")
    }

    fn rsa_jwk(kid: &str) -> serde_json::Value {
        let key = idsync_testkit::oidc::TestKey::generate(kid);
        serde_json::to_value(key.jwk()).expect("JWK to JSON")
    }

    #[test]
    fn authentiks_empty_jwks_is_a_configuration_error() {
        for body in [serde_json::json!({}), serde_json::json!({"keys": []})] {
            match parse(body) {
                Err(VerifyError::Misconfigured(why)) => assert_eq!(why, EMPTY_JWKS_MESSAGE),
                _ => panic!("expected Misconfigured"),
            }
        }
        assert!(matches!(
            parse_jwks(b"<html>", "u"),
            Err(VerifyError::Misconfigured(_))
        ));
    }

    #[test]
    fn symmetric_encryption_and_unknown_keys_are_ignored() {
        let mut enc = rsa_jwk("enc");
        enc["use"] = "enc".into();
        let mut hs = rsa_jwk("hs");
        hs["alg"] = "HS256".into();
        let jwks = serde_json::json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "oct"},
            enc,
            hs,
            {"kty": "XYZ", "kid": "weird"},
            rsa_jwk("good"),
        ]});
        let set = parse(jwks).expect("one usable key").into_set(1);
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.ignored.len(), 4, "{:?}", set.ignored);
        assert!(matches!(
            set.find(Some("good"), Algorithm::RS256),
            Lookup::Found(_)
        ));
        assert!(matches!(
            set.find(Some("oct"), Algorithm::RS256),
            Lookup::NotFound
        ));
        // The JWK says RS256, so a PS256 token naming it is refused.
        assert!(matches!(
            set.find(Some("good"), Algorithm::PS256),
            Lookup::AlgMismatch
        ));
        // No kid and a single fitting key: that key.
        assert!(matches!(set.find(None, Algorithm::RS256), Lookup::Found(_)));
        assert!(
            set.describe()
                .starts_with("1 key (RS256) from http://issuer/jwks/")
        );

        let only_oct = serde_json::json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]});
        assert!(matches!(
            parse(only_oct),
            Err(VerifyError::Misconfigured(_))
        ));
    }

    #[test]
    fn without_alg_the_key_type_decides_and_no_kid_with_two_keys_is_ambiguous() {
        let mut a = rsa_jwk("a");
        a.as_object_mut().map(|o| o.remove("alg"));
        let b = rsa_jwk("b");
        let set = parse(serde_json::json!({"keys": [a, b]}))
            .expect("keys")
            .into_set(1);
        assert!(matches!(
            set.find(Some("a"), Algorithm::PS512),
            Lookup::Found(_)
        ));
        assert!(matches!(
            set.find(Some("a"), Algorithm::ES256),
            Lookup::AlgMismatch
        ));
        assert!(matches!(
            set.find(None, Algorithm::RS256),
            Lookup::Ambiguous
        ));
        assert!(matches!(set.find(None, Algorithm::PS512), Lookup::Found(_)));
    }

    #[test]
    fn short_rsa_keys_are_ignored() {
        assert_eq!(modulus_bits(&[0, 0x01, 0xff]), 9);
        assert_eq!(modulus_bits(&[0x80; 256]), 2048);
        assert_eq!(modulus_bits(&[]), 0);
        let small =
            serde_json::json!({"keys": [{"kty": "RSA", "kid": "s", "n": "AQAB", "e": "AQAB"}]});
        match parse(small) {
            Err(VerifyError::Misconfigured(why)) => assert!(why.contains("17 bits"), "{why}"),
            _ => panic!("expected Misconfigured"),
        }
    }
}
