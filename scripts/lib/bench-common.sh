# Shared helpers for scripts/bench-*: sourced, never run directly.
#
# Everything here serves one rule: a benchmark leaves nothing behind. Every process a
# script starts goes through `bench_spawn`, every temp file lives under $BENCH_DIR, and the
# EXIT trap installed by `bench_init` stops them all, whatever way the script ends. All
# servers bind 127.0.0.1 only.

# shellcheck shell=bash

BENCH_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BENCH_PIDS=()
BENCH_DIR=""
# shellcheck disable=SC2034 # used by the scripts that source this file
CLK_TCK="$(getconf CLK_TCK)"

bench_log() { printf '%s\n' "$*" >&2; }
bench_die() {
  printf '%s: error: %s\n' "${BENCH_NAME:-bench}" "$*" >&2
  exit 1
}

# Creates the scratch dir and the cleanup trap. Call once, first.
bench_init() {
  BENCH_NAME="$1"
  BENCH_DIR="$(mktemp -d "/tmp/${BENCH_NAME}.XXXXXX")"
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

bench_cleanup() {
  local pid
  for pid in "${BENCH_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  # A bounded grace period, then no more politeness.
  local deadline=$((SECONDS + 5))
  for pid in "${BENCH_PIDS[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ -n "$BENCH_AUTOGROUP_NICE" ]; then
    echo "$BENCH_AUTOGROUP_NICE" >/proc/$$/autogroup 2>/dev/null || true
  fi
  if [ -n "$BENCH_DIR" ] && [ -z "${BENCH_KEEP:-}" ]; then
    rm -rf "$BENCH_DIR"
  elif [ -n "$BENCH_DIR" ]; then
    bench_log "scratch files kept in $BENCH_DIR"
  fi
}

# On a shared machine other work steals cycles from the runs. BENCH_NICE=N (negative needs
# root) renices this script, and so every process started after the call, alike for all the
# contenders. Called after building, so the build itself keeps its normal priority.
# With autogroup scheduling (Linux's default on desktops and many VMs) a nice value only
# counts inside its session's group, so the session's group is reniced as well, and put
# back at exit.
BENCH_AUTOGROUP_NICE=""
bench_prioritise() {
  [ -n "${BENCH_NICE:-}" ] || return 0
  renice -n "$BENCH_NICE" -p $$ >/dev/null || bench_die "cannot renice to $BENCH_NICE"
  if [ "$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null)" = 1 ] && [ -w /proc/$$/autogroup ]; then
    BENCH_AUTOGROUP_NICE="$(awk '{ print $NF }' /proc/$$/autogroup)"
    echo "$BENCH_NICE" >/proc/$$/autogroup || bench_die "cannot set the session's autogroup nice to $BENCH_NICE"
  fi
}

# bench_spawn LOGFILE CMD...: starts CMD in the background, records its pid for the trap
# and stores it in BENCH_LAST_PID. `taskset` and `env` exec their command, so the pid is
# the server's own.
bench_spawn() {
  local logfile="$1"
  shift
  "$@" >"$logfile" 2>&1 &
  BENCH_LAST_PID=$!
  BENCH_PIDS+=("$BENCH_LAST_PID")
}

# Installs the Debian packages named (by package) when the command (before the colon) is
# missing, e.g. `bench_require_packages nginx:nginx wrk:wrk`. Runs apt-get update first,
# since a fresh machine has empty package lists, and waits for another apt to finish.
bench_require_packages() {
  local spec missing=()
  for spec in "$@"; do
    command -v "${spec%%:*}" >/dev/null 2>&1 || missing+=("${spec#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 ||
    bench_die "missing ${missing[*]} and no apt-get here; install them with your package manager"
  local as_root=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || bench_die "missing ${missing[*]}; run as root or: apt-get install ${missing[*]}"
    as_root=(sudo)
  fi
  bench_log "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  "${as_root[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 ||
    bench_die "apt-get update failed"
  "${as_root[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null || bench_die "apt-get install ${missing[*]} failed"
}

# Prints a free TCP port on 127.0.0.1. A port is taken from the ephemeral range's upper
# neighbour (20000-32767) at random and checked against the listening sockets; the ports
# handed out earlier in this run are skipped too.
BENCH_PORTS_GIVEN=" "
bench_free_port() {
  local port _
  for _ in $(seq 200); do
    port=$((20000 + RANDOM % 12000))
    case "$BENCH_PORTS_GIVEN" in *" $port "*) continue ;; esac
    if [ -z "$(ss -Htln "sport = :$port" 2>/dev/null)" ]; then
      BENCH_PORTS_GIVEN+="$port "
      echo "$port"
      return 0
    fi
  done
  bench_die "no free port found"
}

# bench_wait_http URL SECONDS: waits until URL answers 200, or fails.
bench_wait_http() {
  local url="$1" limit="$2" deadline
  deadline=$((SECONDS + limit))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if [ "$(curl -s -o /dev/null -m 1 -w '%{http_code}' "$url" 2>/dev/null)" = 200 ]; then
      return 0
    fi
    sleep 0.2
  done
  return 1
}

# Prints the CPU time, in clock ticks, that the processes named (pids) and all their
# threads have used so far: utime + stime from /proc/PID/stat. The command name may
# contain spaces, so fields are counted after the last ')'.
bench_cpu_ticks() {
  local pid total=0 rest
  for pid in "$@"; do
    [ -r "/proc/$pid/stat" ] || bench_die "process $pid has gone (it crashed?)"
    rest="$(cat "/proc/$pid/stat")"
    rest="${rest##*) }"
    # After the ')' field 3 is the state; utime and stime are fields 14 and 15.
    # shellcheck disable=SC2086
    set -- $rest
    total=$((total + ${12} + ${13}))
  done
  echo "$total"
}

# Prints "UTIME STIME": the user and system clock ticks of the given processes, summed.
bench_cpu_ticks_split() {
  local pid user=0 sys=0 rest
  for pid in "$@"; do
    [ -r "/proc/$pid/stat" ] || bench_die "process $pid has gone (it crashed?)"
    rest="$(cat "/proc/$pid/stat")"
    rest="${rest##*) }"
    # shellcheck disable=SC2086
    set -- $rest
    user=$((user + ${12}))
    sys=$((sys + ${13}))
  done
  echo "$user $sys"
}

# Prints the pid and the pids of the direct children (nginx: master + workers).
bench_pid_tree() {
  local pid="$1"
  echo "$pid"
  cat /proc/"$pid"/task/*/children 2>/dev/null | tr ' ' '\n' | sed '/^$/d'
}

# Resident set size in KiB.
bench_rss_kib() {
  awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null
}

# Converts a wrk duration (e.g. 812.00us, 1.20ms, 2.01s) to microseconds.
bench_to_us() {
  awk -v v="$1" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) m = 1; else if (v ~ /ms$/) m = 1000; else if (v ~ /m$/) m = 60000000;
    else if (v ~ /s$/) m = 1000000; else m = 1
    printf "%.1f", n * m
  }'
}

# Median of the numbers on stdin (one per line).
bench_median() {
  sort -g | awk '{ a[NR] = $1 } END {
    if (NR == 0) { print "n/a"; exit }
    if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2
  }'
}

# bench_ratio A B: A/B to two decimals, or n/a.
bench_ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN {
    if (a == "n/a" || b == "n/a" || b + 0 == 0) print "n/a"; else printf "%.2f", a / b
  }'
}

# A one-paragraph description of the machine, for the report.
bench_machine() {
  local cpu cores mem kernel
  cpu="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
  cores="$(nproc)"
  mem="$(awk '/^MemTotal:/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
  kernel="$(uname -r)"
  echo "${cores} x ${cpu:-unknown CPU}, ${mem} RAM, Linux ${kernel}, $(. /etc/os-release && echo "$PRETTY_NAME")"
}

# Which source a figure belongs to: the commit, and whether the crate had local edits.
bench_source() {
  local crate_dir="$1" rev dirty=""
  rev="$(git -C "$BENCH_REPO" rev-parse --short HEAD 2>/dev/null)" || { echo "unknown (not a git checkout)"; return; }
  [ -n "$(git -C "$BENCH_REPO" status --porcelain -- "$crate_dir" 2>/dev/null)" ] && dirty=" + uncommitted edits in $crate_dir/"
  echo "commit $rev$dirty"
}

# Builds one workspace binary in release mode and prints its path. Honours
# CARGO_TARGET_DIR, defaulting to the repo's target/.
bench_build() {
  local crate="$1" target
  target="${CARGO_TARGET_DIR:-$BENCH_REPO/target}"
  bench_log "building $crate (release, target dir $target)"
  (cd "$BENCH_REPO" && CARGO_TARGET_DIR="$target" cargo build --release -q -p "$crate") >&2 ||
    return 1
  echo "$target/release/$crate"
}

# Writes an nginx config serving fixed 200 bodies on the ports given, one server block
# per port, into DIR/backends.conf. One worker: it is a fixed cost shared by every
# balancer or load generator under test.
bench_write_backend_nginx() {
  local dir="$1"
  shift
  local port letter=A servers=""
  for port in "$@"; do
    servers+="
    server {
      listen 127.0.0.1:${port} reuseport backlog=4096;
      keepalive_requests 100000000;
      keepalive_timeout 300s;
      location / { return 200 \"backend ${letter}\\n\"; }
    }"
    letter="$(echo "$letter" | tr 'A-Y' 'B-Z')"
  done
  mkdir -p "$dir/backends"
  cat >"$dir/backends.conf" <<EOF
worker_processes 1;
daemon off;
master_process on;
pid $dir/backends/nginx.pid;
error_log $dir/backends/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  default_type text/plain;
  client_body_temp_path $dir/backends/client_body;
  proxy_temp_path $dir/backends/proxy;
  fastcgi_temp_path $dir/backends/fastcgi;
  uwsgi_temp_path $dir/backends/uwsgi;
  scgi_temp_path $dir/backends/scgi;
$servers
}
EOF
}
