#!/usr/bin/env bash
# Builds, locally, every image that docker-compose.yml and the Dockerfile name, under
# exactly those names, for machines where no image registry can be reached:
#
#   debian:bookworm-slim   Debian bookworm from debootstrap (minbase), via `docker import`
#   rust:<X.Y>-bookworm    this machine's own Rust toolchain on that base, plus a vendored
#                          copy of the crates in Cargo.lock (containers may not reach
#                          crates.io either), served to cargo as a directory source
#   postgres:15            Debian's PostgreSQL 15, same env vars/paths as the official image
#   redis:7                Debian's Redis 7, same behaviour as the official image
#   prom/prometheus:vX     Debian's Prometheus (the `observability` profile), under the tag
#                          docker-compose.yml names (Debian bookworm has the same 2.42.0)
#
# Use it only where `docker pull` fails: online, the official images are the real thing.
# An image that already exists is kept (rust:* is redone when Cargo.lock changed).
#
#   deploy/offline-images.sh            # build what is missing
#   OFFLINE_REBUILD=1 deploy/offline-images.sh    # rebuild all five
#
# Needs: root (debootstrap), docker, debootstrap, a Debian mirror (DEBIAN_MIRROR), and a
# Rust toolchain matching the Dockerfile's RUST_VERSION (rustup's, under ~/.rustup).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
offline_dir="$repo/deploy/offline"
cache=${OFFLINE_CACHE:-/var/cache/hitscale-offline}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
release=bookworm
rebuild=${OFFLINE_REBUILD:-0}

log() { printf 'offline-images: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
have_image() { [ "$rebuild" != 1 ] && docker image inspect "$1" >/dev/null 2>&1; }

command -v docker >/dev/null || die "docker is not installed (apt-get install docker.io)"
docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable (is dockerd running?)"
mkdir -p "$cache"

# The Rust version the Dockerfile builds with: its `ARG RUST_VERSION=` default.
rust_version=$(sed -n 's/^ARG RUST_VERSION=\([0-9.]*\)$/\1/p' "$repo/Dockerfile")
[ -n "$rust_version" ] || die "no 'ARG RUST_VERSION=' line in $repo/Dockerfile"
base_image="debian:$release-slim"
rust_image="rust:$rust_version-$release"

build_base() {
  if have_image "$base_image"; then log "$base_image: present"; return; fi
  command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
  local tarball="$cache/debian-$release-minbase.tar"
  if [ ! -s "$tarball" ] || [ "$rebuild" = 1 ]; then
    local rootfs
    rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
    log "$base_image: debootstrap $release from $mirror (a few minutes)"
    debootstrap --variant=minbase "$release" "$rootfs" "$mirror" > "$cache/debootstrap.log" 2>&1 \
      || { tail -20 "$cache/debootstrap.log" >&2; die "debootstrap failed (log: $cache/debootstrap.log)"; }
    # What makes the official image "slim": no docs, man pages or package lists.
    cat > "$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
CFG
    cat > "$rootfs/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
    echo 'APT::Install-Recommends "false";' > "$rootfs/etc/apt/apt.conf.d/docker-no-recommends"
    printf 'deb %s %s main\ndeb %s %s-updates main\n' "$mirror" "$release" "$mirror" "$release" \
      > "$rootfs/etc/apt/sources.list"
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log \
      "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
    tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  log "$base_image: docker import"
  docker import --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$tarball" "$base_image" >/dev/null
}

build_service_image() { # name dir
  local name=$1 dir=$2
  if have_image "$name"; then log "$name: present"; return; fi
  log "$name: docker build from Debian's packages"
  docker build --quiet --tag "$name" "$dir" >/dev/null
}

build_rust() {
  command -v rustc >/dev/null || die "no rustc on this machine to put in $rust_image"
  local sysroot host_version toolchain lock_sha
  sysroot=$(rustc --print sysroot)
  host_version=$(rustc --version | awk '{print $2}')
  case "$host_version" in
    "$rust_version" | "$rust_version".*) ;;
    *) die "the Dockerfile builds with Rust $rust_version but this machine's rustc is $host_version" ;;
  esac
  toolchain="$host_version-$(rustc -vV | sed -n 's/^host: //p')"
  lock_sha=$(sha256sum "$repo/Cargo.lock" | cut -d' ' -f1)

  if have_image "$rust_image" && [ "$(docker image inspect --format \
      '{{ index .Config.Labels "org.hitscale.offline.cargo-lock-sha256" }}' "$rust_image")" = "$lock_sha" ]; then
    log "$rust_image: present (crates match Cargo.lock)"
    return
  fi

  local toolchain_image="hitscale-offline/rust-toolchain:$host_version"
  if ! have_image "$toolchain_image"; then
    log "$toolchain_image: copying the toolchain at $sysroot"
    local ctx
    ctx=$(mktemp -d "$cache/rust-toolchain.XXXXXX")
    mkdir "$ctx/toolchain"
    # Documentation is most of a toolchain's size and no build reads it.
    tar -C "$sysroot" --exclude=./share/doc --exclude=./share/man -cf - . | tar -C "$ctx/toolchain" -xf -
    cp "$offline_dir/rust/Dockerfile.toolchain" "$ctx/Dockerfile"
    docker build --quiet --build-arg TOOLCHAIN="$toolchain" --tag "$toolchain_image" "$ctx" >/dev/null
    rm -rf "$ctx"
  fi

  log "$rust_image: vendoring the crates of Cargo.lock"
  local ctx
  ctx=$(mktemp -d "$cache/rust-vendor.XXXXXX")
  (cd "$repo" && cargo vendor --locked --versioned-dirs "$ctx/vendor" >/dev/null 2>"$ctx/vendor.log") \
    || { tail -20 "$ctx/vendor.log" >&2; die "cargo vendor failed"; }
  rm -f "$ctx/vendor.log"
  cat > "$ctx/config.toml" <<'CFG'
# Written by deploy/offline-images.sh: crates come from the vendored copy, not crates.io.
[source.crates-io]
replace-with = "vendored-sources"

[source.vendored-sources]
directory = "/usr/local/cargo/vendor"

[net]
offline = true
CFG
  cp "$offline_dir/rust/Dockerfile.vendor" "$ctx/Dockerfile"
  docker build --quiet --build-arg TOOLCHAIN_IMAGE="$toolchain_image" \
    --build-arg CARGO_LOCK_SHA256="$lock_sha" --tag "$rust_image" "$ctx" >/dev/null
  rm -rf "$ctx"
}

# The Prometheus image the compose file pins; its stand-in is Debian's package, so the
# version must be the one bookworm ships.
prometheus_image=$(sed -n 's/^ *image: *\(prom\/prometheus:[^ ]*\) *$/\1/p' "$repo/docker-compose.yml")
[ -n "$prometheus_image" ] || die "no 'image: prom/prometheus:...' line in $repo/docker-compose.yml"
[ "$prometheus_image" = "prom/prometheus:v2.42.0" ] \
  || die "docker-compose.yml pins $prometheus_image, but the offline stand-in is Debian bookworm's Prometheus 2.42.0: update deploy/offline/prometheus too"

build_base
build_service_image postgres:15 "$offline_dir/postgres"
build_service_image redis:7 "$offline_dir/redis"
build_service_image "$prometheus_image" "$offline_dir/prometheus"
build_rust
log "ready: $base_image $rust_image postgres:15 redis:7 $prometheus_image"
