#!/usr/bin/env bash
# Fetch and run a single-node Apache Kafka broker (KRaft, combined broker+controller) without Docker.
#
#   scripts/kafka.sh fetch            resolve the broker jars from Maven Central into .kafka/lib
#   scripts/kafka.sh start            fetch if needed, format storage if needed, start in the background
#   scripts/kafka.sh run              same, but in the foreground (Ctrl-C stops it)
#   scripts/kafka.sh stop             stop the background broker cleanly (SIGTERM, then wait)
#   scripts/kafka.sh restart          stop, then start (data is kept)
#   scripts/kafka.sh wait             wait until the broker accepts connections
#   scripts/kafka.sh kill             SIGKILL the background broker (a crash, for tests)
#   scripts/kafka.sh reset            stop and delete the broker's data
#
# Environment: KAFKA_HOME_DIR (default .kafka in the repo), KAFKA_PORT (9092),
# KAFKA_CONTROLLER_PORT (9093), KAFKA_HEAP (default -Xmx512m -Xms512m).
# KAFKA_SASL_PORT (unset: none) adds a SASL_SSL listener on that port: SCRAM-SHA-512 over TLS,
# with a CA and a broker certificate for 127.0.0.1 made by openssl into $KAFKA_HOME_DIR/tls
# (clients trust tls/ca.pem) and the user KAFKA_SASL_USER (stagehost) with the password
# KAFKA_SASL_PASSWORD (stagehost-secret), created when the storage is formatted.
# scripts/kafka-cluster.sh runs this script once per node of a cluster with: KAFKA_LIB_DIR (the
# jars; default $KAFKA_HOME_DIR/lib), KAFKA_NODE_ID (1), KAFKA_QUORUM_VOTERS (this node alone),
# KAFKA_CLUSTER_ID (random; every node of a cluster is formatted with the same one),
# KAFKA_REPLICATION (1: default, offsets and transaction log replication factor) and
# KAFKA_MIN_ISR (1: min.insync.replicas, also of the transaction log).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
home=${KAFKA_HOME_DIR:-$repo/.kafka}
port=${KAFKA_PORT:-9092}
controller_port=${KAFKA_CONTROLLER_PORT:-9093}
heap=${KAFKA_HEAP:--Xmx512m -Xms512m}
lib=${KAFKA_LIB_DIR:-$home/lib}
node_id=${KAFKA_NODE_ID:-1}
voters=${KAFKA_QUORUM_VOTERS:-$node_id@127.0.0.1:$controller_port}
replication=${KAFKA_REPLICATION:-1}
min_isr=${KAFKA_MIN_ISR:-1}
data=$home/data
logs=$home/logs
pidfile=$home/broker.pid
props=$home/server.properties
sasl_port=${KAFKA_SASL_PORT:-}
sasl_user=${KAFKA_SASL_USER:-stagehost}
sasl_password=${KAFKA_SASL_PASSWORD:-stagehost-secret}
tls=$home/tls

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

# A CA and a broker certificate for 127.0.0.1 signed by it (PEM, in $tls), made once. The
# broker reads its key and certificate from one PEM file; Kafka wants that key in encrypted
# PKCS#8 with ssl.key.password, and Java 17 reads PBES1 (PBE-SHA1-3DES) but not PBES2.
make_certs() {
  if [ -f "$tls/broker-keystore.pem" ]; then return 0; fi
  command -v openssl >/dev/null || { log "openssl is needed for the SASL_SSL listener; install it with: apt-get install -y openssl"; exit 1; }
  log "making a test CA and a broker certificate in $tls"
  mkdir -p "$tls"
  (
    cd "$tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=stagehost test CA" \
      -keyout ca.key -out ca.pem
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout broker.key -out broker.csr
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > broker.ext
    openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile broker.ext -out broker.pem
    openssl pkcs8 -topk8 -v1 PBE-SHA1-3DES -in broker.key -passout pass:broker-key -out broker.p8
    cat broker.p8 broker.pem > broker-keystore.pem
  ) >"$logs/tls.log" 2>&1 || { cat "$logs/tls.log" >&2; exit 1; }
}

write_props() {
  mkdir -p "$data" "$logs"
  local listeners="PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port"
  local advertised="PLAINTEXT://127.0.0.1:$port"
  local protocols="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
  if [ -n "$sasl_port" ]; then
    make_certs
    listeners="$listeners,SASL_SSL://127.0.0.1:$sasl_port"
    advertised="$advertised,SASL_SSL://127.0.0.1:$sasl_port"
    protocols="$protocols,SASL_SSL:SASL_SSL"
  fi
  cat > "$props" <<PROPS
process.roles=broker,controller
node.id=$node_id
controller.quorum.voters=$voters
listeners=$listeners
advertised.listeners=$advertised
controller.listener.names=CONTROLLER
listener.security.protocol.map=$protocols
inter.broker.listener.name=PLAINTEXT
log.dirs=$data
num.partitions=3
auto.create.topics.enable=false
default.replication.factor=$replication
min.insync.replicas=$min_isr
offsets.topic.replication.factor=$replication
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=$replication
transaction.state.log.min.isr=$min_isr
transaction.state.log.num.partitions=6
share.coordinator.state.topic.replication.factor=$replication
share.coordinator.state.topic.min.isr=$min_isr
group.initial.rebalance.delay.ms=0
log.retention.hours=24
log.segment.bytes=67108864
PROPS
  if [ -n "$sasl_port" ]; then
    cat >> "$props" <<PROPS
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$tls/broker-keystore.pem
listener.name.sasl_ssl.ssl.key.password=broker-key
PROPS
  fi
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
    local id=${KAFKA_CLUSTER_ID:-}
    [ -n "$id" ] || id=$( java_cmd kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    log "formatting KRaft storage in $data (cluster $id)"
    local scram=()
    # The SCRAM user exists from the first start: KRaft stores it in the bootstrap metadata.
    [ -z "$sasl_port" ] || scram=(--add-scram "SCRAM-SHA-512=[name=$sasl_user,password=$sasl_password]")
    ( java_cmd kafka.tools.StorageTool format -t "$id" -c "$props" "${scram[@]}" ) >"$logs/format.log" 2>&1 \
      || { cat "$logs/format.log" >&2; exit 1; }
  fi
}

is_running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/${1:-$port}") 2>/dev/null; }

wait_ready() {
  local deadline=$((SECONDS + ${1:-90}))
  until port_open && { [ -z "$sasl_port" ] || port_open "$sasl_port"; }; do
    if [ -f "$pidfile" ] && ! is_running; then log "broker exited; see $logs/broker.log"; tail -30 "$logs/broker.log" >&2; exit 1; fi
    [ $SECONDS -lt $deadline ] || { log "broker did not open 127.0.0.1:$port in time; see $logs/broker.log"; exit 1; }
    sleep 0.3
  done
  log "broker is listening on 127.0.0.1:$port${sasl_port:+ (SASL_SSL on $sasl_port)}"
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
  java_cmd kafka.Kafka "$props"
}

stop() {
  if ! is_running; then rm -f "$pidfile"; return 0; fi
  local pid; pid=$(cat "$pidfile")
  log "stopping the broker (pid $pid)"
  kill -TERM "$pid"
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }; sleep 0.1; done
  log "broker did not stop in 30 s; killing it"; kill -KILL "$pid" || true; rm -f "$pidfile"
}

# A crash: SIGKILL, no clean shutdown (the node recovers its log at the next start).
kill_hard() {
  if ! is_running; then rm -f "$pidfile"; return 0; fi
  local pid; pid=$(cat "$pidfile")
  log "killing the broker (pid $pid) with SIGKILL"
  kill -KILL "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$pidfile"
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  run) run_foreground ;;
  stop) stop ;;
  restart) stop; start ;;
  kill) kill_hard ;;
  wait) wait_ready "${2:-90}" ;;
  reset) stop; rm -rf "$data" "$logs" "$props" "$tls" ;;
  *) sed -n '2,24p' "$0" >&2; exit 2 ;;
esac
