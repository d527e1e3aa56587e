#!/usr/bin/env bash
# `make bench-topology`: applications per second through the whole pipeline (join, admission,
# submit with upload, dedupe, ID-check, coupon, notification; until every application settled), on
# the embedded all-in-one and on the multi-process topology (three Kafka brokers, Redis, s3s-fs; one
# process per role), in one run, with the same load tester, the same registry size and the same
# crowd. Prints both figures and their ratio; each run also reconciles (lost, duplicated must be 0).
#
# Knobs: BENCH_APPLICATIONS (3000), BENCH_HOUSEHOLDS (5000), BENCH_PORT (18080), BENCH_WORKERS
# (workers per stage in the topology, 1), BENCH_OUT (bench-report), TARGET_DIR (target).
set -uo pipefail

TARGET_DIR=${TARGET_DIR:-target}
N=${BENCH_APPLICATIONS:-3000}
HOUSEHOLDS=${BENCH_HOUSEHOLDS:-5000}
PORT=${BENCH_PORT:-18080}
OUT=${BENCH_OUT:-bench-report}
mkdir -p "$OUT"
work=$(mktemp -d "${TMPDIR:-/tmp}/kyufu-bench.XXXXXX")
sys=""
cleanup() {
  if [ -n "$sys" ]; then kill -TERM "$sys" 2>/dev/null; wait "$sys" 2>/dev/null; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# An arrival rate well above what either can settle, so the figure is the pipeline's capacity:
# N applications spread over 10 s of wall time, admission rate and burst out of the way.
load() { # name registry addr-file (public address, then where /metrics is)
  "$TARGET_DIR/release/loadtest" --target "http://127.0.0.1:$PORT" --metrics "http://$(sed -n 2p "$3")" --registry "$2" --applications "$N" \
    --profile steady --steady-secs 3600 --speedup 360 --out "$OUT/$1" --quiet \
    --abandon 0 --bad-input 0 --retry 0.05 --settle-timeout 600 --drain-timeout 600 >"$OUT/$1.txt" 2>&1
  local rc=$?
  cat "$OUT/$1.txt"
  return $rc
}
figure() { sed -n 's/^throughput *: .* \([0-9.]*\)\/s settled.*/\1/p' "$OUT/$1.txt"; }
stop() { kill -TERM "$sys" 2>/dev/null; wait "$sys" 2>/dev/null; sys=""; }

echo "== embedded all-in-one"
"$TARGET_DIR/release/kyufu" all-in-one --data-dir "$work/embedded" --listen "127.0.0.1:$PORT" --review-listen 127.0.0.1:0 \
  --addr-file "$work/embedded.addr" --households "$HOUSEHOLDS" --rate 5000 --burst 5000 >"$OUT/embedded-system.log" 2>&1 &
sys=$!
for _ in $(seq 1 600); do [ -s "$work/embedded.addr" ] && break; sleep 0.2; done
load embedded "$work/embedded/registry.csv" "$work/embedded.addr"; rc1=$?
stop

echo "== multi-process topology (three Kafka brokers, Redis, s3s-fs)"
TOPOLOGY_DIR="$work/topology" TOPOLOGY_PORT=$PORT TOPOLOGY_HOUSEHOLDS=$HOUSEHOLDS TOPOLOGY_WORKERS=${BENCH_WORKERS:-1} \
  TOPOLOGY_RATE=5000 TOPOLOGY_BURST=5000 TARGET_DIR=$TARGET_DIR bash scripts/topology.sh >"$OUT/topology-system.log" 2>&1 &
sys=$!
for _ in $(seq 1 600); do [ -s "$work/topology/addr" ] && break; kill -0 "$sys" 2>/dev/null || break; sleep 0.2; done
[ -s "$work/topology/addr" ] || { echo "bench: topology did not start:" >&2; tail -5 "$OUT/topology-system.log" >&2; exit 2; }
load topology "$work/topology/registry.csv" "$work/topology/addr"; rc2=$?
cp "$work"/topology/*.log "$OUT/" 2>/dev/null
stop

e=$(figure embedded); t=$(figure topology)
echo
echo "applications settled per second, $N applications, $(nproc) cores:"
echo "  embedded all-in-one      : ${e:-?}"
echo "  multi-process topology   : ${t:-?}"
if [ -n "$e" ] && [ -n "$t" ]; then awk -v e="$e" -v t="$t" 'BEGIN { if (e > 0) printf "  topology / embedded      : %.2f\n", t / e }'; fi
[ "$rc1" = 0 ] && [ "$rc2" = 0 ]
