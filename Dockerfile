# syntax=docker/dockerfile:1
#
# Iron's container image: iron-proxy, iron-control and the iron CLI in one small, non-root
# runtime image (distroless, uid 65532), plus the dashboard's static build.
#
#   docker build -t iron:dev .
#   docker run --rm -p 8080:8080 -p 9090:9090 -v $PWD/proxy.toml:/etc/iron/proxy.toml:ro \
#     iron:dev iron-proxy --config /etc/iron/proxy.toml
#
# The Helm chart (charts/iron) runs `iron-proxy` and `iron-control` from this image. Needs
# BuildKit (the default builder since Docker 23). Not built in this repository's CI: the CI
# machines have no container engine (see docs/operations.md, "Container image").

ARG RUST_VERSION=1.95
ARG NODE_VERSION=22
ARG DEBIAN_RELEASE=bookworm

# --- dashboard: the Control Panel (Vue 3 + Vite) -> /dashboard/dist --------------------------
# Served by iron-control from [dashboard] dir = /usr/share/iron/dashboard (the chart sets it).
FROM node:${NODE_VERSION}-${DEBIAN_RELEASE}-slim AS dashboard
WORKDIR /dashboard
COPY dashboard/package.json dashboard/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY dashboard/ ./
RUN npm run build && test -f dist/index.html

# --- Rust binaries ---------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
# cmake: libz-ng-sys (compression in pingora).
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p iron-proxy -p iron-control -p iron-cli \
    && mkdir -p /out/bin /out/var/lib/iron-proxy \
    && cp target/release/iron-proxy target/release/iron-control target/release/iron /out/bin/

# --- runtime ---------------------------------------------------------------------------------
# glibc, libgcc, CA certificates and a nonroot user (65532); no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG VERSION=dev
LABEL org.opencontainers.image.title="iron" \
      org.opencontainers.image.description="Iron LLM egress proxy: iron-proxy, iron-control, iron CLI" \
      org.opencontainers.image.source="https://github.com/iron-gateway/iron" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/bin/ /usr/local/bin/
COPY --from=dashboard /dashboard/dist/ /usr/share/iron/dashboard/
# budget.spill_dir of the chart's proxy.toml; Kubernetes mounts a volume over it.
COPY --from=build --chown=65532:65532 /out/var/lib/iron-proxy/ /var/lib/iron-proxy/
USER 65532:65532
# 8080 agents (proxy), 9090 proxy admin (/metrics, /healthz, /readyz), 7070 control.
EXPOSE 8080 9090 7070
# No entrypoint: pick the program (iron-proxy, iron-control or iron) as the command.
CMD ["iron", "--help"]
