#!/usr/bin/env python3
"""Redis' own time per task for sealq's functions library and for native streams.

Measures with INFO commandstats (server-side microseconds, not client time),
so the figures say what one Redis core can do, whatever the client costs.
Needs `pip install redis` and a throw-away redis-server (it runs FLUSHALL):

    redis-server --port 6390 --save "" --appendonly no --daemonize yes
    python3 scripts/redis_costs.py --port 6390 [--tasks 50000]

1. sealq library: enqueue in batches of 1,000 (bytes by SET NX PX, as the
   broker does), then dequeue 64 and ack 64 at a time.
2. Native streams, for comparison (not what sealq uses today): XADD
   pipelined 1,000 at a time, then XREADGROUP COUNT 64, XACK and XDEL.
3. One-task enqueue calls (the sequential case): `SET` + `FCALL
   sealq_enqueue` with one task, 3,000 times; Redis time per call.
"""
import argparse
import os
import pathlib
import time
import uuid

import redis

ROOT = pathlib.Path(__file__).resolve().parent.parent
LUA = ROOT / "crates/sealq-redis/lua/sealq.lua"
FUNCTIONS_RS = ROOT / "crates/sealq-redis/src/functions.rs"


def stats(r):
    return {k[len("cmdstat_"):]: v for k, v in r.info("commandstats").items()
            if "resetstat" not in k and k != "cmdstat_info"}


def report(name, r, n):
    s = stats(r)
    inner = {k: round(v["usec"] / n, 2) for k, v in s.items()}
    total = sum(v["usec"] for k, v in s.items() if k != "fcall") + s.get("fcall", {}).get("usec", 0)
    if "fcall" in s:
        # Commands run inside functions are counted in fcall too.
        inside = sum(v["usec"] for k, v in s.items() if k not in ("fcall", "set", "mget"))
        total -= inside
    print(f"{name}: {total / n:.2f} us of Redis time per task  {inner}")


def fresh_library(r):
    """FLUSHALL, then load the library of this checkout (as `sealq redis install`)."""
    version = FUNCTIONS_RS.read_text().split('LIBRARY_VERSION: &str = "')[1].split('"')[0]
    r.flushall()
    r.function_load(LUA.read_text().replace("__SEALQ_VERSION__", version), replace=True)


def sealq_library(r, n):
    fresh_library(r)
    q, g = "sealq:{bench}:", "sealq:{~}:g:"
    blob, now = os.urandom(1200), int(time.time() * 1000)
    r.config_resetstat()
    for _ in range(n // 1000):
        p = r.pipeline(transaction=False)
        args = [now, "bench"]
        for _ in range(1000):
            i = uuid.uuid4().hex
            p.set(q + "b:" + i, blob, nx=True, px=600000)
            args += [i, now, 3, 86400000, "", "", "0"]
        p.fcall("sealq_enqueue", 2, q, g, *args)
        p.execute()
    report("sealq enqueue", r, n)
    r.config_resetstat()
    while True:
        res = r.fcall("sealq_dequeue", 1, q, now, 64, 30000, "w1", "000000000000")
        if not res:
            break
        got = [(res[k], res[k + 1]) for k in range(0, len(res), 8)]
        if len(got) > 8:
            r.mget([q + "b:" + i.decode() for i, _ in got])
        args = [now]
        for i, tok in got:
            args += [i, tok, "c", "", ""]
        r.fcall("sealq_ack", 1, q, *args)
    report("sealq dequeue + ack", r, n)


def streams(r, n):
    r.flushall()
    s = "sealq:{bench}:s"
    blob = os.urandom(1200)
    r.xgroup_create(s, "w", id="0", mkstream=True)
    r.config_resetstat()
    for _ in range(n // 1000):
        p = r.pipeline(transaction=False)
        for _ in range(1000):
            p.xadd(s, {"i": uuid.uuid4().hex, "b": blob})
        p.execute()
    report("streams enqueue (XADD)", r, n)
    r.config_resetstat()
    while True:
        res = r.xreadgroup("w", "c1", {s: ">"}, count=64)
        if not res or not res[0][1]:
            break
        ids = [e[0] for e in res[0][1]]
        p = r.pipeline(transaction=False)
        p.xack(s, "w", *ids)
        p.xdel(s, *ids)
        p.execute()
    report("streams dequeue + ack (XREADGROUP, XACK, XDEL)", r, n)


def one_task_calls(r, calls=3000):
    fresh_library(r)
    q, g = "sealq:{bench}:", "sealq:{~}:g:"
    blob, now = os.urandom(1200), int(time.time() * 1000)
    r.config_resetstat()
    for _ in range(calls):
        i = uuid.uuid4().hex
        p = r.pipeline(transaction=False)
        p.set(q + "b:" + i, blob, nx=True, px=600000)
        p.fcall("sealq_enqueue", 2, q, g, now, "bench", i, now, 3, 86400000, "", "", "0")
        p.execute()
    s = stats(r)
    print(f"sealq one-task enqueue: {s['fcall']['usec'] / calls:.1f} us of Redis time per FCALL "
          f"(+ {s['set']['usec'] / calls:.1f} us SET); commands inside: "
          f"{sum(v['calls'] for k, v in s.items() if k not in ('fcall', 'set')) / calls:.2f} per call")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=6390)
    ap.add_argument("--tasks", type=int, default=50000)
    a = ap.parse_args()
    r = redis.Redis(port=a.port)
    sealq_library(r, a.tasks)
    streams(r, a.tasks)
    one_task_calls(r)


if __name__ == "__main__":
    main()
