#!/usr/bin/env bash
# A 3-node Apache Kafka cluster (KRaft, each node broker+controller, a 3-voter quorum) on this
# machine, for the cluster tests and for trying the pipeline on replicated topics. Each node is
# scripts/kafka.sh with its own folder and ports; the broker settings live there alone.
#
#   scripts/kafka-cluster.sh start            fetch if needed, format if needed, start every node, wait
#   scripts/kafka-cluster.sh stop             stop every node cleanly
#   scripts/kafka-cluster.sh reset            stop every node and delete the cluster's data
#   scripts/kafka-cluster.sh wait [secs]      wait until every partition has a leader and a full ISR
#   scripts/kafka-cluster.sh brokers          print the bootstrap servers (for KAFKA_BROKERS)
#   scripts/kafka-cluster.sh start-node N     start node N (1–3) again (its data is kept)
#   scripts/kafka-cluster.sh stop-node N      stop node N cleanly
#   scripts/kafka-cluster.sh kill-node N      SIGKILL node N (a crash)
#   scripts/kafka-cluster.sh restart-node N   stop node N cleanly, then start it
#   scripts/kafka-cluster.sh pid N            print node N's process id (empty when it is down)
#
# Environment: KAFKA_HOME_DIR (default .kafka/cluster; node N in $KAFKA_HOME_DIR/nodeN, the jars
# shared from .kafka/lib), KAFKA_CLUSTER_PORT (19700): node N's broker listens on
# base + 2(N−1) and its controller on the port after it, KAFKA_HEAP (-Xmx384m -Xms384m per node).
# Topics get 3 replicas by default, min.insync.replicas=2; the consumer offsets and the
# transaction log are replicated 3 times (the log with min ISR 2).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
home=${KAFKA_HOME_DIR:-$repo/.kafka/cluster}
base=${KAFKA_CLUSTER_PORT:-19700}
nodes=3
export KAFKA_HEAP=${KAFKA_HEAP:--Xmx384m -Xms384m}
export KAFKA_LIB_DIR=${KAFKA_LIB_DIR:-$repo/.kafka/lib}

log() { echo "kafka-cluster.sh: $*" >&2; }

broker_port() { echo $((base + 2 * ($1 - 1))); }

voters() {
  local list="" n
  for n in $(seq 1 $nodes); do list="$list${list:+,}$n@127.0.0.1:$(($(broker_port "$n") + 1))"; done
  echo "$list"
}

brokers() {
  local list="" n
  for n in $(seq 1 $nodes); do list="$list${list:+,}127.0.0.1:$(broker_port "$n")"; done
  echo "$list"
}

# scripts/kafka.sh for node $1.
node() {
  local n=$1; shift
  [[ "$n" =~ ^[1-3]$ ]] || { log "no node '$n' (1–$nodes)"; exit 2; }
  local port; port=$(broker_port "$n")
  KAFKA_HOME_DIR="$home/node$n" KAFKA_PORT=$port KAFKA_CONTROLLER_PORT=$((port + 1)) \
    KAFKA_NODE_ID=$n KAFKA_QUORUM_VOTERS=$(voters) KAFKA_CLUSTER_ID=$(cluster_id) \
    KAFKA_REPLICATION=3 KAFKA_MIN_ISR=2 KAFKA_SASL_PORT='' "$repo/scripts/kafka.sh" "$@"
}

# One cluster id for every node, made once (a KRaft cluster id: 16 random bytes, base64url).
cluster_id() {
  local file=$home/cluster.id
  if [ ! -s "$file" ]; then
    mkdir -p "$home"
    head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=' > "$file"
  fi
  cat "$file"
}

# Partitions without a leader or with a replica out of the ISR, as printed by kafka-topics;
# empty when the cluster is whole. Fails when no node answers.
unhealthy() {
  local flag out=""
  for flag in --unavailable-partitions --under-replicated-partitions; do
    out+=$(java -Xmx128m -cp "$KAFKA_LIB_DIR/*" -Dkafka.log.level=WARN \
      -Dlog4j2.configurationFile="$repo/scripts/kafka/log4j2.properties" \
      org.apache.kafka.tools.TopicCommand --bootstrap-server "$(brokers)" --describe "$flag" 2>/dev/null) \
      || return 1
  done
  printf '%s' "$out"
}

wait_whole() {
  local deadline=$((SECONDS + ${1:-180})) out
  for n in $(seq 1 $nodes); do node "$n" wait "${1:-180}"; done
  until out=$(unhealthy) && [ -z "$out" ]; do
    [ $SECONDS -lt $deadline ] || { log "the cluster is not whole in time:"; echo "$out" | head -20 >&2; exit 1; }
    sleep 1
  done
  log "every partition has a leader and a full ISR ($(brokers))"
}

start_all() {
  node 1 fetch
  local n pids=() failed=0
  # A node's broker listens only once the controllers have a quorum, so the nodes start side
  # by side (one after the other, the first would wait for the others forever).
  for n in $(seq 1 $nodes); do
    node "$n" start & pids+=($!)
  done
  for n in "${pids[@]}"; do wait "$n" || failed=1; done
  [ "$failed" -eq 0 ] || { log "a node did not start; see $home/node*/logs/broker.log"; exit 1; }
  wait_whole 180
}

# Side by side: a node stopping alone after the others waits for a quorum that is gone.
stop_all() {
  local n pids=()
  for n in $(seq 1 $nodes); do node "$n" stop & pids+=($!); done
  for n in "${pids[@]}"; do wait "$n" || true; done
}

case "${1:-}" in
  start) start_all ;;
  stop) stop_all ;;
  reset) stop_all; rm -rf "$home" ;;
  wait) wait_whole "${2:-180}" ;;
  brokers) brokers ;;
  start-node) node "${2:-}" start ;;
  stop-node) node "${2:-}" stop ;;
  kill-node) node "${2:-}" kill ;;
  restart-node) node "${2:-}" restart ;;
  pid) f="$home/node${2:-}/broker.pid"; if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then cat "$f"; fi ;;
  *) sed -n '2,21p' "$0" >&2; exit 2 ;;
esac
