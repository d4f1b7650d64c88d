# idsync's container image: the `idsync` binary on Debian slim, as an unprivileged user.
#
#   docker build -t idsync .
#   docker run --rm -e DATABASE_URL=... -e IDSYNC_WEBHOOK_SECRET=... -p 8080:8080 idsync
#
# Every setting is an environment variable (README, "Configuration"). Secrets may also
# come from files: NAME_FILE=/path sets NAME from the file (deploy/bin/load-secrets, the
# entrypoint). docker-compose.yml uses that; docs/deploy.md has the rest.
#
# Base images are pinned to exact versions (to pin digests as well, take them from
# `docker buildx imagetools inspect <image>` and append @sha256:...). Rust 1.95.0 is the
# toolchain the project's CI builds and tests with; Cargo.toml's rust-version (1.88) is
# the oldest it claims to support, and the newest rust-version of any locked dependency
# is also 1.88. The build and runtime stages share Debian 13 (trixie), so the binary
# links against the same glibc it was built with.

FROM rust:1.95.0-slim-trixie AS build
WORKDIR /src
# Only what the workspace needs to build: the manifests, the lock file, the crates and
# the migrations (embedded into the binary by sqlx::migrate!).
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY migrations ./migrations
# --locked: exactly the dependency versions of Cargo.lock, or fail. The cache mounts keep
# the registry and target/ between builds (BuildKit); the binary is copied out of them.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --package idsync-server --bin idsync \
    && install -D -m 0755 target/release/idsync /out/idsync

FROM debian:trixie-20260803-slim AS runtime
# CA certificates for HTTPS to Authentik; a shell (already in Debian slim) for the
# load-secrets entrypoint. Nothing else: no curl, the healthcheck is the binary itself.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 idsync \
    && useradd --system --uid 10001 --gid idsync --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin idsync
COPY --from=build /out/idsync /usr/local/bin/idsync
COPY --chmod=0755 deploy/bin/load-secrets /usr/local/bin/load-secrets
USER 10001:10001
ENV IDSYNC_LISTEN=0.0.0.0:8080 \
    IDSYNC_LOG_FORMAT=json
EXPOSE 8080
# `idsync healthcheck` asks /readyz on 127.0.0.1:8080 and exits 0 on 200, else 1 with a
# one-line reason.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/idsync", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/load-secrets", "/usr/local/bin/idsync"]
CMD ["serve"]
