# Two commands matter: `make run` starts the whole system on this machine with embedded defaults,
# `make test` runs every test. Everything else is a convenience.
CARGO ?= cargo
JOBS ?= 2
DATA_DIR ?= ./data
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
export CARGO_TERM_COLOR ?= never

.PHONY: run build test deps check-deploy clean triage-eval loadtest run-topology bench bench-topology deploy-up deploy-down bench-gateway fault-run bench-launch bench-documents

## Build (release) and start everything in one process on 127.0.0.1:8080, data under ./data.
run:
	$(CARGO) build -j$(JOBS) --release -p kyufu
	$(TARGET_DIR)/release/kyufu all-in-one --data-dir $(DATA_DIR)

## Replay launch day (70,000 applications, day compressed 200x) against 127.0.0.1:8080, starting a
## fresh system there if nothing answers; report in loadtest-report/. See loadtest/README.md.
loadtest:
	$(CARGO) build -j$(JOBS) --release -p kyufu -p loadtest
	TARGET_DIR=$(TARGET_DIR) LOADTEST_REGISTRY=$${LOADTEST_REGISTRY:-$(DATA_DIR)/registry.csv} bash scripts/loadtest.sh

## Every role as its own process on real services (redis-server, s3s-fs, three Apache Kafka brokers)
## on this machine; gateway on 127.0.0.1:8080. Ctrl-C stops it all.
run-topology: deps
	$(CARGO) build -j$(JOBS) --release -p kyufu -p kyufu-testservers
	TARGET_DIR=$(TARGET_DIR) bash scripts/topology.sh

## Capacity of the embedded all-in-one: 30,000 applications offered at 1,500/s, then 80 % of the
## capacity found; settled/s, fsyncs and CPU per application, submit->final p50/p99, reconciliation.
bench: deps
	$(CARGO) build -j$(JOBS) --release -p kyufu -p loadtest
	TARGET_DIR=$(TARGET_DIR) bash scripts/bench.sh

## Capacity of the multi-process topology (gateway, intake, a worker per stage on redis-server,
## s3s-fs and three Kafka brokers): more offered than it settles, then 80 % of what it settled;
## settled/s, submit->final p50/p99, round trips and CPU per application per process, reconciliation.
## BENCH_WORKERS=2 for two workers per stage. Report in bench-report/.
bench-topology: deps
	$(CARGO) build -j$(JOBS) --release -p kyufu -p kyufu-testservers -p loadtest
	TARGET_DIR=$(TARGET_DIR) bash scripts/bench-topology.sh

## The compose stack in deploy/ (Kafka, Redis, MinIO, Prometheus, Grafana and every role).
deploy-up:
	@command -v docker >/dev/null && docker compose version >/dev/null 2>&1 || { echo "deploy-up: needs docker with the compose plugin (not on this machine; see deploy/README.md)" >&2; exit 1; }
	bash deploy/make-secrets.sh
	docker compose -f deploy/compose.yaml up -d --build

deploy-down:
	@command -v docker >/dev/null && docker compose version >/dev/null 2>&1 || { echo "deploy-down: needs docker with the compose plugin" >&2; exit 1; }
	docker compose -f deploy/compose.yaml down

## Gateway figures: status-poll throughput vs a bare hyper server (both loaded by wrk in one run),
## memory for 1,000,000 tickets.
bench-gateway: deps
	$(CARGO) run -j$(JOBS) --release -p kyufu-gateway --example gateway_bench

## Identity documents in one run: request-path CPU per 12-MP camera JPEG (structure walk) against
## the full decode it replaced, the documents step's CPU per image, the PDF check, the bytes after
## the form's downscale, then the all-in-one with camera documents (accepted/s and settled/s).
bench-documents: deps
	$(CARGO) build -j$(JOBS) --release -p kyufu -p loadtest
	$(CARGO) build -j$(JOBS) --release -p kyufu-pipeline --example document_bench
	TARGET_DIR=$(TARGET_DIR) bash scripts/bench-documents.sh

## Simulated launch: 1,000,000 visitors within 60 s at 200 admissions/s on virtual time; order and
## ETA error, without and with a pre-queue drawn at opening.
bench-launch:
	$(CARGO) run -j$(JOBS) --release -p kyufu-gateway --example launch_sim

build:
	$(CARGO) build -j$(JOBS) --workspace --all-targets

## Install what the tests need (only what is missing), then run every test.
test: deps check-deploy
	$(CARGO) test -j$(JOBS) --workspace --no-fail-fast

## Validate deploy/prometheus with promtool: the config, the rules, and the alert unit tests.
check-deploy: deps
	@command -v promtool >/dev/null || { echo "check-deploy: promtool is missing: run scripts/install-deps.sh" >&2; exit 1; }
	promtool check config deploy/prometheus/prometheus.yml
	promtool check rules deploy/prometheus/recording.rules.yml deploy/prometheus/alerts.rules.yml
	promtool test rules deploy/prometheus/tests/alerts.test.yml

## The long fault run (CI runs it after `make test`): 10,000 applications through the multi-process
## topology while every worker role and intake is killed in turn, a worker is frozen, Redis
## restarts, S3 is away for 30 s and real Kafka brokers are killed (the partition leader, twice) and
## restarted; reconciled, 0 lost or duplicated.
## KYUFU_FAULT_RUN_APPLICATIONS sets the size, KYUFU_FAULT_RUN_REPORT keeps the report.
fault-run: deps
	$(CARGO) test -j$(JOBS) -p kyufu --test topology -- --ignored --nocapture ten_thousand_applications

## What the tests need, only what is missing: Debian packages (redis-server, prometheus, clamd,
## chromium, node, Java, Maven), s3s-fs, playwright-core, and the Apache Kafka broker jars from
## Maven Central (scripts/install-kafka.sh, into ~/.cache/kyufu).
deps:
	bash scripts/install-deps.sh

clean:
	$(CARGO) clean

## A labelled launch day (70,000 applications, ~1.4 M residents) through the real stages:
## prints the confusion matrix of the automatic decisions.
triage-eval:
	$(CARGO) build -j$(JOBS) --release -p kyufu
	$(TARGET_DIR)/release/kyufu eval-triage
