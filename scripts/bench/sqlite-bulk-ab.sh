#!/bin/bash
# sqlite-bulk-ab.sh REPS OUT BIN_A BIN_B: alternate sealq build A, sealq build B and effectum (the peers
# harness build, $EFF), each a bulk enqueue of 20,000 1 KiB tasks in chunks of 1000 on a fresh file;
# prints per run: rep who rate cpu_s load1, then medians and B/effectum, A/effectum per repetition.
R=$1; O=$2; A=$3; B=$4; EFF=${EFF:-/tmp/peers-sqlite-build/target/release/peers-sqlite-effectum}
: > $O
for rep in $(seq 1 $R); do
  for who in A B E; do
    d=$(mktemp -d /tmp/sealq-bulk.XXXX); l=$(cut -d' ' -f1 /proc/loadavg)
    if [ $who = E ]; then
      out=$(PEERS_SQLITE_DB=$d/q.db /usr/bin/time -f "%U %S" -o $d/t $EFF enqueue 20000 1k bulk 2>/dev/null | grep RESULT)
      rate=$(echo "$out" | sed 's/^RESULT //' | python3 -c "import sys,json;print(round(json.load(sys.stdin)['rate']))")
    else
      bin=$A; [ $who = B ] && bin=$B
      $bin keys generate > $d/k.toml 2>/dev/null
      SEALQ_KEYRING=$d/k.toml /usr/bin/time -f "%U %S" -o $d/t $bin bench --broker sqlite://$d/q.db --role producer \
        --bulk --batch 1000 --tasks 20000 --payload-bytes 1024 --concurrency 64 --json > $d/o.json 2>/dev/null
      rate=$(python3 -c "import json;print(round(json.load(open('$d/o.json'))['enqueue_per_second']))")
    fi
    cpu=$(awk '{print $1+$2}' $d/t)
    echo "$rep $who $rate $cpu $l" | tee -a $O
    rm -rf $d
  done
done
python3 - $O <<'PY'
import sys, statistics as st
rows=[l.split() for l in open(sys.argv[1])]
for w in "ABE":
    r=[float(x[2]) for x in rows if x[1]==w]; c=[float(x[3]) for x in rows if x[1]==w]
    print(w, "rate median", round(st.median(r)), "min", round(min(r)), "max", round(max(r)), "cpu median", round(st.median(c),3))
a=[float(x[2]) for x in rows if x[1]=="A"]; b=[float(x[2]) for x in rows if x[1]=="B"]; e=[float(x[2]) for x in rows if x[1]=="E"]
print("B/E per rep", [round(x/y,2) for x,y in zip(b,e)], "median", round(st.median([x/y for x,y in zip(b,e)]),2))
print("A/E per rep", [round(x/y,2) for x,y in zip(a,e)], "median", round(st.median([x/y for x,y in zip(a,e)]),2))
PY
