//! External programs the tests run.

use std::path::PathBuf;

/// The Python interpreter of the project's virtual environment, which `scripts/test`
/// creates with the pinned test tools (`scripts/requirements-test.txt`):
/// `$IDSYNC_PYTHON` when set, else `<repo>/.venv/bin/python`.
///
/// # Panics
///
/// When neither exists, with the command that creates it: a test that needs the tools
/// must not pass without them.
pub fn python() -> PathBuf {
    let path = std::env::var_os("IDSYNC_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            crate::reference::repo_root()
                .join(".venv")
                .join("bin")
                .join("python")
        });
    assert!(
        path.exists(),
        "{} does not exist: run scripts/test once (it creates the project's Python environment \
         with the test tools), or set IDSYNC_PYTHON",
        path.display()
    );
    path
}
