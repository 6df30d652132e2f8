#!/usr/bin/env python3
"""sealq over the fastest peer of the same repetition, per repetition of pg-side-by-side.sh:
    python3 pg-ratios.py OUT_DIR"""
import json, glob, sys
for f in sorted(glob.glob(sys.argv[1] + "/rep*/raw-*.jsonl")):
    cells = {}
    for l in open(f):
        r = json.loads(l)
        s = r.get("step")
        if s not in ("enqueue_seq", "enqueue_bulk", "work"): continue
        res = r.get("result") or {}
        v = r.get("variant")
        row = v if isinstance(v, str) else r["peer"]
        key = {"enqueue_seq": "seq", "enqueue_bulk": "bulk", "work": "work"}[s]
        val = res.get("rate") if s != "work" else (res.get("rate_complete") if res.get("n", 0) >= (r.get("n") or 0) else None)
        if val: cells[(row, key)] = val
    out = []
    for key in ("seq", "bulk", "work"):
        s = cells.get(("sealq", key))
        peers = [(v, row) for (row, k), v in cells.items() if k == key and row != "sealq"]
        if s and peers:
            best = max(peers)
            out.append(f"{key}: sealq {s:,.0f} / {best[1][:30]} {best[0]:,.0f} = {s / best[0]:.2f}x")
    print(f.split("/")[-2], " | ".join(out))
