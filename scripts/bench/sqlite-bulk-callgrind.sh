#!/bin/bash
# sqlite-bulk-callgrind.sh BIN N: instructions per task (callgrind, all threads) of a SQLite bulk
# enqueue of N sealed 1 KiB tasks in chunks of 1000, and the top functions (inclusive).
#   KEYRING=k.toml bash scripts/bench/sqlite-bulk-callgrind.sh target/release/sealq 20000
B=$1; N=$2; d=$(mktemp -d /tmp/sealq-cg.XXXX)
SEALQ_KEYRING=${KEYRING:?set KEYRING to a keyring file} valgrind --tool=callgrind --callgrind-out-file=$d/cg.out --separate-threads=no $B bench --broker "sqlite://$d/q.db" --role producer --bulk --batch 1000 --tasks $N --payload-bytes 1024 --json > $d/o.json 2>$d/err
tot=$(grep -h "^summary:\|^totals:" $d/cg.out | head -1 | awk '{print $2}')
echo "total_instr $tot per_task $((tot / N))"
callgrind_annotate --inclusive=yes $d/cg.out 2>/dev/null | head -60 > $d/top.txt; cat $d/top.txt | sed -n 20,60p
rm -rf $d
