# Bounded waits for the end-to-end scripts: sourced, never run directly.
#
#   wait_until SECONDS WHAT CMD...   runs CMD about once a second until it succeeds; after
#                                    SECONDS of wall-clock time (not a count of tries: a
#                                    try that itself hangs until its own timeout counts in
#                                    full) it calls fail "WHAT did not happen within SECONDS s".
#
# The caller defines fail(). CMD runs in `if`, so errexit does not end the script when a
# try fails; give CMD a timeout of its own when it can block (ssh, docker exec).

# shellcheck shell=bash

wait_until() { # seconds what cmd...
  local limit=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + limit))
  while :; do
    if "$@"; then return 0; fi
    [ "$SECONDS" -lt "$deadline" ] || fail "$what did not happen within ${limit} s"
    sleep 1
  done
}
