#!/usr/bin/env bash
# The sealq functions alone, driven by pgbench (no sealq client), database by database:
# 20 batch enqueues of 1,000 tasks (1,104-byte envelopes), 20,000 tasks claimed and acked
# 64 at a time by 2 clients, 500 one-task enqueues. Each DB: `sealq postgres install`ed,
# then `psql -f setup.sql -c 'create extension pg_stat_statements'`.
#   PG_URL=… PG_PID=… bash ab.sh DB...
set -u
cd "$(dirname "$0")"
PB="${PGBENCH:-/usr/lib/postgresql/15/bin/pgbench}"
for d in "$@"; do
  U="$PG_URL/$d"
  psql -qAt "$U" -c "truncate sealq.tasks, sealq.task_bodies, sealq.completed_ids" -c checkpoint
  bash measure.sh "$d" "$d enq-batch" 20000 -- "$PB" -n -c 1 -t 20 -f enqb.sql "$U"
  bash measure.sh "$d" "$d process  " 20000 -- "$PB" -n -c 2 -t 160 -f proc.sql "$U"
  bash measure.sh "$d" "$d enq-one  " 500 -- "$PB" -n -c 1 -t 500 -f enq1.sql "$U"
done
