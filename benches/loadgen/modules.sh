#!/usr/bin/env bash
# What the storage-backed modules cost on the hot paths: the same loadgen
# scenarios against two configurations, "minimal" (mod_ping, mod_disco) and
# "all" (every module of the default config: private, vcard, vcard_xupdate,
# blocking, version, time, last, pep — blocking and vcard_xupdate run stanza
# filters on every message and presence). Prints one JSON line per run to
# OUTDIR/results.jsonl, tagged with the configuration.
#
# Usage: benches/loadgen/modules.sh [OUTDIR]   (release builds of rookery and loadgen)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ROOKERY=${ROOKERY:-$ROOT/target/release/rookery}
LOADGEN=${LOADGEN:-$ROOT/target/release/loadgen}
OUT=${1:-$(mktemp -d /tmp/rookery-modules.XXXXXX)}
USERS=${USERS:-2000}
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

run_config() {
  local tag=$1 modules=$2 dir=$OUT/$1
  mkdir -p "$dir/data"
  bench_yaml "$dir/rookery.yml" "$dir/data" "$modules"
  start() {
    stop_server
    "$ROOKERY" serve -c "$dir/rookery.yml" >"$dir/server.out" 2>>"$dir/server.err" &
    SERVER_PID=$!
    for _ in $(seq 300); do grep -q '^rookery: ready' "$dir/server.out" 2>/dev/null && break; sleep 0.1; done
    ADDR=$(awk '/^rookery: listening c2s/ {print $4; exit}' "$dir/server.out")
  }
  lg() {
    timeout 900 "$LOADGEN" "$@" --server "$ADDR" --server-pid "$SERVER_PID" --scram-cache "$OUT/scram.cache" \
      | sed "s/^{/{\"config\":\"$tag\",/" >>"$OUT/results.jsonl" || true
  }
  start
  timeout 900 "$LOADGEN" provision --users "$USERS" --ctl-cmd "$ROOKERY ctl -c $dir/rookery.yml" --jobs 4 >/dev/null
  LG_QUIET=1 lg login --logins "$USERS" --concurrency 50
  start
  lg idle --sessions 2000 --duration 5 --concurrency 50
  start
  lg chat --pairs 100 --duration 10
  lg presence --users 500 --contacts 20 --changes 5 --first-user $((USERS - 499))
  stop_server
}

run_config minimal "  mod_ping: {}
  mod_disco: {}"
run_config all "  mod_ping: {}
  mod_disco: {}
  mod_private: {}
  mod_vcard: {}
  mod_vcard_xupdate: {}
  mod_blocking: {}
  mod_version: {}
  mod_time: {}
  mod_last: {}
  mod_pep: {}"
echo "results: $OUT/results.jsonl"
