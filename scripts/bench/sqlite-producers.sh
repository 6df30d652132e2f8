#!/usr/bin/env bash
# One-call durable enqueue (synchronous=FULL) with 1 and 8 producers, alternating, fsync-family
# calls counted with perf stat (as ../shared/peers/sqlite does). Prints one JSON line per run.
#   SEALQ=target/release/sealq REPS=3 bash scripts/bench/sqlite-producers.sh
set -euo pipefail
SEALQ="$(realpath "${SEALQ:-target/release/sealq}")"
REPS="${REPS:-3}"; N="${N:-5000}"
for rep in $(seq "$REPS"); do
  for p in 1 8; do
    d=$(mktemp -d /tmp/sealq-prod.XXXXXX)
    (umask 077; "$SEALQ" keys generate > "$d/k.toml")
    la=$(cut -d' ' -f1 /proc/loadavg)
    r=$(SEALQ_KEYRING="$d/k.toml" perf stat -x, -o "$d/perf.txt" \
        -e syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync -- \
        "$SEALQ" bench --broker "sqlite://$d/q.db" --payload-bytes 1024 --json \
        --role producer --batch 1 --producers "$p" --tasks "$N")
    syncs=$(awk -F, '/sys_enter_f/ {s += $1} END {print s}' "$d/perf.txt")
    python3 -c "import json,sys; r=json.loads(sys.argv[1]); print(json.dumps(dict(rep=$rep, producers=$p, loadavg=$la, enqueue_per_second=r['enqueue_per_second'], fsync_per_task=$syncs/$N)))" "$r"
    rm -rf "$d"
  done
done
