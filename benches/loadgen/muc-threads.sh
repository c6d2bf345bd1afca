#!/bin/bash
# muc-threads.sh: where Rookery's CPU goes, by thread, during the send
# phase of a low-rate group chat run (docs/benchmarks.md, "Stop 19").
#   benches/loadgen/muc-threads.sh ROOKERY_BIN LABEL RATE SECS MODE [ROOMS OCCUPANTS]
# On cpu-floor.sh's fixture (run `cpu-floor.sh setup` first: compare.sh's
# production configuration and data, port 15871): starts the build on a
# fresh copy of the data, runs `loadgen muc` (default 10 rooms x 10
# occupants) at RATE msgs/s each for SECS s, and 10 s after the start (joins
# done, messages flowing) watches the server for SECS - 15 s. MODE:
#   threads  run time (ns, from /proc/PID/task/*/schedstat, not clock
#            ticks) and voluntary/involuntary context switches per thread
#   ptrace   the same, under `perf trace -s` (system calls per thread)
#   strace   the same, under `strace -c -f`
#   perf     the same, under `perf record -g` (FREQ, default 2000 Hz)
# Files in $WORKDIR/run-LABEL (default /tmp/rookery-cpu-floor).
set -u
BIN=$1; L=$2; RATE=$3; S=$4; MODE=$5; ROOMS=${6:-10}; OCC=${7:-10}
W=${WORKDIR:-/tmp/rookery-cpu-floor}; PORT=15871
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LG=${LOADGEN:-$ROOT/target/release/loadgen}
R=$W/run-$L; rm -rf "$R"; mkdir -p "$R"
sed "s#$W/base#$R#g" "$W/base/rookery.yml" > "$R/rookery.yml"
cp -a "$W/base/data" "$W/base/certs" "$R/"
"$BIN" serve -c "$R/rookery.yml" > "$R/log" 2>&1 &
P=$!
for _ in $(seq 150); do (echo >/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.2; done
"$LG" muc --server 127.0.0.1:$PORT --domain localhost --users-prefix bench --password bench-password \
  --mech scram-sha-1 --scram-cache "$W/base/scram-cache" --server-pid $P --rooms "$ROOMS" \
  --occupants "$OCC" --rate "$RATE" --duration "$S" > "$R/muc.json" 2> "$R/muc.err" &
LP=$!
snap() { # per thread: tid name run-time-ns voluntary involuntary
  for t in /proc/$P/task/*; do
    echo "$(basename "$t") $(tr ' ' _ < "$t/comm") $(cut -d' ' -f1 "$t/schedstat") $(awk '/^(non)?voluntary_ctxt/ {printf "%s ", $2}' "$t/status")"
  done
}
sleep 10
W2=$((S - 15))
snap > "$R/threads0"
case $MODE in
strace) timeout "$W2" strace -c -f -p $P -o "$R/strace.txt" ;;
ptrace) perf trace -s -p $P -o "$R/ptrace.txt" -- sleep "$W2" ;;
perf) perf record -F "${FREQ:-2000}" -g -p $P -o "$R/perf.data" -- sleep "$W2" 2> "$R/perf.err" ;;
*) sleep "$W2" ;;
esac
snap > "$R/threads1"
wait $LP; kill $P; wait $P 2>/dev/null
python3 - "$R" "$W2" "$L" <<'PY'
import json, sys
R, W2, L = sys.argv[1], float(sys.argv[2]), sys.argv[3]
def read(f):
    d = {}
    for line in open(f):
        p = line.split()
        if len(p) >= 5:
            d[int(p[0])] = (p[1], int(p[2]), int(p[3]), int(p[4]))
    return d
a, b = read(R + "/threads0"), read(R + "/threads1")
per, tot = {}, [0, 0, 0]
for tid, (n, t, v, nv) in b.items():
    x = a.get(tid, (n, 0, 0, 0))
    e = per.setdefault(n.rstrip("0123456789-"), [0, 0, 0, 0])
    for i, d in enumerate((t - x[1], v - x[2], nv - x[3])):
        e[i] += d; tot[i] += d
    e[3] += 1
for n, (t, v, nv, k) in sorted(per.items(), key=lambda x: -x[1][0]):
    print(f"{n:20s} x{k}: cpu {t / 1e6:8.1f} ms, voluntary cs {v:6d}, involuntary {nv:5d} in {W2:.0f} s")
print(f"{'all':20s}     cpu {tot[0] / 1e6:8.1f} ms, voluntary cs {tot[1]:6d}, involuntary {tot[2]:5d}")
r = json.loads(open(R + "/muc.json").read().strip().splitlines()[-1])
print(f"{L}: send phase server CPU {r['server_cpu_s']} s, {r['delivered']} delivered, "
      f"{r['delivered_per_cpu_s']} per CPU-s, lost {r['lost']}, p50 {r['latency_p50_ms']} ms, load {r['loadavg'][0]}")
PY
