#!/bin/bash
# worker-cpu-ab.sh PORT N ROUNDS BIN...: the worker process' own CPU per task (user + sys, from
# /usr/bin/time) and its rate on Postgres, builds alternated round by round; per round and build a
# fresh database with N bulk-enqueued tasks. SEALQ_KEYRING must be set; Postgres on 127.0.0.1:PORT.
P=$1; N=$2; R=$3; shift 3
U=postgresql://postgres@127.0.0.1:$P
for r in $(seq $R); do for b in "$@"; do
  db=w$r$(basename "$(dirname "$b")" | tr -cd 'a-z0-9')
  psql -qAt "$U/postgres" -c "drop database if exists $db" -c "create database $db" >/dev/null 2>&1
  $b postgres install --broker "$U/$db" >/dev/null 2>&1
  $b bench --broker "$U/$db" --role producer --bulk --batch 1000 --tasks $N --payload-bytes 1024 --json >/dev/null 2>&1
  psql -qAt "$U/$db" -c "checkpoint" >/dev/null
  l=$(cut -d' ' -f1 /proc/loadavg)
  /usr/bin/time -f "%e %U %S" -o ${TMPDIR:-/tmp}/worker-cpu-ab.t $b bench --broker "$U/$db" --role worker --tasks $N --concurrency 64 --payload-bytes 1024 --json > ${TMPDIR:-/tmp}/worker-cpu-ab.o 2>/dev/null
  read e u s < ${TMPDIR:-/tmp}/worker-cpu-ab.t
  rate=$(python3 -c "import json;print(round(json.load(open('${TMPDIR:-/tmp}/worker-cpu-ab.o'))['process_per_second']))")
  echo "$r $(basename $(dirname $b)) rate $rate worker_cpu_us/task $(python3 -c "print(round(($u+$s)*1e6/$N,2))") load $l"
  psql -qAt "$U/postgres" -c "drop database $db" >/dev/null
done; done
