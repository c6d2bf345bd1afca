"""CPU per thread name of a process between two snapshots of its threads'
stat lines (`cat /proc/PID/task/*/stat > FILE`), for the bench scripts.

Invariants: ticks are utime + stime (fields 14 and 15 of stat(5)); a thread
missing from the first snapshot counts from zero; names keep their digits
unless `fold_digits` (then `tokio-runtime-worker-3` and `-7` add up as one
`tokio-runtime-worker-N`)."""
import re


def threads(path, fold_digits=False):
    """{tid: (name, ticks)} of one snapshot file."""
    d = {}
    for line in open(path):
        head, rest = line.rsplit(")", 1)
        tid, name = head.split(" (", 1)
        if fold_digits:
            name = re.sub(r"[0-9]+", "N", name)
        r = rest.split()
        d[int(tid)] = (name, int(r[11]) + int(r[12]))
    return d


def per_name(before, after, fold_digits=False):
    """{thread name: ticks used between the two snapshot files}."""
    a, b = threads(before, fold_digits), threads(after, fold_digits)
    per = {}
    for tid, (name, t) in b.items():
        per[name] = per.get(name, 0) + t - a.get(tid, (name, 0))[1]
    return per
