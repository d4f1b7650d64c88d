# Sourced by scripts/test (and benchmarks): the project's own Python virtual
# environment in .venv, with pinned packages from a requirements file. Nothing goes into
# the system Python. Sets PYTHON to the environment's interpreter.
#
# Needs: scripts/lib/common.sh sourced.

VENV_DIR="${VENV_DIR:-.venv}"
PYTHON="$VENV_DIR/bin/python"

python_plan() {
    echo "create a Python virtual environment in $VENV_DIR for the test tools (openapi-spec-validator, ...); nothing is installed into the system Python (if python3 lacks the venv module, apt-get installs python3-venv)"
}

ensure_python_env() {
    local requirements="$1"
    command -v python3 >/dev/null 2>&1 || die "python3 is needed (for the test tools); install it"
    if [ ! -x "$PYTHON" ]; then
        say "creating the Python virtual environment $VENV_DIR"
        if ! python3 -m venv "$VENV_DIR" >/dev/null 2>&1; then
            rm -rf "$VENV_DIR"
            command -v apt-get >/dev/null 2>&1 || die "python3 cannot create a virtual environment (install its venv module)"
            say "installing python3-venv (apt-get)"
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            python3 -m venv "$VENV_DIR" || die "cannot create $VENV_DIR"
        fi
    fi
    # Reinstall only when the requirements changed.
    local stamp="$VENV_DIR/.requirements"
    if ! cmp -s "$requirements" "$stamp" 2>/dev/null; then
        say "installing the pinned Python test tools into $VENV_DIR ($requirements)"
        "$PYTHON" -m pip install -q --disable-pip-version-check -r "$requirements"
        cp "$requirements" "$stamp"
    fi
    PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")"
    export IDSYNC_PYTHON="$PYTHON"
}
