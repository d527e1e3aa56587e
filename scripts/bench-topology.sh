#!/usr/bin/env bash
# `make bench-topology`: capacity of the multi-process topology on this machine (gateway, intake
# and one process per stage on redis-server, s3s-fs and three Apache Kafka brokers with
# replication 3; `scripts/topology.sh`). Two runs of the real load tester (join, admission, upload,
# spend, status polls until settled), each against a freshly started topology:
#   1. overload: BENCH_APPLICATIONS (20,000) arriving at BENCH_RATE (1,000/s), more than the
#      topology can settle, so "settled/s" is its capacity, not the arrival rate;
#   2. the same at 80 % of the capacity measured in run 1 (20 s of arrivals, at most
#      BENCH_APPLICATIONS), where submit->final p99 must stay under 2 s.
# For each run it prints settled/s; submit->final p50/p99 from the server's history (the load
# tester reads every record's history) and from the stages' own histogram
# (`kyufu_pipeline_submit_to_final_seconds`); round trips per application to Redis (the clients'
# `kyufu_redis_requests_total`; the server's `INFO commandstats` too, which counts the commands
# inside scripts), Kafka (`kyufu_kafka_requests_total`, from librdkafka's statistics) and S3
# (`kyufu_s3_requests_total`); CPU per application for every process (µs, from /proc, the three
# broker JVMs included) and the load generator's; the mean latency and calls per application of
# every step of every process (`kyufu_port_operation_duration_seconds` and the Kafka and pipeline
# histograms); the reconciliation (lost, duplicated, mismatched must be 0); and the machine's load
# average before and after, since the machine is shared (run it under `flock /tmp/kyufu-bench.lock`).
#
# Needs jq and redis-cli (scripts/install-deps.sh). Knobs: BENCH_APPLICATIONS, BENCH_RATE,
# BENCH_HOUSEHOLDS (40000), BENCH_PORT (18080), BENCH_WORKERS (workers per stage, 1;
# TOPOLOGY_WORKERS_<STAGE> per stage), BENCH_RUNS ("overload at-80-percent"; "at-80-percent" alone
# with BENCH_CAPACITY), BENCH_OUT (bench-report), TARGET_DIR (target).
set -uo pipefail
export LC_ALL=C

TARGET_DIR=${TARGET_DIR:-target}
N=${BENCH_APPLICATIONS:-20000}
RATE=${BENCH_RATE:-1000}
HOUSEHOLDS=${BENCH_HOUSEHOLDS:-40000}
PORT=${BENCH_PORT:-18080}
OUT=${BENCH_OUT:-bench-report}
RUNS=${BENCH_RUNS:-overload at-80-percent}
mkdir -p "$OUT"
work=$(mktemp -d "${TMPDIR:-/tmp}/kyufu-bench-topology.XXXXXX")
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
# Children of a process (the broker JVMs of kafka-cluster).
children_of() { ps -o pid= --ppid "$1" 2>/dev/null; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

start_topology() { # name
  local dir="$work/$1"
  # Warm brokers, as they are in production: 30,000 messages through a scratch topic first.
  TOPOLOGY_KAFKA_WARM_UP=${TOPOLOGY_KAFKA_WARM_UP:-30000} \
  TOPOLOGY_DIR="$dir" TOPOLOGY_PORT=$PORT TOPOLOGY_HOUSEHOLDS=$HOUSEHOLDS TOPOLOGY_WORKERS=${BENCH_WORKERS:-1} \
    TOPOLOGY_RATE=100000 TOPOLOGY_BURST=100000 TARGET_DIR=$TARGET_DIR bash scripts/topology.sh >"$OUT/$1-system.log" 2>&1 &
  sys=$!
  for _ in $(seq 1 1500); do [ -s "$dir/addr" ] && break; kill -0 "$sys" 2>/dev/null || break; sleep 0.2; done
  [ -s "$dir/addr" ] || { echo "bench: the topology did not start; see $OUT/$1-system.log" >&2; tail -5 "$OUT/$1-system.log" >&2; exit 2; }
}
stop_topology() { # name
  cp "$work/$1"/*.log "$OUT/" 2>/dev/null
  kill -TERM "$sys" 2>/dev/null; wait "$sys" 2>/dev/null; sys=""
}

# Every process of the running topology as `name pid port`, the broker JVMs as kafka-0.. .
processes() { # dir
  local name pid port i=0 j
  while read -r name pid port; do
    if [ "$name" = kafka ]; then
      for j in $(children_of "$pid"); do
        grep -q java "/proc/$j/comm" 2>/dev/null && { echo "kafka-$i $j -"; i=$((i + 1)); }
      done
    else
      echo "$name $pid $port"
    fi
  done <"$1/pids"
}

# A snapshot of the counters the figures are made of, one `key value` per line:
# cpu:<process>, redis:<command>, and the summed kyufu_* counters and histograms every kyufu
# process exports (metric{labels} as the key).
snapshot() { # dir file
  local name pid port
  : >"$2"
  while read -r name pid port; do
    echo "cpu:$name $(cpu_of "$pid")" >>"$2"
    case $name in
      redis) redis-cli -p "$port" INFO commandstats 2>/dev/null | tr -d '\r' |
               sed -n 's/^cmdstat_\([^:]*\):calls=\([0-9]*\),.*/redis:\1 \2/p' >>"$2" ;;
      s3|kafka-*) ;;
      *) curl -s --max-time 5 "http://127.0.0.1:$port/metrics" |
           grep -E '^kyufu_((kafka|s3|redis)_requests_total|pipeline_submit_to_final_seconds_bucket|(port_operation|kafka_publish|kafka_consume_delay|pipeline_queue_wait|pipeline_processing)_(duration_)?seconds_(sum|count)|kafka_consume_delay_seconds_(sum|count)|pipeline_queue_wait_seconds_(sum|count))' |
           sed 's/^/'"$name"'|/' >>"$2" ;;
    esac
  done < <(processes "$1")
  # Several processes export the same series: sum them (the process stays in front of latencies,
  # so each process's steps show on their own).
  awk '{ k = $1; if (k !~ /_seconds_(sum|count)/ || k ~ /submit_to_final/) sub(/^[^|]*[|]/, "", k); v[k] += $2 }
       END { for (k in v) print k, v[k] }' "$2" | sort >"$2.sum" && mv "$2.sum" "$2"
}

# One run: $1 name, $2 applications, $3 arrival rate per second. Sets rc and last_rate.
run() {
  local name=$1 n=$2 rate=$3 secs speedup dir="$work/$1"
  secs=$(awk -v n="$n" -v r="$rate" 'BEGIN { printf "%.1f", n / r }')
  speedup=$(awk -v s="$secs" 'BEGIN { printf "%.3f", 3600 / s }')
  start_topology "$name"
  local load0
  load0=$(loadavg)
  snapshot "$dir" "$work/$name.before"
  # Retries of 5 % of submissions with the same Idempotency-Key, nobody abandoning: every
  # application offered is one to settle.
  "$TARGET_DIR/release/loadtest" --out "$OUT/$name" --target "http://127.0.0.1:$PORT" --metrics "http://$(sed -n 2p "$dir/addr")" --registry "$dir/registry.csv" \
    --applications "$n" --profile steady --steady-secs 3600 --speedup "$speedup" --retry 0.05 --abandon 0 --bad-input 0 \
    --settle-timeout 600 --drain-timeout 600 --quiet >"$OUT/$name.txt" 2>&1
  rc=$?
  snapshot "$dir" "$work/$name.after"
  local load1; load1=$(loadavg)
  stop_topology "$name"
  # The load tester's own summary: settled, rate, submit->final from the server's history, the
  # reconciliation.
  local summary="$OUT/$name/summary.json" settled rate_s p50 p99 lost dup mis lgcpu
  read -r settled rate_s p50 p99 lost dup mis lgcpu < <(jq -r '[.reconciliation.settled, (.throughput.settled_per_s * 10 | round / 10),
      (.submit_to_final_s.p50 * 1000 | round | tostring + " ms"), (.submit_to_final_s.p99 * 1000 | round | tostring + " ms"),
      .lost, .duplicated, .mismatched, .system.tester_cpu_s] | map(tostring | gsub(" "; "_")) | join(" ")' "$summary" 2>/dev/null)
  p50=${p50//_/ }; p99=${p99//_/ }
  settled=${settled:-0}
  echo "== $name: $n applications offered at $rate/s over ${secs} s (load average $load0 before, $load1 after; $(nproc) cores)"
  printf '  settled            : %s applications, %s/s\n' "$settled" "${rate_s:-?}"
  printf '  submit -> final    : p50 %s, p99 %s (server history)' "${p50:-?}" "${p99:-?}"
  figures "$work/$name.before" "$work/$name.after" "$settled" "${lgcpu:-0}"
  printf '  reconciliation     : lost %s, duplicated %s, mismatched %s\n' "${lost:-?}" "${dup:-?}" "${mis:-?}"
  last_rate=${rate_s:-0}
}

# The differences between two snapshots, per settled application.
figures() { # before after settled loadgen-cpu
  join -a 2 -e 0 -o 0,1.2,2.2 "$1" "$2" | awk -v n="$3" -v lg="$4" '
    function q(phi,   total, i, prev, prevc, want, span) {
      total = cnt["+Inf"]; if (total <= 0) return "?"
      want = phi * total; prev = 0; prevc = 0
      for (i = 1; i <= nb; i++) {
        if (cnt[les[i]] >= want) {
          if (les[i] == "+Inf") return sprintf(">%.3gs", prev)
          span = cnt[les[i]] - prevc; if (span <= 0) span = 1
          return sprintf("%.3gs", prev + (les[i] - prev) * (want - prevc) / span)
        }
        prev = les[i] + 0; prevc = cnt[les[i]]
      }
      return "?"
    }
    function label(key, name,   v) { if (!match(key, name "=\"[^\"]*\"")) return ""; v = substr(key, RSTART + length(name) + 2); return substr(v, 1, index(v, "\"") - 1) }
    function add(group, key, d) { sum[group] += d; if (d > 0) part[group, key] += d; keys[group] = keys[group] SUBSEP key }
    function parts(group,   out, k, seen, i, m, list) {
      m = split(keys[group], list, SUBSEP); out = ""
      for (i = 1; i <= m; i++) { k = list[i]; if (k == "" || (k in seen)) continue; seen[k] = 1; if (part[group, k] > 0) out = out sprintf(" %s %.2f", k, part[group, k] / n) }
      return out
    }
    {
      d = $3 - $2; key = $1
      if (key ~ /^cpu:/) { sub(/^cpu:/, "", key); cpu[key] = d; order[++np] = key; total += d; next }
      if (key ~ /^redis:/) { sub(/^redis:/, "", key); if (key != "info" && key != "ping") add("rcmd", key, d); next }
      if (key ~ /^kyufu_redis_requests_total/) { add("redis", label(key, "operation"), d); next }
      if (key ~ /^kyufu_kafka_requests_total/) { c = label(key, "client"); r = label(key, "request"); add("kafka", (c == "lag" ? "lag:" : "") r, d); next }
      if (key ~ /^kyufu_s3_requests_total/) { add("s3", label(key, "operation"), d); next }
      if (key ~ /^kyufu_pipeline_submit_to_final_seconds_bucket/) {
        le = label(key, "le"); if (!(le in cnt)) les[++nb] = le
        cnt[le] += d; next
      }
      if (key ~ /_seconds_(sum|count)/) {
        proc = key; sub(/[|].*/, "", proc); m = key; sub(/^[^|]*[|]kyufu_/, "", m); sub(/_(duration_)?seconds_(sum|count).*/, "", m)
        step = proc ":" m; if (label(key, "port") != "") step = proc ":" label(key, "port") "." label(key, "operation")
        if (label(key, "topic") != "") step = step "." label(key, "topic")
        kind = (key ~ /_seconds_sum/) ? "sum" : "count"
        if (!((step) in stepseen)) { stepseen[step] = 1; steplist[++ns] = step }
        sv[step, kind] += d; next
      }
    }
    END {
      if (n <= 0) { print ""; exit }
      for (i = 1; i <= nb; i++) for (j = i + 1; j <= nb; j++) {
        a = (les[i] == "+Inf") ? 1e300 : les[i] + 0; b = (les[j] == "+Inf") ? 1e300 : les[j] + 0
        if (b < a) { t = les[i]; les[i] = les[j]; les[j] = t }
      }
      printf "; stages'\'' histogram p50 %s, p99 %s\n", q(0.5), q(0.99)
      printf "  round trips/app    : redis %s, kafka %s, s3 %s\n", \
        ("redis" in sum) ? sprintf("%.2f (%s )", sum["redis"] / n, parts("redis")) : "n/a", \
        ("kafka" in sum) ? sprintf("%.2f (%s )", sum["kafka"] / n, parts("kafka")) : "n/a", \
        ("s3" in sum) ? sprintf("%.2f (%s )", sum["s3"] / n, parts("s3")) : "n/a"
      printf "  redis commands/app : %.2f (%s ) (server INFO commandstats, commands inside scripts included)\n", sum["rcmd"] / n, parts("rcmd")
      line = ""
      for (i = 1; i <= np; i++) line = line sprintf(" %s %.0f", order[i], cpu[order[i]] * 1e6 / n)
      printf "  CPU us/app         :%s; all %.0f (%.1f s); load generator %.0f\n", line, total * 1e6 / n, total, lg * 1e6 / n
      line = ""
      for (i = 1; i <= ns; i++) { s = steplist[i]; if (sv[s, "count"] > 0) line = line sprintf("\n    %-58s %8.2f ms  x%.2f/app", s, 1000 * sv[s, "sum"] / sv[s, "count"], sv[s, "count"] / n) }
      if (line != "") printf "  mean step latency  :%s\n", line
    }'
}

echo "bench-topology: $(nproc) cores, load average $(loadavg)"
capacity=0
for r in $RUNS; do
  case $r in
    overload) run overload "$N" "$RATE"; rc1=$rc; capacity=$last_rate ;;
    at-80-percent)
      [ "$capacity" = 0 ] && capacity=${BENCH_CAPACITY:-0}
      eighty=$(awk -v c="$capacity" 'BEGIN { r = int(c * 0.8); print (r < 1) ? 1 : r }')
      n80=$(awk -v r="$eighty" -v n="$N" 'BEGIN { m = int(r * 20); print (m > n) ? n : m }')
      run at-80-percent "$n80" "$eighty"; rc2=$rc ;;
    *) echo "bench: unknown run $r (overload, at-80-percent)" >&2; exit 2 ;;
  esac
done
echo "capacity: ${capacity}/s settled; at 80 % see p99 above (target <= 2 s)"
echo "reports: $OUT/<run>.txt (and report.html in each folder), process logs in $OUT/"
[ "${rc1:-0}" = 0 ] && [ "${rc2:-0}" = 0 ]
