# syntax=docker/dockerfile:1
#
# The weir runtime image: one `weir` binary (release build) on Debian slim,
# running as a non-root user. Not built in this repository's CI (it has no
# container engine); CI lints this file and checks what it copies and the
# features it builds (.ci/deploy). See deploy/README.md.
#
#   docker build -t weir:dev .
#   docker build -t weir:small --build-arg FEATURES="" .        # no broker or database connectors
#   docker run --rm weir:dev --version
#
# FEATURES are cargo features of crates/weir (the connectors and
# checkpoints in object storage): all five by default, as `cargo build -p
# weir` builds; an empty list gives the small build (files, standard input,
# the embedded log, HTTP ingest, checkpoints in a directory).

ARG RUST_IMAGE=rust:1.95.0-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
ARG FEATURES="nats mqtt kafka postgres object-store"
WORKDIR /src
# librdkafka (the kafka feature) is built from the source its crate
# bundles, with the C compiler and make of this image; nothing else is
# downloaded but crates.
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p weir --no-default-features --features "${FEATURES}" \
    && install -D -m 0755 target/release/weir /out/weir

FROM ${RUNTIME_IMAGE}
# curl for the HEALTHCHECK, CA certificates for TLS to brokers and object
# storage.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can check it and a
# volume's fsGroup can match it.
RUN groupadd --system --gid 10001 weir \
    && useradd --system --uid 10001 --gid weir --home-dir /var/lib/weir --no-create-home --shell /usr/sbin/nologin weir \
    && install -d -o weir -g weir -m 0750 /var/lib/weir
COPY --from=build /out/weir /usr/local/bin/weir
# The fraud-v1 example (pipelines and its ONNX model, a few KiB), so the
# example manifests in deploy/kubernetes run without a model volume.
COPY examples/fraud /usr/share/weir/examples/fraud
USER 10001:10001
WORKDIR /var/lib/weir
# The endpoint of `weir run` (/metrics, /healthz, /readyz) on loopback by
# default: enough for the HEALTHCHECK below. Kubernetes probes come from
# outside the container: the manifests set 0.0.0.0:9464 together with a
# token (WEIR_ENDPOINT_TOKEN).
ENV WEIR_METRICS_ADDRESS=127.0.0.1:9464
EXPOSE 9464 8080
# `weir run` and `weir ingest` stop gracefully on SIGTERM (final
# checkpoint; requests in flight answered) within --stop-timeout (25 s):
# give `docker stop` a longer timeout (`-t 30`).
STOPSIGNAL SIGTERM
# For `weir run`; a `weir ingest` container sets WEIR_HEALTHCHECK_URL to its
# own port (http://127.0.0.1:8080/healthz). Kubernetes ignores HEALTHCHECK
# and uses the probes of the manifests.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/bin/sh", "-c", "curl -fsS -o /dev/null \"${WEIR_HEALTHCHECK_URL:-http://127.0.0.1:9464/healthz}\""]
ENTRYPOINT ["/usr/local/bin/weir"]
CMD ["--help"]
