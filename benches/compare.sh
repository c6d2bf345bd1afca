#!/usr/bin/env bash
# Rookery side by side with Prosody and ejabberd, on this machine.
#
#   benches/compare.sh [--quick] [--profile production|minimal] [--servers rookery,prosody,ejabberd] [--out FILE]
#
# Two configuration profiles (--profile):
#  * production (the default): what users run. Rookery with the embedded
#    default modules (src/config/default.yml: the message archive on, carbons,
#    stream management, CSI, ...); Prosody with Debian's default modules plus
#    mod_mam (internal storage); ejabberd with Debian's default modules plus
#    mod_mam, every module on PostgreSQL (`default_db: sql`, Debian's
#    sql/pg.sql), a private PostgreSQL cluster started by this script on
#    loopback (fsync and synchronous_commit on) whose CPU time is counted
#    with ejabberd's (benches/anchors/*-production.*.in).
#  * minimal: the few modules the scenarios need (no archive), as in the
#    earlier figures (benches/anchors/{rookery.yml,prosody.cfg.lua,ejabberd.yml}.in).
#
# For each server in turn, alone: set it up in a temporary directory with an
# equivalent configuration (c2s with STARTTLS on
# 127.0.0.1, the same self-signed certificate, no rate limits, unlimited
# sessions and offline messages), create the benchmark accounts with the
# server's own tools, check that one account can log in, run the load
# generator's scenarios against it (benches/loadgen, with --server-pid so it
# reports the server's CPU time), stop it. The JSON lines go to
# target/bench/results-<date>.jsonl (or --out FILE), tagged with the server,
# its version and a run id; then a markdown table compares the servers, with
# the ratios Rookery / Prosody and Rookery / ejabberd.
#
# Prosody and ejabberd are installed from Debian's packages when missing
# (apt-get update, apt-get install -y prosody ejabberd: needs root). The
# system configurations (/etc/prosody, /etc/ejabberd) are never used and no
# system service is touched. Everything is bounded: each step has a timeout,
# each server run has an overall time limit (--server-timeout), and the
# servers this script started are stopped by PID (ejabberd with its own
# ejabberdctl and config) at the end, on error and on Ctrl-C.
#
# Scenarios ending in -ws run the same load over XMPP over WebSocket (RFC
# 7395: loadgen --transport ws) on each server's HTTPS listener: Rookery's
# and ejabberd's ejabberd_http_ws at /ws, Prosody's mod_websocket at
# /xmpp-websocket. muc, muc-ws and muc1k are group chat fan-out (loadgen
# muc: rooms of occupants posting at a set rate; Rookery's
# conference.DOMAIN, Prosody's MUC component, ejabberd's mod_muc; room
# archives on in the production profile where the server has them).
# pubsub is publish-subscribe broadcast (loadgen pubsub: one node,
# --pubsub-subscribers subscribers, one publisher at --pubsub-rate items/s):
# Rookery's mod_pubsub on pubsub.DOMAIN (added to the production profile's
# modules when the embedded default has none), Prosody's pubsub component
# (the publisher, PREFIX1, is that component's admin: Prosody lets only
# admins create nodes), ejabberd's mod_pubsub (plugins flat and pep).
#
# See docs/benchmarks.md, section "Anchors", for what was tuned and why.

set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ANCHORS=$ROOT/benches/anchors

usage() {
    cat <<EOF
Usage: benches/compare.sh [OPTIONS]

Options:
  --quick               small counts and short runs (about 2 minutes in all)
  --profile P           production (default: archives on, the servers' default
                        modules; ejabberd on PostgreSQL) or minimal (the
                        modules the scenarios need, no archive)
  --servers LIST        comma-separated, any of rookery,prosody,ejabberd,relay
                        (default: all four, in that order; "relay" is the
                        speed-of-light baseline: loadgen's TLS byte relay,
                        which runs only the chat scenarios, with chat --raw)
  --out FILE            append the JSON lines to FILE
                        (default: target/bench/results-<date>.jsonl)
  --scenarios LIST      comma-separated scenarios, run in this order
                        (default: idle,idle-modern,login,chat,chat10k,presence,
                        offline; chat10k is chat at an offered 10,000 msgs/s;
                        idle-modern is idle with modern clients: carbons,
                        stream management with resumption, presence with
                        caps, CSI inactive; production profile only).
                        Also: login-ws, idle-ws, chat-ws, chat10k-ws (the same
                        over WebSocket, RFC 7395); muc (--muc-rooms rooms of
                        --muc-occupants occupants), muc-ws (the same over
                        WebSocket), muc1k (one room of --muc-big occupants),
                        pubsub (one node, --pubsub-subscribers subscribers,
                        one publisher at --pubsub-rate items/s)
  --users N             accounts used by login, chat (N/2 pairs), presence (a ring
                        of N) and offline (N/2 senders) (default 200; quick 50)
  --logins N            logins of the login scenario, round-robin over the
                        accounts (default 2000; quick 300)
  --messages N          messages of the offline scenario (default 5000; quick 500)
  --idle-users N        sessions held by the idle scenario (default 10000; quick 500)
  --duration S          chat's sending time and idle's hold time, seconds
                        (default 20; quick 4)
  --mech MECH           scram-sha-1 or scram-sha-256 (default scram-sha-1)
  --server-timeout S    overall limit for one server's run (default 1200; quick 240)
  --rate N              offered rate of chat10k, msgs/s (default 10000)
  --muc-rooms N         rooms of muc and muc-ws (default 100; quick 5)
  --muc-occupants N     occupants per room of muc and muc-ws (default 20; quick 10)
  --muc-rate R          messages per second each occupant posts in muc and
                        muc-ws (default 0.5)
  --muc-big N           occupants of muc1k's one room (default 1000; quick 100)
  --muc-big-rate R      messages per second each occupant posts in muc1k
                        (default 0.02; quick 0.2)
  --pubsub-subscribers N  subscribers of pubsub's node (default 1000; quick 100)
  --pubsub-rate R       items per second pubsub's publisher publishes (default 10)
  --wait-quiet S        before each scenario, wait up to S seconds for the
                        machine to be quiet (other processes under 15% of the
                        CPUs) (default 0: measure at once, with a warning)
  --key rsa|ecdsa       the certificate all three servers share: RSA 2048
                        (default) or ECDSA P-256 (certbot's default key type)
  --loadgen-arg ARG     pass ARG to every loadgen run (repeatable)
  --rookery-without M   production profile: leave module M out of Rookery's
                        embedded default modules (repeatable; e.g. mod_mam,
                        to measure the archive's own cost against the same
                        configuration with it on); the server version says so
  --no-install          do not install missing Debian packages
  --no-build            do not run cargo build (use the existing binaries)
  --keep                keep the temporary directory (configs, logs, data)
  -h, --help            this help
EOF
}

# ---------------------------------------------------------------- options
QUICK=0
SERVERS=rookery,prosody,ejabberd,relay
RATE=10000
# idle first, on the freshly started server: its memory per session must not
# be hidden by memory the allocator (or GC) kept from earlier scenarios.
SCENARIOS=idle,idle-modern,login,chat,chat10k,presence,offline
PROFILE=production
OUT=""
USERS=""
LOGINS=""
MESSAGES=""
IDLE_USERS=""
DURATION=""
MECH=scram-sha-1
KEY=rsa
SERVER_TIMEOUT=""
INSTALL=1
BUILD=1
KEEP=0
WAIT_QUIET=0
LOADGEN_EXTRA=()
ROOKERY_WITHOUT=()
MUC_ROOMS=""
MUC_OCC=""
MUC_RATE=0.5
MUC_BIG=""
MUC_BIG_RATE=""
PUBSUB_SUBS=""
PUBSUB_RATE=10

while [ $# -gt 0 ]; do
    case $1 in
        --quick) QUICK=1 ;;
        --profile) PROFILE=${2:?--profile needs a value}; shift ;;
        --profile=*) PROFILE=${1#*=} ;;
        --servers) SERVERS=${2:?--servers needs a value}; shift ;;
        --servers=*) SERVERS=${1#*=} ;;
        --scenarios) SCENARIOS=${2:?--scenarios needs a value}; shift ;;
        --scenarios=*) SCENARIOS=${1#*=} ;;
        --out) OUT=${2:?--out needs a value}; shift ;;
        --out=*) OUT=${1#*=} ;;
        --users) USERS=${2:?}; shift ;;
        --users=*) USERS=${1#*=} ;;
        --logins) LOGINS=${2:?}; shift ;;
        --logins=*) LOGINS=${1#*=} ;;
        --messages) MESSAGES=${2:?}; shift ;;
        --messages=*) MESSAGES=${1#*=} ;;
        --idle-users) IDLE_USERS=${2:?}; shift ;;
        --idle-users=*) IDLE_USERS=${1#*=} ;;
        --duration) DURATION=${2:?}; shift ;;
        --duration=*) DURATION=${1#*=} ;;
        --mech) MECH=${2:?}; shift ;;
        --key) KEY=${2:?}; shift ;;
        --key=*) KEY=${1#*=} ;;
        --mech=*) MECH=${1#*=} ;;
        --server-timeout) SERVER_TIMEOUT=${2:?}; shift ;;
        --server-timeout=*) SERVER_TIMEOUT=${1#*=} ;;
        --rookery-without) ROOKERY_WITHOUT+=("${2:?}"); shift ;;
        --rookery-without=*) ROOKERY_WITHOUT+=("${1#*=}") ;;
        --loadgen-arg) LOADGEN_EXTRA+=("${2:?}"); shift ;;
        --loadgen-arg=*) LOADGEN_EXTRA+=("${1#*=}") ;;
        --muc-rooms) MUC_ROOMS=${2:?}; shift ;;
        --muc-rooms=*) MUC_ROOMS=${1#*=} ;;
        --muc-occupants) MUC_OCC=${2:?}; shift ;;
        --muc-occupants=*) MUC_OCC=${1#*=} ;;
        --muc-rate) MUC_RATE=${2:?}; shift ;;
        --muc-rate=*) MUC_RATE=${1#*=} ;;
        --muc-big) MUC_BIG=${2:?}; shift ;;
        --muc-big=*) MUC_BIG=${1#*=} ;;
        --muc-big-rate) MUC_BIG_RATE=${2:?}; shift ;;
        --muc-big-rate=*) MUC_BIG_RATE=${1#*=} ;;
        --pubsub-subscribers) PUBSUB_SUBS=${2:?}; shift ;;
        --pubsub-subscribers=*) PUBSUB_SUBS=${1#*=} ;;
        --pubsub-rate) PUBSUB_RATE=${2:?}; shift ;;
        --pubsub-rate=*) PUBSUB_RATE=${1#*=} ;;
        --rate) RATE=${2:?}; shift ;;
        --rate=*) RATE=${1#*=} ;;
        --wait-quiet) WAIT_QUIET=${2:?}; shift ;;
        --wait-quiet=*) WAIT_QUIET=${1#*=} ;;
        --no-install) INSTALL=0 ;;
        --no-build) BUILD=0 ;;
        --keep) KEEP=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "compare.sh: unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

if [ "$QUICK" = 1 ]; then
    : "${USERS:=50}" "${LOGINS:=300}" "${MESSAGES:=500}" "${IDLE_USERS:=500}" "${DURATION:=4}"
    : "${SERVER_TIMEOUT:=240}" "${MUC_ROOMS:=5}" "${MUC_OCC:=10}" "${MUC_BIG:=100}" "${MUC_BIG_RATE:=0.2}"
    : "${PUBSUB_SUBS:=100}"
else
    : "${USERS:=200}" "${LOGINS:=2000}" "${MESSAGES:=5000}" "${IDLE_USERS:=10000}" "${DURATION:=20}"
    : "${SERVER_TIMEOUT:=1200}" "${MUC_ROOMS:=100}" "${MUC_OCC:=20}" "${MUC_BIG:=1000}" "${MUC_BIG_RATE:=0.02}"
    : "${PUBSUB_SUBS:=1000}"
fi

for v in USERS LOGINS MESSAGES IDLE_USERS DURATION SERVER_TIMEOUT WAIT_QUIET RATE MUC_ROOMS MUC_OCC MUC_BIG PUBSUB_SUBS; do
    case ${!v} in ''|*[!0-9]*) echo "compare.sh: $v must be a whole number" >&2; exit 2 ;; esac
done
for v in MUC_RATE MUC_BIG_RATE PUBSUB_RATE; do
    case ${!v} in ''|*[!0-9.]*|*.*.*|.) echo "compare.sh: $v must be a positive number" >&2; exit 2 ;; esac
done
[ "$MUC_ROOMS" -ge 1 ] && [ "$MUC_OCC" -ge 1 ] && [ "$MUC_BIG" -ge 1 ] \
    || { echo "compare.sh: --muc-rooms, --muc-occupants and --muc-big must be at least 1" >&2; exit 2; }
[ "$PUBSUB_SUBS" -ge 1 ] || { echo "compare.sh: --pubsub-subscribers must be at least 1" >&2; exit 2; }
[ "$USERS" -ge 12 ] || { echo "compare.sh: --users must be at least 12" >&2; exit 2; }
case $MECH in
    scram-sha-1) PROSODY_HASH=SHA-1; EJABBERD_HASH=sha; SASL_MECH=SCRAM-SHA-1 ;;
    scram-sha-256) PROSODY_HASH=SHA-256; EJABBERD_HASH=sha256; SASL_MECH=SCRAM-SHA-256 ;;
    *) echo "compare.sh: --mech must be scram-sha-1 or scram-sha-256" >&2; exit 2 ;;
esac
case $PROFILE in
    production|minimal) ;;
    *) echo "compare.sh: --profile must be production or minimal" >&2; exit 2 ;;
esac
IFS=, read -r -a SERVER_LIST <<<"$SERVERS"
for s in "${SERVER_LIST[@]}"; do
    case $s in rookery|prosody|ejabberd|relay) ;; *) echo "compare.sh: unknown server: $s" >&2; exit 2 ;; esac
done
IFS=, read -r -a SCENARIO_LIST <<<"$SCENARIOS"
# One server's whole run is bounded by this (time spent waiting for quiet excepted).
RUN_LIMIT=$((SERVER_TIMEOUT + WAIT_QUIET * ${#SCENARIO_LIST[@]}))
for s in "${SCENARIO_LIST[@]}"; do
    case $s in
        login|idle|idle-modern|chat|chat10k|presence|offline) ;;
        login-ws|idle-ws|chat-ws|chat10k-ws|muc|muc-ws|muc1k|pubsub) ;;
        *) echo "compare.sh: unknown scenario: $s" >&2; exit 2 ;;
    esac
done
if [ "$PROFILE" = minimal ]; then
    # The minimal configurations offer no stream management: no modern client.
    kept=()
    for s in "${SCENARIO_LIST[@]}"; do
        if [ "$s" = idle-modern ]; then
            echo "compare.sh: idle-modern needs --profile production (skipped)" >&2
        else
            kept+=("$s")
        fi
    done
    SCENARIO_LIST=("${kept[@]}")
fi
# Template of each server's configuration for the profile.
anchor_file() { # anchor_file BASENAME EXT: benches/anchors/BASENAME[-production].EXT.in
    if [ "$PROFILE" = production ]; then echo "$ANCHORS/$1-production.$2.in"; else echo "$ANCHORS/$1.$2.in"; fi
}

DOMAIN=localhost
PASSWORD=bench-password
PREFIX=bench
RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)-$$
: "${OUT:=$ROOT/target/bench/results-$(date -u +%Y-%m-%d).jsonl}"
mkdir -p "$(dirname "$OUT")" || exit 1

log() { printf '%s compare.sh: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

wants() { # wants SERVER: is SERVER in --servers?
    local s
    for s in "${SERVER_LIST[@]}"; do [ "$s" = "$1" ] && return 0; done
    return 1
}

# ------------------------------------------------------- state and cleanup
WORK=""
CUR_SERVER=""      # the server being measured (for the traps)
CUR_PID=""         # its PID
CUR_STOP=""        # the function that stops it
WATCHDOG_PID=""
TIMED_OUT=0

stop_current() {
    if [ -n "$CUR_STOP" ]; then
        local f=$CUR_STOP
        CUR_STOP=""
        "$f" || true
    fi
    CUR_PID=""
    CUR_SERVER=""
}

stop_watchdog() {
    if [ -n "$WATCHDOG_PID" ]; then
        kill "$WATCHDOG_PID" 2>/dev/null
        wait "$WATCHDOG_PID" 2>/dev/null
        WATCHDOG_PID=""
    fi
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM USR1
    stop_bg
    stop_watchdog
    stop_current
    stop_pg
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        if [ "$KEEP" = 1 ] || [ "$rc" != 0 ]; then
            log "kept $WORK (configs, logs, data)"
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM
# The watchdog sends USR1 when a server's run exceeds --server-timeout: stop
# that server (the running loadgen then fails fast) and go on to the next.
trap 'TIMED_OUT=1; log "$CUR_SERVER: over ${RUN_LIMIT}s, stopping it"; stop_bg; stop_current' USR1

start_watchdog() {
    TIMED_OUT=0
    (
        trap - EXIT INT USR1
        trap 'kill "$sp" 2>/dev/null; exit 0' TERM
        sleep "$RUN_LIMIT" &
        sp=$!
        wait "$sp" && kill -USR1 $$ 2>/dev/null
    ) &
    WATCHDOG_PID=$!
}

# interruptible CMD...: run CMD in the background and wait for it, so that the
# watchdog's signal is handled at once (bash runs traps only between
# foreground commands); CMD is bounded by its own timeout.
BG_PID=""
interruptible() {
    local o=/dev/null e=/dev/stderr
    # --out FILE --err FILE: the command's redirections (not the function's,
    # so that the traps' messages still reach the terminal).
    while :; do
        case $1 in
            --out) o=$2; shift 2 ;;
            --err) e=$2; shift 2 ;;
            *) break ;;
        esac
    done
    "$@" >"$o" 2>"$e" &
    local p=$! rc
    BG_PID=$p
    wait "$p"
    rc=$?
    while kill -0 "$p" 2>/dev/null; do
        wait "$p"
        rc=$?
    done
    BG_PID=""
    return "$rc"
}

stop_bg() { # end the load generator or account creation in progress, if any
    if [ -n "$BG_PID" ]; then
        pkill -TERM -P "$BG_PID" 2>/dev/null   # its children (the command under timeout, xargs...)
        kill -TERM "$BG_PID" 2>/dev/null
    fi
}

wait_gone() { # wait_gone PID SECONDS: wait for PID to exit; 1 if it did not
    local pid=$1 n=$(($2 * 10))
    while [ "$n" -gt 0 ] && kill -0 "$pid" 2>/dev/null; do
        sleep 0.1
        n=$((n - 1))
    done
    ! kill -0 "$pid" 2>/dev/null
}

kill_pid() { # kill_pid PID: TERM, then KILL after 10 s
    local pid=$1
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    wait_gone "$pid" 10 && return 0
    log "PID $pid did not stop on TERM within 10 s; KILL"
    kill -KILL "$pid" 2>/dev/null
    wait_gone "$pid" 5
}

wait_port() { # wait_port PORT SECONDS [PID]
    local port=$1 n=$(($2 * 10)) pid=${3:-}
    while [ "$n" -gt 0 ]; do
        if "$PY" - "$port" <<'EOF' 2>/dev/null; then return 0; fi
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.close()
EOF
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
        sleep 0.1
        n=$((n - 1))
    done
    return 1
}

free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

subst() { # subst TEMPLATE OUTPUT NAME=VALUE...: replace @NAME@ placeholders
    local in=$1 out=$2 args=() kv
    shift 2
    for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
    sed "${args[@]}" "$in" >"$out"
}

# The accounts: PREFIX1 .. PREFIXn (the load generator's naming).
user_names() { # user_names COUNT
    seq 1 "$1" | sed "s/^/$PREFIX/"
}

# ------------------------------------------------------- packages, binaries
need_cmd() { command -v "$1" >/dev/null 2>&1 || die "$1 is needed; please install it"; }
need_cmd python3
# The interpreter itself, not a wrapper such as a pyenv shim (which costs
# ~0.1 s of CPU per call and would blur the CPU accounting below).
PY=$(python3 -c 'import sys; print(sys.executable)') || die "python3 does not run"
need_cmd openssl
need_cmd timeout
need_cmd setsid

install_anchors() {
    local missing=()
    wants prosody && ! dpkg-query -W -f='${Status}' prosody 2>/dev/null | grep -q 'install ok installed' && missing+=(prosody)
    wants ejabberd && ! dpkg-query -W -f='${Status}' ejabberd 2>/dev/null | grep -q 'install ok installed' && missing+=(ejabberd)
    if wants ejabberd && [ "$PROFILE" = production ]; then
        # ejabberd's PostgreSQL driver and the database server itself.
        dpkg-query -W -f='${Status}' erlang-p1-pgsql 2>/dev/null | grep -q 'install ok installed' || missing+=(erlang-p1-pgsql)
        ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
    fi
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$INSTALL" = 1 ] || die "not installed: ${missing[*]} (run without --no-install, as root)"
    [ "$(id -u)" = 0 ] || die "not installed: ${missing[*]}; run as root to install them, or: apt-get install ${missing[*]}"
    command -v apt-get >/dev/null || die "apt-get not found: install ${missing[*]} by hand"
    log "installing ${missing[*]} from Debian's packages"
    timeout 600 apt-get update -q >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q "${missing[@]}" >&2 \
        || die "apt-get install failed"
    # A package install may start the system services (on a systemd machine).
    # They are left alone (not ours to stop), but say so: they share the CPU.
    if pgrep -u prosody -x lua5.4 >/dev/null 2>&1 || pgrep -u ejabberd beam.smp >/dev/null 2>&1; then
        log "note: a system prosody/ejabberd service is running; it is idle, but stop it for cleaner figures"
    fi
}

if wants prosody || wants ejabberd; then
    install_anchors
fi
if wants ejabberd; then
    [ "$(id -u)" = 0 ] || die "ejabberd is run as its 'ejabberd' user through ejabberdctl: run as root"
fi
if wants prosody; then
    [ "$(id -u)" = 0 ] || die "prosody is run as its 'prosody' user: run as root"
fi

# ROOKERY_BIN / LOADGEN_BIN override the binaries (then nothing is built).
ROOKERY=${ROOKERY_BIN:-$ROOT/target/release/rookery}
LOADGEN=${LOADGEN_BIN:-$ROOT/target/release/loadgen}
[ -n "${ROOKERY_BIN:-}${LOADGEN_BIN:-}" ] && BUILD=0
if [ "$BUILD" = 1 ]; then
    log "cargo build --release -p rookery -p loadgen"
    (cd "$ROOT" && timeout 1800 cargo build --release -q -p rookery -p loadgen) || die "cargo build failed"
fi
[ -x "$LOADGEN" ] || die "$LOADGEN missing (cargo build --release -p loadgen)"
wants rookery && { [ -x "$ROOKERY" ] || die "$ROOKERY missing (cargo build --release -p rookery)"; }

# Open files: the idle scenario holds IDLE_USERS connections (the server and
# the load generator each need one descriptor per connection).
ulimit -n "$(ulimit -Hn)" 2>/dev/null
NOFILE=$(ulimit -n)
if [ "$NOFILE" != unlimited ] && [ "$IDLE_USERS" -gt $((NOFILE - 500)) ]; then
    log "open-files limit is $NOFILE: idle scenario lowered from $IDLE_USERS to $((NOFILE - 500)) connections"
    IDLE_USERS=$((NOFILE - 500))
fi
# Accounts: PREFIX1 .. PREFIX$ACCOUNTS, enough for every scenario. Each login
# of the login scenario uses its own account: logging in again at once with
# the same account and resource makes a server replace the session that is
# still closing (ejabberd sends it <conflict/>), which is not what is measured.
# The presence scenario has its own range (PREFIX(USERS+1) .. PREFIX(2 USERS)),
# so that the rosters it sets up add no presence traffic to other scenarios.
ACCOUNTS=$((2 * USERS))
[ "$LOGINS" -gt "$ACCOUNTS" ] && ACCOUNTS=$LOGINS
[ "$IDLE_USERS" -gt "$ACCOUNTS" ] && ACCOUNTS=$IDLE_USERS
# The muc scenarios: occupant k of room r is PREFIX(1 + r*occupants + k).
for s in "${SCENARIO_LIST[@]}"; do
    case $s in
        muc|muc-ws) [ $((MUC_ROOMS * MUC_OCC)) -gt "$ACCOUNTS" ] && ACCOUNTS=$((MUC_ROOMS * MUC_OCC)) ;;
        muc1k) [ "$MUC_BIG" -gt "$ACCOUNTS" ] && ACCOUNTS=$MUC_BIG ;;
        # pubsub: the publisher PREFIX1, subscribers PREFIX2 .. PREFIX(1 + S).
        pubsub) [ $((PUBSUB_SUBS + 1)) -gt "$ACCOUNTS" ] && ACCOUNTS=$((PUBSUB_SUBS + 1)) ;;
    esac
done

# -------------------------------------------------------------- work area
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rookery-bench.XXXXXX") || die "mktemp failed"
chmod 755 "$WORK"   # the anchors run as their own users and must reach their directories
mkdir -p "$WORK/certs"
# One certificate for all three servers (same key type and size, so the same
# TLS handshake cost): RSA 2048 or ECDSA P-256 (--key), self-signed for localhost.
case $KEY in
    rsa) KEYOPT=(-newkey rsa:2048) ;;
    ecdsa) KEYOPT=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1) ;;
    *) die "--key must be rsa or ecdsa" ;;
esac
log "certificate: $KEY"
openssl req -x509 "${KEYOPT[@]}" -nodes -days 365 -subj "/CN=$DOMAIN" \
    -addext "subjectAltName=DNS:$DOMAIN" \
    -keyout "$WORK/certs/localhost.key" -out "$WORK/certs/localhost.crt" >/dev/null 2>&1 \
    || die "openssl could not make a certificate"
cat "$WORK/certs/localhost.crt" "$WORK/certs/localhost.key" >"$WORK/certs/localhost.pem"

copy_certs() { # copy_certs DIR OWNER
    mkdir -p "$1/certs"
    cp "$WORK/certs/localhost."* "$1/certs/"
    chmod 600 "$1/certs/localhost.key" "$1/certs/localhost.pem"
    [ -n "${2:-}" ] && chown -R "$2" "$1/certs"
    return 0
}

machine_info() {
    "$PY" - <<'EOF'
import json, os, platform
model = ""
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
except OSError:
    pass
mem = 0
try:
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            mem = int(line.split()[1]) // 1024
except OSError:
    pass
print(json.dumps({"cpu_model": model, "cpus": os.cpu_count(), "mem_mib": mem,
                  "kernel": platform.release()}))
EOF
}
MACHINE=$(machine_info)

# Fraction of the machine's CPU time used over one second, by anything: the
# server under test is idle between scenarios, so this is other processes.
cpu_busy() {
    "$PY" - <<'EOF'
import time
def snap():
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(v), v[0] + v[1] + v[2]   # all; user + nice + system
t0, b0 = snap()
time.sleep(1)
t1, b1 = snap()
print("%.3f" % ((b1 - b0) / max(1, t1 - t0)))
EOF
}

# cpu_snap PID: the machine's busy CPU ticks, PID's CPU ticks, a timestamp.
cpu_snap() {
    "$PY" - "$1" <<'EOF'
import sys, time
v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
# user + nice + system: processes' time. Interrupt and softirq time (where
# the kernel carries loopback TCP traffic) and steal are left out.
busy = v[0] + v[1] + v[2]
try:
    f = open("/proc/%s/stat" % sys.argv[1]).read().rsplit(")", 1)[1].split()
    srv = int(f[11]) + int(f[12])
except (OSError, IndexError, ValueError):
    srv = 0
print(busy, srv, time.monotonic())
EOF
}

# children_cpu: set CHILD_CPU to the CPU seconds of this shell's finished
# children so far (the load generator once it has been waited for). Call it
# directly, not in $(...): `times` must run in this shell, not a subshell.
CHILD_CPU=0
children_cpu() {
    times >"$WORK/times"
    CHILD_CPU=$("$PY" - "$WORK/times" <<'EOF'
import re, sys
lines = open(sys.argv[1]).read().splitlines()
print(sum(int(m) * 60 + float(s) for m, s in re.findall(r"(\d+)m([\d.]+)s", lines[-1])))
EOF
)
}

# other_cpu SNAP0 SNAP1 CHILD0 CHILD1: CPU seconds used by other processes
# (neither the server nor the load generator) between two snapshots, and
# that as a share of the machine's capacity over the interval.
other_cpu() {
    "$PY" - "$1" "$2" "$3" "$4" <<'EOF'
import os, sys
b0, s0, t0 = map(float, sys.argv[1].split())
b1, s1, t1 = map(float, sys.argv[2].split())
hz = os.sysconf("SC_CLK_TCK")
other = (b1 - b0) / hz - (s1 - s0) / hz - (float(sys.argv[4]) - float(sys.argv[3]))
other = max(0.0, other)
print("%.2f %.3f" % (other, other / max(1e-6, (t1 - t0) * (os.cpu_count() or 1))))
EOF
}

pkg_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo unknown; }

# ------------------------------------------------------------------ Rookery
ROOKERY_DIR=""
ROOKERY_CFG=""
# Each server's HTTPS port and path for XMPP over WebSocket (set by setup_*).
WS_PORT=""
WS_PATH=""

setup_rookery() {
    ROOKERY_DIR=$WORK/rookery
    ROOKERY_CFG=$ROOKERY_DIR/rookery.yml
    mkdir -p "$ROOKERY_DIR"
    copy_certs "$ROOKERY_DIR"
    PORT=$(free_port)
    if [ "$PROFILE" = production ]; then
        local http_port
        http_port=$(free_port)
        subst "$(anchor_file rookery yml)" "$ROOKERY_CFG" DIR="$ROOKERY_DIR" PORT="$PORT" \
            HTTP_PORT="$http_port" DOMAIN="$DOMAIN"
        # The embedded default's modules, unchanged but for the upload URL's
        # port and mod_muc's max_users (as for the anchors: 1000 occupants
        # in muc1k's room).
        [ -f "$ROOT/src/config/default.yml" ] || { log "src/config/default.yml missing"; return 1; }
        sed -n '/^modules:/,$p' "$ROOT/src/config/default.yml" \
            | sed "s|:5443/|:$http_port/|" \
            | awk '/^  [a-z_]+:/ {muc = ($1 == "mod_muc:")} muc && /^    max_users:/ {next} {print} /^  mod_muc:/ {print "    max_users: 100000"}' \
            | awk -v drop=" ${ROOKERY_WITHOUT[*]:-} " '/^  [a-z_]+:/ {m = $1; sub(":", "", m); skip = index(drop, " " m " ") > 0} !skip' \
            >>"$ROOKERY_CFG"
        grep -q '^  mod_mam:' "$ROOKERY_CFG" || log "rookery: note: the embedded default has no mod_mam"
        grep -q '^  mod_muc:' "$ROOKERY_CFG" || log "rookery: note: the embedded default has no mod_muc"
        # The pubsub scenario needs a pubsub service, which the embedded
        # default does not list (its PEP is mod_pep): add mod_pubsub.
        if [[ " ${SCENARIO_LIST[*]} " == *" pubsub "* ]] && ! grep -q '^  mod_pubsub:' "$ROOKERY_CFG"; then
            printf '  mod_pubsub:\n    access_createnode: local\n' >>"$ROOKERY_CFG"
            log "rookery: note: mod_pubsub added for the pubsub scenario (not in the embedded default)"
        fi
        WS_PORT=$http_port
    else
        WS_PORT=$(free_port)
        subst "$ANCHORS/rookery.yml.in" "$ROOKERY_CFG" DIR="$ROOKERY_DIR" PORT="$PORT" DOMAIN="$DOMAIN" \
            WS_PORT="$WS_PORT"
    fi
    WS_PATH=/ws
    VERSION=$("$ROOKERY" --version 2>/dev/null | awk '{print $NF}')
    VERSION="$VERSION ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || echo ', modified'))"
    if [ "$PROFILE" = production ] && [ ${#ROOKERY_WITHOUT[@]} -gt 0 ]; then
        VERSION="$VERSION without ${ROOKERY_WITHOUT[*]}"
    fi
}

start_rookery() {
    "$ROOKERY" serve -c "$ROOKERY_CFG" >"$ROOKERY_DIR/rookery.log" 2>&1 &
    CUR_PID=$!
    CUR_STOP=stop_rookery
    wait_port "$PORT" 30 "$CUR_PID"
}

stop_rookery() {
    kill_pid "$CUR_PID"
}

register_rookery() {
    user_names "$ACCOUNTS" | timeout 900 xargs -P 4 -I{} \
        "$ROOKERY" ctl -c "$ROOKERY_CFG" register {} "$DOMAIN" "$PASSWORD" >/dev/null
}

# ------------------------------------------------------------------ Prosody
PROSODY_DIR=""
PROSODY_CFG=""

setup_prosody() {
    PROSODY_DIR=$WORK/prosody
    PROSODY_CFG=$PROSODY_DIR/prosody.cfg.lua
    mkdir -p "$PROSODY_DIR/data"
    copy_certs "$PROSODY_DIR" prosody:prosody
    PORT=$(free_port)
    WS_PORT=$(free_port)
    WS_PATH=/xmpp-websocket
    subst "$(anchor_file prosody cfg.lua)" "$PROSODY_CFG" DIR="$PROSODY_DIR" PORT="$PORT" \
        DOMAIN="$DOMAIN" PASSWORD_HASH="$PROSODY_HASH" WS_PORT="$WS_PORT" PUBLISHER="${PREFIX}1@$DOMAIN"
    chmod 644 "$PROSODY_CFG"
    touch "$PROSODY_DIR/prosody.log"
    chown prosody:prosody "$PROSODY_DIR" "$PROSODY_DIR/data" "$PROSODY_DIR/prosody.log"
    VERSION="$(pkg_version prosody) ($(lua5.4 -v 2>&1 | awk '{print $1" "$2}'))"
}

start_prosody() {
    # As the "prosody" user, in the foreground (-F): setpriv execs, so $! is
    # Prosody's own PID. Never run `prosody` without --config: with the
    # system config it would start a real server on 0.0.0.0.
    (cd "$PROSODY_DIR" && exec setpriv --reuid=prosody --regid=prosody --init-groups \
        env HOME="$PROSODY_DIR/data" prosody --config "$PROSODY_CFG" -F) \
        >"$PROSODY_DIR/prosody.out" 2>&1 &
    CUR_PID=$!
    CUR_STOP=stop_prosody
    wait_port "$PORT" 30 "$CUR_PID"
}

stop_prosody() {
    kill_pid "$CUR_PID"
}

register_prosody() {
    # prosodyctl's admin shell (mod_admin_shell), in chunks of 1000: one
    # `prosodyctl register` per account costs a Lua start-up each.
    local from=1 to rc=0 out n=300
    # The admin socket may come up after the c2s port (more modules to load
    # in the production profile): wait for it (bounded).
    while [ ! -S "$PROSODY_DIR/data/prosody.sock" ] && [ "$n" -gt 0 ]; do
        sleep 0.1
        n=$((n - 1))
    done
    while [ "$from" -le "$ACCOUNTS" ]; do
        to=$((from + 999))
        [ "$to" -gt "$ACCOUNTS" ] && to=$ACCOUNTS
        out=$(timeout 300 prosodyctl --config "$PROSODY_CFG" shell \
            "for i = $from, $to do local ok, err = user:create('$PREFIX'..i..'@$DOMAIN', '$PASSWORD') if not ok then error(err) end end" 2>&1) \
            || { rc=1; log "prosodyctl shell failed: $(printf '%s' "$out" | grep -v -i unbound | tail -3)"; break; }
        from=$((to + 1))
    done
    return $rc
}

# -------------------------------------------------------------------- relay
# The speed of light: loadgen's own TLS byte relay (no XML, no routing table:
# it pairs two connections and copies bytes), driven by `chat --raw` with the
# same frames as chat. What any server pays at least for TLS and sockets.
RELAY_DIR=""

setup_relay() {
    RELAY_DIR=$WORK/relay
    mkdir -p "$RELAY_DIR"
    PORT=$(free_port)
    VERSION="loadgen relay ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown))"
}

start_relay() {
    "$LOADGEN" relay --listen "127.0.0.1:$PORT" --duration "$RUN_LIMIT" \
        >"$RELAY_DIR/relay.out" 2>"$RELAY_DIR/relay.err" &
    CUR_PID=$!
    CUR_STOP=stop_relay
    wait_port "$PORT" 30 "$CUR_PID"
}

stop_relay() {
    kill_pid "$CUR_PID"
}

# ----------------------------------------------------------------- ejabberd
EJABBERD_DIR=""
EJABBERDCTL=()

setup_ejabberd() {
    EJABBERD_DIR=$WORK/ejabberd
    mkdir -p "$EJABBERD_DIR/spool" "$EJABBERD_DIR/logs"
    copy_certs "$EJABBERD_DIR" ejabberd:ejabberd
    PORT=$(free_port)
    API_PORT=$(free_port)
    local dist_port node
    dist_port=$(free_port)
    node=rookerybench$$
    local pg_port=""
    if [ "$PROFILE" = production ]; then
        setup_pg || { log "ejabberd: PostgreSQL setup failed; see $WORK/pg"; return 1; }
        pg_port=$PG_PORT
    fi
    WS_PORT=$(free_port)
    WS_PATH=/ws
    subst "$(anchor_file ejabberd yml)" "$EJABBERD_DIR/ejabberd.yml" DIR="$EJABBERD_DIR" PORT="$PORT" \
        API_PORT="$API_PORT" DOMAIN="$DOMAIN" SCRAM_HASH="$EJABBERD_HASH" PG_PORT="$pg_port" \
        WS_PORT="$WS_PORT"
    subst "$ANCHORS/ejabberdctl.cfg.in" "$EJABBERD_DIR/ejabberdctl.cfg" DIR="$EJABBERD_DIR" \
        NODE="$node" DIST_PORT="$dist_port"
    # Erlang's resolver configuration (ejabberdctl points ERL_INETRC at the
    # config directory): hosts file, then the system resolver.
    printf '{lookup,["file","native"]}.\n{host,{127,0,0,1}, ["localhost"]}.\n' >"$EJABBERD_DIR/inetrc"
    chmod 644 "$EJABBERD_DIR"/*.yml "$EJABBERD_DIR"/*.cfg "$EJABBERD_DIR/inetrc"
    chown ejabberd:ejabberd "$EJABBERD_DIR" "$EJABBERD_DIR/spool" "$EJABBERD_DIR/logs"
    # ejabberdctl run as root switches to the ejabberd user with su, whose PAM
    # session resets the open-files limit to 1024 (ejabberd then refuses
    # connections past ~1000: "Failed TCP accept: too many open files").
    # Running it as that user already, with setpriv, keeps this shell's raised
    # limit, as the LimitNOFILE=65536 of Debian's ejabberd.service would.
    local home
    home=$(getent passwd ejabberd | cut -d: -f6)
    EJABBERDCTL=(setpriv --reuid=ejabberd --regid=ejabberd --init-groups env HOME="${home:-/var/lib/ejabberd}"
        ejabberdctl --config-dir "$EJABBERD_DIR" --config "$EJABBERD_DIR/ejabberd.yml"
        --ctl-config "$EJABBERD_DIR/ejabberdctl.cfg" --spool "$EJABBERD_DIR/spool"
        --logs "$EJABBERD_DIR/logs")
    VERSION="$(pkg_version ejabberd) (Erlang/OTP $(pkg_version erlang-base | sed 's/^[0-9]*://'))"
    [ "$PROFILE" = production ] && VERSION="$VERSION + PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}')"
    return 0
}

start_ejabberd() {
    rm -f "$EJABBERD_DIR/ejabberd.pid"
    CUR_STOP=stop_ejabberd
    timeout 60 "${EJABBERDCTL[@]}" start >>"$EJABBERD_DIR/ejabberdctl.out" 2>&1 || return 1
    # The VM writes its PID when ejabberd starts (EJABBERD_PID_PATH).
    local n=300
    while [ "$n" -gt 0 ] && [ ! -s "$EJABBERD_DIR/ejabberd.pid" ]; do sleep 0.1; n=$((n - 1)); done
    CUR_PID=$(cat "$EJABBERD_DIR/ejabberd.pid" 2>/dev/null)
    [ -n "$CUR_PID" ] || return 1
    timeout 90 "${EJABBERDCTL[@]}" started >>"$EJABBERD_DIR/ejabberdctl.out" 2>&1 || return 1
    wait_port "$PORT" 30 "$CUR_PID" && wait_port "$API_PORT" 30 "$CUR_PID"
}

stop_ejabberd() {
    timeout 30 "${EJABBERDCTL[@]}" stop >>"$EJABBERD_DIR/ejabberdctl.out" 2>&1
    if [ -n "$CUR_PID" ] && ! wait_gone "$CUR_PID" 20; then
        log "ejabberd (PID $CUR_PID) still running after ejabberdctl stop; TERM"
        kill_pid "$CUR_PID"
    fi
    # ejabberdctl started no EPMD (ERL_DIST_PORT is set): nothing else to
    # stop. PostgreSQL outlives a restart; run_server and cleanup stop it.
}

# --------------------------------------------------------------- PostgreSQL
# ejabberd's production storage: a private cluster in $WORK/pg, run as the
# "postgres" user in the foreground (so its PID is known), listening on
# 127.0.0.1 only at a free port, with a Unix socket in its own directory;
# trust authentication for the one database user "ejabberd" (loopback only,
# a throwaway cluster). fsync and synchronous_commit are on (PostgreSQL's
# defaults, set explicitly): a commit is on disk before ejabberd goes on.
# Its processes' CPU time (the postmaster, its backends, and those already
# exited) is read around each scenario and reported as db_cpu_s.
PG_DIR=""
PG_PID=""
PG_PORT=""
PG_BIN=""

as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups env HOME="$PG_DIR" "$@"; }

setup_pg() {
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [ -x "$PG_BIN/postgres" ] || { log "PostgreSQL not found (apt-get install postgresql)"; return 1; }
    getent passwd postgres >/dev/null || { log "no 'postgres' user"; return 1; }
    local schema
    schema=$(dpkg -L ejabberd 2>/dev/null | grep '/sql/pg\.sql$' | head -1)
    [ -n "$schema" ] && [ -f "$schema" ] || { log "ejabberd's sql/pg.sql not found (dpkg -L ejabberd)"; return 1; }
    PG_DIR=$WORK/pg
    mkdir -p "$PG_DIR"
    chown postgres:postgres "$PG_DIR"
    PG_PORT=$(free_port)
    timeout 120 setpriv --reuid=postgres --regid=postgres --init-groups env HOME="$PG_DIR" "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 --no-locale \
        >"$PG_DIR/initdb.out" 2>&1 || { log "initdb failed: $(tail -2 "$PG_DIR/initdb.out")"; return 1; }
    printf '%s\n' "# benches/compare.sh" "listen_addresses = '127.0.0.1'" "port = $PG_PORT" \
        "unix_socket_directories = '$PG_DIR'" "fsync = on" "synchronous_commit = on" \
        "full_page_writes = on" "logging_collector = off" >>"$PG_DIR/data/postgresql.conf"
    # Not through as_pg (a function would run in a subshell): setpriv and env
    # exec, so $! is the postmaster's PID.
    setpriv --reuid=postgres --regid=postgres --init-groups env HOME="$PG_DIR" \
        "$PG_BIN/postgres" -D "$PG_DIR/data" >"$PG_DIR/postgres.log" 2>&1 &
    PG_PID=$!
    local n=300
    until as_pg "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; do
        n=$((n - 1))
        if [ "$n" -le 0 ] || ! kill -0 "$PG_PID" 2>/dev/null; then
            log "PostgreSQL did not start: $(tail -3 "$PG_DIR/postgres.log")"
            return 1
        fi
        sleep 0.1
    done
    local psql=(timeout 120 setpriv --reuid=postgres --regid=postgres --init-groups env HOME="$PG_DIR"
        "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT")
    "${psql[@]}" -U postgres -d postgres -c "CREATE USER ejabberd" -c "CREATE DATABASE ejabberd OWNER ejabberd" \
        >>"$PG_DIR/schema.out" 2>&1 || { log "createdb failed: $(tail -2 "$PG_DIR/schema.out")"; return 1; }
    "${psql[@]}" -U ejabberd -d ejabberd -f "$schema" >>"$PG_DIR/schema.out" 2>&1 \
        || { log "loading $schema failed: $(tail -2 "$PG_DIR/schema.out")"; return 1; }
    log "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'): PID $PG_PID on 127.0.0.1:$PG_PORT, schema $schema"
}

stop_pg() {
    [ -n "$PG_PID" ] || return 0
    # SIGINT: PostgreSQL's fast shutdown (ends the sessions, checkpoints).
    kill -INT "$PG_PID" 2>/dev/null
    if ! wait_gone "$PG_PID" 30; then
        log "PostgreSQL (PID $PG_PID) still running after 30 s; KILL"
        kill -KILL "$PG_PID" 2>/dev/null
        wait_gone "$PG_PID" 5
    fi
    PG_PID=""
}

# db_cpu: CPU seconds used so far by the PostgreSQL cluster (0 without one):
# the postmaster, its live children and its exited children.
db_cpu() {
    [ -n "$PG_PID" ] || { echo 0; return 0; }
    "$PY" - "$PG_PID" <<'PYEOF'
import os, sys
pid = sys.argv[1]
hz = os.sysconf("SC_CLK_TCK")
def stat(p):
    try:
        return open("/proc/%s/stat" % p).read().rsplit(")", 1)[1].split()
    except OSError:
        return None
total = 0
f = stat(pid)
if f:
    total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])   # utime stime cutime cstime
for p in os.listdir("/proc"):
    if p.isdigit():
        g = stat(p)
        if g and g[1] == pid:
            total += int(g[11]) + int(g[12])
print("%.2f" % (total / hz))
PYEOF
}

register_ejabberd() {
    # ejabberd's ReST API (mod_http_api on loopback): one `ejabberdctl
    # register` per account starts an Erlang VM, about 0.5 s of CPU each.
    user_names "$ACCOUNTS" | timeout 900 "$PY" "$ANCHORS/ejabberd_register.py" \
        "http://127.0.0.1:$API_PORT/api" "$DOMAIN" "$PASSWORD" -
}

# ------------------------------------------------------------------ running
# Each scenario's own loadgen options. --duration is chat's sending time and
# idle's hold time, and for the others loadgen's own bound on the whole run.
# Every account used is one of PREFIX1 .. PREFIX$ACCOUNTS.
BOUND=$((60 + USERS / 2 + LOGINS / 20 + MESSAGES / 100))
scenario_args() { # scenario_args SCENARIO
    case $1 in
        login|login-ws) echo "--logins $LOGINS --users $LOGINS --duration $BOUND" ;;
        chat|chat-ws) echo "--pairs $((USERS / 2)) --duration $DURATION" ;;
        chat10k|chat10k-ws) echo "--pairs $((USERS / 2)) --rate $RATE --duration $DURATION" ;;
        presence) echo "--users $USERS --first-user $((USERS + 1)) --contacts 10 --changes 20 --duration $BOUND" ;;
        offline) echo "--messages $MESSAGES --senders $((USERS / 2)) --duration $BOUND" ;;
        idle|idle-ws) echo "--sessions $IDLE_USERS --duration $DURATION" ;;
        idle-modern) echo "--sessions $IDLE_USERS --duration $DURATION --resource modern --modern" ;;
        muc|muc-ws) echo "--rooms $MUC_ROOMS --occupants $MUC_OCC --rate $MUC_RATE --duration $DURATION" ;;
        muc1k) echo "--rooms 1 --occupants $MUC_BIG --rate $MUC_BIG_RATE --duration $DURATION" ;;
        pubsub) echo "--subscribers $PUBSUB_SUBS --rate $PUBSUB_RATE --first-user 1 --duration $DURATION" ;;
    esac
}

loadgen_cmd() { # loadgen_cmd SCENARIO: loadgen's subcommand for it
    case $1 in
        chat10k|chat10k-ws|chat-ws) echo chat ;;
        idle-modern|idle-ws) echo idle ;;
        login-ws) echo login ;;
        muc-ws|muc1k) echo muc ;;
        *) echo "$1" ;;
    esac
}

# The transport options and server address of a scenario: *-ws over
# WebSocket at the server's WS_PORT and WS_PATH, the others c2s on PORT.
transport_args() { # transport_args SCENARIO
    case $1 in
        *-ws) echo "--server 127.0.0.1:$WS_PORT --transport ws --ws-path $WS_PATH" ;;
        *) echo "--server 127.0.0.1:$PORT" ;;
    esac
}

scenario_timeout() { # upper bound for one loadgen run, seconds (loadgen bounds itself first)
    case $1 in
        idle|idle-modern|idle-ws) echo $((660 + DURATION + 30)) ;;   # loadgen: 600 s for the logins, then the hold
        chat|chat10k|chat-ws|chat10k-ws) echo $((DURATION + 10 + 60)) ;;    # sending time, 10 s drain
        muc|muc-ws|muc1k) echo $((1200 + DURATION + 10 + 60)) ;;   # logins and joins 600 s each, then sending and drain
        pubsub) echo $((1200 + 60 + DURATION + 10 + 60)) ;;   # logins and subscriptions 600 s each, node creation, publishing and drain
        *) echo $((BOUND + 60)) ;;
    esac
}

RESULT_LINES=0
FAILED=()
RAW=()   # (--raw) for the relay

run_scenario() { # run_scenario SERVER SCENARIO
    local server=$1 scen=$2 out err rc line load
    local -a args targs
    read -r -a args <<<"$(scenario_args "$scen")"
    read -r -a targs <<<"$(transport_args "$scen")"
    out=$WORK/$server/loadgen-$scen.json
    err=$WORK/$server/loadgen-$scen.err
    local waited=0
    load=$(cpu_busy)
    while [ "$waited" -lt "$WAIT_QUIET" ] && [ "$TIMED_OUT" = 0 ] \
        && "$PY" -c "import sys; sys.exit(0 if float(sys.argv[1]) > 0.15 else 1)" "$load"; do
        [ "$waited" = 0 ] && log "$server: waiting up to ${WAIT_QUIET}s for the machine to be quiet"
        sleep 4
        waited=$((waited + 5))
        load=$(cpu_busy)
    done
    [ "$TIMED_OUT" = 1 ] && return 1
    if "$PY" -c "import sys; sys.exit(0 if float(sys.argv[1]) > 0.15 else 1)" "$load"; then
        log "$server: warning: other processes kept $("$PY" -c "print(round(float('$load')*100))")% of the CPUs busy just before $scen: figures will be low"
    fi
    log "$server: $scen ($(scenario_args "$scen"))"
    local snap0 snap1 child0 child1 other
    local db0 db1 dbcpu
    db0=$(db_cpu)
    snap0=$(cpu_snap "$CUR_PID")
    children_cpu
    child0=$CHILD_CPU
    interruptible --out "$out" --err "$err" \
        timeout -k 5 "$(scenario_timeout "$scen")" "$LOADGEN" "$(loadgen_cmd "$scen")" "${targs[@]}" \
        --domain "$DOMAIN" --users-prefix "$PREFIX" --password "$PASSWORD" --mech "$MECH" \
        --server-pid "$CUR_PID" --scram-cache "$WORK/$server/scram-cache" \
        "${args[@]}" "${RAW[@]}" "${LOADGEN_EXTRA[@]}"
    rc=$?
    children_cpu
    child1=$CHILD_CPU
    snap1=$(cpu_snap "$CUR_PID")
    db1=$(db_cpu)
    dbcpu=$("$PY" -c "import sys; print('%.2f' % max(0.0, float(sys.argv[2]) - float(sys.argv[1])))" "$db0" "$db1")
    # The database's CPU is the server's, not "other processes".
    other=$(other_cpu "$snap0" "$snap1" "$child0" "$(
        "$PY" -c "import sys; print(float(sys.argv[1]) + float(sys.argv[2]))" "$child1" "$dbcpu")")
    # (A fraction of a CPU-second is this script's own bookkeeping.)
    if "$PY" -c "import sys; sys.exit(0 if float(sys.argv[1]) > 0.5 and float(sys.argv[2]) > 0.10 else 1)" \
        "${other% *}" "${other#* }"; then
        log "$server: warning: other processes used ${other% *} CPU-s during $scen (${other#* } of the machine): figures may be low"
    fi
    line=$(grep '^{' "$out" | tail -1)
    if [ -z "$line" ]; then
        log "$server: $scen failed (exit $rc), no result: $(tail -3 "$err" | tr '\n' ' ')"
        FAILED+=("$server/$scen")
        return 1
    fi
    if [ "$rc" != 0 ]; then
        # loadgen exits 2 when the run completed with failures (lost
        # messages, failed logins...): the line is kept, and says so.
        log "$server: $scen completed with failures (exit $rc): $(tail -2 "$err" | tr '\n' ' ')"
        FAILED+=("$server/$scen(exit $rc)")
    fi
    printf '%s\n' "$line" | "$PY" "$ANCHORS/results.py" tag \
        --server "$server" --server-version "$VERSION" --run-id "$RUN_ID" --scenario "$scen" \
        --machine "$MACHINE" --busy "$load" --other-cpu "$other" --profile "$PROFILE" \
        --db-cpu "$([ -n "$PG_PID" ] && echo "$dbcpu")" >>"$OUT" || return 1
    RESULT_LINES=$((RESULT_LINES + 1))
    grep -v '^{' "$err" | tail -1 >&2
}

run_server() { # run_server NAME
    local s=$1 scen t0
    t0=$(date +%s)
    log "=== $s ==="
    CUR_SERVER=$s
    "setup_$s" || { log "$s: setup failed"; FAILED+=("$s/setup"); return 1; }
    start_watchdog
    if ! "start_$s"; then
        log "$s: did not start; see $WORK/$s"
        FAILED+=("$s/start")
        stop_current; stop_pg; stop_watchdog; KEEP=1
        return 1
    fi
    if [ "$s" = relay ]; then
        # The baseline: no accounts, no XMPP; only the chat scenarios, with --raw.
        log "relay: PID $CUR_PID on 127.0.0.1:$PORT"
        RAW=(--raw)
        for scen in "${SCENARIO_LIST[@]}"; do
            [ "$TIMED_OUT" = 1 ] && break
            case $scen in chat|chat10k) ;; *) continue ;; esac
            kill -0 "$CUR_PID" 2>/dev/null || { log "relay died; see $WORK/relay"; FAILED+=("relay/died"); KEEP=1; break; }
            run_scenario "$s" "$scen" || KEEP=1
        done
        RAW=()
        [ "$TIMED_OUT" = 1 ] && FAILED+=("$s/timeout")
        stop_watchdog
        stop_current
        log "$s: done in $(($(date +%s) - t0)) s"
        return 0
    fi
    log "$s $VERSION: PID $CUR_PID, c2s on 127.0.0.1:$PORT; creating $ACCOUNTS accounts"
    local nofile
    nofile=$(awk '/^Max open files/ {print $4}' "/proc/$CUR_PID/limits" 2>/dev/null)
    if [ -n "$nofile" ] && [ "$nofile" != unlimited ] && [ "$nofile" -lt $((IDLE_USERS + 200)) ]; then
        log "$s: warning: its open-files limit is $nofile, too low for $IDLE_USERS idle sessions"
    fi
    local r0=$SECONDS
    if ! interruptible --out "$WORK/$s/register.out" --err "$WORK/$s/register.err" "register_$s"; then
        log "$s: account creation failed: $(tail -3 "$WORK/$s/register.err" | tr '\n' ' ')"
        FAILED+=("$s/register")
        stop_current; stop_watchdog; KEEP=1
        return 1
    fi
    log "$s: $ACCOUNTS accounts in $((SECONDS - r0)) s"
    local check
    if ! check=$(timeout 20 "$PY" "$ANCHORS/login_check.py" 127.0.0.1 "$PORT" "$DOMAIN" \
            "${PREFIX}1" "$PASSWORD" "$SASL_MECH" 2>&1) \
        || ! timeout 20 "$PY" "$ANCHORS/login_check.py" 127.0.0.1 "$PORT" "$DOMAIN" \
            "$PREFIX$ACCOUNTS" "$PASSWORD" "$SASL_MECH" >/dev/null; then
        log "$s: login check failed: $check"
        FAILED+=("$s/login-check")
        stop_current; stop_watchdog; KEEP=1
        return 1
    fi
    log "$s: login check $check"
    # Warm-up, not recorded: one login of each account, which fills
    # loadgen's SCRAM cache (--scram-cache) so that the measured scenarios do
    # not spend the client's CPU on PBKDF2 (4096 iterations per account), and
    # touches each server's account storage once.
    interruptible --out "$WORK/$s/warmup.json" --err "$WORK/$s/warmup.err" \
        timeout -k 5 $((BOUND + ACCOUNTS / 20 + 60)) "$LOADGEN" login --server "127.0.0.1:$PORT" \
        --domain "$DOMAIN" --users-prefix "$PREFIX" --password "$PASSWORD" --mech "$MECH" \
        --server-pid "$CUR_PID" --scram-cache "$WORK/$s/scram-cache" \
        --logins "$ACCOUNTS" --users "$ACCOUNTS" --duration $((BOUND + ACCOUNTS / 20)) \
        || log "$s: warm-up had failures: $(tail -2 "$WORK/$s/warmup.err" | tr '\n' ' ')"
    local ran=0
    for scen in "${SCENARIO_LIST[@]}"; do
        [ "$TIMED_OUT" = 1 ] && break
        kill -0 "$CUR_PID" 2>/dev/null || { log "$s: server died; see $WORK/$s"; FAILED+=("$s/died"); KEEP=1; break; }
        case $scen in
            idle|idle-modern|idle-ws|muc|muc-ws|muc1k)
                # Memory per session (per occupant) is measured on a freshly
                # started server (memory the allocator or GC kept from an
                # earlier scenario would hide part of it): restart it, same data.
                if [ "$ran" = 1 ]; then
                    log "$s: restarting it for $scen (fresh process)"
                    stop_current
                    CUR_SERVER=$s
                    if ! "start_$s"; then
                        # Seen once with ejabberd (eaddrinuse on its c2s
                        # port right after the previous VM stopped): one
                        # more try after a pause.
                        log "$s: did not restart; trying once more in 5 s"
                        stop_current
                        CUR_SERVER=$s
                        sleep 5
                        if ! "start_$s"; then
                            log "$s: did not restart; see $WORK/$s"
                            FAILED+=("$s/restart"); KEEP=1
                            break
                        fi
                    fi
                fi ;;
        esac
        run_scenario "$s" "$scen" || KEEP=1
        ran=1
    done
    [ "$TIMED_OUT" = 1 ] && FAILED+=("$s/timeout")
    stop_watchdog
    stop_current
    stop_pg
    log "$s: done in $(($(date +%s) - t0)) s"
}

log "run $RUN_ID: profile $PROFILE; servers ${SERVER_LIST[*]}; scenarios ${SCENARIO_LIST[*]}; $USERS users, idle $IDLE_USERS, ${DURATION}s per timed scenario, $MECH"
log "results: $OUT"
for s in "${SERVER_LIST[@]}"; do
    run_server "$s"
done

echo
"$PY" "$ANCHORS/results.py" table --run-id "$RUN_ID" "$OUT"
if [ ${#FAILED[@]} -gt 0 ]; then
    log "failed: ${FAILED[*]}"
    exit 1
fi
