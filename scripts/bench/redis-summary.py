#!/usr/bin/env python3
"""Medians (min-max) of a redis-side-by-side.sh run: python3 redis-summary.py OUT_DIR."""
import glob
import json
import statistics
import sys
from collections import defaultdict

out = sys.argv[1]
cells = defaultdict(list)  # (row, metric) -> values
for path in sorted(glob.glob(f"{out}/peers-rep*/raw-*.jsonl")):
    for line in open(path):
        rec = json.loads(line)
        r = rec.get("result") or {}
        row = rec.get("variant") or rec["peer"]
        if rec["step"] == "enqueue_seq":
            cells[(row, "one-call enqueue/s")].append(r.get("rate"))
        elif rec["step"] == "enqueue_bulk":
            cells[(row, "bulk enqueue/s")].append(r.get("rate"))
        elif rec["step"] == "work":
            if r.get("n", 0) >= (rec.get("n") or r.get("n", 0)):
                cells[(row, "process/s")].append(r.get("rate_complete"))
            if rec.get("rss_kb"):
                cells[(row, "worker peak RSS MiB")].append(rec["rss_kb"] / 1024)
text, pos, dec, recs = open(f"{out}/sealq.jsonl").read(), 0, json.JSONDecoder(), []
while text[pos:].strip():  # records are pretty-printed JSON objects, one after another
    while text[pos].isspace():
        pos += 1
    rec, pos = dec.raw_decode(text, pos)
    recs.append(rec)
for rec in recs:
    r = rec["result"]
    if rec["step"] == "enqueue_one_call":
        cells[("sealq", "one-call enqueue/s")].append(r["enqueue_per_second"])
    elif rec["step"] == "enqueue_bulk":
        cells[("sealq", "bulk enqueue/s")].append(r["enqueue_per_second"])
    elif rec["step"] == "work":
        cells[("sealq", "process/s")].append(r["process_per_second"])
        cells[("sealq", "worker peak RSS MiB")].append(rec["time_rss_kb"] / 1024)
    print(f"sealq rep {rec['rep']} {rec['step']} load {rec['loadavg']}", file=sys.stderr)


def fmt(v):
    v = [x for x in v if x is not None]
    if not v:
        return "–"
    m = statistics.median(v)
    d = 1 if m < 100 else 0
    return f"{m:,.{d}f} ({min(v):,.{d}f}–{max(v):,.{d}f}) n={len(v)}"


rows = sorted({k[0] for k in cells})
metrics = ["one-call enqueue/s", "bulk enqueue/s", "process/s", "worker peak RSS MiB"]
print("| row | " + " | ".join(metrics) + " |")
for row in rows:
    print(f"| {row} | " + " | ".join(fmt(cells.get((row, m), [])) for m in metrics) + " |")
print()
print("medians: " + json.dumps({f"{r}|{m}": statistics.median([x for x in cells[(r, m)] if x is not None])
                                 for (r, m) in cells if any(x is not None for x in cells[(r, m)])}))
