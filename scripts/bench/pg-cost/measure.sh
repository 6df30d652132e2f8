#!/usr/bin/env bash
# Postgres' cost per task of one step: CPU of every postgres process (live ones plus the
# postmaster's reaped children, user and sys, from /proc), WAL bytes, records and syncs
# (pg_stat_wal, reset first), wall time.
#
#   PG_URL=postgresql://postgres@127.0.0.1:PORT PG_PID=<postmaster pid> \
#     bash measure.sh DB LABEL NTASKS -- command...
# The server needs shared_preload_libraries=pg_stat_statements (reset too, for a look after).
DB=$1; LABEL=$2; N=$3; shift 4
U="${PG_URL:?}/$DB"
PM="${PG_PID:?}"
cpu() {
  local u=0 k=0
  for p in $PM $(pgrep -P "$PM"); do
    s=$(cut -d' ' -f14-17 "/proc/$p/stat" 2>/dev/null) || continue
    set -- $s
    if [ "$p" = "$PM" ]; then u=$((u + $3)); k=$((k + $4)); else u=$((u + $1)); k=$((k + $2)); fi
  done
  echo $u $k
}
psql -qAt "$U" -c "select pg_stat_reset_shared('wal'); select pg_stat_statements_reset()" >/dev/null
sleep 0.5
read -r u0 k0 <<<"$(cpu)"; t0=$(date +%s.%N)
"$@" > "${LAST_OUT:-/tmp/pg-cost-last.out}" 2>&1
t1=$(date +%s.%N); sleep 0.3; read -r u1 k1 <<<"$(cpu)"
sleep 0.6
read -r rec bytes syncs <<<"$(psql -qAt -F' ' "$U" -c "select wal_records, wal_bytes, wal_sync from pg_stat_wal")"
python3 - "$LABEL" "$N" "$t0" "$t1" "$u0" "$u1" "$k0" "$k1" "$rec" "$bytes" "$syncs" "$(getconf CLK_TCK)" <<'PY'
import sys
l, n = sys.argv[1], int(sys.argv[2])
t0, t1, u0, u1, k0, k1, rec, b, s, hz = map(float, sys.argv[3:])
w = t1 - t0
us = 1e6 / hz
print(f"{l}: {n / w:,.0f} tasks/s  wall {w:.2f}s  pgCPU/task {(u1 - u0 + k1 - k0) * us / n:.0f} us "
      f"(sys {(k1 - k0) * us / n:.0f})  WAL/task {b / n:,.0f} B {rec / n:.1f} rec  syncs {s:.0f} ({s / w:.0f}/s)")
PY
