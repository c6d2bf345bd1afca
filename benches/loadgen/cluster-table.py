#!/usr/bin/env python3
"""cluster-table.py: the helpers of cluster.sh.

  cluster-table.py RESULTS.jsonl            the Markdown tables; exit
                                            status 3 when a chat run lost,
                                            reordered or duplicated messages
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


def median(v):
    v = sorted(v)
    k = len(v)
    return v[k // 2] if k % 2 else (v[k // 2 - 1] + v[k // 2]) / 2


def per_run(d):
    """One chat run's CPU µs per message (nodes, NATS, PG, all) and latency."""
    n, nats, pg = cpu(d)
    rec = d["received"]
    return {
        "d": d,
        "node_us": 1e6 * n / rec,
        "nats_us": 1e6 * nats / rec,
        "pg_us": 1e6 * pg / rec,
        "all_us": 1e6 * (n + nats + pg) / rec,
        "p50": d.get("latency_p50_ms") or 0.0,
        "p99": d.get("latency_p99_ms") or 0.0,
    }


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
    for d in chats:
        n, nats, pg = cpu(d)
        rec = d.get("received", 0)
        total = n + nats + pg
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
    # By label, in the order first seen: medians over the repetitions.
    labels = []
    for d in chats:
        if d["label"] not in labels:
            labels.append(d["label"])
    med = {}
    print()
    print("| run (medians) | runs | cross pairs | p50 / p99 ms | lost / out of order / dup (all runs) | msgs per node CPU-s | msgs per cluster CPU-s (nodes+NATS+PG) | CPU µs per msg: nodes / NATS / PG | all, µs per msg (min–max) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label in labels:
        rs = [per_run(d) for d in chats if d["label"] == label and d.get("received")]
        if not rs:
            continue
        m = {k: median([r[k] for r in rs]) for k in rs[0] if k != "d"}
        med[label] = m
        alls = [r["all_us"] for r in rs]
        ds = [r["d"] for r in rs]
        print(
            f"| {label} | {len(rs)} | {ds[0].get('pairs_cross', '-')}/{ds[0].get('pairs_active', '-')} "
            f"| {m['p50']:.2f} / {m['p99']:.1f} "
            f"| {sum(d.get('lost', 0) for d in ds)} / {sum(d.get('out_of_order', 0) for d in ds)} / {sum(d.get('duplicates', 0) for d in ds)} "
            f"| {fmt(1e6 / m['node_us'])} | {fmt(1e6 / m['all_us'])} "
            f"| {m['node_us']:.0f} / {m['nats_us']:.0f} / {m['pg_us']:.1f} | {m['all_us']:.0f} ({min(alls):.0f}–{max(alls):.0f}) |"
        )
    bad = [d["label"] for d in chats if d.get("lost") or d.get("out_of_order") or d.get("duplicates")]
    costs = [(n, med.get(f"{n} nodes, same"), med.get(f"{n} nodes, cross")) for n in (2, 3)]
    costs = [c for c in costs if c[1] and c[2]]
    if costs:
        print()
        print("| nodes | CPU µs per msg (medians), same-node: nodes / NATS / all | cross-node: nodes / NATS / all | a cross-node message costs more: nodes / NATS / all | p50 ms same → cross |")
        print("|---:|---:|---:|---:|---:|")
        for n, s_, c in costs:
            print(
                f"| {n} | {s_['node_us']:.0f} / {s_['nats_us']:.0f} / {s_['all_us']:.0f} "
                f"| {c['node_us']:.0f} / {c['nats_us']:.0f} / {c['all_us']:.0f} "
                f"| {c['node_us'] - s_['node_us']:+.0f} / {c['nats_us'] - s_['nats_us']:+.0f} / {c['all_us'] - s_['all_us']:+.0f} µs "
                f"(×{c['all_us'] / s_['all_us']:.2f} all) | {s_['p50']:.2f} → {c['p50']:.2f} |"
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
    logins = [d for d in runs if d.get("scenario") == "login"]
    if logins:
        print()
        print("| login run | UTC | logins ok | logins/s | logins per node CPU-s | CPU ms per login: node / NATS / PG | load avg (1 min) |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for d in logins:
            n, nats, pg = cpu(d)
            ok = d.get("ok") or 0
            ms = (lambda c: f"{1e3 * c / ok:.2f}") if ok else (lambda c: "-")
            print(
                f"| {d['label']} | {d.get('utc', '')[11:19]} | {ok} | {d.get('logins_per_s')} | {fmt(ok / n) if n else '-'} | {ms(n)} / {ms(nats)} / {ms(pg)} | {(d.get('loadavg') or ['-'])[0]} |"
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

    if bad:
        print()
        print(f"FAILED: messages lost, out of order or duplicated in: {', '.join(bad)}")
        sys.exit(3)


if __name__ == "__main__":
    main()
