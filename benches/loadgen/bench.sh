#!/usr/bin/env bash
# Runs the benchmark suite of docs/benchmarks.md against Rookery.
#
#   cargo build --release -p rookery && cargo build --release -p loadgen
#   benches/loadgen/bench.sh [OUTDIR]
#
# It writes a config with port 0 and no limits into OUTDIR (default: a new
# /tmp/rookery-bench.XXXXXX), starts the server from that config, creates
# $USERS accounts, runs every scenario and appends each JSON report to
# OUTDIR/results.jsonl (the human summaries go to OUTDIR/summary.txt).
# Idle and muc runs get a freshly started server (same data), since freed
# memory is not given back to the system. The WebSocket runs (RFC 7395,
# loadgen --transport ws) go to the server's HTTPS listener at /ws. Every step is bounded in time; only the
# processes this script starts are stopped, by their PIDs.
#
# Environment: ROOKERY, LOADGEN (binaries), USERS (default 20000),
# QUICK=1 (small sizes, about a minute: to check the script itself).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ROOKERY=${ROOKERY:-$ROOT/target/release/rookery}
LOADGEN=${LOADGEN:-$ROOT/target/release/loadgen}
OUT=${1:-$(mktemp -d /tmp/rookery-bench.XXXXXX)}
USERS=${USERS:-20000}
QUICK=${QUICK:-0}
mkdir -p "$OUT/data"
OUT=$(cd "$OUT" && pwd)
CONFIG=$OUT/rookery.yml
RESULTS=$OUT/results.jsonl
SUMMARY=$OUT/summary.txt
CACHE=$OUT/scram.cache
SERVER_PID=
RELAY_PID=

for b in "$ROOKERY" "$LOADGEN"; do
  [ -x "$b" ] || { echo "missing $b: build it with cargo build --release" >&2; exit 1; }
done

cat >"$CONFIG" <<EOF
hosts: [localhost]
loglevel: warning
data_dir: $OUT/data
listen:
  - port: 0
    ip: 127.0.0.1
    module: ejabberd_c2s
    starttls_required: true
  - port: 0
    ip: 127.0.0.1
    module: ejabberd_http
    tls: true
    request_handlers:
      /ws: ejabberd_http_ws
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
shaper_rules:
  max_user_sessions: infinity
  max_user_offline_messages: infinity
modules:
  mod_ping: {}
  mod_disco: {}
  mod_muc:
    access_create: local
    max_users: 100000
EOF

stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 100); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
  fi
}

stop_relay() {
  if [ -n "$RELAY_PID" ]; then
    kill -TERM "$RELAY_PID" 2>/dev/null || true
    wait "$RELAY_PID" 2>/dev/null || true
    RELAY_PID=
  fi
}

trap 'stop_relay; stop_server' EXIT

start_server() {
  stop_server
  "$ROOKERY" serve -c "$CONFIG" >"$OUT/server.out" 2>>"$OUT/server.err" &
  SERVER_PID=$!
  for _ in $(seq 300); do
    grep -q '^rookery: ready' "$OUT/server.out" 2>/dev/null && break
    sleep 0.1
  done
  grep -q '^rookery: ready' "$OUT/server.out" || { echo "server not ready" >&2; exit 1; }
  ADDR=$(awk '/^rookery: listening c2s/ {print $4; exit}' "$OUT/server.out")
  WS_ADDR=$(awk '/^rookery: listening http/ {print $4; exit}' "$OUT/server.out")
  echo "server pid $SERVER_PID on $ADDR, WebSocket on $WS_ADDR" | tee -a "$SUMMARY"
}

# lg SCENARIO ARGS...: one loadgen run, bounded to 15 minutes; its JSON
# report goes to $LG_OUT (default: the results file).
lg() {
  echo "\$ loadgen $*" | tee -a "$SUMMARY"
  timeout 900 "$LOADGEN" "$@" --server "$ADDR" --server-pid "$SERVER_PID" \
    --scram-cache "$CACHE" >>"${LG_OUT:-$RESULTS}" 2> >(tee -a "$SUMMARY" >&2) || true
}

# lgws SCENARIO ARGS...: the same over WebSocket (wss://$WS_ADDR/ws).
lgws() {
  echo "\$ loadgen $* --transport ws" | tee -a "$SUMMARY"
  timeout 900 "$LOADGEN" "$@" --server "$WS_ADDR" --transport ws --ws-path /ws \
    --server-pid "$SERVER_PID" --scram-cache "$CACHE" >>"${LG_OUT:-$RESULTS}" 2> >(tee -a "$SUMMARY" >&2) || true
}

if [ "$QUICK" = 1 ]; then
  USERS=400 LOGINS=300 IDLE_A=200 IDLE_B=400 PAIRS=50 BIG_PAIRS=100 SECS=3
  P_USERS=100 P_CONTACTS=10 OFFLINE=500 MUC_ROOMS=10 MUC_OCC=20 MUC_BIG=100 MUC_BIG_RATE=0.2
else
  LOGINS=5000 IDLE_A=2000 IDLE_B=10000 PAIRS=100 BIG_PAIRS=1000 SECS=20
  P_USERS=1000 P_CONTACTS=20 OFFLINE=10000 MUC_ROOMS=100 MUC_OCC=20 MUC_BIG=1000 MUC_BIG_RATE=0.02
fi

echo "# $(date -u +%FT%TZ) rookery $("$ROOKERY" --version 2>/dev/null || echo '?'), $(nproc) cores" | tee -a "$SUMMARY"
start_server
timeout 1800 "$LOADGEN" provision --users "$USERS" \
  --ctl-cmd "$ROOKERY ctl -c $CONFIG" --jobs 8 >>"$RESULTS" 2> >(tee -a "$SUMMARY" >&2)

# Warm the SCRAM cache (client-side PBKDF2) so that measured logins cost the
# client little; this run's figures are not the login figures.
LG_OUT=/dev/null lg login --logins "$USERS" --concurrency 50

lg login --logins "$LOGINS" --concurrency 50
lg login --logins "$LOGINS" --concurrency 50 --mech scram-sha-1

start_server
lg idle --sessions "$IDLE_A" --duration 5 --concurrency 50
start_server
lg idle --sessions "$IDLE_B" --duration 5 --concurrency 50

start_server
lg chat --pairs "$PAIRS" --rate 1000 --duration "$SECS"
lg chat --pairs "$BIG_PAIRS" --rate 10000 --duration "$SECS"
lg chat --pairs "$PAIRS" --duration 10

# Presence on its own range of accounts (their rosters are set up once).
lg presence --users "$P_USERS" --contacts "$P_CONTACTS" --changes 5 \
  --first-user $((USERS - P_USERS + 1))
lg presence --users "$P_USERS" --contacts "$P_CONTACTS" --changes 5 \
  --first-user $((USERS - P_USERS + 1)) --skip-setup

lg offline --messages "$OFFLINE" --senders 10

# Over WebSocket: idle memory (fresh server) and chat.
start_server
lgws idle --sessions "$IDLE_A" --duration 5 --concurrency 50
lgws chat --pairs "$PAIRS" --rate 1000 --duration "$SECS"
lgws chat --pairs "$PAIRS" --duration 10

# Group chat fan-out, each shape on a fresh server (memory per occupant).
start_server
lg muc --rooms "$MUC_ROOMS" --occupants "$MUC_OCC" --rate 0.5 --duration "$SECS"
start_server
lg muc --rooms 1 --occupants "$MUC_BIG" --rate "$MUC_BIG_RATE" --duration "$SECS"

# The baseline: the same chat frames through the TLS byte relay.
stop_server
"$LOADGEN" relay --listen 127.0.0.1:0 --duration 600 >"$OUT/relay.out" 2>>"$OUT/relay.err" &
RELAY_PID=$!
for _ in $(seq 100); do
  grep -q 'ready' "$OUT/relay.out" 2>/dev/null && break
  sleep 0.1
done
ADDR=$(awk '/listening/ {print $4; exit}' "$OUT/relay.out")
SERVER_PID=$RELAY_PID
lg chat --raw --pairs "$PAIRS" --rate 1000 --duration "$SECS"
lg chat --raw --pairs "$BIG_PAIRS" --rate 10000 --duration "$SECS"
lg chat --raw --pairs "$PAIRS" --duration 10
SERVER_PID=
stop_relay

echo "results: $RESULTS" | tee -a "$SUMMARY"
