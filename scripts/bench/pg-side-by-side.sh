#!/usr/bin/env bash
# sealq's Postgres broker beside the Postgres peers, alternating run by run.
#
#   SEALQ=/path/to/sealq (built from s4-pg) PEERS_DIR=/path/to/copy/of/shared/peers OUT=/tmp/pg-sbs \
#     bash scripts/bench/pg-side-by-side.sh
#
# PEERS_DIR/pg/bench.py must have the `sealq` entry (README "Adding sealq"), which runs
# scripts/bench/sealq_pg_peer.py. Each repetition is one run of the harness's bench.py (its own
# fresh PostgreSQL 15 cluster, fsync on, synchronous_commit on, REPS=1, payload 1k), sealq first
# in odd repetitions and last in even ones.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export SEALQ="$(realpath "${SEALQ:?}")"
PEERS_DIR="${PEERS_DIR:?}"
OUT="${OUT:-/tmp/pg-sbs}"
REPS="${REPS:-3}"
PG_PEERS="${PG_PEERS:-graphile-worker,pg-boss,pgqueuer,procrastinate}"
export SEALQ_PG_PEER="$HERE/sealq_pg_peer.py" SEALQ_PG_KEYRING="$OUT/keyring.toml"
export SEALQ_VERSION="${SEALQ_VERSION:-$("$SEALQ" --version)}"
mkdir -p "$OUT"
for rep in $(seq "$REPS"); do
  if [ $((rep % 2)) -eq 1 ]; then peers="sealq,$PG_PEERS"; else peers="$PG_PEERS,sealq"; fi
  echo ">> rep $rep PEERS=$peers load $(cut -d' ' -f1-3 /proc/loadavg)"
  PEERS="$peers" REPS=1 PAYLOADS=1k SC_OFF=0 LOAD_MAX_BUSY=101 LOAD_WAIT_S=0 OUT="$OUT/rep$rep" \
    python3 "$PEERS_DIR/pg/bench.py" > "$OUT/rep$rep.log" 2>&1
done
echo ">> done, load $(cut -d' ' -f1-3 /proc/loadavg)"
