#!/bin/sh
# The `init` service of docker-compose.yml: generates every secret the stack needs, once,
# and gives each service a copy only it can read. Plain POSIX sh with tr/head/chmod/chown,
# so it runs in any image with a shell (the stack runs it in the Postgres image) and on a
# machine with no container engine at all:
#
#   SECRETS_DIR=/tmp/idsync-secrets sh deploy/init/generate-secrets.sh
#
# What it writes under $SECRETS_DIR (default /run/idsync-secrets, the `secrets` volume):
#
#   store/                 0700, the one value of each secret (only root/the runner reads it)
#   postgres/   POSTGRES_UID   postgres_password authentik_db_password idsync_db_password
#   authentik/  AUTHENTIK_UID  secret_key db_password bootstrap_password bootstrap_token
#                              webhook_secret authentik_token gateway_client_secret
#   idsync/     IDSYNC_UID     database_url webhook_secret authentik_token data_key
#   apisix/     APISIX_UID     gateway_client_secret session_secret
#
# Every file is 0600 and every service directory 0700, owned by the user id that service
# runs as (when the *_UID variable is set; chown needs root). The top directory is 0755
# so that each service can reach its own directory and nothing else.
#
# Idempotent: a value in store/ is never replaced, so a second run (every `docker compose
# up`) keeps every secret; the service copies are rewritten from store/ each time, which
# also repairs their owner and mode. `docker compose down -v` deletes the volume and the
# next start generates new ones (with a new, empty database).
#
# Seeding: a secret missing from store/ takes the value of its environment variable when
# that is set (docker compose passes them from a .env file; see docs/deploy.md), else a
# random one. Random values are [A-Za-z0-9] from /dev/urandom (about 5.95 bits per
# character; 32 to 64 characters, so 190 to 380 bits).
#
# idsync's data key (the key-encryption key of users' personal data, docs/privacy.md)
# has a format of its own, `v1:` and the standard base64 of 32 random bytes, as
# `idsync keygen` prints it; it needs base64 (coreutils or busybox) besides.
#
# Nothing secret is printed: the output names what was generated or kept.
set -eu
umask 077

SECRETS_DIR=${SECRETS_DIR:-/run/idsync-secrets}
store=$SECRETS_DIR/store
# Where idsync finds its database (the database_url it is given).
IDSYNC_DATABASE_HOST=${IDSYNC_DATABASE_HOST:-postgres:5432}
nl='
'

say() { printf 'generate-secrets: %s\n' "$*"; }
die() { printf 'generate-secrets: %s\n' "$*" >&2; exit 1; }

# random N: N characters from [A-Za-z0-9], read from the kernel's CSPRNG.
random() {
    value=$(LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c "$1")
    [ "${#value}" -eq "$1" ] || die "could not read $1 random characters from /dev/urandom"
    printf '%s' "$value"
}

# write FILE VALUE: the value and a newline, mode 0600, replaced atomically. Every reader
# strips the newline (Postgres's *_FILE, Authentik's file://, load-secrets, psql).
write() {
    tmp="$1.tmp.$$"
    printf '%s\n' "$2" >"$tmp"
    chmod 0600 "$tmp"
    mv -f "$tmp" "$1"
}

# secret NAME LENGTH VARIABLE MIN_LENGTH [url]: make sure store/NAME holds a value. `url`
# means the value goes into a URL (a database password) and must not need escaping.
# With pass=check it only refuses a bad seed, so that nothing is written when one is bad.
secret() {
    name=$1 length=$2 variable=$3 min=$4 kind=${5:-}
    file=$store/$name
    eval "seed=\${$variable-}"    # $variable is one of the names below
    if [ -s "$file" ]; then
        [ "$pass" = check ] && return 0
        if [ -n "$seed" ] && [ "$seed" != "$(cat "$file")" ]; then
            say "kept $name (the $variable set in the environment differs and is ignored: secrets are set on the first start only; docker compose down -v starts over)"
        else
            say "kept $name"
        fi
        return 0
    fi
    if [ -n "$seed" ]; then
        case $seed in *"$nl"*) die "$variable must be one line" ;; esac
        [ "${#seed}" -ge "$min" ] || die "$variable must have at least $min characters"
        if [ "$kind" = url ]; then
            case $seed in *[!A-Za-z0-9._~-]*) die "$variable may only use A-Z a-z 0-9 . _ ~ - (it goes into a database URL)" ;; esac
        fi
        [ "$pass" = check ] && return 0
        write "$file" "$seed"
        say "set $name from $variable"
    else
        [ "$pass" = check ] && return 0
        write "$file" "$(random "$length")"
        say "generated $name"
    fi
}

# publish DIR OWNER_UID TARGET=NAME...: copy store/NAME to DIR/TARGET for one service.
publish() {
    service=$1 dir=$SECRETS_DIR/$1 owner=$2
    shift 2
    mkdir -p "$dir"
    for pair in "$@"; do
        write "$dir/${pair%%=*}" "$(cat "$store/${pair#*=}")"
    done
    chmod 0700 "$dir"
    if [ -n "$owner" ]; then
        chown -R "$owner:$owner" "$dir" || die "cannot give $dir to user $owner (run as root, or leave the $service *_UID unset)"
    fi
}

mkdir -p "$store"
chmod 0755 "$SECRETS_DIR"
chmod 0700 "$store"

for pass in check write; do
    #      name                         length variable (seed)              min kind
    secret authentik_secret_key           64   AUTHENTIK_SECRET_KEY           50
    secret authentik_bootstrap_password   32   AUTHENTIK_BOOTSTRAP_PASSWORD    8
    secret authentik_bootstrap_token      64   AUTHENTIK_BOOTSTRAP_TOKEN      32
    secret idsync_webhook_secret          48   IDSYNC_WEBHOOK_SECRET          32
    secret idsync_authentik_token         64   IDSYNC_AUTHENTIK_TOKEN         32
    secret gateway_client_secret          64   IDSYNC_GATEWAY_CLIENT_SECRET   32
    secret gateway_session_secret         48   IDSYNC_GATEWAY_SESSION_SECRET  32
    secret postgres_password              40   POSTGRES_PASSWORD              16  url
    secret authentik_db_password          40   AUTHENTIK_DB_PASSWORD          16  url
    secret idsync_db_password             40   IDSYNC_DB_PASSWORD             16  url
done

# data_key: `v1:` + base64 of 32 random bytes; a seed must have that shape.
data_key=$store/idsync_data_key
if [ ! -s "$data_key" ]; then
    if [ -n "${IDSYNC_DATA_KEY-}" ]; then
        case $IDSYNC_DATA_KEY in
            v1:*) ;;
            *) die "IDSYNC_DATA_KEY must be v1:<base64 of 32 bytes> (make one with idsync keygen)" ;;
        esac
        [ "${#IDSYNC_DATA_KEY}" -eq 47 ] || die "IDSYNC_DATA_KEY must be v1: and 44 base64 characters"
        write "$data_key" "$IDSYNC_DATA_KEY"
        say "set idsync_data_key from IDSYNC_DATA_KEY"
    else
        key=$(head -c 32 /dev/urandom | base64 | tr -d '\n')
        [ "${#key}" -eq 44 ] || die "could not make a data key (is base64 installed?)"
        write "$data_key" "v1:$key"
        say "generated idsync_data_key"
    fi
else
    say "kept idsync_data_key"
fi

publish postgres "${POSTGRES_UID:-}" \
    postgres_password=postgres_password \
    authentik_db_password=authentik_db_password \
    idsync_db_password=idsync_db_password

publish authentik "${AUTHENTIK_UID:-}" \
    secret_key=authentik_secret_key \
    db_password=authentik_db_password \
    bootstrap_password=authentik_bootstrap_password \
    bootstrap_token=authentik_bootstrap_token \
    webhook_secret=idsync_webhook_secret \
    authentik_token=idsync_authentik_token \
    gateway_client_secret=gateway_client_secret

# idsync reads DATABASE_URL whole, so its copy of the password comes inside the URL.
write "$store/idsync_database_url" \
    "postgres://idsync:$(cat "$store/idsync_db_password")@$IDSYNC_DATABASE_HOST/idsync"
publish idsync "${IDSYNC_UID:-}" \
    database_url=idsync_database_url \
    webhook_secret=idsync_webhook_secret \
    authentik_token=idsync_authentik_token \
    data_key=idsync_data_key

publish apisix "${APISIX_UID:-}" \
    gateway_client_secret=gateway_client_secret \
    session_secret=gateway_session_secret

say "secrets ready in $SECRETS_DIR"
