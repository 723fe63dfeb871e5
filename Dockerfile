# hitscale container images: one multi-stage Dockerfile, one target per binary.
#
#   docker build --target hits     -t hitscale-hits .
#   docker build --target balancer -t hitscale-balancer .
#   docker build --target loadgen  -t hitscale-loadgen .
#   docker build --target autoscaler -t hitscale-autoscaler . # compose profile `autoscale`
#   docker build --target tls-init -t hitscale-tls-init .   # docker-compose.https.yml only
#
# docker-compose.yml builds the three targets; the Rust compile runs once and is shared.
# No `# syntax=` line on purpose: the engine's built-in Dockerfile frontend is enough, so a
# build never has to pull a frontend image from a registry.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------------------------------
# skeleton: the workspace's manifests plus empty target roots (what cargo-chef calls a
# recipe). Its output changes only when a Cargo.toml, Cargo.lock or the set of target roots
# changes, so the dependency layer below stays cached across ordinary source edits.
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS skeleton
WORKDIR /src
COPY . .
RUN set -eu; \
    mkdir -p /skeleton; \
    cp Cargo.toml Cargo.lock /skeleton/; \
    find . -name Cargo.toml -not -path './target/*' -not -path './Cargo.toml' | while read -r manifest; do \
        dir=$(dirname "$manifest"); \
        mkdir -p "/skeleton/$dir"; \
        cp "$manifest" "/skeleton/$dir/"; \
        ( cd "$dir" && find . \
            \( -path ./src/main.rs -o -path ./src/lib.rs -o -path ./build.rs \
               -o -path './src/bin/*.rs' -o -path './src/bin/*/main.rs' \
               -o -path './tests/*.rs' -o -path './tests/*/main.rs' \
               -o -path './benches/*.rs' -o -path './benches/*/main.rs' \
               -o -path './examples/*.rs' -o -path './examples/*/main.rs' \) \
            -not -path './target/*' ) | while read -r root; do \
            mkdir -p "/skeleton/$dir/$(dirname "$root")"; \
            case "$root" in \
                ./src/lib.rs) : > "/skeleton/$dir/$root" ;; \
                *) echo 'fn main() {}' > "/skeleton/$dir/$root" ;; \
            esac; \
        done; \
    done

# ---------------------------------------------------------------------------------------
# builder: dependencies first (cached layer), then the workspace's own code.
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /src
# Queries are checked at compile time only against committed offline data, never a live
# database, so the image build needs no PostgreSQL.
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0 \
    SQLX_OFFLINE=true
COPY --from=skeleton /skeleton/ ./
RUN cargo build --release --locked -p hits -p balancer -p loadgen -p autoscaler
COPY . .
# The stubs compiled above are newer than the real sources copied from the context, so
# cargo would take them for up to date: make every source newer than the stubs.
RUN find . -name '*.rs' -not -path './target/*' -exec touch {} + \
 && cargo build --release --locked -p hits -p balancer -p loadgen -p autoscaler --bins \
 && mkdir -p /out \
 && cp target/release/hits target/release/balancer target/release/loadgen target/release/autoscaler /out/

# ---------------------------------------------------------------------------------------
# runtime: Debian slim, no compiler, no shell tools added, an unprivileged user.
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN groupadd --system --gid 10001 hitscale \
 && useradd --system --uid 10001 --gid hitscale --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin hitscale
USER 10001:10001
WORKDIR /
LABEL org.opencontainers.image.title="hitscale" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"

# ---------------------------------------------------------------------------------------
FROM runtime AS loadgen
COPY --from=builder /out/loadgen /usr/local/bin/loadgen
ENTRYPOINT ["loadgen"]
CMD ["--help"]

# ---------------------------------------------------------------------------------------
# The autoscaler (compose profile `autoscale`): starts hits containers through the Docker
# socket the compose file mounts; the group that may use the socket is given there
# (group_add), the image stays unprivileged.
FROM runtime AS autoscaler
COPY --from=builder /out/autoscaler /usr/local/bin/autoscaler
ENV AUTOSCALER_LISTEN=0.0.0.0:9100
EXPOSE 9100
ENTRYPOINT ["autoscaler"]

# ---------------------------------------------------------------------------------------
FROM runtime AS balancer
COPY --from=builder /out/balancer /usr/local/bin/balancer
ENV BALANCER_LISTEN=0.0.0.0:8080
EXPOSE 8080
# `balancer healthcheck` connects to its own listen port over TCP: no curl in the image.
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
    CMD ["balancer", "healthcheck"]
ENTRYPOINT ["balancer"]

# ---------------------------------------------------------------------------------------
# tls-init: the image of docker-compose.https.yml's one-shot service that makes a
# self-signed certificate at first start. The rust image is already on the machine (the
# builder's base) and carries the openssl CLI (a dependency of ca-certificates), so this
# stage downloads and installs nothing, and the runtime images stay without openssl. The
# script itself, deploy/tls/make-cert.sh, is mounted by the compose file rather than copied:
# the build context holds only the Cargo workspace (.dockerignore), so editing the script
# rebuilds nothing. Runs as root only to hand the key to the balancer's user (10001).
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS tls-init

# ---------------------------------------------------------------------------------------
# Last, so that a plain `docker build .` gives the app image.
FROM runtime AS hits
COPY --from=builder /out/hits /usr/local/bin/hits
ENV HOST=0.0.0.0 \
    PORT=8000
EXPOSE 8000
# `hits healthcheck` does GET http://127.0.0.1:$PORT/healthz and exits 0 or 1.
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["hits", "healthcheck"]
ENTRYPOINT ["hits"]
