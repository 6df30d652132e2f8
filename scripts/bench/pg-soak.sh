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
# with their indexes and TOAST, then the three added up), wal.csv (the
# run's pg_stat_wal: WAL records, bytes, writes, syncs and the time spent
# in them, ms; timings only on a cluster started here, which sets
# track_wal_io_timing), postgres.log. PG_OPTS adds server settings
# (`-c name=value …`) to a cluster started here, e.g. to log slow
# statements. PRODUCERS (default 1) sets the
# number of producer loops (`--producers`), for one-task calls
# (BATCH=1) at rates one loop cannot reach while it waits for each
# durable commit.
set -euo pipefail
SEALQ="$(realpath "${SEALQ:?path to a release sealq binary}")"
TASKS="${TASKS:-1000000}"
RATE="${RATE:-3000}"
RETENTION="${RETENTION:-30s}"
SEGMENT="${SEGMENT:-100000}"
PAYLOAD="${PAYLOAD:-1024}"
BATCH="${BATCH:-100}"
PRODUCERS="${PRODUCERS:-1}"
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
    -c fsync=on -c synchronous_commit=on -c track_wal_io_timing=on ${PG_OPTS:-} \
    >"$OUT/postgres.log" 2>&1 &
  PG_PID=$!
  # Ready through its own socket directory: a server someone else runs on
  # the same port must not be mistaken for this one.
  for _ in $(seq 100); do
    "$PG_BIN/pg_isready" -q -h "$DIR" -p "$PG_PORT" && break
    sleep 0.1
  done
  if ! "$PG_BIN/pg_isready" -q -h "$DIR" -p "$PG_PORT"; then
    echo "PostgreSQL did not start on port $PG_PORT (in use? set PG_PORT):" >&2
    tail -5 "$OUT/postgres.log" >&2
    exit 1
  fi
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

echo ">> soak: $TASKS tasks at $RATE/s in batches of $BATCH from $PRODUCERS loop(s), ${PAYLOAD} B payloads, retention $RETENTION; load $(cut -d' ' -f1-3 /proc/loadavg)"
"$PG_BIN/psql" -qAt "$PG_URL" -c "SELECT pg_stat_reset_shared('wal')" >/dev/null
set +e
"$SEALQ" --broker "$PG_URL" bench --mode pipelined --tasks "$TASKS" --rate "$RATE" \
  --payload-bytes "$PAYLOAD" --batch "$BATCH" --producers "$PRODUCERS" --retention "$RETENTION" \
  --segment "$SEGMENT" --json >"$OUT/bench.json" 2>"$OUT/bench.err"
rc=$?
set -e
"$PG_BIN/psql" -qA -F, "$PG_URL" -c "SELECT wal_records, wal_bytes, wal_write, wal_sync,
  round(wal_write_time::numeric, 1) AS wal_write_ms, round(wal_sync_time::numeric, 1) AS wal_sync_ms
  FROM pg_stat_wal" >"$OUT/wal.csv" 2>/dev/null || true
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
l = b['latency']
print(f"process {b['process_per_second']:.0f} tasks/s end-to-end, latency p50 {l['p50_ms']} "
      f"p90 {l['p90_ms']} p99 {l['p99_ms']} max {l['max_ms']} ms")
try:
    w = next(csv.DictReader(open(f"{out}/wal.csv")))
    n, syncs = b['tasks'], int(w['wal_sync'])
    print(f"WAL: {int(w['wal_bytes']) / n:.0f} B and {int(w['wal_records']) / n:.1f} records per task, "
          f"{syncs} syncs ({syncs / n:.2f} per task), sync time {w['wal_sync_ms']} ms "
          f"({float(w['wal_sync_ms']) / max(syncs, 1):.2f} ms per sync)")
except (OSError, StopIteration, KeyError, ValueError):
    pass
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
