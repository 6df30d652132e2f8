#!/bin/bash
# One Redis worker run of a sealq binary, with the CPU each side spent.
#   PORT=6493 KEYRING=k.toml bash worker.sh SEALQ [TASKS]
# Needs a redis-server on 127.0.0.1:$PORT started with --pidfile $PIDFILE
# (default /tmp/sealq-redis-cost.pid) and a keyring file. Per run: FLUSHALL,
# `sealq redis install`, a producer run of TASKS tasks (1 KiB), then the
# measured `sealq bench --role worker --concurrency 64`.
# Prints: tasks/s  worker-CPU-us/task  Redis-CPU-us/task  worker-peak-RSS-KiB
set -euo pipefail
B=$1; N=${2:-100000}; P=${PORT:-6493}; U=redis://127.0.0.1:$P
export SEALQ_KEYRING=${KEYRING:?set KEYRING to a keyring file}
PIDFILE=${PIDFILE:-/tmp/sealq-redis-cost.pid}; T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
redis-cli -p "$P" flushall >/dev/null
"$B" redis install --broker "$U" >/dev/null 2>&1
"$B" bench --broker "$U" --role producer --tasks "$N" --payload-bytes 1024 --json >/dev/null 2>&1
RP=$(cat "$PIDFILE")
r0=$(awk '{print $14+$15}' "/proc/$RP/stat")
/usr/bin/time -f "%U %S %M" -o "$T/time" "$B" bench --broker "$U" --role worker --tasks "$N" \
  --concurrency 64 --payload-bytes 1024 --json >"$T/w.json" 2>/dev/null
r1=$(awk '{print $14+$15}' "/proc/$RP/stat")
read -r u s m <"$T/time"
python3 -c "import json;r=round(json.load(open('$T/w.json'))['process_per_second']);\
print(r, round(($u+$s)*1e6/$N,2), round(($r1-$r0)*1e6/$(getconf CLK_TCK)/$N,2), $m)"
