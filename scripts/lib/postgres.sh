# Sourced by scripts/test, scripts/run and scripts/demo: make sure a PostgreSQL answers
# at $DATABASE_URL. In order: use it if it answers; else start the local clusters
# (Debian's pg_ctlcluster); else install PostgreSQL from the OS packages (apt-get, as
# root or with sudo), trust loopback connections in its pg_hba.conf (a development or
# test machine's server: passwordless for 127.0.0.1 and ::1 only), and start it.
#
# Needs: DATABASE_URL set; scripts/lib/common.sh sourced.

_pg_hostport="${DATABASE_URL#*://}"; _pg_hostport="${_pg_hostport#*@}"
_pg_hostport="${_pg_hostport%%/*}"; _pg_hostport="${_pg_hostport%%\?*}"
pg_host="${_pg_hostport%:*}"; pg_port="${_pg_hostport##*:}"
[ "$pg_port" = "$_pg_hostport" ] && pg_port=5432

# The server answers. psql may name a database that does not exist yet (serve creates
# it), so ask the server's maintenance database when the URL's is missing.
pg_answers() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$pg_host" -p "$pg_port" -t 2 >/dev/null 2>&1
    else
        (exec 3<>"/dev/tcp/$pg_host/$pg_port") 2>/dev/null
    fi
}

wait_for_pg() {
    for _ in $(seq 1 60); do pg_answers && return 0; sleep 0.5; done
    return 1
}

start_local_clusters() {
    command -v pg_lsclusters >/dev/null 2>&1 || return 1
    local found=1 version name
    while read -r version name _; do
        [ -n "$version" ] || continue
        found=0
        say "starting the local PostgreSQL cluster $version/$name"
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$name" start || true
    done < <(pg_lsclusters -h 2>/dev/null)
    return $found
}

trust_loopback() {
    local hba
    for hba in /etc/postgresql/*/main/pg_hba.conf; do
        [ -f "$hba" ] || continue
        if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
            say "trusting loopback connections (127.0.0.1, ::1) in $hba"
            as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
        fi
    done
}

# What ensure_postgres may do, for the caller's opening summary.
postgres_plan() {
    echo "use the PostgreSQL at ${pg_host}:${pg_port}; if none answers, start the local cluster, or else install PostgreSQL with apt-get and let it trust loopback connections (127.0.0.1, ::1) without a password"
}

ensure_postgres() {
    if pg_answers; then
        say "using PostgreSQL at ${pg_host}:${pg_port}"
        return
    fi
    say "no PostgreSQL answers at ${pg_host}:${pg_port}"
    case "$pg_host" in
        127.0.0.1|localhost|::1|'[::1]') ;;
        *) die "the PostgreSQL at $pg_host:$pg_port does not answer (DATABASE_URL); start it, or unset DATABASE_URL to use a local one" ;;
    esac
    if start_local_clusters && wait_for_pg; then
        say "local PostgreSQL started"
        return
    fi
    say "installing PostgreSQL from the OS packages (apt-get install postgresql)"
    command -v apt-get >/dev/null 2>&1 \
        || die "PostgreSQL is not installed and apt-get is not available; set DATABASE_URL to a server that answers"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-client >/dev/null
    trust_loopback
    start_local_clusters || die "PostgreSQL installed but no cluster found"
    wait_for_pg || die "PostgreSQL installed and started but does not answer at ${pg_host}:${pg_port}"
    say "PostgreSQL installed and started"
}
