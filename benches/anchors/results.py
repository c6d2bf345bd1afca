#!/usr/bin/env python3
"""Results of benches/compare.sh: tag loadgen's JSON lines, print the table.

    results.py tag --server S --server-version V --run-id ID --scenario SC
                   [--machine JSON] [--busy FRACTION] [--profile P] [--db-cpu S]  < one JSON line
    results.py table [--run-id ID] FILE...

`tag` adds the server, its version, the run id, the machine, how busy
the machine was just before the run, the configuration profile and the CPU
seconds of the server's database (a separate process: ejabberd's PostgreSQL)
to one loadgen JSON line; with a database, every `*_per_cpu_s` figure is
also given per CPU-second of the server and its database together, under
`with_database.` (the database's CPU is shared among a scenario's phases in
proportion to the server's). `table` prints, for each
scenario, a markdown table of every numeric metric of each server (nested
objects are flattened with dots), the ratios Rookery / Prosody and
Rookery / ejabberd, and per-server-CPU-second figures derived from the
server's CPU time when loadgen reports it. Without --run-id, the last run in
the files is shown. Standard library only.
"""
import argparse
import json
import math
import re
import sys

SERVERS = ["rookery", "prosody", "ejabberd", "relay"]
NAMES = {"rookery": "Rookery", "prosody": "Prosody", "ejabberd": "ejabberd",
         "relay": "TLS relay"}
# Ratio columns: Rookery / each of these. The relay (loadgen's TLS byte relay,
# the "speed of light") runs only the chat scenarios.
ANCHORS = ["prosody", "ejabberd", "relay"]
META = {"server", "server_version", "run_id", "scenario", "machine", "machine_busy_before", "profile",
        "other_processes_cpu_s", "other_processes_share", "loadavg",
        "tool", "version", "loadgen_scenario", "mech", "server_addr", "domain", "time", "timestamp"}


def tag(args):
    line = sys.stdin.read().strip()
    rec = json.loads(line)
    if not isinstance(rec, dict):
        raise SystemExit("loadgen line is not a JSON object")
    # compare.sh's scenario name (chat10k is loadgen's chat at a set rate;
    # the relay's chat is loadgen's chat-raw): the rows line up by it.
    if "scenario" in rec and rec["scenario"] != args.scenario:
        rec["loadgen_scenario"] = rec["scenario"]
    rec["scenario"] = args.scenario
    rec["server"] = args.server
    rec["server_version"] = args.server_version
    rec["run_id"] = args.run_id
    if args.machine:
        rec["machine"] = json.loads(args.machine)
    if args.busy is not None:
        rec["machine_busy_before"] = float(args.busy)
    if args.other_cpu:
        secs, share = args.other_cpu.split()
        rec["other_processes_cpu_s"] = float(secs)
        rec["other_processes_share"] = float(share)
    if args.profile:
        rec["profile"] = args.profile
    if args.db_cpu:
        add_database(rec, float(args.db_cpu))
    print(json.dumps(rec, separators=(",", ":")))


def add_database(rec, db):
    """db_cpu_s, and each per-CPU-second figure per server + database CPU-second."""
    rec["db_cpu_s"] = db
    server = sum(v for k, v in rec.items()
                 if k.endswith("server_cpu_s") and isinstance(v, (int, float)))
    if server <= 0:
        return
    rec["with_database"] = {k: v / (1.0 + db / server) for k, v in rec.items()
                            if k.endswith("per_cpu_s") and isinstance(v, (int, float))}


def flatten(obj, prefix=""):
    out = {}
    for k, v in obj.items():
        key = prefix + k
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
                continue
            out[key] = v
        elif isinstance(v, dict) and k not in ("machine",):
            out.update(flatten(v, key + "."))
    return out


def cpu_seconds(flat):
    """The server's CPU seconds during the measurement, if reported."""
    for k, v in flat.items():
        lk = k.lower()
        if "server" in lk and "cpu" in lk and re.search(r"(_s|_sec|_secs|_seconds|seconds)$", lk) \
                and "per" not in lk:
            return k, v
    return None, None


# Counters that make sense per CPU-second of the server: totals of work done.
COUNT_RX = re.compile(r"(^|[._])(logins|messages|stanzas|presences|delivered|sent|received|"
                      r"connections|connected|sessions|ops|operations|count|completed|ok)"
                      r"(_total|_ok|_done)?$")


def derived(flat):
    """Per-server-CPU-second figures, unless loadgen already reports them."""
    ck, cpu = cpu_seconds(flat)
    if not ck or not cpu or cpu <= 0:
        return {}
    if any("per_cpu" in k for k in flat):
        return {}
    out = {}
    for k, v in flat.items():
        if k == ck or "error" in k or "fail" in k or "per" in k:
            continue
        if COUNT_RX.search(k.lower()) and isinstance(v, (int, float)) and v > 0:
            out[k + " per server CPU-s"] = v / cpu
    return out


ERRORS_RX = re.compile(r"(^|_)(failures|lost|missing|dropped|duplicates|out_of_order|bounced|errors|"
                       r"stale|unexpected|broken)(_|$)")
HEADLINE_RX = re.compile(r"^(?!client_|.*_client_)(.*per_s|.*per_cpu_s|.*(latency|last_subscriber)_p(50|99)_ms|"
                         r"server_cpu_s|db_cpu_s|server_rss_kib|kib_per_session|server_rss_kib_after_hold|"
                         r"kib_per_occupant|join_failures|out_of_order|duplicates|"
                         r"ok|failures|lost|updates_missing|dropped_while_held)$")


def better(metric):
    m = metric.lower()
    if "kib_per_session" in m:
        return "lower"
    if m.endswith("per_s") or m.endswith("per_cpu_s") or m.endswith("per server cpu-s"):
        return "higher"
    if m == "ok" or m.endswith("_ok"):
        return "higher"
    if ERRORS_RX.search(m) or "latency" in m or m.endswith("_ms") or "rss" in m or "kib" in m \
            or m.endswith("cpu_s"):
        return "lower"
    return ""


def fmt(v):
    if v is None:
        return "–"
    a = abs(v)
    if isinstance(v, int) or a >= 1000:
        return "{:,}".format(int(round(v))).replace(",", "\u202f")
    if a >= 100:
        return "%.0f" % v
    if a >= 10:
        return "%.1f" % v
    if a >= 1:
        return "%.2f" % v
    return "%.3g" % v


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    return "%.2f×" % (a / b)


def load(files):
    recs = []
    for path in files:
        try:
            f = open(path)
        except OSError as e:
            print("(cannot read %s: %s)" % (path, e.strerror), file=sys.stderr)
            continue
        with f:
            for line in f:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    recs.append(json.loads(line))
                except ValueError:
                    continue
    return recs


def table(args):
    recs = load(args.files)
    if not recs:
        print("(no results)")
        return 1
    run = args.run_id or recs[-1].get("run_id")
    # Several runs, comma-separated: a later run's result for a (server,
    # scenario) replaces an earlier one's (e.g. the anchors of one run with
    # Rookery re-measured after a change).
    runs = run.split(",")
    chosen = {}
    for rid in runs:
        for r in recs:
            if r.get("run_id") == rid:
                chosen[(r.get("server"), r.get("scenario"))] = r
    recs = list(chosen.values())
    if not recs:
        print("(no results for run %s)" % run)
        return 1

    scenarios, by = [], {}
    versions = {}
    for r in recs:
        sc = r.get("scenario", "?")
        if sc not in scenarios:
            scenarios.append(sc)
        by.setdefault(sc, {})[r.get("server", "?")] = r
        versions[r.get("server", "?")] = r.get("server_version", "")
    servers = [s for s in SERVERS if s in versions] + sorted(s for s in versions if s not in SERVERS)
    anchors = [a for a in ANCHORS if a in servers and "rookery" in servers]

    m = recs[0].get("machine") or {}
    print("Run%s %s." % ("s" if len(runs) > 1 else "", " + ".join(runs)))
    profiles = sorted({r.get("profile", "minimal") for r in recs})
    print("Configuration profile: %s." % ", ".join(profiles))
    if m:
        print("Machine: %s, %s CPUs, %s MiB, Linux %s." % (m.get("cpu_model", "?"), m.get("cpus", "?"),
                                                         m.get("mem_mib", "?"), m.get("kernel", "?")))
    print("Servers: " + "; ".join("%s %s" % (NAMES.get(s, s), versions[s]) for s in servers) + ".")
    print()
    head = ["scenario", "metric"] + [NAMES.get(s, s) for s in servers] \
        + ["Rookery / %s" % NAMES[a] for a in anchors] + ["better"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(["---", "---"] + ["---:"] * (len(head) - 3) + ["---"]) + "|")
    for sc in scenarios:
        per = by[sc]
        flats = {s: flatten({k: v for k, v in per[s].items() if k not in META}) for s in per}
        for s in flats:
            flats[s].update(derived(flats[s]))
        # A server with its database in another process (ejabberd on
        # PostgreSQL) has with_database.* figures; for the servers that keep
        # their data in-process the same figures are their own, so that the
        # ratio columns compare like with like.
        if any(k.startswith("with_database.") for f in flats.values() for k in f):
            for s, f in flats.items():
                if s != "relay" and not any(k.startswith("with_database.") for k in f):
                    f.update({"with_database." + k: v for k, v in list(f.items())
                              if k.endswith("per_cpu_s")})
        metrics = []
        for s in servers:
            for k in flats.get(s, {}):
                if k not in metrics:
                    metrics.append(k)
        if not args.all:
            def keep(k):
                vals = [flats.get(s, {}).get(k) for s in servers]
                if ERRORS_RX.search(k) and not any(vals):
                    return k in ("failures", "lost")  # always shown, even at 0
                return bool(HEADLINE_RX.match(k)) or (ERRORS_RX.search(k) and "." not in k)
            metrics = [k for k in metrics if keep(k)]
        first = True
        for k in metrics:
            vals = [flats.get(s, {}).get(k) for s in servers]
            row = [sc if first else "", k] + [fmt(v) for v in vals]
            first = False
            rv = flats.get("rookery", {}).get(k)
            row += [ratio(rv, flats.get(a, {}).get(k)) for a in anchors]
            row.append(better(k))
            print("| " + " | ".join(row) + " |")
    print()
    busy = []
    for sc in scenarios:
        for s in servers:
            r = by[sc].get(s, {})
            b = r.get("machine_busy_before") or 0
            if (r.get("other_processes_cpu_s") or 0) > 0.5:
                b = max(b, r.get("other_processes_share") or 0)
            if b > 0.15:
                busy.append("%s/%s %d%%" % (NAMES.get(s, s), sc, round(b * 100)))
    if busy:
        print("Warning: other processes used the machine just before or during some runs (share "
              "of all CPUs): " + ", ".join(busy) + ". Those figures are low; run again on a "
              "quiet machine (--wait-quiet helps).")
    else:
        print("Other processes were quiet before and during every run.")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tag")
    t.add_argument("--server", required=True)
    t.add_argument("--server-version", default="")
    t.add_argument("--run-id", required=True)
    t.add_argument("--scenario", required=True)
    t.add_argument("--machine")
    t.add_argument("--busy", help="fraction of the machine's CPU busy just before the run")
    t.add_argument("--other-cpu", help="'SECONDS SHARE': CPU used by other processes during the run")
    t.add_argument("--profile", help="configuration profile (production, minimal)")
    t.add_argument("--db-cpu", help="CPU seconds of the server's database process(es) during the run")
    tb = sub.add_parser("table")
    tb.add_argument("--run-id", help="the run to show, or several comma-separated (later ones win)")
    tb.add_argument("--all", action="store_true", help="every numeric field, not only the headline ones")
    tb.add_argument("files", nargs="+")
    args = p.parse_args()
    if args.cmd == "tag":
        tag(args)
        return 0
    return table(args)


if __name__ == "__main__":
    sys.exit(main())
