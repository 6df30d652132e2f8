#!/bin/bash
# One enqueue run, sealq or apalis 1.0 (../shared/peers/rust), with the CPU
# each side spent.
#   PORT=6493 KEYRING=k.toml PEERS_RUST=.../peers-rust bash enqueue.sh WHO MODE N
# WHO: `apalis` or the path of a sealq binary; MODE: `bulk` (sealq
# `enqueue_bulk` in calls of 256, apalis `push_bulk` in chunks of 1,000) or
# `one` (one awaited call per task). 1 KiB payloads. Needs a redis-server on
# 127.0.0.1:$PORT started with --pidfile $PIDFILE.
# Prints: tasks/s  Redis-CPU-us/task  client-CPU-us/task
set -euo pipefail
W=$1; M=$2; N=$3; P=${PORT:-6493}; U=redis://127.0.0.1:$P
export SEALQ_KEYRING=${KEYRING:?set KEYRING to a keyring file}
PIDFILE=${PIDFILE:-/tmp/sealq-redis-cost.pid}; T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
redis-cli -p "$P" flushall >/dev/null
RP=$(cat "$PIDFILE")
[ "$W" != apalis ] && "$W" redis install --broker "$U" >/dev/null 2>&1
r0=$(awk '{print $14+$15}' "/proc/$RP/stat")
if [ "$W" = apalis ]; then
  m=seq; [ "$M" = bulk ] && m=bulk
  PEERS_REDIS_PORT=$P /usr/bin/time -f "%U %S" -o "$T/time" "${PEERS_RUST:?}" apalis1 enqueue "$N" 1k $m >"$T/out" 2>/dev/null
  rate=$(sed -n 's/^RESULT //p' "$T/out" | python3 -c "import sys,json;print(round(json.loads(sys.stdin.read())['rate']))")
else
  args="--batch 1"; [ "$M" = bulk ] && args="--bulk --batch 256"
  # shellcheck disable=SC2086
  /usr/bin/time -f "%U %S" -o "$T/time" "$W" bench --broker "$U" --role producer $args --tasks "$N" \
    --payload-bytes 1024 --json >"$T/e.json" 2>/dev/null
  rate=$(python3 -c "import json;print(round(json.load(open('$T/e.json'))['enqueue_per_second']))")
fi
r1=$(awk '{print $14+$15}' "/proc/$RP/stat")
read -r u s <"$T/time"
echo "$rate $(python3 -c "print(round(($r1-$r0)*1e6/$(getconf CLK_TCK)/$N,2), round(($u+$s)*1e6/$N,2))")"
