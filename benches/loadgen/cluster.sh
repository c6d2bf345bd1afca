#!/usr/bin/env bash
# cluster.sh: Rookery as a cluster of 1, 2 and 3 nodes under the same total
# chat load (docs/benchmarks.md, "A cluster of 1, 2 and 3 nodes").
#
#   cargo build --release -p rookery && cargo build --release -p loadgen
#   benches/loadgen/cluster.sh [OUTDIR]
#
# It starts, in OUTDIR (default: a new /tmp/rookery-cluster.XXXXXX), its own
# PostgreSQL (initdb + pg_ctl, as the `postgres` user when run as root) and
# its own nats-server with JetStream, each on a free loopback port; then
# Rookery release nodes n1..nN on 127.0.0.2, .3, .4 (c2s port picked by the
# node) with `default_db: sql` and a `cluster:` section, and runs:
#
# - chat, PAIRS pairs at RATE messages/s in total for SECS seconds, against
#   one node without `cluster:` (the baseline), then 1, 2 and 3 cluster
#   nodes with the pairs placed by `--pairing any` (1/N of the pairs on one
#   node), and with 2 and 3 nodes also `--pairing same` and `--pairing
#   cross` (the cost of a cross-node message against a same-node one);
# - login: USERS logins (TLS, SASL, bind, presence, ping, close) on one
#   cluster node and on one without `cluster:`: CPU per login of the node,
#   NATS and PostgreSQL;
# - idle: IDLE sessions held on one cluster node, its RSS per session (and
#   on one node without `cluster:`, and one on the embedded database);
# - at rest: the CPU of the nodes, NATS and PostgreSQL over REST_SECS with
#   no clients, for 1, 2 and 3 nodes (what a node costs by being there).
#
# CPUs (taskset): every Rookery node on NODE_CPUS (default 1: with 2 or 3
# nodes they share that CPU, so the cluster has the same CPU whatever N);
# NATS, PostgreSQL and loadgen on INFRA_CPUS (default 0). Each chat report
# has the nodes', NATS's and PostgreSQL's CPU seconds over the sending
# window (`loadgen --watch`, PostgreSQL with its backends). The JSON
# reports go to OUTDIR/results.jsonl, the table to OUTDIR/table.md; the
# script fails when any chat run lost, reordered or duplicated a message.
#
# Every step is bounded in time; on exit (also on error or Ctrl-C) every
# process this script started is stopped by its PID (PostgreSQL with
# pg_ctl), nothing else.
#
# Environment: ROOKERY, LOADGEN (binaries); USERS (accounts, default 2000),
# PAIRS (500), RATE (2000), SECS (30), IDLE (2000), REST_SECS (10), REPS (3:
# each chat run is repeated, interleaved, and the table shows medians), NODE_CPUS (1),
# INFRA_CPUS (0); QUICK=1: small sizes (about two minutes, to check the
# script).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ROOKERY=${ROOKERY:-$ROOT/target/release/rookery}
LOADGEN=${LOADGEN:-$ROOT/target/release/loadgen}
OUT=${1:-$(mktemp -d /tmp/rookery-cluster.XXXXXX)}
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  USERS=${USERS:-200} PAIRS=${PAIRS:-50} RATE=${RATE:-1000} SECS=${SECS:-3} IDLE=${IDLE:-200} REPS=${REPS:-1}
else
  USERS=${USERS:-2000} PAIRS=${PAIRS:-500} RATE=${RATE:-2000} SECS=${SECS:-30} IDLE=${IDLE:-2000}
fi
REST_SECS=${REST_SECS:-10}
REPS=${REPS:-3}
NODE_CPUS=${NODE_CPUS:-1}
INFRA_CPUS=${INFRA_CPUS:-0}
[ $((2 * PAIRS)) -le "$USERS" ] && [ "$IDLE" -le "$USERS" ] || { echo "USERS must cover 2*PAIRS and IDLE" >&2; exit 1; }
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RESULTS=$OUT/results.jsonl
SUMMARY=$OUT/summary.txt
CACHE=$OUT/scram.cache

for b in "$ROOKERY" "$LOADGEN"; do
  [ -x "$b" ] || { echo "missing $b: build it with cargo build --release" >&2; exit 1; }
done
NATS_BIN=$(command -v nats-server || ls /usr/sbin/nats-server 2>/dev/null || true)
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$NATS_BIN" ] || { echo "nats-server is not installed (Debian package nats-server)" >&2; exit 1; }
[ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() { # HOST PORT: bounded wait until it accepts connections
  for _ in $(seq 200); do
    (echo >/dev/tcp/"$1"/"$2") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
say() { echo "$*" | tee -a "$SUMMARY"; }

# --- PostgreSQL and NATS ---------------------------------------------------
PG_DIR=$OUT/pg
PG_PORT=$(free_port)
PG_PID=
NATS_PID=
NODE_PIDS=()
pg() { # PROGRAM ARGS...: one of PostgreSQL's programs on the infrastructure
  # CPU, bounded to 2 minutes, as `postgres` when run as root
  local pre=(timeout 120)
  [ "$(id -u)" = 0 ] && pre+=(setpriv --reuid=postgres --regid=postgres --init-groups)
  (cd "$PG_DIR" && HOME=$PG_DIR "${pre[@]}" taskset -c "$INFRA_CPUS" "$PG_BIN/$1" "${@:2}")
}

stop_nodes() {
  local p
  for p in "${NODE_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${NODE_PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  NODE_PIDS=()
}
cleanup() {
  stop_nodes
  if [ -n "$NATS_PID" ]; then
    kill -TERM "$NATS_PID" 2>/dev/null || true
    wait "$NATS_PID" 2>/dev/null || true
    NATS_PID=
  fi
  if [ -n "$PG_PID" ]; then
    pg pg_ctl -D "$PG_DIR/data" -w -t 30 -m fast stop >/dev/null 2>&1 \
      || kill -KILL "$PG_PID" 2>/dev/null || true
    PG_PID=
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$PG_DIR" "$OUT/nats"
if [ "$(id -u)" = 0 ]; then
  chmod 755 "$OUT"
  chown -R postgres:postgres "$PG_DIR"
fi
say "# $(date -u +%FT%TZ) cluster.sh: rookery $("$ROOKERY" --version 2>/dev/null || echo '?'), $(nproc) CPUs, nodes on CPU $NODE_CPUS, NATS+PostgreSQL+loadgen on CPU $INFRA_CPUS"
say "# USERS=$USERS PAIRS=$PAIRS RATE=$RATE SECS=$SECS IDLE=$IDLE; $("$NATS_BIN" --version); PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}')"
pg initdb -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 --no-locale >"$PG_DIR/initdb.log" 2>&1
PG_PID=starting
pg pg_ctl -D "$PG_DIR/data" -w -t 60 -l "$PG_DIR/postgres.log" \
  -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $PG_DIR -c max_connections=200" start >/dev/null
PG_PID=$(head -1 "$PG_DIR/data/postmaster.pid")
pg psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c "CREATE DATABASE rookery ENCODING 'UTF8'"
say "PostgreSQL pid $PG_PID on 127.0.0.1:$PG_PORT"

NATS_PORT=$(free_port)
taskset -c "$INFRA_CPUS" "$NATS_BIN" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$OUT/nats/js" >"$OUT/nats/out" 2>"$OUT/nats/log" &
NATS_PID=$!
wait_port 127.0.0.1 "$NATS_PORT" || { echo "nats-server did not listen" >&2; exit 1; }
say "NATS pid $NATS_PID on 127.0.0.1:$NATS_PORT (JetStream)"

# --- Rookery nodes ---------------------------------------------------------
node_cfg() { # I MODE: writes $OUT/nI/rookery.yml; MODE 1: a cluster node,
  # 0: PostgreSQL without `cluster:`, e: the embedded database
  local d=$OUT/n$1
  mkdir -p "$d/data"
  {
    cat <<EOF
hosts: [localhost]
loglevel: warning
data_dir: $d/data
ctl_socket: $d/data/rookery.ctl
listen:
  - port: 0
    ip: 127.0.0.$(($1 + 1))
    module: ejabberd_c2s
    starttls_required: true
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
EOF
    [ "$2" = e ] || cat <<EOF
default_db: sql
sql_type: pgsql
sql_server: 127.0.0.1
sql_port: $PG_PORT
sql_database: rookery
sql_username: postgres
sql_password: ""
EOF
    if [ "$2" = 1 ]; then
      printf 'cluster:\n  node: n%s\n  nats: nats://127.0.0.1:%s\n' "$1" "$NATS_PORT"
    fi
  } >"$d/rookery.yml"
}

ADDRS=()
start_nodes() { # N MODE (see node_cfg)
  stop_nodes
  ADDRS=()
  local i d
  [ "$2" = e ] && rm -rf "$OUT/n1/data"
  for i in $(seq "$1"); do
    node_cfg "$i" "$2"
    d=$OUT/n$i
    : >"$d/out"
    taskset -c "$NODE_CPUS" "$ROOKERY" serve -c "$d/rookery.yml" >"$d/out" 2>>"$d/err" &
    NODE_PIDS+=($!)
  done
  for i in $(seq "$1"); do
    d=$OUT/n$i
    for _ in $(seq 300); do
      grep -q '^rookery: ready' "$d/out" 2>/dev/null && break
      sleep 0.1
    done
    grep -q '^rookery: ready' "$d/out" || { echo "node n$i not ready: $(tail -5 "$d/err")" >&2; exit 1; }
    ADDRS+=("$(awk '/^rookery: listening c2s/ {print $4; exit}' "$d/out")")
  done
  if [ "$2" = 1 ]; then
    for _ in $(seq 100); do
      [ "$(timeout 10 "$ROOKERY" ctl -c "$OUT/n1/rookery.yml" list_cluster 2>/dev/null | wc -l)" = "$1" ] && break
      sleep 0.2
    done
    [ "$(timeout 10 "$ROOKERY" ctl -c "$OUT/n1/rookery.yml" list_cluster | wc -l)" = "$1" ] \
      || { echo "list_cluster does not show $1 nodes" >&2; exit 1; }
  fi
  say "$1 node(s) ($(case $2 in 1) echo cluster ;; 0) echo 'PostgreSQL, no cluster:' ;; *) echo 'embedded database' ;; esac)): pids ${NODE_PIDS[*]} at ${ADDRS[*]}"
}

# lg LABEL SCENARIO ARGS...: one bounded loadgen run on the infrastructure
# CPU; its JSON report, tagged with LABEL and the node count, appended.
lg() {
  local label=$1
  shift
  local watch=() i
  for i in "${!NODE_PIDS[@]}"; do watch+=(--watch "n$((i + 1))=${NODE_PIDS[$i]}"); done
  watch+=(--watch "nats=$NATS_PID" --watch "pg=$PG_PID")
  say "\$ loadgen $* ${watch[*]}"
  local line
  line=$(timeout 900 taskset -c "$INFRA_CPUS" "$LOADGEN" "$@" "${watch[@]}" --scram-cache "$CACHE" \
    2> >(tee -a "$SUMMARY" >&2)) || true
  [ -n "$line" ] || { say "($label: no report)"; return 0; }
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["label"]=sys.argv[2]; d["nodes"]=int(sys.argv[3]); d["utc"]=sys.argv[4]; print(json.dumps(d))' \
    "$(tail -1 <<<"$line")" "$label" "${#NODE_PIDS[@]}" "$(date -u +%FT%TZ)" >>"$RESULTS"
}
servers() { local IFS=,; echo "${ADDRS[*]}"; }
# rest LABEL: the nodes', NATS's and PostgreSQL's CPU over REST_SECS with no
# clients connected.
rest() {
  local w=() i
  for i in "${!NODE_PIDS[@]}"; do w+=("n$((i + 1))=${NODE_PIDS[$i]}"); done
  timeout 120 python3 "$(dirname "$0")/cluster-table.py" --background "$1" "${#NODE_PIDS[@]}" "$REST_SECS" \
    "${w[@]}" "nats=$NATS_PID" "pg=$PG_PID" | tee -a "$RESULTS" >>"$SUMMARY"
}

# --- accounts, once, in the shared database ---------------------------------
start_nodes 1 1
say "provisioning $USERS accounts"
timeout 1800 "$LOADGEN" provision --users "$USERS" --ctl-cmd "$ROOKERY ctl -c $OUT/n1/rookery.yml" --jobs 4 \
  >>"$RESULTS" 2> >(tee -a "$SUMMARY" >&2)
# Warm the SCRAM cache (client-side PBKDF2); these figures are not kept.
timeout 900 taskset -c "$INFRA_CPUS" "$LOADGEN" login --server "${ADDRS[0]}" --logins "$USERS" \
  --scram-cache "$CACHE" >/dev/null 2>>"$SUMMARY" || true

CHAT=(chat --pairs "$PAIRS" --rate "$RATE" --duration "$SECS")

# --- chat, REPS times each (the table takes medians) ------------------------
start_nodes 1 0
for _ in $(seq "$REPS"); do
  lg "1 node, no cluster:" "${CHAT[@]}" --servers "$(servers)"
done
for n in 1 2 3; do
  start_nodes "$n" 1
  rest "$n node$([ "$n" = 1 ] || echo s) at rest"
  for _ in $(seq "$REPS"); do
    lg "$n node$([ "$n" = 1 ] || echo s), any" "${CHAT[@]}" --servers "$(servers)" --pairing any
    if [ "$n" -gt 1 ]; then
      lg "$n nodes, same" "${CHAT[@]}" --servers "$(servers)" --pairing same
      lg "$n nodes, cross" "${CHAT[@]}" --servers "$(servers)" --pairing cross
    fi
  done
done

# --- logins: what one costs the node, NATS and PostgreSQL --------------------
start_nodes 1 1
lg "login, 1 cluster node" login --logins "$USERS" --server "${ADDRS[0]}" --server-pid "${NODE_PIDS[0]}"
start_nodes 1 0
lg "login, 1 node, no cluster:" login --logins "$USERS" --server "${ADDRS[0]}" --server-pid "${NODE_PIDS[0]}"

# --- idle memory per session on a cluster node with PostgreSQL --------------
start_nodes 1 1
lg "idle, 1 cluster node" idle --sessions "$IDLE" --duration 5 --server "${ADDRS[0]}" --server-pid "${NODE_PIDS[0]}"
start_nodes 1 0
lg "idle, 1 node, no cluster:" idle --sessions "$IDLE" --duration 5 --server "${ADDRS[0]}" --server-pid "${NODE_PIDS[0]}"
# The same on the embedded database (accounts of its own), for comparison;
# the held sessions on a node started afresh on that data.
start_nodes 1 e
timeout 1800 "$LOADGEN" provision --users "$IDLE" --ctl-cmd "$ROOKERY ctl -c $OUT/n1/rookery.yml" --jobs 4 \
  >>"$RESULTS" 2> >(tee -a "$SUMMARY" >&2)
start_nodes 1 e-kept
lg "idle, 1 node, embedded database" idle --sessions "$IDLE" --duration 5 --server "${ADDRS[0]}" --server-pid "${NODE_PIDS[0]}"
stop_nodes

python3 "$(dirname "$0")/cluster-table.py" "$RESULTS" | tee "$OUT/table.md" | tee -a "$SUMMARY"
say "results: $RESULTS"
