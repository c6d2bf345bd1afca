#!/usr/bin/env bash
# Where the archive's CPU goes, thread by thread: one `loadgen chat --pairs
# 100 --window 5` run of the embedded default configuration (mod_mam on) on
# a fresh copy of the data directory an `archive.sh` run set up, with the
# server's threads' CPU read from /proc/PID/task/*/stat before the run and
# one second after it (the last batch applied and flushed). Prints the
# loadgen line and, per thread name (digits folded: sled's I/O pool is one
# line), the CPU in µs per delivered message.
#
# Usage: benches/loadgen/archive-threads.sh SETUP_DIR ROOKERY_BIN LABEL
#   SETUP_DIR: the OUTDIR of an earlier `benches/loadgen/archive.sh` run (its
#   default/ configuration and accounts are copied, never changed).
# Environment: LOADGEN, SECS (8), RATE (unset: as fast as the window allows),
# CONFIG (default: one of archive.sh's configurations), PERF (unset; a
# file name: `perf record --call-graph dwarf` of the server over the chat run, written
# there).
# Files in SETUP_DIR/threads-LABEL/.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SETUP=$(cd "${1:?usage: $0 SETUP_DIR ROOKERY_BIN LABEL}" && pwd)
BIN=${2:?usage: $0 SETUP_DIR ROOKERY_BIN LABEL}
LABEL=${3:?usage: $0 SETUP_DIR ROOKERY_BIN LABEL}
LOADGEN=${LOADGEN:-$ROOT/target/release/loadgen}
SECS=${SECS:-8}
CONFIG=${CONFIG:-default}
R=$SETUP/threads-$LABEL
rm -rf "$R"
mkdir -p "$R"
cp -a "$SETUP/$CONFIG/data" "$R/data"
sed "s#^data_dir: .*#data_dir: $R/data#" "$SETUP/$CONFIG/rookery.yml" >"$R/rookery.yml"
"$BIN" serve -c "$R/rookery.yml" >"$R/server.out" 2>"$R/server.err" &
P=$!
trap 'kill -TERM $P 2>/dev/null || true' EXIT
for _ in $(seq 1200); do grep -q "^rookery: ready" "$R/server.out" 2>/dev/null && break; sleep 0.1; done
ADDR=$(awk '/^rookery: listening c2s/ {print $4; exit}' "$R/server.out")
cat /proc/$P/task/*/stat >"$R/threads0"
if [ -n "${PERF:-}" ]; then
  perf record -F 999 --call-graph dwarf,16384 -o "$PERF" -p $P >/dev/null 2>&1 &
  PP=$!
fi
timeout 900 "$LOADGEN" chat --pairs 100 --window 5 --duration "$SECS" ${RATE:+--rate $RATE} \
  --server "$ADDR" --server-pid $P --scram-cache "$SETUP/scram.cache" >"$R/chat.json"
sleep 1
cat /proc/$P/task/*/stat >"$R/threads1"
if [ -n "${PERF:-}" ]; then
  kill -INT $PP
  wait $PP || true
fi
kill -TERM $P
wait $P || true
trap - EXIT
PYTHONPATH="$ROOT/benches/loadgen" python3 - "$R" "$LABEL" <<'PY'
import json, os, sys
from thread_cpu import per_name
R, label = sys.argv[1:]
hz = os.sysconf("SC_CLK_TCK")
r = json.loads(open(R + "/chat.json").read().strip().splitlines()[-1])
n = r["received"]
per = per_name(R + "/threads0", R + "/threads1", fold_digits=True)
total = sum(per.values())
us = lambda ticks: ticks * 1e6 / hz / n
print(f"{label}: {n} delivered, {r['msgs_per_cpu_s']} msgs/CPU-s, p99 {r['latency_p99_ms']} ms, "
      f"lost {r['lost']}, load {r['loadavg'][0]}; server CPU {total / hz:.2f} s = {us(total):.2f} µs/msg")
for name, t in sorted(per.items(), key=lambda x: -x[1]):
    if t:
        print(f"  {name:24} {t / hz:6.2f} s  {us(t):6.2f} µs/msg")
PY
