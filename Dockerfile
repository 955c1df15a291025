# syntax=docker/dockerfile:1
#
# Souk's images, one named target each (build both from the repository root):
#
#   docker build --target souk          -t souk:0.1.0          .   # every service and the relayer: `souk ...`
#   docker build --target souk-operator -t souk-operator:0.1.0 .   # the Kubernetes operator
#
# Stages: `chef` (toolchain + cargo-chef) -> `planner` (dependency recipe) -> `builder` (dependencies
# in their own cached layer, then both binaries built once) -> two distroless runtime images that
# run as the nonroot user (uid 65532) and contain no shell. Image builds need no database: the
# sqlx queries are checked against the committed `.sqlx/` data (SQLX_OFFLINE=true).

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# ---- toolchain with cargo-chef (changes only when these versions change) ----------------------
FROM ${RUST_IMAGE} AS chef
ARG CARGO_CHEF_VERSION=0.1.77
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}" \
    && rm -rf "${CARGO_HOME:-/usr/local/cargo}/registry"
WORKDIR /src
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0 \
    SQLX_OFFLINE=true

# ---- the recipe: Cargo.toml/Cargo.lock of every member, nothing else --------------------------
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# ---- dependencies (own layer: only rebuilt when a manifest or Cargo.lock changes), then the code -
FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Exactly the packages and binaries of the build below, so that cargo resolves the same features
# and the cooked dependencies are reused rather than rebuilt.
RUN cargo chef cook --release --locked --recipe-path recipe.json \
        -p souk -p souk-operator --bin souk --bin souk-operator
COPY . .
# Both binaries in one cargo invocation: compiled once, shared dependencies built once.
RUN cargo build --release --locked -p souk -p souk-operator --bin souk --bin souk-operator \
    && mkdir -p /out \
    && cp target/release/souk target/release/souk-operator /out/

# ---- runtime: the operator ---------------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS souk-operator
LABEL org.opencontainers.image.title="souk-operator" \
      org.opencontainers.image.description="The Kubernetes operator of Souk: reconciles Shop (souk.dev/v1alpha1) resources" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/souk-operator /usr/local/bin/souk-operator
ENV SOUK_OPERATOR_HTTP_ADDR=0.0.0.0:8080 \
    SOUK_LOG_FORMAT=json
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/souk-operator"]

# ---- runtime: every service and the relayer (the last stage, so a plain `docker build .` gives it)
FROM ${RUNTIME_IMAGE} AS souk
LABEL org.opencontainers.image.title="souk" \
      org.opencontainers.image.description="Souk: every service of the shop and the outbox relayer in one binary (souk up | serve <service> | relay <service>)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/souk /usr/local/bin/souk
ENV SOUK_HTTP_ADDR=0.0.0.0:8080 \
    SOUK_LOG_FORMAT=json
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/souk"]
CMD ["--help"]
