#!/usr/bin/env bash
# The multi-process topology on this machine, on real services: redis-server (append-only file),
# s3s-fs as the S3 server, three Apache Kafka brokers (`kafka-cluster` from kyufu-testservers, the
# jars `make deps` fetched; the roles create the topics, replication factor 3), then intake, one
# worker per stage (TOPOLOGY_WORKERS of each), the review console and the gateway on
# 127.0.0.1:$TOPOLOGY_PORT. Everything lives in a temporary directory; Ctrl-C (or SIGTERM) stops it
# all. Prints the gateway's address, then its operations address (metrics, on PORT+11), to
# $TOPOLOGY_DIR/addr once everything is ready, and every process as `name pid port` (the port
# where its /metrics is) to $TOPOLOGY_DIR/pids (for the bench's CPU and metrics figures).
#
# Knobs: TOPOLOGY_PORT (8080), TOPOLOGY_HOUSEHOLDS (2000), TOPOLOGY_WORKERS (1), TOPOLOGY_RATE (100),
# TOPOLOGY_BURST (200), TOPOLOGY_DIR (a new temporary directory), TOPOLOGY_KAFKA_JVM (quick|server),
# TOPOLOGY_COMBINED (1: one worker process for every stage), TOPOLOGY_KAFKA_WARM_UP (messages sent
# through a scratch topic before anything starts, so the brokers' JIT is warm; 0),
# TARGET_DIR (target), and per stage
# TOPOLOGY_WORKERS_DEDUPE / _DOCUMENTS / _IDCHECK / _COUPON / _NOTIFY (default TOPOLOGY_WORKERS): the ID check reads
# every document from S3, so it is the stage that gains most from more members.
set -euo pipefail

TARGET_DIR=${TARGET_DIR:-target}
BIN="$TARGET_DIR/release/kyufu"
KAFKA="$TARGET_DIR/release/kafka-cluster"
PORT=${TOPOLOGY_PORT:-8080}
HOUSEHOLDS=${TOPOLOGY_HOUSEHOLDS:-2000}
WORKERS=${TOPOLOGY_WORKERS:-1}
DIR=${TOPOLOGY_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/kyufu-topology.XXXXXX")}
mkdir -p "$DIR"
[ -x "$BIN" ] && [ -x "$KAFKA" ] || { echo "topology.sh: build first: cargo build --release -p kyufu -p kyufu-testservers" >&2; exit 2; }
command -v redis-server >/dev/null || { echo "topology.sh: redis-server missing: run scripts/install-deps.sh" >&2; exit 2; }
S3S=$(command -v s3s-fs || echo "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs")
[ -x "$S3S" ] || { echo "topology.sh: s3s-fs missing: run scripts/install-deps.sh" >&2; exit 2; }

pids=()
: >"$DIR/pids"
# Remembers the last started process under a name (and the port it serves /metrics on, or -).
record() { echo "$1 ${pids[-1]} $2" >>"$DIR/pids"; }
# Our processes first (newest first: gateway, workers, intake), the services they need last.
stop() {
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    local pid=${pids[i]}
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null && echo "topology.sh: pid $pid did not stop within 15 s; killed" >&2
    wait "$pid" 2>/dev/null || true
  done
}
trap stop EXIT
trap 'exit 130' INT TERM

wait_port() { # name port
  for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0; sleep 0.1; done
  echo "topology.sh: $1 did not open port $2; see $DIR/$1.log" >&2; exit 2
}
wait_ready() { # name port
  for _ in $(seq 1 300); do
    if exec 3<>"/dev/tcp/127.0.0.1/$2" 2>/dev/null; then
      printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3
      if head -1 <&3 | grep -q ' 200 '; then exec 3>&-; return 0; fi
      exec 3>&-
    fi
    sleep 0.2
  done
  echo "topology.sh: $1 not ready on port $2; see $DIR/$1.log" >&2; exit 2
}

REDIS_PORT=$((PORT + 10000)); S3_PORT=$((PORT + 10001)); INTAKE_PORT=$((PORT + 1)); REVIEW_PORT=$((PORT + 10))
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$DIR" --appendonly yes --appendfsync everysec --save "" >"$DIR/redis.log" 2>&1 &
pids+=($!); record redis "$REDIS_PORT"; wait_port redis "$REDIS_PORT"
mkdir -p "$DIR/s3"
"$S3S" --host 127.0.0.1 --port "$S3_PORT" --access-key topology --secret-key topology-secret-key "$DIR/s3" >"$DIR/s3.log" 2>&1 &
pids+=($!); record s3 -; wait_port s3 "$S3_PORT"
# The brokers with the tests' JVM settings (client compiler only) by default: the full JIT
# (TOPOLOGY_KAFKA_JVM=server, as production brokers run) keeps compiling for minutes after a
# start, and on two cores shared with everything else that showed in the benchmark's short runs
# (at 80 % of capacity: p99 submit->final 3.1 s with it, 0.9 s without; steady CPU per message
# about the same). TOPOLOGY_KAFKA_WARM_UP sends messages through a scratch topic first, so the
# brokers' start-up work is done before anything is measured.
KYUFU_KAFKA_JVM=${TOPOLOGY_KAFKA_JVM:-quick} "$KAFKA" --brokers 3 --addr-file "$DIR/kafka" --warm-up "${TOPOLOGY_KAFKA_WARM_UP:-0}" \
  >"$DIR/kafka.log" 2>&1 &
pids+=($!); record kafka -
# Three JVMs on a small machine (and the warm-up, if asked for): give them five minutes.
for _ in $(seq 1 3000); do [ -s "$DIR/kafka" ] && break; kill -0 "${pids[-1]}" 2>/dev/null || break; sleep 0.1; done
[ -s "$DIR/kafka" ] || { echo "topology.sh: Kafka did not start; see $DIR/kafka.log" >&2; exit 2; }

secret() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }
export KYUFU_DATA_DIR="$DIR" KYUFU_BUS=kafka KYUFU_KAFKA_BROKERS="$(cat "$DIR/kafka")" KYUFU_KAFKA_PARTITIONS=8 KYUFU_KAFKA_REPLICATION=3 \
  KYUFU_STATUS_STORE=redis KYUFU_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/" \
  KYUFU_DOCUMENTS=s3 KYUFU_S3_ENDPOINT="http://127.0.0.1:$S3_PORT" KYUFU_S3_BUCKET=kyufu-documents KYUFU_S3_CREATE_BUCKET=true \
  AWS_ACCESS_KEY_ID=topology AWS_SECRET_ACCESS_KEY=topology-secret-key \
  KYUFU_PASS_KEYS="k1:$(secret)" KYUFU_IDENTITY_SECRET="$(secret)" KYUFU_STATUS_SECRET="$(secret)" \
  KYUFU_SECRETS_FILE=/nonexistent
"$BIN" registry generate --households "$HOUSEHOLDS" --out "$DIR/registry.csv" >/dev/null

"$BIN" intake --listen "127.0.0.1:$INTAKE_PORT" >"$DIR/intake.log" 2>&1 &
pids+=($!); record intake "$INTAKE_PORT"; wait_ready intake "$INTAKE_PORT"
port=$((PORT + 100))
# TOPOLOGY_COMBINED=1: one worker process running every stage (`kyufu worker all`).
stages="dedupe documents idcheck coupon notify"
[ "${TOPOLOGY_COMBINED:-0}" = 1 ] && stages=all
for stage in $stages; do
  knob="TOPOLOGY_WORKERS_${stage^^}"
  for n in $(seq 1 "${!knob:-$WORKERS}"); do
    "$BIN" worker "$stage" --listen "127.0.0.1:$port" >"$DIR/worker-$stage-$n.log" 2>&1 &
    pids+=($!); record "$stage-$n" "$port"; wait_ready "worker-$stage-$n" "$port"
    port=$((port + 1))
  done
done
"$BIN" gateway --listen "127.0.0.1:$PORT" --upstream "http://127.0.0.1:$INTAKE_PORT" --ops-listen "127.0.0.1:$((PORT + 11))" \
  --rate "${TOPOLOGY_RATE:-100}" --burst "${TOPOLOGY_BURST:-200}" >"$DIR/gateway.log" 2>&1 &
pids+=($!); record gateway "$((PORT + 11))"; wait_ready gateway "$PORT"
printf '127.0.0.1:%s\n127.0.0.1:%s\n' "$PORT" "$((PORT + 11))" >"$DIR/addr"
echo "topology.sh: gateway http://127.0.0.1:$PORT, intake :$INTAKE_PORT, workers from :$((PORT + 100)) ($WORKERS per stage unless set per stage),"
echo "             redis :$REDIS_PORT, s3 :$S3_PORT, kafka $(cat "$DIR/kafka"); data and logs in $DIR. Ctrl-C stops it."
wait -n "${pids[@]}" || true
echo "topology.sh: a process exited; stopping the rest (logs in $DIR)" >&2
