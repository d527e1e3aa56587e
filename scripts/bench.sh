#!/usr/bin/env bash
# `make bench`: capacity of the embedded all-in-one on this machine. Two runs of the real load
# tester (join, admission, upload, spend, status polls until settled) against a fresh system each:
#   1. overload: BENCH_APPLICATIONS (30,000) arriving at BENCH_RATE (1,500/s), more than the system
#      can settle, so "settled/s" is its capacity, not the arrival rate;
#   2. the same system at 80 % of the capacity measured in run 1, where submit->final p99 must stay
#      under 2 s.
# For each run it prints settled/s, fsyncs per application (the store's own counter), server CPU
# per application (µs, from /proc), submit->final p50/p99 from the server's history, and the
# reconciliation (lost, duplicated, mismatched must be 0). It also measures this disk's fsync in
# the same run, so the figures can be read against "one fsync per application" on this machine.
#
# Knobs: BENCH_APPLICATIONS, BENCH_RATE, BENCH_HOUSEHOLDS (40000), BENCH_PORT (18080),
# BENCH_OUT (bench-report), TARGET_DIR (target), BENCH_KYUFU (the kyufu binary; $TARGET_DIR/release/kyufu),
# BENCH_DOCUMENTS (small: 32x32 images, the pipeline's own cost; camera: 5-12 MP phone photos with
# EXIF/GPS and PDFs with object streams, what launch day uploads when the form cannot shrink them).
set -uo pipefail

TARGET_DIR=${TARGET_DIR:-target}
N=${BENCH_APPLICATIONS:-30000}
RATE=${BENCH_RATE:-1500}
HOUSEHOLDS=${BENCH_HOUSEHOLDS:-40000}
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
tck=$(getconf CLK_TCK)

# CPU seconds (user + system) a process has used so far.
cpu_of() { awk -v t="$tck" '{ sub(/^.*\) /, ""); printf "%.3f\n", ($12 + $13) / t }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# /metrics is on the staff address only: the second line of the addr file.
STAFF=""
metric() { curl -s "http://$STAFF/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }

# The disk: how long one small fsync'd write takes here, now.
fsync_ms() {
  local f="$work/fsync.probe" start end
  start=$(date +%s%N)
  dd if=/dev/zero of="$f" bs=4k count=200 oflag=dsync status=none
  end=$(date +%s%N)
  rm -f "$f"
  awk -v ns=$((end - start)) 'BEGIN { printf "%.2f", ns / 200 / 1e6 }'
}

start_system() { # name
  rm -rf "$work/$1"
  "${BENCH_KYUFU:-$TARGET_DIR/release/kyufu}" all-in-one --data-dir "$work/$1" --listen "127.0.0.1:$PORT" --review-listen 127.0.0.1:0 \
    --addr-file "$work/$1.addr" --households "$HOUSEHOLDS" --rate 100000 --burst 100000 >"$OUT/$1-system.log" 2>&1 &
  sys=$!
  for _ in $(seq 1 1200); do
    if [ -s "$work/$1.addr" ]; then STAFF=$(sed -n 2p "$work/$1.addr"); return 0; fi
    kill -0 "$sys" 2>/dev/null || break
    sleep 0.1
  done
  echo "bench: the all-in-one did not start; see $OUT/$1-system.log" >&2
  exit 2
}
stop_system() { kill -TERM "$sys" 2>/dev/null; wait "$sys" 2>/dev/null; sys=""; }

# One run: $1 name, $2 applications, $3 arrival rate per second. Sets rc and prints the figures.
run() {
  local name=$1 n=$2 rate=$3 secs speedup
  secs=$(awk -v n="$n" -v r="$rate" 'BEGIN { printf "%.1f", n / r }')
  speedup=$(awk -v s="$secs" 'BEGIN { printf "%.3f", 3600 / s }')
  start_system "$name"
  local cpu0 f0 lg cpu1 f1 c0 c1 o0 o1 lgcpu=0
  cpu0=$(cpu_of "$sys"); f0=$(metric kyufu_storage_fsyncs_total); c0=$(metric kyufu_storage_commits_total); o0=$(metric kyufu_storage_operations_total)
  "$TARGET_DIR/release/loadtest" --target "http://127.0.0.1:$PORT" --metrics "http://$STAFF" --registry "$work/$name/registry.csv" --applications "$n" \
    --profile steady --steady-secs 3600 --speedup "$speedup" --out "$OUT/$name" --quiet \
    --abandon 0 --bad-input 0 --retry 0.05 --settle-timeout 600 --drain-timeout 600 --documents "${BENCH_DOCUMENTS:-small}" >"$OUT/$name.txt" 2>&1 &
  lg=$!
  while kill -0 "$lg" 2>/dev/null; do
    local c; c=$(cpu_of "$lg"); [ "$c" != 0 ] && lgcpu=$c
    sleep 0.5
  done
  wait "$lg"; rc=$?
  cpu1=$(cpu_of "$sys"); f1=$(metric kyufu_storage_fsyncs_total); c1=$(metric kyufu_storage_commits_total); o1=$(metric kyufu_storage_operations_total)
  stop_system
  local settled rate_s p50 p99 lost dup mis
  settled=$(sed -n 's/^applications : .* \([0-9]*\) settled$/\1/p' "$OUT/$name.txt")
  rate_s=$(sed -n 's/^throughput *: .* \([0-9.]*\)\/s settled.*/\1/p' "$OUT/$name.txt")
  p50=$(sed -n 's/^to final *: p50 \(.*\) p99 .* (server history)$/\1/p' "$OUT/$name.txt")
  p99=$(sed -n 's/^to final *: p50 .* p99 \(.*\) (server history)$/\1/p' "$OUT/$name.txt")
  lost=$(sed -n 's/^lost *: //p' "$OUT/$name.txt"); dup=$(sed -n 's/^duplicated *: //p' "$OUT/$name.txt"); mis=$(sed -n 's/^mismatched *: //p' "$OUT/$name.txt")
  settled=${settled:-0}
  echo "== $name: $n applications offered at $rate/s over ${secs} s"
  printf '  settled            : %s applications, %s/s\n' "$settled" "${rate_s:-?}"
  printf '  submit -> final    : p50 %s, p99 %s (server history)\n' "${p50:-?}" "${p99:-?}"
  awk -v f0="${f0:-0}" -v f1="${f1:-0}" -v c0="${c0:-0}" -v c1="${c1:-0}" -v o0="${o0:-0}" -v o1="${o1:-0}" -v n="$settled" \
    -v s0="$cpu0" -v s1="$cpu1" -v l="$lgcpu" 'BEGIN {
      if (n > 0) {
        printf "  fsyncs/application: %.3f (%d fsyncs, %d commits, %.1f writes per commit)\n", (f1 - f0) / n, f1 - f0, c1 - c0, (c1 > c0) ? (o1 - o0) / (c1 - c0) : 0
        printf "  server CPU         : %.0f us/application (%.1f s); load generator %.0f us/application\n", (s1 - s0) * 1e6 / n, s1 - s0, l * 1e6 / n
      }
    }'
  printf '  reconciliation     : lost %s, duplicated %s, mismatched %s\n' "${lost:-?}" "${dup:-?}" "${mis:-?}"
  last_rate=${rate_s:-0}
}

echo "disk fsync (4 KiB, dsync): $(fsync_ms) ms; $(nproc) cores"
run overload "$N" "$RATE"; rc1=$rc; capacity=$last_rate
eighty=$(awk -v c="$capacity" 'BEGIN { r = int(c * 0.8); print (r < 1) ? 1 : r }')
n80=$(awk -v r="$eighty" -v n="$N" 'BEGIN { m = int(r * 20); print (m > n) ? n : m }')
run at-80-percent "$n80" "$eighty"; rc2=$rc
echo "disk fsync (4 KiB, dsync): $(fsync_ms) ms"
echo "capacity: ${capacity}/s settled; at 80 % (${eighty}/s offered) see p99 above (target <= 2 s)"
echo "reports: $OUT/overload.txt, $OUT/at-80-percent.txt (and report.html in each folder)"
[ "$rc1" = 0 ] && [ "$rc2" = 0 ]
