//! The reference files of the systems idsync talks to, vendored into the repository so
//! that every test runs from a clone with nothing beside it:
//!
//! - `authentik/reference/<version>/`: Authentik's OpenAPI `schema.yml`, its blueprint
//!   JSON schema and some of the blueprints it ships (see the README there for where
//!   they came from);
//! - `docs/reference/compose/compose-spec.json`: the Compose Specification's JSON schema.
//!
//! A missing or unparsable file is a broken checkout, and the test that reads it fails.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

/// The Authentik release the vendored files come from (and the blueprints target).
pub const AUTHENTIK_VERSION: &str = "2026.2.2";

/// The repository's root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/idsync-testkit sits two levels below the repository root")
        .to_path_buf()
}

/// `authentik/reference/<AUTHENTIK_VERSION>/`.
pub fn authentik_dir() -> PathBuf {
    repo_root()
        .join("authentik")
        .join("reference")
        .join(AUTHENTIK_VERSION)
}

/// `authentik/reference/<version>/schema.yml`.
pub fn authentik_schema_path() -> PathBuf {
    authentik_dir().join("schema.yml")
}

/// `authentik/reference/<version>/blueprints-schema.json`.
pub fn blueprints_schema_path() -> PathBuf {
    authentik_dir().join("blueprints-schema.json")
}

/// `docs/reference/compose/compose-spec.json`.
pub fn compose_spec_path() -> PathBuf {
    repo_root()
        .join("docs")
        .join("reference")
        .join("compose")
        .join("compose-spec.json")
}

/// Authentik's OpenAPI document (`schema.yml`) as JSON, parsed once per process.
///
/// # Panics
///
/// When the file cannot be read or parsed: the checkout is broken.
pub fn authentik_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let path = authentik_schema_path();
        let text = read(&path);
        crate::schema::parse_yaml(&text)
            .unwrap_or_else(|e| panic!("cannot parse {}: {e}", path.display()))
    })
}

/// A vendored JSON file (the blueprint schema, the compose spec), parsed.
///
/// # Panics
///
/// When the file cannot be read or parsed.
pub fn json_file(path: &Path) -> Value {
    serde_json::from_str(&read(path))
        .unwrap_or_else(|e| panic!("cannot parse {}: {e}", path.display()))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "cannot read the vendored reference file {}: {e}",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_vendored_file_is_present() {
        for path in [
            authentik_schema_path(),
            blueprints_schema_path(),
            compose_spec_path(),
        ] {
            assert!(path.is_file(), "{} is missing", path.display());
        }
        assert_eq!(
            authentik_schema()["info"]["version"].as_str(),
            Some(AUTHENTIK_VERSION)
        );
    }
}
