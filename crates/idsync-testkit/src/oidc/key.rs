//! The issuer's signing keys.

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey};
use rsa::RsaPrivateKey;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};

/// An RSA-2048 signing key with its `kid`.
pub struct TestKey {
    pub(super) kid: String,
    pub(super) encoding: EncodingKey,
    pub(super) jwk: Jwk,
    pub(super) public_pem: String,
    private_pem: String,
}

impl std::fmt::Debug for TestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl TestKey {
    /// Generates a fresh key (milliseconds: the root manifest optimises `rsa` and
    /// `num-bigint-dig` in dev builds).
    ///
    /// # Panics
    ///
    /// When the OS random source or the encoders fail (test support).
    pub fn generate(kid: impl Into<String>) -> Self {
        let private =
            RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("generate an RSA-2048 key");
        Self::from_private(kid.into(), &private)
    }

    /// A key kept in PKCS#1 PEM (`-----BEGIN RSA PRIVATE KEY-----`), as
    /// [`private_key_pem`](Self::private_key_pem) writes it: a local issuer that keeps its
    /// key across restarts keeps its tokens valid.
    ///
    /// # Errors
    ///
    /// When the PEM is not an RSA private key.
    pub fn from_private_key_pem(kid: impl Into<String>, pem: &str) -> Result<Self, String> {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        let private = RsaPrivateKey::from_pkcs1_pem(pem).map_err(|e| e.to_string())?;
        Ok(Self::from_private(kid.into(), &private))
    }

    /// The private key in PKCS#1 PEM.
    pub fn private_key_pem(&self) -> String {
        self.private_pem.clone()
    }

    fn from_private(kid: String, private: &RsaPrivateKey) -> Self {
        let private_pem = private
            .to_pkcs1_pem(LineEnding::LF)
            .expect("PEM of the RSA key")
            .to_string();
        let der = private.to_pkcs1_der().expect("PKCS#1 DER of the RSA key");
        let encoding = EncodingKey::from_rsa_der(der.as_bytes());
        let mut jwk =
            Jwk::from_encoding_key(&encoding, Algorithm::RS256).expect("JWK of the RSA key");
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let public_pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("PEM of the public key");
        Self {
            kid,
            encoding,
            jwk,
            public_pem,
            private_pem,
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as published: `kty RSA`, `alg RS256`, `use sig`, `kid`, `n`, `e`.
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    pub fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }

    /// `-----BEGIN PUBLIC KEY-----` (SPKI): what an attacker keys HS256 with.
    pub fn public_key_pem(&self) -> &str {
        &self.public_pem
    }
}
