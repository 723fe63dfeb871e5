#!/bin/sh
# Entrypoint of the offline stand-in for the official `postgres` image, built from Debian's
# PostgreSQL packages by deploy/offline-images.sh. It honours the official image's contract
# as far as hitscale's compose file relies on it:
#   POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE; required unless
#   POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_USER (default postgres), POSTGRES_DB (default
#   $POSTGRES_USER), POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD (default
#   scram-sha-256), PGDATA (default /var/lib/postgresql/data), scripts in
#   /docker-entrypoint-initdb.d (*.sh, *.sql) on first start, listen on all interfaces.
set -eu

# `docker run IMAGE -c shared_buffers=256MB` means: postgres with those flags.
case "${1:-}" in -*) set -- postgres "$@" ;; esac

file_env() {
    # VAR_FILE names a file holding VAR's value (Docker secrets), as the official image does.
    var=$1 default=${2:-}
    eval "value=\${$var:-}"; eval "file=\${${var}_FILE:-}"
    if [ -n "$value" ] && [ -n "$file" ]; then
        echo "error: both $var and ${var}_FILE are set (but are exclusive)" >&2
        exit 1
    fi
    if [ -n "$file" ]; then value=$(cat "$file"); fi
    [ -n "$value" ] || value=$default
    export "$var=$value"
    unset "${var}_FILE" || true
}

if [ "${1:-}" = postgres ] && [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chmod 00700 "$PGDATA"
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 03775 /var/run/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    file_env POSTGRES_PASSWORD
    file_env POSTGRES_USER postgres
    file_env POSTGRES_DB "$POSTGRES_USER"
    file_env POSTGRES_INITDB_ARGS
    auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
    if [ -z "$POSTGRES_PASSWORD" ] && [ "$auth" != trust ]; then
        cat >&2 <<'MSG'
Error: Database is uninitialized and superuser password is not specified.
       You must specify POSTGRES_PASSWORD to a non-empty value for the
       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".
       (or set POSTGRES_HOST_AUTH_METHOD=trust to allow all connections without a password)
MSG
        exit 1
    fi

    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of flags, as upstream.
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" $POSTGRES_INITDB_ARGS -D "$PGDATA"
    rm -f "$pwfile"
    printf '\nhost all all all %s\n' "$auth" >> "$PGDATA/pg_hba.conf"
    printf "\nlisten_addresses = '*'\n" >> "$PGDATA/postgresql.auto.conf"

    # A server on the Unix socket only, so nobody connects before set-up is done.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start
    export PGUSER="$POSTGRES_USER" PGPASSWORD="$POSTGRES_PASSWORD" PGHOST=/var/run/postgresql
    if [ "$POSTGRES_DB" != postgres ]; then
        psql -v ON_ERROR_STOP=1 --dbname postgres --set db="$POSTGRES_DB" <<'SQL'
CREATE DATABASE :"db";
SQL
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        [ -e "$f" ] || continue
        case "$f" in
            *.sh) echo "running $f"; . "$f" ;;
            *.sql) echo "running $f"; psql -v ON_ERROR_STOP=1 --dbname "$POSTGRES_DB" -f "$f" ;;
            *.sql.gz) echo "running $f"; gunzip -c "$f" | psql -v ON_ERROR_STOP=1 --dbname "$POSTGRES_DB" ;;
            *) echo "ignoring $f" ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop
    unset PGUSER PGPASSWORD PGHOST
    echo 'PostgreSQL init process complete; ready for start up.'
fi

exec "$@"
