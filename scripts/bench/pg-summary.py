#!/usr/bin/env python3
"""Medians (min-max) over the repetitions of pg-side-by-side.sh: python3 pg-summary.py OUT_DIR.

sealq's RSS is its own VmHWM (`peak_rss_kib` in its JSON); /usr/bin/time there measures the
wrapper too. Peers' RSS is /usr/bin/time's, as in the harness."""
import glob
import json
import statistics
import sys
from collections import defaultdict

cells = defaultdict(list)
for path in sorted(glob.glob(f"{sys.argv[1]}/rep*/raw-*.jsonl")):
    for line in open(path):
        rec = json.loads(line)
        if rec.get("step") not in ("enqueue_seq", "enqueue_bulk", "work"):
            continue
        r = rec.get("result") or {}
        v = rec.get("variant")
        row = v if isinstance(v, str) else rec["peer"]
        if rec["step"] == "enqueue_seq":
            cells[(row, "one-call enqueue/s")].append(r.get("rate"))
        elif rec["step"] == "enqueue_bulk":
            cells[(row, "batch enqueue/s")].append(r.get("rate"))
        else:
            if r and r.get("n", 0) >= (rec.get("n") or 0):
                cells[(row, "process/s")].append(r.get("rate_complete"))
            rss = r.get("peak_rss_kib") or rec.get("rss_kb")
            if rss:
                cells[(row, "worker peak RSS MiB")].append(rss / 1024)
        print(f"{row} {rec['step']} loadavg {rec.get('loadavg')}", file=sys.stderr)


def fmt(v):
    v = [x for x in v if x is not None]
    if not v:
        return "–"
    m = statistics.median(v)
    d = 1 if m < 100 else 0
    return f"{m:,.{d}f} ({min(v):,.{d}f}–{max(v):,.{d}f}) n={len(v)}"


metrics = ["one-call enqueue/s", "batch enqueue/s", "process/s", "worker peak RSS MiB"]
print("| row | " + " | ".join(metrics) + " |")
for row in sorted({k[0] for k in cells}):
    print(f"| {row} | " + " | ".join(fmt(cells.get((row, m), [])) for m in metrics) + " |")
