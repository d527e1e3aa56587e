#!/usr/bin/env bash
# `make loadtest`: replays launch day against the system at LOADTEST_TARGET (default
# http://127.0.0.1:8080). If nothing answers there, starts `kyufu all-in-one` on that address with a
# fresh temporary data directory and a large registry, and stops it afterwards. Exits with the load
# tester's status: 0 only when nothing was lost, duplicated or mismatched.
#
# Knobs (environment): LOADTEST_TARGET, LOADTEST_APPLICATIONS (70000), LOADTEST_SPEEDUP (200),
# LOADTEST_HOUSEHOLDS (50000), LOADTEST_RATE (100), LOADTEST_BURST (200), LOADTEST_OUT
# (loadtest-report), LOADTEST_REGISTRY (for an already running system; default data/registry.csv),
# LOADTEST_ARGS (more loadtest flags), TARGET_DIR (cargo target dir).
set -uo pipefail

TARGET_DIR=${TARGET_DIR:-target}
TARGET=${LOADTEST_TARGET:-http://127.0.0.1:8080}
APPLICATIONS=${LOADTEST_APPLICATIONS:-70000}
SPEEDUP=${LOADTEST_SPEEDUP:-200}
HOUSEHOLDS=${LOADTEST_HOUSEHOLDS:-50000}
RATE=${LOADTEST_RATE:-100}
BURST=${LOADTEST_BURST:-200}
OUT=${LOADTEST_OUT:-loadtest-report}

hostport=${TARGET#http://}
hostport=${hostport%/}
host=${hostport%:*}
port=${hostport##*:}
case "$host" in
  127.*|localhost|\[::1\]) ;;
  *) echo "loadtest.sh: $TARGET is not a loopback address; run target/release/loadtest --allow-remote yourself" >&2; exit 2 ;;
esac

answers() { (exec 3<>"/dev/tcp/${host//[\[\]]/}/$port") 2>/dev/null; }

pid=""
data=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  fi
  if [ -n "$data" ]; then
    mkdir -p "$OUT" && cp "$data/system.log" "$OUT/system.log" 2>/dev/null
    rm -rf "$data"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if answers; then
  registry=${LOADTEST_REGISTRY:-data/registry.csv}
  echo "loadtest.sh: using the system already answering at $TARGET (registry $registry)"
else
  data=$(mktemp -d "${TMPDIR:-/tmp}/kyufu-loadtest.XXXXXX")
  registry="$data/registry.csv"
  echo "loadtest.sh: starting kyufu all-in-one on $hostport (data $data, $HOUSEHOLDS households, rate $RATE/s, burst $BURST)"
  "$TARGET_DIR/release/kyufu" all-in-one --data-dir "$data" --listen "$hostport" --addr-file "$data/addr" \
    --households "$HOUSEHOLDS" --rate "$RATE" --burst "$BURST" >"$data/system.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 240); do
    [ -s "$data/addr" ] && break
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "loadtest.sh: kyufu exited during start-up:" >&2
      tail -20 "$data/system.log" >&2
      exit 2
    fi
    sleep 0.5
  done
  [ -s "$data/addr" ] || { echo "loadtest.sh: kyufu did not start within 120 s" >&2; exit 2; }
fi

# shellcheck disable=SC2086 # LOADTEST_ARGS is a list of flags
"$TARGET_DIR/release/loadtest" --target "$TARGET" --registry "$registry" --applications "$APPLICATIONS" \
  --speedup "$SPEEDUP" --out "$OUT" ${LOADTEST_ARGS:-}
