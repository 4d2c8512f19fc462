# syntax=docker/dockerfile:1
#
# The Mamori server image: the one `mamori` binary (every role is a
# subcommand: ingest, writer, alerting, policy, gateway, migrate, all) and
# the built web console, which the gateway serves from
# MAMORI_CONSOLE_DIR. The agent is not in it. helm/mamori runs this image.
#
#   docker build -t registry.example.com/mamori/server:0.1.0 .
#
# Not built in this repository's CI (no container engine or registry is
# reachable there); see helm/README.md.

ARG RUST_VERSION=1.95
ARG NODE_VERSION=20

# ---- the console: a static single-page app (console/dist) ----
FROM node:${NODE_VERSION}-bookworm-slim AS console
WORKDIR /src/console
COPY console/package.json console/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY console/ ./
# Type-checks, then builds into dist/ (the API types are committed:
# console/src/api/schema.d.ts).
RUN npm run build

# ---- the server binary ----
FROM rust:${RUST_VERSION}-bookworm AS server
WORKDIR /src
# protox compiles the .proto files in build.rs (no system protoc); ring,
# zstd and mimalloc need only the C compiler the image has.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p mamori \
    && install -D -m 0755 target/release/mamori /out/mamori

# ---- runtime: glibc, libgcc, CA certificates, tzdata and nothing else ----
# (no shell: the chart's preStop hook is Kubernetes' own sleep action).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=server /out/mamori /usr/local/bin/mamori
COPY --from=console /src/console/dist /usr/share/mamori/console
ENV MAMORI_CONSOLE_DIR=/usr/share/mamori/console \
    MAMORI_LOG_FORMAT=json
# distroless's `nonroot` user; the chart runs it with a read-only root.
USER 65532:65532
# gRPC ingest, HTTP gateway, gRPC policy, and the roles' ops ports
# (/metrics, /healthz, /readyz) 9101-9105. Every address defaults to
# loopback: set MAMORI_*_ADDR (the chart does).
EXPOSE 50051 8080 50061 9101 9102 9103 9104 9105
ENTRYPOINT ["/usr/local/bin/mamori"]
CMD ["--help"]
