#!/usr/bin/env bash
# The message archive under chat load across restarts on one data directory:
# the embedded default modules (mod_mam on) with ARCHIVE_ENGINE (fjall), 200
# accounts, then ROUNDS times `loadgen chat --pairs 100 --window 5` for SECS
# seconds followed by a graceful stop (SIGTERM) and a new start. A server
# restarted with its engine's work pending is what stopped fjall 2.11 writing
# for good (docs/architecture.md, "fjall's write halt, and why it is gone"):
# the script prints, per round, the loadgen line, the archive's journal files
# and the count of "archive busy" refusals in the log, and says so when the
# server does not stop within 15 s of SIGTERM (it then lists its threads and
# kills it).
#
# Usage: benches/loadgen/archive-restarts.sh OUTDIR   (release builds of rookery and loadgen)
# Environment: ROOKERY, LOADGEN, ROUNDS (3), SECS (30), ARCHIVE_ENGINE (fjall).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ROOKERY=${ROOKERY:-$ROOT/target/release/rookery}
LOADGEN=${LOADGEN:-$ROOT/target/release/loadgen}
OUT=${1:?usage: $0 OUTDIR}
SECS=${SECS:-30}
ROUNDS=${ROUNDS:-3}
ARCHIVE_ENGINE=${ARCHIVE_ENGINE:-fjall}
mkdir -p "$OUT/data"
OUT=$(cd "$OUT" && pwd)
. "$ROOT/benches/loadgen/bench-config.sh"
bench_yaml "$OUT/rookery.yml" "$OUT/data" "$(default_modules)" "$ARCHIVE_ENGINE"

PID=
start() {
  "$ROOKERY" serve -c "$OUT/rookery.yml" >"$OUT/server.out" 2>>"$OUT/server.err" &
  PID=$!
  for _ in $(seq 1200); do grep -q "^rookery: ready" "$OUT/server.out" 2>/dev/null && break; sleep 0.1; done
  ADDR=$(awk '/^rookery: listening c2s/ {print $4; exit}' "$OUT/server.out")
}
stop() {
  kill -TERM "$PID" 2>/dev/null
  for _ in $(seq 150); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$PID" 2>/dev/null; then
    echo "the server did not stop within 15 s of SIGTERM; its threads:"
    sort /proc/"$PID"/task/*/comm | uniq -c
    kill -KILL "$PID"
  fi
  wait "$PID" 2>/dev/null
  PID=
}
trap '[ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null' EXIT

start
timeout 900 "$LOADGEN" provision --users 200 --ctl-cmd "$ROOKERY ctl -c $OUT/rookery.yml" --jobs 4 >/dev/null
for r in $(seq "$ROUNDS"); do
  [ -z "$PID" ] && start
  timeout 900 "$LOADGEN" chat --pairs 100 --window 5 --duration "$SECS" --server "$ADDR" --server-pid "$PID" \
    >>"$OUT/results.jsonl"
  journals=$(ls "$OUT/data/archive/journals" 2>/dev/null | wc -l)
  echo "round $r: $journals journal files; $(grep -c 'archive busy' "$OUT/server.err") 'archive busy' log lines so far"
  stop
done
grep -h "fjall held a write" "$OUT/server.err" | tail -5
