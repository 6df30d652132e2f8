#!/bin/bash
# Instructions per task of one Redis worker run, counted by callgrind (a
# figure that load does not move): the worker process, and a redis-server
# of its own (port $PORT, default 6495) counted only while the worker runs.
#   KEYRING=k.toml bash callgrind.sh SEALQ [TASKS]
# Prints: worker-instructions/task  Redis-instructions/task
set -euo pipefail
B=$1; N=${2:-20000}; P=${PORT:-6495}; U=redis://127.0.0.1:$P
export SEALQ_KEYRING=${KEYRING:?set KEYRING to a keyring file}
T=$(mktemp -d)
valgrind --tool=callgrind --callgrind-out-file="$T/redis" --instr-atstart=no \
  redis-server --port "$P" --bind 127.0.0.1 --save '' --appendonly no >"$T/redis.log" 2>&1 &
VP=$!
trap 'redis-cli -p "$P" shutdown nosave >/dev/null 2>&1 || kill $VP 2>/dev/null; wait $VP 2>/dev/null; rm -rf "$T"' EXIT
for _ in $(seq 100); do redis-cli -p "$P" ping >/dev/null 2>&1 && break; sleep 0.2; done
"$B" redis install --broker "$U" >/dev/null 2>&1
"$B" bench --broker "$U" --role producer --tasks "$N" --payload-bytes 1024 --json >/dev/null 2>&1
callgrind_control -i on $VP >/dev/null 2>&1
timeout 900 valgrind --tool=callgrind --callgrind-out-file="$T/worker" "$B" bench --broker "$U" \
  --role worker --tasks "$N" --concurrency 64 --payload-bytes 1024 --json >/dev/null 2>"$T/worker.log"
callgrind_control -i off $VP >/dev/null 2>&1
callgrind_control -d $VP >/dev/null 2>&1
w=$(sed -n 's/^totals: //p' "$T/worker")
r=$(cat "$T"/redis.* 2>/dev/null | sed -n 's/^totals: //p' | sort -n | tail -1)
echo "$((w / N)) $((r / N))"
