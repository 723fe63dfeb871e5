#!/bin/sh
# Entrypoint of the offline stand-in for the official `redis` image, built from Debian's
# redis-server package by deploy/offline-images.sh. Same behaviour as upstream's: flags or a
# .conf file alone mean redis-server; as root it drops to the redis user; with no config
# file that sets protected-mode, protected mode is turned off so that other containers on
# the network can connect (the server listens on 0.0.0.0:6379 by default).
set -eu

case "${1:-}" in -* | *.conf) set -- redis-server "$@" ;; esac

if [ "${1:-}" = redis-server ] && [ "$(id -u)" = 0 ]; then
    find . \! -user redis -exec chown redis '{}' +
    exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

# Upstream sets umask 0077 when the default one is in force, so dumps are private.
[ "$(umask)" = 0022 ] && umask 0077

if [ "${1:-}" = redis-server ]; then
    protected=1
    config=
    if [ -f "${2:-}" ]; then
        config=$2
        if grep -q '^protected-mode' "$config"; then protected=; fi
    fi
    if [ -n "$protected" ]; then
        shift
        [ -n "$config" ] && shift
        set -- redis-server ${config:+"$config"} --protected-mode no "$@"
    fi
fi

exec "$@"
