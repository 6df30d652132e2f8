#!/usr/bin/env bash
# sealq's worker process on Postgres, two (or more) builds alternated round by round: per round
# and build a fresh database, `sealq bench --role producer --bulk` of N tasks, a checkpoint, then
# measure.sh around `sealq bench --role worker --tasks N --concurrency 64` (Postgres CPU, WAL and
# wall time per task; the line after it is the rate `sealq bench` reports itself).
#   PG_PORT=… PG_PID=<postmaster pid> SEALQ_KEYRING=… [OLD=500000] \
#     bash worker-ab.sh N ROUNDS /path/a/sealq /path/b/sealq
# OLD: archived tasks (no bodies) written into the table first, for a table larger than the work.
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
N=$1; R=$2; shift 2
U=postgresql://postgres@127.0.0.1:${PG_PORT:?}
export PG_URL=$U
for r in $(seq "$R"); do
  for b in "$@"; do
    db=b$r$(basename "$(dirname "$b")" | tr -cd 'a-z0-9')
    psql -qAt "$U/postgres" -c "drop database if exists $db" -c "create database $db" >/dev/null 2>&1
    psql -qAt "$U/$db" -c "create extension pg_stat_statements" >/dev/null
    "$b" postgres install --broker "$U/$db" >/dev/null 2>&1 || echo install failed
    if [ -n "${OLD:-}" ]; then
      psql -qAt "$U/$db" -c "INSERT INTO sealq.tasks (id, queue, kind, max_retries, retention_ms,
        state, attempts, run_at, updated_at, finished_at) SELECT gen_random_uuid(), 'bench', 'k',
        3, 86400000, 'archived', 1, 0, 0, 0 FROM generate_series(1, $OLD)" >/dev/null
    fi
    "$b" bench --broker "$U/$db" --role producer --bulk --batch 1000 --tasks "$N" \
      --payload-bytes 1024 --json >/dev/null 2>&1 || echo producer failed
    psql -qAt "$U/$db" -c "checkpoint" >/dev/null
    LAST_OUT=/tmp/pg-cost-last.out nice -n -15 bash "$HERE/measure.sh" "$db" \
      "$(basename "$(dirname "$b")") r$r" "$N" -- nice -n -15 "$b" bench --broker "$U/$db" \
      --role worker --tasks "$N" --concurrency 64 --payload-bytes 1024 --json
    echo "   sealq bench process/s: $(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["process_per_second"]))' /tmp/pg-cost-last.out)"
    psql -qAt "$U/postgres" -c "drop database $db" >/dev/null
  done
done
