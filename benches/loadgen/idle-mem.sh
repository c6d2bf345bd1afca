#!/bin/bash
# idle-mem.sh: Rookery's idle memory per session, A/B between builds, as
# benches/compare.sh measures it (19,000 sessions after a warm-up login of
# every account), without re-creating the accounts for each build.
#   benches/loadgen/idle-mem.sh setup ROOKERY_BIN      # once: cert, 19,000 accounts, SCRAM cache
#   PORT=15301 benches/loadgen/idle-mem.sh run ROOKERY_BIN LABEL [N] [WARMUP=1]
# Each run starts ROOKERY_BIN on a fresh copy of the account store and prints
# kib_per_session; runs on different PORTs may go side by side (RSS does not
# depend on CPU load). Files in $WORKDIR (default /tmp/rookery-idle-mem).
# MODULES=default: the embedded default configuration's modules (archive on)
# instead of mod_disco + mod_ping (use another WORKDIR for it: setup writes
# the configuration the accounts were made with); N_SETUP=4000 makes
# setup create fewer accounts; MODERN=1: `loadgen idle --modern` (carbons,
# stream management with resumption, caps, CSI inactive).
set -u
W=${WORKDIR:-/tmp/rookery-idle-mem}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LG=${LOADGEN:-$ROOT/target/release/loadgen}
N_DEFAULT=${N_SETUP:-19000}
PORT=${PORT:-15299}
cfg() { # cfg DIR
cat >"$1/rookery.yml" <<EOC
hosts: [localhost]
loglevel: warning
data_dir: "$1/data"
certfiles: ["$W/certs/localhost.pem"]
listen:
  - port: $PORT
    ip: 127.0.0.1
    module: ejabberd_c2s
    starttls_required: true
    max_stanza_size: 262144
    access: c2s
auth_method: internal
auth_password_format: scram
auth_scram_iterations: 4096
acl:
  local:
    user_regexp: ""
access_rules:
  c2s:
    allow: all
  local:
    allow: local
shaper_rules:
  max_user_sessions: infinity
  max_user_offline_messages: infinity
modules:
$(if [ "${MODULES:-}" = default ]; then awk '/^modules:/ {on=1; next} on && /^[^ #]/ {on=0} on && !/^ *#/' "$ROOT/src/config/default.yml"; else printf '  mod_disco: {}\n  mod_ping: {}\n'; fi)
EOC
}
waitport() { for i in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && return 0; sleep 0.3; done; return 1; }
case $1 in
setup)
  BIN=$2
  mkdir -p $W/certs $W/base
  openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost" \
    -keyout $W/certs/localhost.key -out $W/certs/localhost.crt >/dev/null 2>&1
  cat $W/certs/localhost.crt $W/certs/localhost.key > $W/certs/localhost.pem
  cfg $W/base
  $BIN serve -c $W/base/rookery.yml > $W/base/log 2>&1 &
  P=$!; waitport || exit 1
  seq 1 $N_DEFAULT | sed 's/^/bench/' | timeout 900 xargs -P 4 -I{} $BIN ctl -c $W/base/rookery.yml register {} localhost secret >/dev/null
  $LG login --server 127.0.0.1:$PORT --mech scram-sha-1 --scram-cache $W/scram-cache --logins $N_DEFAULT --users $N_DEFAULT --duration 900 --server-pid $P | tail -1
  kill $P; wait $P
  ;;
run)
  BIN=$2; L=$3; N=${4:-$N_DEFAULT}; WARM=${5:-1}
  R=$W/run-$L; rm -rf $R; mkdir -p $R; cfg $R; cp -a $W/base/data $R/data
  $BIN serve -c $R/rookery.yml > $R/log 2>&1 &
  P=$!; waitport || { echo start failed; exit 1; }
  if [ "$WARM" = 1 ]; then
  $LG login --server 127.0.0.1:$PORT --mech scram-sha-1 --scram-cache $W/scram-cache --logins $N --users $N --duration 900 --server-pid $P >$R/warm.json 2>$R/warm.err
  fi
  $LG idle --server 127.0.0.1:$PORT --mech scram-sha-1 --scram-cache $W/scram-cache --sessions $N --duration 20 --server-pid $P $([ "${MODERN:-0}" = 1 ] && echo --resource modern --modern) >$R/idle.json 2>$R/idle.err
  echo "$L warm=$WARM $(python3 -c "import json,sys; d=json.loads(open('$R/idle.json').read().strip().splitlines()[-1]); print({k:d[k] for k in d if 'kib' in k or 'rss' in k or k in ('sessions_ready','loadavg','failures')})")"
  kill $P; wait $P 2>/dev/null
  ;;
esac
