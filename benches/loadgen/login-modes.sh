#!/usr/bin/env bash
# Login modes side by side on one Rookery: classic SASL, SASL2 + Bind 2,
# and FAST tokens (issue 17). The embedded default modules plus
# mod_auth_fast, 200 accounts, 2,000 logins at concurrency 50 per mode;
# prints loadgen's line and JSON per mode (docs/benchmarks.md, `login`).
#
# Usage: benches/loadgen/login-modes.sh   (release builds of rookery and loadgen)
# Environment: ROOKERY, LOADGEN.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
R=${ROOKERY:-$ROOT/target/release/rookery}
L=${LOADGEN:-$ROOT/target/release/loadgen}
D=$(mktemp -d /tmp/rookery-login-modes.XXXXXX)
mkdir -p "$D/data"
. "$ROOT/benches/loadgen/bench-config.sh"
MODS=$(default_modules)
cat >"$D/r.yml" <<YML
hosts: [localhost]
loglevel: warning
data_dir: $D/data
listen:
  - port: 0
    ip: 127.0.0.1
    module: ejabberd_c2s
    starttls_required: true
shaper_rules:
  max_user_sessions: infinity
modules:
$MODS
  mod_auth_fast: {}
YML
"$R" serve -c "$D/r.yml" >"$D/out" 2>"$D/err" &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 300); do grep -q "^rookery: ready" "$D/out" 2>/dev/null && break; sleep 0.1; done
ADDR=$(awk '/^rookery: listening c2s/ {print $4; exit}' "$D/out")
"$L" provision --users 200 --ctl-cmd "$R ctl -c $D/r.yml" --jobs 4 >/dev/null
for mode in "" --sasl2 --fast; do
  # shellcheck disable=SC2086
  "$L" login --logins 2000 --users 200 --concurrency 50 $mode --server "$ADDR" \
    --server-pid "$PID" --scram-cache "$D/scram.cache" | tee -a "$D/results.jsonl"
done
echo "results: $D/results.jsonl"
