# The stagehost binary and the five stage plugins in one image.
# Build: docker build -t stagehost .   (docker-compose.yml does this for you)
FROM rust:1.95-bookworm AS build
RUN apt-get update -qq \
 && apt-get install -y -qq cmake libcurl4-openssl-dev libssl-dev zlib1g-dev pkg-config \
 && rustup target add wasm32-wasip2
WORKDIR /src
# Exactly what the two workspaces build from (host/tests/deploy.rs checks that they resolve and
# build from these lines alone): the root workspace, the host, the plugins with the WIT contract
# (plugins/sdk/wit, which the host's bindings read too) and vendor/rdkafka, which Cargo.toml
# patches in.
COPY Cargo.toml Cargo.lock ./
COPY host host
COPY plugins plugins
COPY vendor vendor
RUN cd plugins && cargo build --release --locked --target wasm32-wasip2
# Without the release profile's line tables and with the debug info stripped: about 45 MB
# instead of 220. Symbol names stay, so a backtrace (RUST_BACKTRACE=1) still names functions.
RUN CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=debuginfo \
    cargo build --release --locked --bin stagehost

FROM debian:bookworm-slim
RUN apt-get update -qq && apt-get install -y -qq libcurl4 libssl3 ca-certificates && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /src/target/release/stagehost /usr/local/bin/stagehost
COPY --from=build /src/plugins/target/wasm32-wasip2/release/*.wasm plugins/target/wasm32-wasip2/release/
COPY schemas schemas
COPY pipeline.toml pipeline.toml
# The admin API (plugin swaps, GET /metrics) stays on the configured 127.0.0.1:9091 unless
# STAGEHOST_ADMIN_ADDR says otherwise: docker-compose.yml sets 0.0.0.0:9091 for Prometheus.
ENV STAGEHOST_HTTP_ADDR=0.0.0.0:8080 \
    STAGEHOST_STATE_DIR=/var/lib/stagehost
VOLUME /var/lib/stagehost
EXPOSE 8080 9091
ENTRYPOINT ["stagehost"]
CMD ["run", "--config", "/app/pipeline.toml"]
