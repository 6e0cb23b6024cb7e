#!/usr/bin/env bash
# Install what building, running and testing stagehost needs on a fresh Debian machine,
# skipping whatever is already there: build tools and headers for librdkafka, Java and Maven
# for the broker, the wasm32-wasip2 Rust target for the plugins, and for the console's
# browser test Chromium, Node.js and playwright-core (npm, pinned by
# host/tests/browser/package-lock.json; it drives /usr/bin/chromium, no browser download).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

need=()
for pkg in cmake libcurl4-openssl-dev libssl-dev openssl zlib1g-dev pkg-config build-essential maven; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
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

# npm ci again only when the lock file changed since the last install.
browser="$repo/host/tests/browser"
if [ ! -f "$browser/node_modules/.package-lock.json" ] \
  || [ "$browser/package-lock.json" -nt "$browser/node_modules/.package-lock.json" ]; then
  echo "setup: installing the console's browser test packages (npm ci in host/tests/browser)" >&2
  (cd "$browser" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi
