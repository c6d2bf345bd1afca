#!/bin/bash
# cpu-floor.sh: Rookery's CPU with nothing to do (idle sessions) and at a
# low group-chat rate, A/B between builds, on compare.sh's production
# configuration (docs/benchmarks.md, "Group chat at a low rate").
#   benches/loadgen/cpu-floor.sh setup KEPT_DIR ROOKERY_BIN   # once
#   benches/loadgen/cpu-floor.sh idle ROOKERY_BIN LABEL N [SECS]
#   benches/loadgen/cpu-floor.sh muc ROOKERY_BIN LABEL RATE [SECS] [loadgen args]
# setup copies the configuration and data of a `compare.sh --keep` run
# (KEPT_DIR is its rookery/ directory) and registers bench1..bench1100.
# idle: N sessions (MODERN=1: `loadgen idle --modern`), then the server's
# CPU over SECS s (default 30) of the hold, per thread, from /proc; PERF=1
# adds `perf stat` (task-clock, context switches) over the same window.
# muc: `loadgen muc` 10 rooms x 10 occupants at RATE msgs/s each for SECS
# s (default 60); its server CPU is that of the send phase only.
# Every run starts the build on a fresh copy of the data; files in
# $WORKDIR (default /tmp/rookery-cpu-floor); port 15871.
set -u
W=${WORKDIR:-/tmp/rookery-cpu-floor}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LG=${LOADGEN:-$ROOT/target/release/loadgen}
PORT=15871
waitport() { for _ in $(seq 150); do (echo >/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && return 0; sleep 0.2; done; return 1; }
fresh() { # fresh LABEL: a copy of the fixture in $W/run-LABEL
  R=$W/run-$1; rm -rf "$R"; mkdir -p "$R"
  sed "s#$W/base#$R#g" "$W/base/rookery.yml" > "$R/rookery.yml"
  cp -a "$W/base/data" "$W/base/certs" "$R/"
}
common() { echo --server 127.0.0.1:$PORT --domain localhost --users-prefix bench --password bench-password \
  --mech scram-sha-1 --scram-cache "$W/base/scram-cache" --server-pid "$1"; }
case ${1:-} in
setup)
  K=$2; BIN=$3
  rm -rf "$W/base"; mkdir -p "$W/base"
  cp -a "$K/certs" "$K/data" "$W/base/"
  [ -d "$K/scram-cache" ] && cp -a "$K/scram-cache" "$W/base/"
  # The kept configuration with this directory and a fixed c2s port; the
  # HTTPS listener on PORT+1.
  c2s=$(awk '/- port:/ {print $3; exit}' "$K/rookery.yml")
  http=$(awk '/- port:/ {n++; if (n == 2) {print $3; exit}}' "$K/rookery.yml")
  sed "s#$K#$W/base#g; s/port: $c2s/port: $PORT/; s/port: $http/port: $((PORT + 1))/; s/:$http\\//:$((PORT + 1))\\//" \
    "$K/rookery.yml" > "$W/base/rookery.yml"
  "$BIN" serve -c "$W/base/rookery.yml" > "$W/base/setup.log" 2>&1 &
  P=$!; waitport || { echo "server did not start" >&2; kill $P; exit 1; }
  seq 1 1100 | sed 's/^/bench/' | timeout 900 xargs -P 4 -I{} \
    "$BIN" ctl -c "$W/base/rookery.yml" register {} localhost bench-password >/dev/null 2>&1
  kill $P; wait $P 2>/dev/null
  echo "fixture in $W/base"
  ;;
idle)
  BIN=$2; L=$3; N=$4; S=${5:-30}
  fresh "$L"
  "$BIN" serve -c "$R/rookery.yml" > "$R/log" 2>&1 &
  P=$!; waitport || { echo "server did not start" >&2; kill $P; exit 1; }
  # shellcheck disable=SC2046
  "$LG" idle $(common $P) --sessions "$N" --duration $((S + 25)) \
    $([ "${MODERN:-0}" = 1 ] && echo --modern --resource modern) > "$R/idle.json" 2> "$R/idle.err" &
  LP=$!
  sleep 15   # logins done (1,000 take about 2 s here)
  cat /proc/$P/task/*/stat > "$R/threads0"
  c0=$(awk '{print $14 + $15}' /proc/$P/stat); w0=$(date +%s.%N)
  if [ "${PERF:-0}" = 1 ]; then
    perf stat -e task-clock,context-switches -p $P -- sleep "$S" 2> "$R/perfstat"
  else
    sleep "$S"
  fi
  c1=$(awk '{print $14 + $15}' /proc/$P/stat); w1=$(date +%s.%N)
  cat /proc/$P/task/*/stat > "$R/threads1"
  wait $LP; kill $P; wait $P 2>/dev/null
  PYTHONPATH="$ROOT/benches/loadgen" python3 - "$R" "$c0" "$c1" "$w0" "$w1" "$N" "$L" <<'PY'
import os, sys
from thread_cpu import per_name
R, c0, c1, w0, w1, N, L = sys.argv[1:]
hz = os.sysconf("SC_CLK_TCK"); wall = float(w1) - float(w0)
per = per_name(R + "/threads0", R + "/threads1")
busy = ", ".join(f"{n} {v * 1000 / hz / wall:.2f}" for n, v in sorted(per.items(), key=lambda x: -x[1]) if v)
print(f"{L}: {N} idle sessions: server CPU {(int(c1) - int(c0)) / hz:.2f} s in {wall:.0f} s "
      f"= {(int(c1) - int(c0)) * 1000 / hz / wall:.2f} ms/s (by thread, ms/s: {busy or 'all under a tick'})")
PY
  [ "${PERF:-0}" = 1 ] && grep -E "task-clock|context-switches" "$R/perfstat"
  ;;
muc)
  BIN=$2; L=$3; RATE=$4; S=${5:-60}; shift 5 2>/dev/null || shift $#
  fresh "$L"
  "$BIN" serve -c "$R/rookery.yml" > "$R/log" 2>&1 &
  P=$!; waitport || { echo "server did not start" >&2; kill $P; exit 1; }
  # shellcheck disable=SC2046
  "$LG" muc $(common $P) --rooms 10 --occupants 10 --rate "$RATE" --duration "$S" "$@" \
    > "$R/muc.json" 2> "$R/muc.err"
  kill $P; wait $P 2>/dev/null
  python3 - "$R/muc.json" "$L" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print(f"{sys.argv[2]}: muc 10x10 at {r['rate_per_occupant']}/s: server CPU {r['server_cpu_s']} s (send phase), "
      f"{r['delivered']} delivered, {r['delivered_per_cpu_s']} per CPU-s, lost {r['lost']}, "
      f"p50 {r['latency_p50_ms']} ms, load {r['loadavg'][0]}")
PY
  ;;
*) sed -n 2,16p "$0"; exit 2 ;;
esac
