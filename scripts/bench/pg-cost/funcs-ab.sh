#!/usr/bin/env bash
# The claim and ack functions alone (pgbench, no sealq client), one variant per run: a fresh
# database `sealq postgres install`ed by SEALQ, then the variant's SQL files applied on top
# (e.g. a migration not yet in that build, or a change to measure), 100,000 tasks enqueued
# in 100 batch calls, then 2 pgbench clients x 196 x (claim 256, ack them).
#   PG_PORT=… PG_PID=… SEALQ=… SEALQ_KEYRING=… bash funcs-ab.sh DB [variant.sql...]
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
PB="${PGBENCH:-/usr/lib/postgresql/15/bin/pgbench}"
U=postgresql://postgres@127.0.0.1:${PG_PORT:?}; DB=$1; shift
psql -qAt "$U/postgres" -c "drop database if exists $DB" -c "create database $DB" >/dev/null 2>&1
psql -qAt "$U/$DB" -c "create extension pg_stat_statements" >/dev/null
"${SEALQ:?}" postgres install --broker "$U/$DB" >/dev/null 2>&1 || echo install failed
for f in "$@"; do psql -q -v ON_ERROR_STOP=1 "$U/$DB" -f "$f" >/dev/null || echo "variant $f failed"; done
psql -qAt "$U/$DB" -f "$HERE/setup.sql" >/dev/null
"$PB" -n -c 1 -t 100 -f "$HERE/enqb.sql" "$U/$DB" >/dev/null 2>&1
psql -qAt "$U/$DB" -c "analyze" -c checkpoint >/dev/null
PG_URL=$U bash "$HERE/measure.sh" "$DB" "$DB $*" 100000 -- "$PB" -n -c 2 -t 196 -f "$HERE/proc256.sql" "$U/$DB"
psql -qAt "$U/postgres" -c "drop database $DB" >/dev/null
