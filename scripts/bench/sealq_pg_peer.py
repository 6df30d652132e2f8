#!/usr/bin/env python3
"""sealq as a peer of ../shared/peers/pg (its "Adding sealq" contract), through `sealq bench`.

    sealq_pg_peer.py enqueue N 1k seq|bulk     -> RESULT {"phase":"enqueue","n","secs","rate"}
    sealq_pg_peer.py work N CONC [VARIANT]     -> RESULT {"phase":"work","n","secs_to_complete",
                                                          "rate_complete","rate_steady","peak_rss_kib"}

Reads PEERS_PG_URL (the harness's database URL) and SEALQ (the release binary). The keyring is
$SEALQ_PG_KEYRING (created once with `sealq keys generate`), shared by producer and worker.
`sealq bench` seals random bytes of --payload-bytes 1024 (only the 1 KiB payload is supported).
seq = `--role producer --batch 1` (one call, one transaction per task); bulk = `--role producer
--bulk --batch 1000`. work = `--role worker --concurrency CONC`: sealq's own process rate, counted
until the last completion is committed and the worker has shut down. The schema is created by the
first connection (before sealq's clock starts). The worker runs as a child process, so
the harness's /usr/bin/time RSS is the larger of this wrapper and sealq; sealq's own VmHWM is
printed as peak_rss_kib.
"""
import json
import os
import subprocess
import sys

SEALQ = os.environ.get("SEALQ", "sealq")
KEYRING = os.environ.get("SEALQ_PG_KEYRING", "/tmp/sealq-pg-peer-keyring.toml")


def sealq(*args):
    if not os.path.exists(KEYRING):
        fd = os.open(KEYRING, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            subprocess.run([SEALQ, "keys", "generate"], stdout=f, check=True, timeout=60)
    env = dict(os.environ, SEALQ_KEYRING=KEYRING)
    env.pop("SEALQ_BROKER", None)
    url = os.environ["PEERS_PG_URL"]
    p = subprocess.run([SEALQ, "bench", "--broker", url, "--payload-bytes", "1024", "--json", *args],
                       env=env, capture_output=True, text=True, timeout=590)
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-2000:])
        sys.exit(p.returncode)
    return json.loads(p.stdout)


def main():
    cmd, n = sys.argv[1], int(sys.argv[2])
    if cmd == "enqueue":
        payload, mode = sys.argv[3], sys.argv[4]
        if payload != "1k":
            sys.exit("sealq_pg_peer: only the 1k payload (sealq bench seals --payload-bytes random bytes)")
        extra = ["--batch", "1"] if mode == "seq" else ["--bulk", "--batch", "1000"]
        r = sealq("--role", "producer", "--tasks", str(n), *extra)
        out = dict(phase="enqueue", n=n, secs=r["enqueue_seconds"], rate=r["enqueue_per_second"])
    elif cmd == "work":
        conc = int(sys.argv[3])
        r = sealq("--role", "worker", "--tasks", str(n), "--concurrency", str(conc))
        out = dict(phase="work", n=n, secs_from_start=r["process_seconds"], secs_to_complete=r["process_seconds"],
                   secs_first_to_last=r["process_seconds"], rate_complete=r["process_per_second"],
                   rate_steady=r["process_per_second"], peak_rss_kib=r.get("peak_rss_kib"))
    else:
        sys.exit(f"unknown command {cmd}")
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
