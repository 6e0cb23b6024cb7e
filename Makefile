# stagehost — the two commands of the README are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
# The test suite's own broker, apart from the one `make run` starts.
TEST_KAFKA_PORT ?= 19092
TEST_KAFKA_CONTROLLER_PORT ?= 19093

.PHONY: image-check run test chaos bench load setup plugins host kafka-jars unit-tests e2e-tests lint fmt clean

## run: install what is missing, build plugins and host, start a broker and the host.
run: setup plugins host kafka-jars
	scripts/run.sh

## test: install what is missing, build, start a test broker, run the whole suite.
test: setup plugins kafka-jars
	scripts/test.sh

## chaos: the full chaos acceptance run (10,000 orders, 5 SIGKILLs, a broker restart, the broker
## down 30 s, an instance frozen 20 s).
chaos: setup plugins kafka-jars
	scripts/test.sh chaos

## bench: the benchmark table (broker limit, raw passthrough, one stage, whole pipeline,
## latency, resources) and the criterion micro-benchmarks; results in .bench/.
bench: setup plugins kafka-jars
	scripts/test.sh bench

## image-check: the Docker image's build stage, laid out from the Dockerfile's COPY lines,
## resolves and checks both workspaces offline (the host too: ~10 minutes cold).
image-check: setup plugins
	STAGEHOST_IMAGE_CHECK=1 $(CARGO) test --release --test deploy the_image_builds -- --nocapture

## load: `stagehost load` on the shipped pipeline of `make run` (orders from
## examples/load/order.json, done at their third NotificationDelivered); LOAD_ARGS adds flags,
## e.g. LOAD_ARGS='--rate 500 --duration 30s' or LOAD_ARGS='--clients 32'; LOAD_URL another host.
LOAD_ARGS ?=
LOAD_URL ?= http://127.0.0.1:8080/orders
load: host
	target/release/stagehost load --url $(LOAD_URL) --body @examples/load/order.json \
	  --done-topic NotificationDelivered --done-per-request 3 $(LOAD_ARGS)

setup:
	scripts/setup.sh

plugins:
	cd plugins && $(CARGO) build --release --target wasm32-wasip2

host:
	$(CARGO) build --release --bin stagehost

kafka-jars:
	scripts/kafka.sh fetch

lint:
	$(CARGO) fmt --all -- --check
	cd plugins && $(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets -- -D warnings
	cd plugins && $(CARGO) clippy --workspace --all-targets -- -D warnings
	python3 scripts/import_cycles.py

fmt:
	$(CARGO) fmt --all
	cd plugins && $(CARGO) fmt --all

clean:
	$(CARGO) clean
	cd plugins && $(CARGO) clean
	rm -rf .stagehost
