# One image with the cluster's three binaries: xt (the API and CLI), xt-coordinator and
# xt-worker. Build: docker build -t ghcr.io/xtrading/xt:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# protoc comes from the vendored crate (see .cargo/protoc): nothing to install.
RUN cargo build --release --locked -p xt-api -p xt-coordinator -p xt-worker --bins \
    && mkdir /out \
    && cp target/release/xt target/release/xt-coordinator target/release/xt-worker /out/ \
    && strip /out/*

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 xt \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin xt
COPY --from=build /out/xt /out/xt-coordinator /out/xt-worker /usr/local/bin/
USER 10001:10001
# Kubernetes probes each process's own endpoints (k8s/); the image has no check of its own.
HEALTHCHECK NONE
CMD ["xt", "--help"]
