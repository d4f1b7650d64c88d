//! Test support for idsync; a dev-dependency only.
//!
//! - [`authentik`]: a local stand-in for Authentik's users API with fault injection
//!   ([`authentik::AuthentikStub`]), and real-shaped user JSON
//!   ([`authentik::fixtures`]).
//! - [`oidc`]: a local OIDC issuer shaped like an Authentik provider (discovery, JWKS,
//!   key rotation, outages) that mints Authentik-shaped access tokens and attack tokens.
//! - [`reference`]: the vendored reference files (Authentik's `schema.yml` and blueprint
//!   schema, the Compose Specification's schema).
//! - [`tools`]: external programs the tests run (the project's Python environment).
//! - [`schema`]: validates JSON against a component of an OpenAPI 3.0 document, so the
//!   fixtures and the stub can be checked against what Authentik documents.

pub mod authentik;
pub mod oidc;
pub mod reference;
pub mod schema;
pub mod tools;
