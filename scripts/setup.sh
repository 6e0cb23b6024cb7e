#!/usr/bin/env bash
# Install what building and running stagehost needs on a fresh Debian machine, skipping
# whatever is already there: build tools and headers for librdkafka, Java and Maven for the
# broker, the wasm32-wasip2 Rust target for the plugins.
set -euo pipefail

need=()
for pkg in cmake libcurl4-openssl-dev libssl-dev openssl zlib1g-dev pkg-config build-essential maven; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

command -v cargo >/dev/null 2>&1 || { echo "setup: Rust is needed; install it with rustup (https://rustup.rs)" >&2; exit 1; }
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "setup: adding the wasm32-wasip2 Rust target" >&2
  rustup target add wasm32-wasip2
fi
