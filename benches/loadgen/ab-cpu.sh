#!/bin/bash
# ab-cpu.sh: CPU per login and per chat message of one Rookery build, for
# A/B runs between builds on the account store of idle-mem.sh (run
# `benches/loadgen/idle-mem.sh setup ROOKERY_BIN` once first).
#   benches/loadgen/ab-cpu.sh ROOKERY_BIN LABEL [PORT]
# Starts ROOKERY_BIN on a fresh copy of the store, then: 2,000 logins (a
# warm-up, then the measured run), chat at 10,000 msgs/s offered and chat
# unthrottled (100 pairs, 10 s each); prints one line. Alternate the builds
# (A B A B ...): on a shared machine the figures move by ±10-20 % between
# runs of one build. Files in $WORKDIR/ab-LABEL.
set -u
BIN=$1; L=$2; PORT=${3:-15310}
W=${WORKDIR:-/tmp/rookery-idle-mem}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LG=${LOADGEN:-$ROOT/target/release/loadgen}
[ -d "$W/base/data" ] || { echo "no account store in $W: run idle-mem.sh setup first" >&2; exit 1; }
R=$W/ab-$L; rm -rf "$R"; mkdir -p "$R"
sed "s/port: [0-9]*/port: $PORT/; s#$W/base/data#$R/data#" "$W/base/rookery.yml" > "$R/rookery.yml"
cp -a "$W/base/data" "$R/data"
"$BIN" serve -c "$R/rookery.yml" > "$R/log" 2>&1 &
P=$!
up=0
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && { up=1; break; }; sleep 0.3; done
[ $up = 1 ] || { echo "server did not start" >&2; kill $P; exit 1; }
common=(--server 127.0.0.1:$PORT --mech scram-sha-1 --scram-cache "$W/scram-cache" --server-pid $P)
"$LG" login "${common[@]}" --logins 2000 --users 2000 --duration 300 > "$R/warm.json" 2>/dev/null
"$LG" login "${common[@]}" --logins 2000 --users 2000 --duration 300 > "$R/login.json" 2>/dev/null
"$LG" chat "${common[@]}" --pairs 100 --rate 10000 --duration 10 > "$R/chat10k.json" 2>/dev/null
"$LG" chat "${common[@]}" --pairs 100 --duration 10 > "$R/chat.json" 2>/dev/null
kill $P; wait $P 2>/dev/null
python3 - "$R" "$L" <<'PY'
import json, sys
R, L = sys.argv[1], sys.argv[2]
def last(name):
    return json.loads(open(f"{R}/{name}.json").read().strip().splitlines()[-1])
a, c, m = last("login"), last("chat10k"), last("chat")
print(f"{L}: logins/cpu-s {a['logins_per_cpu_s']} | chat10k msgs/cpu-s {c['msgs_per_cpu_s']} "
      f"p50 {c['latency_p50_ms']} ms p99 {c['latency_p99_ms']} ms lost {c['lost']} ooo {c['out_of_order']} "
      f"| chat msgs/cpu-s {m['msgs_per_cpu_s']} lost {m['lost']} ooo {m['out_of_order']} | load {c['loadavg'][0]}")
PY
