# Sourced by the scripts: messages and running as root. Set SCRIPT before sourcing.
say() { printf '\n==> %s\n' "$*"; }
die() { printf '%s: %s\n' "${SCRIPT:-${0##*/}}" "$*" >&2; exit 1; }
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else die "need root to run: $*"; fi
}
