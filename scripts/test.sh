#!/usr/bin/env bash
# `make test`: the plugins' native unit tests, the host's unit and black-box tests, and the
# end-to-end tests against a real Kafka broker started here (unless KAFKA_BROKERS is set).
# `scripts/test.sh chaos` (`make chaos`): only the chaos acceptance tests, at full size.
# `scripts/test.sh bench` (`make bench`): the benchmark suite (host/benches/pipeline.rs) and
# the criterion micro-benchmarks, against the same kind of broker.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

# The deliberately broken and variant components of the host's sandbox and hot-swap tests
# (plugins/testing), and the pass-through `identity` of the benchmarks; `make plugins` builds only
# the real stages.
echo "== test components (plugins/testing)"
(cd plugins && cargo build --release --target wasm32-wasip2 --quiet \
  -p faulty -p always-trap -p warehouse-blue -p warehouse-green -p not-a-stage -p identity)

started_broker=""
if [ -z "${KAFKA_BROKERS:-}" ]; then
  export KAFKA_HOME_DIR="$repo/.kafka/test"
  export KAFKA_PORT=${TEST_KAFKA_PORT:-19092}
  export KAFKA_CONTROLLER_PORT=${TEST_KAFKA_CONTROLLER_PORT:-19093}
  mkdir -p "$KAFKA_HOME_DIR"
  # Share the fetched jars with the main broker.
  [ -e "$KAFKA_HOME_DIR/lib" ] || ln -s "$repo/.kafka/lib" "$KAFKA_HOME_DIR/lib"
  scripts/kafka.sh reset >/dev/null 2>&1 || true
  scripts/kafka.sh start
  started_broker=1
  export KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT
fi
cleanup() { if [ -n "$started_broker" ]; then scripts/kafka.sh stop; fi; }
trap cleanup EXIT

status=0
if [ "${1:-}" = bench ]; then
  echo "== micro-benchmarks (criterion)"
  cargo bench --bench hot_paths 2>&1 | grep -E '^[a-z_]+/|time:' || status=1
  echo "== pipeline benchmarks (against $KAFKA_BROKERS)"
  cargo bench --bench pipeline || status=1
  exit $status
fi
if [ "${1:-}" = chaos ]; then
  export CHAOS_ORDERS=${CHAOS_ORDERS:-10000} CHAOS_KILLS=${CHAOS_KILLS:-5} CHAOS_BROKER_RESTART=${CHAOS_BROKER_RESTART:-1}
  export CHAOS_BROKER_OUTAGE=${CHAOS_BROKER_OUTAGE:-30} CHAOS_FREEZE=${CHAOS_FREEZE:-20}
  echo "== chaos: $CHAOS_ORDERS orders, $CHAOS_KILLS kills, broker restart $CHAOS_BROKER_RESTART, broker outage ${CHAOS_BROKER_OUTAGE}s, freeze ${CHAOS_FREEZE}s (against $KAFKA_BROKERS)"
  : > .stagehost-plugin-tests.log
  cargo test --release --test chaos -- --nocapture --test-threads=1 --include-ignored 2>&1 | tee .stagehost-host-tests.log || status=1
  # The 3-broker cluster (its own, on CLUSTER_KAFKA_PORT): both broker kills and a host kill.
  export CHAOS_CLUSTER_ORDERS=${CHAOS_CLUSTER_ORDERS:-5000} CHAOS_CLUSTER_BROKER_KILLS=${CHAOS_CLUSTER_BROKER_KILLS:-2}
  echo "== chaos on a 3-broker cluster: $CHAOS_CLUSTER_ORDERS orders, $CHAOS_CLUSTER_BROKER_KILLS broker kills, a host kill"
  cargo test --release --test cluster -- --nocapture --include-ignored 2>&1 | tee -a .stagehost-host-tests.log || status=1
else
  echo "== plugin unit tests (native)"
  (cd plugins && cargo test --workspace --quiet 2>&1) | tee .stagehost-plugin-tests.log || status=1
  echo "== host tests (unit, black-box and end-to-end against $KAFKA_BROKERS)"
  # --no-fail-fast: every test binary runs even when an earlier one fails, so the count below
  # is the whole suite's.
  cargo test --release --no-fail-fast -- --test-threads=2 2>&1 | tee .stagehost-host-tests.log || status=1
fi

passed=0; failed=0
for log in .stagehost-plugin-tests.log .stagehost-host-tests.log; do
  while read -r p f; do passed=$((passed + p)); failed=$((failed + f)); done < <(
    sed -nE 's/^test result: [a-zA-Z]+\. ([0-9]+) passed; ([0-9]+) failed.*/\1 \2/p' "$log")
done
rm -f .stagehost-plugin-tests.log .stagehost-host-tests.log
echo
echo "${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ] || status=1
exit $status
