#!/usr/bin/env bash
# Fetch and run a single-node Apache Kafka broker (KRaft, combined broker+controller) without Docker.
#
#   scripts/kafka.sh fetch            resolve the broker jars from Maven Central into .kafka/lib
#   scripts/kafka.sh start            fetch if needed, format storage if needed, start in the background
#   scripts/kafka.sh run              same, but in the foreground (Ctrl-C stops it)
#   scripts/kafka.sh stop             stop the background broker cleanly (SIGTERM, then wait)
#   scripts/kafka.sh restart          stop, then start (data is kept)
#   scripts/kafka.sh wait             wait until the broker accepts connections
#   scripts/kafka.sh reset            stop and delete the broker's data
#
# Environment: KAFKA_HOME_DIR (default .kafka in the repo), KAFKA_PORT (9092),
# KAFKA_CONTROLLER_PORT (9093), KAFKA_HEAP (default -Xmx512m -Xms512m).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
home=${KAFKA_HOME_DIR:-$repo/.kafka}
port=${KAFKA_PORT:-9092}
controller_port=${KAFKA_CONTROLLER_PORT:-9093}
heap=${KAFKA_HEAP:--Xmx512m -Xms512m}
lib=$home/lib
data=$home/data
logs=$home/logs
pidfile=$home/broker.pid
props=$home/server.properties

log() { echo "kafka.sh: $*" >&2; }

fetch() {
  if [ -f "$lib/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || { log "Maven (mvn) is needed to fetch the broker jars; install it with: apt-get install -y maven"; exit 1; }
  command -v java >/dev/null || { log "Java 17+ is needed to run the broker; install it with: apt-get install -y openjdk-17-jre-headless"; exit 1; }
  log "resolving the Kafka broker jars from Maven Central into $lib"
  rm -rf "$lib"; mkdir -p "$lib"
  mvn -q -B -f "$repo/scripts/kafka/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$lib" -DincludeScope=runtime
  touch "$lib/.complete"
}

write_props() {
  mkdir -p "$data" "$logs"
  cat > "$props" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$data
num.partitions=3
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=6
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
log.segment.bytes=67108864
PROPS
}

java_cmd() {
  # shellcheck disable=SC2086 # $heap holds several JVM flags on purpose
  exec java $heap -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$repo/scripts/kafka/log4j2.properties" \
    -Dkafka.logs.dir="$logs" -cp "$lib/*" "$@"
}

format() {
  write_props
  if [ ! -f "$data/meta.properties" ]; then
    local id
    id=$( java_cmd kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    log "formatting KRaft storage in $data (cluster $id)"
    ( java_cmd kafka.tools.StorageTool format -t "$id" -c "$props" ) >"$logs/format.log" 2>&1 \
      || { cat "$logs/format.log" >&2; exit 1; }
  fi
}

is_running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

wait_ready() {
  local deadline=$((SECONDS + ${1:-90}))
  until port_open; do
    if [ -f "$pidfile" ] && ! is_running; then log "broker exited; see $logs/broker.log"; tail -30 "$logs/broker.log" >&2; exit 1; fi
    [ $SECONDS -lt $deadline ] || { log "broker did not open 127.0.0.1:$port in time; see $logs/broker.log"; exit 1; }
    sleep 0.3
  done
  log "broker is listening on 127.0.0.1:$port"
}

start() {
  if is_running; then log "broker already running (pid $(cat "$pidfile"))"; wait_ready; return 0; fi
  if port_open; then log "something already listens on 127.0.0.1:$port; stop it or set KAFKA_PORT"; exit 1; fi
  fetch; format
  log "starting the broker; log in $logs/broker.log"
  ( trap "" HUP; java_cmd kafka.Kafka "$props" ) >"$logs/broker.log" 2>&1 </dev/null &
  echo $! > "$pidfile"
  wait_ready
}

run_foreground() {
  fetch; format
  exec_java kafka.Kafka "$props"
}

stop() {
  if ! is_running; then rm -f "$pidfile"; return 0; fi
  local pid; pid=$(cat "$pidfile")
  log "stopping the broker (pid $pid)"
  kill -TERM "$pid"
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }; sleep 0.1; done
  log "broker did not stop in 30 s; killing it"; kill -KILL "$pid" || true; rm -f "$pidfile"
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  run) run_foreground ;;
  stop) stop ;;
  restart) stop; start ;;
  wait) wait_ready "${2:-90}" ;;
  reset) stop; rm -rf "$data" "$logs" "$props" ;;
  *) sed -n '2,14p' "$0" >&2; exit 2 ;;
esac
