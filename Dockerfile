# syntax=docker/dockerfile:1
#
# startgate's container image. Stages:
#
#   build     compiles a static (musl) startgate with `cargo build --release --locked`, with the
#             dependencies compiled in a layer of their own, so that a change to src/ rebuilds
#             only startgate itself.
#   pgdg-key  takes the PostgreSQL apt repository's signing key out of Debian's own
#             postgresql-common package (signed by Debian's archive), not from a download.
#   bin       FROM scratch, holding only /startgate: `docker build --target bin` for a
#             distroless image or to extract the binary.
#   runtime   (the default) Debian slim with pg_dump of a current PostgreSQL major, a non-root
#             user, no compiler, and `startgate` as the entrypoint.
#
# The binary is static, so it runs in any Linux image, glibc or musl, whatever its age: add it
# to your app's image with
#
#   COPY --from=ghcr.io/OWNER/startgate:VERSION /startgate /usr/local/bin/startgate
#
# (both the default image and the `bin` stage hold it at /startgate). docs/deploy.md has the
# build, tag and publish commands. tests/deploy.rs checks this file (paths, stages, binary
# name, no compiler in the runtime stage); no container engine runs in this repository's CI.

# The Rust toolchain: the current stable 1.x. Cargo.toml's rust-version is the lower bound.
ARG RUST_VERSION=1
# pg_dump refuses a server of a newer major version (backups then fail, exit 5) and dumps every
# older one, so the newest major is the one to ship. Override with --build-arg PG_MAJOR=17.
ARG PG_MAJOR=18

FROM rust:${RUST_VERSION}-slim-bookworm AS build
# musl-tools: the C compiler for the musl target (SQLite is compiled in, and ring has C parts).
# Unpinned on purpose, here and below: Debian's stable and security updates are what we want.
# hadolint ignore=DL3008
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends musl-tools; \
    rm -rf /var/lib/apt/lists/*; \
    target="$(uname -m)-unknown-linux-musl"; \
    rustup target add "$target"; \
    echo "$target" > /rust-target
WORKDIR /src
# The C compiler of either target the build may run for (amd64 or arm64).
ENV CC_x86_64_unknown_linux_musl=musl-gcc \
    CC_aarch64_unknown_linux_musl=musl-gcc

# The dependency layer: Cargo.toml and Cargo.lock with stub sources, built with the same
# profile and target as the real build. It is rebuilt only when the manifests change.
COPY Cargo.toml Cargo.lock ./
RUN set -eux; \
    target="$(cat /rust-target)"; \
    mkdir src; \
    echo 'fn main() {}' > src/main.rs; \
    : > src/lib.rs; \
    cargo build --release --locked --target "$target"; \
    # Forget the stubs: COPY keeps the real files' modification times, which may be older than
    # the stub build, and cargo would then take the stub binary for up to date.
    rm -rf src \
        "target/$target/release/startgate" \
        "target/$target/release/.fingerprint/startgate-"* \
        "target/$target/release/deps/startgate-"* \
        "target/$target/release/deps/libstartgate-"*

COPY src ./src
RUN set -eux; \
    target="$(cat /rust-target)"; \
    cargo build --release --locked --target "$target"; \
    cp "target/$target/release/startgate" /startgate; \
    /startgate --version

FROM debian:bookworm-slim AS pgdg-key
# apt.postgresql.org's key as Debian's postgresql-common ships it (for its
# pgdg/apt.postgresql.org.sh); extracted, not installed, so no maintainer script runs.
WORKDIR /tmp/pgdg
RUN set -eux; \
    apt-get update; \
    chown _apt /tmp/pgdg; \
    apt-get download postgresql-common; \
    dpkg-deb -x postgresql-common_*.deb root; \
    cp root/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc /pgdg.asc; \
    rm -rf /var/lib/apt/lists/* /tmp/pgdg/*

FROM scratch AS bin
COPY --from=build /startgate /startgate
USER 10001:10001
ENTRYPOINT ["/startgate"]

FROM debian:bookworm-slim AS runtime
ARG PG_MAJOR
COPY --from=pgdg-key /pgdg.asc /usr/share/keyrings/apt.postgresql.org.asc
# ca-certificates first (apt needs it for the repository's https), then the client of
# PG_MAJOR from the PostgreSQL apt repository. Nothing else, no recommends, no apt lists.
# hadolint ignore=DL3008
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates; \
    printf '%s\n' \
        'Types: deb' \
        'URIs: https://apt.postgresql.org/pub/repos/apt' \
        'Suites: bookworm-pgdg' \
        'Components: main' \
        'Signed-By: /usr/share/keyrings/apt.postgresql.org.asc' \
        > /etc/apt/sources.list.d/pgdg.sources; \
    apt-get update; \
    apt-get install -y --no-install-recommends "postgresql-client-${PG_MAJOR}"; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb; \
    "/usr/lib/postgresql/${PG_MAJOR}/bin/pg_dump" --version
# The real pg_dump of PG_MAJOR first on PATH (not Debian's version-picking wrapper).
ENV PATH="/usr/lib/postgresql/${PG_MAJOR}/bin:${PATH}"

# A fixed, numeric uid and gid, so that Kubernetes' runAsNonRoot can check them and a volume's
# fsGroup can match. The backup directory is the one place startgate writes; with a read-only
# root filesystem, mount a volume there.
RUN set -eux; \
    groupadd --system --gid 10001 startgate; \
    useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/startgate --shell /usr/sbin/nologin startgate; \
    mkdir -p /var/lib/startgate/backups /migrations; \
    chown -R 10001:10001 /var/lib/startgate; \
    chmod 0700 /var/lib/startgate/backups

COPY --from=bin /startgate /startgate
# Running it here, in a glibc image without any musl library, shows that it is static.
RUN ln -s /startgate /usr/local/bin/startgate && startgate --version

ENV STARTGATE_BACKUP_DIR=/var/lib/startgate/backups \
    STARTGATE_MIGRATIONS=/migrations \
    STARTGATE_LOG_FORMAT=json
WORKDIR /var/lib/startgate
USER 10001:10001
# STARTGATE_LISTEN's default port: /livez, /startupz, /readyz, /status, /metrics.
EXPOSE 9600
ENTRYPOINT ["startgate"]
CMD ["--help"]

# Last, so that a new version does not invalidate the layers above.
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=https://github.com/OWNER/startgate
LABEL org.opencontainers.image.title="startgate" \
      org.opencontainers.image.description="The startup gate for database-backed apps: wait for the database, migrate under a lock, back up, verify, start and probe the app, explain hangs." \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
