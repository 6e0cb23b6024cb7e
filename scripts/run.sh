#!/usr/bin/env bash
# `make run`: start a local broker (unless KAFKA_BROKERS points at one) and the host, in the
# foreground. Ctrl-C stops the host, then the broker.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

started_broker=""
if [ -z "${KAFKA_BROKERS:-}" ]; then
  scripts/kafka.sh start
  started_broker=1
  export KAFKA_BROKERS=127.0.0.1:${KAFKA_PORT:-9092}
fi

host_pid=""
cleanup() {
  trap - INT TERM EXIT
  if [ -n "$host_pid" ] && kill -0 "$host_pid" 2>/dev/null; then
    kill -TERM "$host_pid" 2>/dev/null || true
    wait "$host_pid" 2>/dev/null || true
  fi
  if [ -n "$started_broker" ]; then scripts/kafka.sh stop; fi
}
trap cleanup INT TERM EXIT

addr=${STAGEHOST_HTTP_ADDR:-127.0.0.1:8080}
cat <<MSG

stagehost is starting against Kafka at $KAFKA_BROKERS; HTTP on $addr.
Send an order (from another terminal, in $repo):
  curl -i -X POST http://$addr/orders -H 'content-type: application/json' -d @examples/order.json
Watch it travel:
  target/release/stagehost tail NotificationDelivered --from-beginning
Dev mode is on: rebuild a plugin (cd plugins && cargo build --release --target wasm32-wasip2)
and the host hot-swaps it; see the versions with
  target/release/stagehost plugin list
Ctrl-C stops the host and the broker.

MSG
target/release/stagehost run --config pipeline.toml --watch &
host_pid=$!
wait "$host_pid"
