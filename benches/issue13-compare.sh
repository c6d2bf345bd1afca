#!/usr/bin/env bash
# Issue 13's side-by-side measurement in one command (docs/benchmarks.md,
# "Production configurations, archives on"): run it on `main` before and
# after the archive work, as root, and put the two tables in the docs.
#
#   sudo benches/issue13-compare.sh [EXTRA compare.sh OPTIONS...]
#
# 1. benches/compare.sh, production profile (the default): Rookery with its
#    embedded default modules (archive on), Prosody with mod_mam, ejabberd
#    with mod_mam on PostgreSQL, the TLS relay; every scenario, idle and
#    idle-modern with 2,000 sessions.
# 2. the same script, minimal profile, Rookery alone, chat and chat10k: the
#    archive-off figure the issue's first target compares against ("at least
#    2/3 of the same run's messages per server CPU-second with the archive
#    off"), read as the issue's own table does (mod_disco + mod_ping only).
# 3. the production profile, Rookery alone, chat and chat10k, with every
#    embedded default module but mod_mam (--rookery-without mod_mam): the
#    same configuration with only the archive off, which tells the
#    archive's own cost from the other default modules'.
# Both append to one file, target/bench/issue13-<UTC time>.jsonl, and each
# prints its table (benches/anchors/results.py table --run-id ID FILE shows
# one again). Extra options go to both runs (e.g. --quick to check the
# setup, --no-build, --key ecdsa). About 35 minutes on the 2-core machine.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/target/bench/issue13-$(date -u +%Y%m%dT%H%M%SZ).jsonl
mkdir -p "$(dirname "$OUT")" || exit 1
echo "issue13-compare.sh: results in $OUT" >&2

rc=0
"$ROOT/benches/compare.sh" --idle-users 2000 --wait-quiet 15 --server-timeout 1500 \
    --out "$OUT" "$@" || rc=1
# The binaries were built by the first run (unless it failed before).
"$ROOT/benches/compare.sh" --profile minimal --servers rookery --scenarios chat,chat10k \
    --wait-quiet 15 --no-build --out "$OUT" "$@" || rc=1
"$ROOT/benches/compare.sh" --servers rookery --scenarios chat,chat10k --rookery-without mod_mam \
    --wait-quiet 15 --no-build --out "$OUT" "$@" || rc=1
echo "issue13-compare.sh: results in $OUT (run ids: $(grep -o '"run_id":"[^"]*"' "$OUT" | sort -u | cut -d'"' -f4 | tr '\n' ' '))" >&2
exit $rc
