# The stagehost binary and the five stage plugins in one image.
# Build: docker build -t stagehost .   (docker-compose.yml does this for you)
FROM rust:1.95-bookworm AS build
RUN apt-get update -qq \
 && apt-get install -y -qq cmake libcurl4-openssl-dev libssl-dev zlib1g-dev pkg-config \
 && rustup target add wasm32-wasip2
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY host host
COPY plugins plugins
RUN cd plugins && cargo build --release --target wasm32-wasip2
RUN cargo build --release --bin stagehost

FROM debian:bookworm-slim
RUN apt-get update -qq && apt-get install -y -qq libcurl4 libssl3 ca-certificates && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /src/target/release/stagehost /usr/local/bin/stagehost
COPY --from=build /src/plugins/target/wasm32-wasip2/release/*.wasm plugins/target/wasm32-wasip2/release/
COPY schemas schemas
COPY pipeline.toml pipeline.toml
ENV STAGEHOST_HTTP_ADDR=0.0.0.0:8080 \
    STAGEHOST_STATE_DIR=/var/lib/stagehost
VOLUME /var/lib/stagehost
EXPOSE 8080
ENTRYPOINT ["stagehost"]
CMD ["run", "--config", "/app/pipeline.toml"]
