#!/usr/bin/env python3
"""cluster-table.py: the helpers of cluster.sh.

  cluster-table.py RESULTS.jsonl            the Markdown tables
  cluster-table.py --background LABEL NODES SECS NAME=PID...
                                            one JSON line: the CPU seconds of
                                            each process tree over SECS seconds
                                            with no clients (what nodes, NATS
                                            and PostgreSQL cost at rest)

Reads the JSON reports cluster.sh tagged with `label` and `nodes` and
prints: per chat run, messages per CPU-second of the nodes alone
(`watched_cpu_s.n1..nN`) and of the whole cluster (nodes + NATS +
PostgreSQL), latency, loss; the cost of a cross-node message against a
same-node one (CPU microseconds per message, per N); idle KiB per session.
Lines without a label (provisioning) are skipped.
"""

import json
import os
import sys
import time
from datetime import datetime, timezone


def tree_ticks(root):
    """CPU ticks (utime + stime) of `root` and its descendants, by PID."""
    procs = {}
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/stat") as f:
                st = f.read()
        except OSError:
            continue
        rest = st[st.rfind(")") + 2:].split()
        procs[int(e)] = (int(rest[1]), int(rest[11]) + int(rest[12]))
    out, todo = {}, [root]
    while todo:
        p = todo.pop()
        if p in procs and p not in out:
            out[p] = procs[p][1]
            todo.extend(c for c, v in procs.items() if v[0] == p)
    return out


def background(label, nodes, secs, watched):
    tck = os.sysconf("SC_CLK_TCK")
    pids = [(n, int(p)) for n, p in (w.split("=", 1) for w in watched)]
    t0 = {n: tree_ticks(p) for n, p in pids}
    time.sleep(secs)
    cpu = {}
    for n, p in pids:
        t1 = tree_ticks(p)
        cpu[n] = round(sum(t - t0[n].get(q, 0) for q, t in t1.items()) / tck, 3)
    with open("/proc/loadavg") as f:
        load = [float(x) for x in f.read().split()[:3]]
    print(json.dumps({
        "scenario": "background", "label": label, "nodes": nodes, "secs": secs,
        "watched_cpu_s": cpu, "loadavg": load,
        "utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }))


def load(path):
    runs = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            d = json.loads(line)
            if "label" in d:
                runs.append(d)
    return runs


def cpu(d):
    w = d.get("watched_cpu_s") or {}
    nodes = sum(v for k, v in w.items() if k.startswith("n") and k[1:].isdigit())
    return nodes, w.get("nats", 0.0), w.get("pg", 0.0)


def fmt(v, digits=0):
    return f"{v:,.{digits}f}"


def main():
    if sys.argv[1] == "--background":
        background(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5:])
        return
    runs = load(sys.argv[1])
    chats = [d for d in runs if d.get("scenario") == "chat"]
    print("| run | UTC | cross pairs | delivered msgs/s | p50 / p99 ms | lost / out of order / dup | CPU s: nodes / NATS / PG | msgs per node CPU-s | msgs per cluster CPU-s (nodes+NATS+PG) | CPU µs per msg: nodes / all | load avg (1 min) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    per = {}
    for d in chats:
        n, nats, pg = cpu(d)
        rec = d.get("received", 0)
        total = n + nats + pg
        per[d["label"]] = (d, n, total, rec)
        print(
            "| {} | {} | {}/{} | {} | {} / {} | {} / {} / {} | {:.2f} / {:.2f} / {:.2f} | {} | {} | {} / {} | {} |".format(
                d["label"],
                d.get("utc", "")[11:19],
                d.get("pairs_cross", "-"),
                d.get("pairs_active", "-"),
                fmt(d.get("delivered_per_s", 0)),
                d.get("latency_p50_ms"),
                d.get("latency_p99_ms"),
                d.get("lost"),
                d.get("out_of_order"),
                d.get("duplicates"),
                n,
                nats,
                pg,
                fmt(rec / n) if n > 0 else "-",
                fmt(rec / total) if total > 0 else "-",
                fmt(1e6 * n / rec, 1) if rec else "-",
                fmt(1e6 * total / rec, 1) if rec else "-",
                (d.get("loadavg") or ["-"])[0],
            )
        )
    costs = []
    for n in (2, 3):
        s, c = per.get(f"{n} nodes, same"), per.get(f"{n} nodes, cross")
        if s and c and s[3] and c[3]:
            costs.append((n, s, c))
    if costs:
        print()
        print("| nodes | CPU µs per msg, same-node: nodes / all | cross-node: nodes / all | a cross-node message costs more: nodes / all | p50 ms same → cross |")
        print("|---:|---:|---:|---:|---:|")
        for n, s, c in costs:
            sn, st = 1e6 * s[1] / s[3], 1e6 * s[2] / s[3]
            cn, ct = 1e6 * c[1] / c[3], 1e6 * c[2] / c[3]
            print(
                f"| {n} | {sn:.1f} / {st:.1f} | {cn:.1f} / {ct:.1f} | +{cn - sn:.1f} / +{ct - st:.1f} µs (×{cn / sn:.1f} / ×{ct / st:.1f}) | {s[0].get('latency_p50_ms')} → {c[0].get('latency_p50_ms')} |"
            )
    bgs = [d for d in runs if d.get("scenario") == "background"]
    if bgs:
        print()
        print("| at rest (no clients) | UTC | seconds | CPU ms per second: each node / NATS / PG | load avg (1 min) |")
        print("|---|---|---:|---:|---:|")
        for d in bgs:
            n, nats, pg = cpu(d)
            k, s = max(d["nodes"], 1), d["secs"]
            print(
                f"| {d['label']} | {d.get('utc', '')[11:19]} | {s:g} | {1e3 * n / k / s:.1f} / {1e3 * nats / s:.1f} / {1e3 * pg / s:.1f} | {(d.get('loadavg') or ['-'])[0]} |"
            )
    idles = [d for d in runs if d.get("scenario") == "idle"]
    if idles:
        print()
        print("| idle run | UTC | sessions held | KiB per session (node RSS) | RSS before / held, KiB |")
        print("|---|---|---:|---:|---:|")
        for d in idles:
            print(
                f"| {d['label']} | {d.get('utc', '')[11:19]} | {d.get('ok')} | {d.get('kib_per_session')} | {d.get('server_rss_kib_before')} / {d.get('server_rss_kib_after_hold')} |"
            )


if __name__ == "__main__":
    main()
