//! The reference files of the systems idsync talks to (Authentik's OpenAPI `schema.yml`,
//! its blueprint schema, ...), kept outside the repository in `../shared/reference`.
//!
//! They are for reading and validating against, never copied into the project, and may
//! be absent (a clone without `shared/` beside it): tests that need them call
//! [`authentik_schema`] and, on `None`, [`print_skip`] and pass.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

/// Environment variable naming the reference folder explicitly (the folder that holds
/// `authentik/`). When set, it is the only place looked at.
pub const ENV_VAR: &str = "IDSYNC_REFERENCE_DIR";

/// What a test prints when it skips for want of the reference folder.
pub const SKIP_MESSAGE: &str = "skipped: reference absent (../shared/reference)";

/// Prints [`SKIP_MESSAGE`] (to stderr, which `cargo test` shows with `--nocapture`, and
/// on failure).
pub fn print_skip() {
    eprintln!("{SKIP_MESSAGE}");
}

/// The reference folder: `$IDSYNC_REFERENCE_DIR` if set, else the first
/// `<ancestor>/shared/reference` above the crate being tested (or above this crate).
pub fn reference_dir() -> Option<PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let starts = [
            std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from),
            Some(PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
        ];
        resolve(
            std::env::var_os(ENV_VAR),
            starts.iter().flatten().map(PathBuf::as_path),
        )
    })
    .clone()
}

/// [`reference_dir`]'s rule, without reading the environment: `explicit` wins when set
/// (and names a folder); otherwise walk up from each start in turn.
pub fn resolve<'a>(
    explicit: Option<OsString>,
    starts: impl IntoIterator<Item = &'a Path>,
) -> Option<PathBuf> {
    if let Some(explicit) = explicit.filter(|e| !e.is_empty()) {
        let dir = PathBuf::from(explicit);
        return dir.is_dir().then_some(dir);
    }
    starts.into_iter().find_map(find_from)
}

/// The first `<ancestor>/shared/reference` folder of `start` (itself included).
pub fn find_from(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join("shared").join("reference"))
        .find(|candidate| candidate.is_dir())
}

/// `<reference>/authentik`, if present.
pub fn authentik_dir() -> Option<PathBuf> {
    reference_dir()
        .map(|dir| dir.join("authentik"))
        .filter(|dir| dir.is_dir())
}

/// `<reference>/authentik/schema.yml`, if present.
pub fn authentik_schema_path() -> Option<PathBuf> {
    authentik_dir()
        .map(|dir| dir.join("schema.yml"))
        .filter(|path| path.is_file())
}

/// Authentik's OpenAPI document (`schema.yml`) as JSON, parsed once per process; `None`
/// when the reference folder or the file is absent.
///
/// # Panics
///
/// When the file exists but cannot be read or parsed: that is a broken reference, not
/// an absent one, and a test must not pass over it silently.
pub fn authentik_schema() -> Option<&'static Value> {
    static SCHEMA: OnceLock<Option<Value>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let path = authentik_schema_path()?;
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            let doc = crate::schema::parse_yaml(&text)
                .unwrap_or_else(|e| panic!("cannot parse {}: {e}", path.display()));
            Some(doc)
        })
        .as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_dir_wins_and_must_exist() {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        assert_eq!(
            resolve(Some(here.as_os_str().to_owned()), [Path::new("/")]),
            Some(here.to_path_buf())
        );
        assert_eq!(
            resolve(
                Some(OsString::from("/nonexistent/idsync-reference")),
                [here]
            ),
            None
        );
    }

    #[test]
    fn walks_up_to_the_nearest_shared_reference() {
        let dir = std::env::temp_dir().join(format!("idsync-testkit-ref-{}", std::process::id()));
        let project = dir.join("work");
        let crate_dir = project.join("main").join("crates").join("x");
        std::fs::create_dir_all(&crate_dir).expect("temp dir");
        let outside = find_from(&crate_dir);
        std::fs::create_dir_all(project.join("shared").join("reference")).expect("reference");
        assert_eq!(
            resolve(None, [crate_dir.as_path()]),
            Some(project.join("shared").join("reference"))
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
        // Before the folder existed, only one outside the temp dir could have been found.
        if let Some(found) = outside {
            assert!(!found.starts_with(&dir));
        }
    }
}
