#!/usr/bin/env bash
# sealq beside the Redis peers, alternating run by run on one redis-server, 1 KiB payloads.
#
#   SEALQ=target/release/sealq PEERS_DIR=/path/to/copy/of/shared/peers OUT=/tmp/redis-sbs \
#     bash scripts/bench/redis-side-by-side.sh
#
# Needs a redis-server answering on 127.0.0.1:6391 (start it yourself:
# `redis-server --port 6391 --save '' --appendonly no`); every step FLUSHALLs it.
# Per repetition (REPS, default 3): the peers' own harness once (`run_all.sh`, REPS=1, PAYLOADS=1k,
# unchanged), then sealq: one-call enqueue (--batch 1), bulk enqueue (--bulk, --batch 256, the
# Redis bulk limit), then a worker process (--role worker, concurrency 64) on the bulk-filled
# queue under /usr/bin/time. Odd repetitions run the peers first, even ones sealq first, so both
# see the same machine load. Every sealq JSON line and the load average go to $OUT/sealq.jsonl.
set -euo pipefail
SEALQ="$(realpath "${SEALQ:-target/release/sealq}")"
PEERS_DIR="${PEERS_DIR:?set PEERS_DIR to a writable copy of ../shared/peers}"
OUT="${OUT:-/tmp/redis-sbs}"
REPS="${REPS:-3}"
N="${N:-20000}"
PEERS="${PEERS:-bullmq,apalis1,sidekiq}"
URL="redis://127.0.0.1:6391"
mkdir -p "$OUT"
export SEALQ_KEYRING="$OUT/keyring.toml"
[ -f "$SEALQ_KEYRING" ] || { (umask 077; "$SEALQ" keys generate > "$SEALQ_KEYRING"); }

"$SEALQ" redis install --broker "$URL" > /dev/null  # FLUSHALL keeps Redis functions

load() { cut -d' ' -f1-3 /proc/loadavg; }
note() { printf '{"rep":%s,"step":"%s","loadavg":"%s","result":%s%s}\n' "$1" "$2" "$(load)" "$3" "${4:-}" >> "$OUT/sealq.jsonl"; }

run_peers() {
  echo ">> rep $1 peers ($PEERS) load $(load)"
  PEERS="$PEERS" PAYLOADS=1k REPS=1 N="$N" RESULTS="$OUT/peers-rep$1" bash "$PEERS_DIR/run_all.sh" \
    > "$OUT/peers-rep$1.log" 2>&1
}

run_sealq() {
  local rep=$1 r
  echo ">> rep $rep sealq load $(load)"
  redis-cli -p 6391 flushall > /dev/null
  r=$(timeout 600 "$SEALQ" bench --broker "$URL" --role producer --batch 1 --tasks "$N" --payload-bytes 1024 --json)
  note "$rep" enqueue_one_call "$r"
  redis-cli -p 6391 flushall > /dev/null
  r=$(timeout 600 "$SEALQ" bench --broker "$URL" --role producer --bulk --batch 256 --tasks "$N" --payload-bytes 1024 --json)
  note "$rep" enqueue_bulk "$r"
  r=$(timeout 600 /usr/bin/time -f 'PEAK_RSS_KB=%M' -o "$OUT/time-rep$rep.txt" \
      "$SEALQ" bench --broker "$URL" --role worker --tasks "$N" --concurrency 64 --payload-bytes 1024 --json)
  note "$rep" work "$r" ",\"time_rss_kb\":$(sed -n 's/PEAK_RSS_KB=//p' "$OUT/time-rep$rep.txt")"
  redis-cli -p 6391 flushall > /dev/null
}

for rep in $(seq "$REPS"); do
  if [ $((rep % 2)) -eq 1 ]; then run_peers "$rep"; run_sealq "$rep"; else run_sealq "$rep"; run_peers "$rep"; fi
done
echo ">> done, load $(load)"
