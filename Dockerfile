# syntax=docker/dockerfile:1
# plugd in a container (docs/deploy.md, "Container"): the `plugd` command and the example wasm
# plugins, served as a non-root user with the data directory on a volume.
#
#   docker build -t plugd .
#   docker run -d -p 8080:8080 -v plugd-data:/var/lib/plugd plugd
#
# scripts/docker-smoke.sh builds this image, runs it and checks /healthz and a plugin route.

# ---- builder: plugd (release) and the example guest plugins (wasm32-wasip2) -------------------
FROM rust:1.95-bookworm AS builder
# The guests' target: rustup's prebuilt std (scripts/wasm-toolchain.sh takes the rustup route).
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the build between image builds; the binary and the
# plugins are copied out of them within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p plugd-cli --bin plugd \
    && install -m 0755 target/release/plugd /usr/local/bin/plugd \
    && bash scripts/build-examples.sh examples/plugins \
    && mkdir -p /out/plugins \
    && for dir in examples/plugins/*/; do \
           name="$(basename "$dir")"; \
           [ -f "$dir/plugin.wasm" ] || continue; \
           install -D -m 0644 "$dir/plugin.yaml" "/out/plugins/$name/plugin.yaml"; \
           install -D -m 0644 "$dir/plugin.wasm" "/out/plugins/$name/plugin.wasm"; \
       done

# ---- runtime ----------------------------------------------------------------------------------
FROM debian:bookworm-slim
# curl: the health check. ca-certificates: plugins granted `network` reach HTTPS hosts.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
# A system user of its own; the data directory belongs to it and to nobody else (mode 0700).
RUN groupadd --system --gid 10001 plugd \
    && useradd --system --uid 10001 --gid plugd --home-dir /var/lib/plugd \
       --shell /usr/sbin/nologin plugd \
    && install -d -o plugd -g plugd -m 0700 /var/lib/plugd
COPY --from=builder /usr/local/bin/plugd /usr/local/bin/plugd
# Plugins and config are code and settings: owned by root, read-only for plugd.
COPY --from=builder /out/plugins /etc/plugd/plugins
COPY deploy/plugd.yaml /etc/plugd/plugd.yaml

USER plugd
WORKDIR /var/lib/plugd
# host.db, the plugins' storage and databases, admin-token, the compiled-component cache.
VOLUME ["/var/lib/plugd"]
# 8080: plugins and /healthz. The admin API (8081) listens on the container's loopback only:
# reach it with `docker exec` (plugd list --config /etc/plugd/plugd.yaml).
EXPOSE 8080
# The first start compiles every plugin (then cached in the volume): give it a minute.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz > /dev/null || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["plugd"]
CMD ["serve", "--config", "/etc/plugd/plugd.yaml", "--listen", "0.0.0.0:8080"]
