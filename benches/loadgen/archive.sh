#!/usr/bin/env bash
# What the message archive (mod_mam) costs on the chat path: `loadgen chat`
# (100 pairs, window 5, STARTTLS + SCRAM) against three configurations of
# the same binary, run in turns (ROUNDS times each) so machine noise hits
# them alike; compare messages per server CPU-second:
#   off      mod_ping + mod_disco (the minimal benchmark configuration)
#   nomam    every module of the embedded default configuration but mod_mam
#   default  every module of the embedded default configuration (mod_mam on,
#            default: always, as src/config/default.yml)
# then a rate-limited run (RATE msgs/s offered, p99) with the default modules.
# Prints one JSON line per run to OUTDIR/results.jsonl, tagged with the
# configuration, and the data directory's size (the database in data/db
# and the archive in data/archive, where archive_engine is fjall) per
# message delivered in the default configuration's runs.
#
# Usage: benches/loadgen/archive.sh [OUTDIR]   (release builds of rookery and loadgen)
# Environment: ROOKERY, LOADGEN, ROUNDS (3), SECS (10), RATE (10000),
# ARCHIVE_ENGINE (unset: the binary's default `archive_engine`; `sled` or
# `fjall` to pick one, e.g. to compare engines with the same binary).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ROOKERY=${ROOKERY:-$ROOT/target/release/rookery}
LOADGEN=${LOADGEN:-$ROOT/target/release/loadgen}
OUT=${1:-$(mktemp -d /tmp/rookery-archive.XXXXXX)}
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-10}
RATE=${RATE:-10000}
ARCHIVE_ENGINE=${ARCHIVE_ENGINE:-}
USERS=200
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SERVER_PID=

stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
  fi
}
trap stop_server EXIT

. "$ROOT/benches/loadgen/bench-config.sh"
DEFAULT_MODULES=$(default_modules)

config() {
  local tag=$1 dir=$OUT/$1
  mkdir -p "$dir/data"
  local modules
  case $tag in
    off) modules="  mod_ping: {}
  mod_disco: {}" ;;
    nomam) modules=$(printf '%s\n' "$DEFAULT_MODULES" | awk '/^  mod_mam:/ {skip=1; next} skip && /^    / {next} {skip=0; print}') ;;
    default) modules=$DEFAULT_MODULES ;;
  esac
  bench_yaml "$dir/rookery.yml" "$dir/data" "$modules" "${ARCHIVE_ENGINE:-}"
}

start() {
  local dir=$OUT/$1
  stop_server
  "$ROOKERY" serve -c "$dir/rookery.yml" >"$dir/server.out" 2>>"$dir/server.err" &
  SERVER_PID=$!
  for _ in $(seq 1200); do grep -q "^rookery: ready" "$dir/server.out" 2>/dev/null && break; sleep 0.1; done
  ADDR=$(awk '/^rookery: listening c2s/ {print $4; exit}' "$dir/server.out")
}

lg() {
  local tag=$1
  shift
  timeout 900 "$LOADGEN" "$@" --server "$ADDR" --server-pid "$SERVER_PID" --scram-cache "$OUT/scram.cache" \
    | sed "s/^{/{\"config\":\"$tag\",/" >>"$OUT/results.jsonl" || true
}

for tag in off nomam default; do
  config $tag
  start $tag
  timeout 900 "$LOADGEN" provision --users $USERS --ctl-cmd "$ROOKERY ctl -c $OUT/$tag/rookery.yml" --jobs 4 >/dev/null
  LG_QUIET=1 lg warmup login --logins $USERS --concurrency 50
done
for _ in $(seq "$ROUNDS"); do
  for tag in off nomam default; do
    start $tag
    lg $tag chat --pairs 100 --window 5 --duration "$SECS"
  done
done
start default
lg default-rate chat --pairs 100 --window 5 --rate "$RATE" --duration "$SECS"
stop_server
# The database and the archive (fjall's directory is absent with sled: du
# then exits 1, which must not end the script before its summary).
{ du -scb "$OUT/default/data/db" "$OUT/default/data/archive" 2>/dev/null || true; } | tail -1 | cut -f1 >"$OUT/du.txt"
echo "results: $OUT/results.jsonl"
python3 - "$OUT/results.jsonl" "$OUT/du.txt" <<'PY'
import json, sys
delivered = 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("scenario", "chat") != "chat" or "msgs_per_cpu_s" not in r:
        continue
    if r["config"].startswith("default"):
        delivered += r["received"]
    print(f"{r['config']:13} msgs/CPU-s {r['msgs_per_cpu_s']:>9}  delivered/s {r['delivered_per_s']:>9}  "
          f"p50 {r['latency_p50_ms']} ms  p99 {r['latency_p99_ms']} ms  lost {r['lost']}  "
          f"out of order {r['out_of_order']}  duplicates {r['duplicates']}  received {r['received']}")
size = int(open(sys.argv[2]).read().strip() or 0)
print(size, "bytes in the default configuration's data directory (db + archive);",
      f"{size / max(delivered, 1):.0f} bytes per message delivered ({delivered}, each archived at both ends)")
PY
