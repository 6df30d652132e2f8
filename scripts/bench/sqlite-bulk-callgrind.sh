#!/bin/bash
# sqlite-bulk-callgrind.sh BIN N: instructions per task (callgrind, all threads) of a SQLite bulk
# enqueue of N sealed 1 KiB tasks in chunks of 1000, and the top functions (inclusive).
#   KEYRING=k.toml bash scripts/bench/sqlite-bulk-callgrind.sh target/release/sealq 20000
# WRITER_ONLY=1 counts only the store's writer: the enqueue operations run inside the write
# transaction (`InlineJob::run`, on the writer thread or a leading caller), commits left out.
B=$1; N=$2; d=$(mktemp -d /tmp/sealq-cg.XXXX)
only=(); [ "${WRITER_ONLY:-0}" = 1 ] && only=("--toggle-collect=*InlineJob*Run*run*")
SEALQ_KEYRING=${KEYRING:?set KEYRING to a keyring file} valgrind --tool=callgrind --callgrind-out-file=$d/cg.out --separate-threads=no "${only[@]}" $B bench --broker "sqlite://$d/q.db" --role producer --bulk --batch 1000 --tasks $N --payload-bytes 1024 --json > $d/o.json 2>$d/err
tot=$(grep -h "^summary:\|^totals:" $d/cg.out | head -1 | awk '{print $2}')
echo "total_instr $tot per_task $((tot / N))"
callgrind_annotate --inclusive=yes $d/cg.out 2>/dev/null | head -60 > $d/top.txt; cat $d/top.txt | sed -n 20,60p
rm -rf $d
