#!/usr/bin/env bash
# Postgres soak: a long pipelined run (producer capped at a steady rate,
# worker in the same process) with a short retention, reporting the
# processing rate of every SEGMENT completed tasks and sampling the size of
# the task tables every SAMPLE_S seconds, so that one sees whether
# throughput holds and whether the tables stop growing once completed tasks
# are purged.
#
#   SEALQ=target/release/sealq TASKS=1000000 RATE=3000 BATCH=100 RETENTION=30s \
#     OUT=/tmp/pg-soak bash scripts/bench/pg-soak.sh
#
# Without PG_URL it starts its own PostgreSQL cluster (initdb in a temp dir,
# as the `postgres` user through runuser when run as root; durable commits:
# fsync on, synchronous_commit on) on PG_PORT (default 55439), applies the
# autovacuum settings of docs/postgres.md to the hot tables, and stops it
# by pid at the end. With PG_URL it uses that (empty) database as it is.
#
# Output in OUT: bench.json (sealq bench --json), sizes.csv (seconds since
# start, then bytes of sealq.tasks, sealq.task_bodies, sealq.completed_ids
# with their indexes and TOAST, then the three added up), postgres.log.
set -euo pipefail
SEALQ="$(realpath "${SEALQ:?path to a release sealq binary}")"
TASKS="${TASKS:-1000000}"
RATE="${RATE:-3000}"
RETENTION="${RETENTION:-30s}"
SEGMENT="${SEGMENT:-100000}"
PAYLOAD="${PAYLOAD:-1024}"
BATCH="${BATCH:-100}"
SAMPLE_S="${SAMPLE_S:-10}"
OUT="${OUT:-/tmp/pg-soak}"
PG_BIN="${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}"
mkdir -p "$OUT"

PG_PID=""
DIR=""
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  if [ -n "$PG_PID" ]; then
    # The postmaster's own pid (runuser does not pass SIGINT on): fast shutdown.
    local pm
    pm="$(head -1 "$DIR/data/postmaster.pid" 2>/dev/null || true)"
    kill -INT "${pm:-$PG_PID}" 2>/dev/null || true
    for _ in $(seq 300); do kill -0 "$PG_PID" 2>/dev/null || break; sleep 0.2; done
  fi
  if [ -n "$DIR" ]; then rm -rf "$DIR"; fi
}
trap cleanup EXIT

if [ -z "${PG_URL:-}" ]; then
  PG_PORT="${PG_PORT:-55439}"
  DIR="$(mktemp -d /tmp/sealq-soak-pg.XXXXXX)"
  chmod 755 "$DIR"
  if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$DIR"; fi
  as_pg "$PG_BIN/initdb" -D "$DIR/data" -U postgres -A trust --locale=C -E UTF8 >/dev/null
  as_pg "$PG_BIN/postgres" -D "$DIR/data" -c listen_addresses=127.0.0.1 -c port="$PG_PORT" \
    -c unix_socket_directories="$DIR" -c shared_buffers=256MB -c max_wal_size=4GB \
    -c fsync=on -c synchronous_commit=on >"$OUT/postgres.log" 2>&1 &
  PG_PID=$!
  for _ in $(seq 100); do
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break
    sleep 0.1
  done
  "$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -c 'CREATE DATABASE soak'
  PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/soak"
  # Create the schema, then give the hot tables the documented autovacuum settings.
  "$SEALQ" --broker "$PG_URL" postgres install >/dev/null
  "$PG_BIN/psql" -q "$PG_URL" <<'SQL'
ALTER TABLE sealq.tasks SET (autovacuum_vacuum_scale_factor = 0.01,
  autovacuum_vacuum_insert_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02,
  autovacuum_vacuum_cost_delay = 1);
ALTER TABLE sealq.task_bodies SET (autovacuum_vacuum_scale_factor = 0.01,
  autovacuum_vacuum_insert_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 1);
ALTER TABLE sealq.completed_ids SET (autovacuum_vacuum_scale_factor = 0.01,
  autovacuum_vacuum_insert_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 1);
SQL
fi

sample() {
  local t0=$SECONDS
  echo "seconds,tasks,task_bodies,completed_ids,total" >"$OUT/sizes.csv"
  while :; do
    "$PG_BIN/psql" -qAt -F, "$PG_URL" -c "SELECT $((SECONDS - t0)),
      pg_total_relation_size('sealq.tasks'), pg_total_relation_size('sealq.task_bodies'),
      pg_total_relation_size('sealq.completed_ids'),
      pg_total_relation_size('sealq.tasks') + pg_total_relation_size('sealq.task_bodies')
        + pg_total_relation_size('sealq.completed_ids')" >>"$OUT/sizes.csv" 2>/dev/null || true
    sleep "$SAMPLE_S"
  done
}
sample &
SAMPLER=$!

echo ">> soak: $TASKS tasks at $RATE/s in batches of $BATCH, ${PAYLOAD} B payloads, retention $RETENTION; load $(cut -d' ' -f1-3 /proc/loadavg)"
set +e
"$SEALQ" --broker "$PG_URL" bench --mode pipelined --tasks "$TASKS" --rate "$RATE" \
  --payload-bytes "$PAYLOAD" --batch "$BATCH" --retention "$RETENTION" --segment "$SEGMENT" --json \
  >"$OUT/bench.json" 2>"$OUT/bench.err"
rc=$?
set -e
# Two more samples after the run: retention still purging what is left.
sleep "$((SAMPLE_S * 2))"
kill "$SAMPLER" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null || true
echo ">> bench exit $rc; load $(cut -d' ' -f1-3 /proc/loadavg)"
[ "$rc" = 0 ] || { cat "$OUT/bench.err"; exit "$rc"; }
python3 - "$OUT" <<'PY'
import csv, json, sys
out = sys.argv[1]
b = json.load(open(f"{out}/bench.json"))
print(f"process {b['process_per_second']:.0f} tasks/s end-to-end, latency p99 {b['latency']['p99_ms']} ms")
segs = b.get("segments", [])
for s in segs:
    print(f"  through {s['through']:>8}: {s['per_second']:8.0f} tasks/s ({s['seconds']:.1f} s)")
if len(segs) >= 2:
    first, last = segs[0]["per_second"], segs[-1]["per_second"]
    print(f"  last / first segment: {last / first:.3f}")
rows = list(csv.DictReader(open(f"{out}/sizes.csv")))
for r in rows:
    print(f"  t={r['seconds']:>5}s total {int(r['total']) / 2**20:8.1f} MiB "
          f"(tasks {int(r['tasks']) / 2**20:.1f}, bodies {int(r['task_bodies']) / 2**20:.1f}, "
          f"completed_ids {int(r['completed_ids']) / 2**20:.1f})")
PY
