#!/bin/bash
# One measured run of Kattila's ingest load generator against the reference.
#
#   bench/reference-flask/bench.sh WORKERS SYNC RATE [SECONDS] [PORT]
#
# WORKERS  gunicorn sync workers (2, 4)
# SYNC     FULL, NORMAL or default (= SQLite's default, FULL in WAL mode here)
# RATE     0 = closed loop (64 connections), else open loop at RATE reports/s
# GEN_ARGS (environment) more generator options, e.g. GEN_ARGS=--realistic
#
# The load generator is `cargo bench -p kattila --bench ingest`; set
# LOADGEN to the binary that command builds (target/release/deps/ingest-*) to
# run it without cargo re-checking the workspace. Each run uses a fresh
# database, waits until the 1-minute load average is below MAX_LOAD (1.5)
# before starting, watches for compilers running during the run, and checks
# that the reports table holds exactly the "committed" count (plus the
# generator's warm-up reports) afterwards.
set -euo pipefail
WORKERS=$1 SYNC=$2 RATE=$3 SECONDS_=${4:-20} PORT=${5:-18586}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
MAX_LOAD=${MAX_LOAD:-1.5}
DB=$(mktemp -d /tmp/rf-bench.XXXXXX)/reference.db

if [ -n "${LOADGEN:-}" ]; then
    gen=("$LOADGEN")
else
    gen=(cargo bench --manifest-path "$ROOT/Cargo.toml" -p kattila --bench ingest --)
fi
args=(--url "http://127.0.0.1:$PORT" --psk bench-key --agents 1000 --seconds "$SECONDS_")
[ "$RATE" != 0 ] && args+=(--rate "$RATE")
# shellcheck disable=SC2206 # word splitting is wanted: several options
args+=(${GEN_ARGS:-})

# Wait for a quiet machine: 1-minute load average below MAX_LOAD, and the
# CPUs at least 90% idle over the last 3 seconds.
while :; do
    load=$(cut -d' ' -f1 /proc/loadavg)
    if awk -v l="$load" -v m="$MAX_LOAD" 'BEGIN{exit !(l < m)}'; then
        a=$(head -1 /proc/stat); sleep 3; b=$(head -1 /proc/stat)
        idle=$(awk -v a="$a" -v b="$b" 'BEGIN{split(a,x," "); split(b,y," ");
            for(i=2;i<=9;i++) t+=y[i]-x[i]; printf "%.0f", 100*(y[5]-x[5]+y[6]-x[6])/t}')
        [ "$idle" -ge 90 ] && break
        echo "# $(date +%T) load average $load but CPUs only $idle% idle, waiting" >&2
    else
        echo "# $(date +%T) load average $load >= $MAX_LOAD, waiting" >&2
    fi
    sleep 20
done

if [ "$SYNC" = default ]; then unset KATTILA_SYNCHRONOUS; else export KATTILA_SYNCHRONOUS=$SYNC; fi
"$HERE/run.sh" "$PORT" "$DB" "$WORKERS" > "$DB.server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$PORT/status/healthcheck" >/dev/null && break
    sleep 0.2
done

echo "uptime before: $(uptime)"
# Context for FULL: how long an fdatasync takes on this disk right now
# (median of 30 4-KiB appends to a file next to the database).
fsync_ms=$(python3 -c '
import os, sys, time, statistics
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND); t = []
for _ in range(30):
    s = time.perf_counter(); os.write(fd, b"x" * 4096); os.fdatasync(fd); t.append(time.perf_counter() - s)
os.close(fd); os.unlink(sys.argv[1]); print("%.2f" % (statistics.median(t) * 1e3))' "$DB.fsync")
# CPU ticks (user+system) of the server's processes.
ticks() { local t=0 p; for p in "$@"; do
    [ -r /proc/$p/stat ] && t=$((t + $(sed 's/.*) //' /proc/$p/stat | awk '{print $12 + $13}'))); done; echo $t; }
server_ticks() { ticks $server $(pgrep -P $server); }
# Note compilers (other engineers' builds) running while we measure.
( busy=0; while sleep 2; do
      n=$(ps -eo comm= | grep -cE '^(rustc|clippy-driver|cc1|cc1plus|ld|rust-lld|build-script-bu)$' || true)
      [ "${n:-0}" -gt 0 ] && busy=$((busy + 1)) && echo "$busy" > "$DB.busy"
  done ) &
watcher=$!
"${gen[@]}" "${args[@]}" >"$DB.gen.out" 2>"$DB.gen.log" &
genpid=$!
# The measured phase starts once the generator has printed "generated ...".
until grep -q '^generated' "$DB.gen.log" 2>/dev/null || ! kill -0 $genpid 2>/dev/null; do sleep 0.05; done
stat0=$(head -1 /proc/stat)
python3 "$HERE/procsnap.py" snap "$DB.snap0"
srv0=$(server_ticks)
wait $genpid
result=$(grep '^mode=' "$DB.gen.out")
kill $watcher 2>/dev/null; wait $watcher 2>/dev/null || true
stat1=$(head -1 /proc/stat)
python3 "$HERE/procsnap.py" snap "$DB.snap1"
srv1=$(server_ticks)
others=$(python3 "$HERE/procsnap.py" others "$DB.snap0" "$DB.snap1" $server $genpid $watcher $$)
echo "uptime after:  $(uptime)"
# Whole-machine CPU use and steal during the run (all processes, both cores).
# others = CPU used by processes outside this script's, the server's and the
# load generator's process trees (procsnap.py).
cpu=$(awk -v a="$stat0" -v b="$stat1" -v others=$others -v srv=$((srv1 - srv0)) 'BEGIN{n=split(a,x," "); split(b,y," ");
    for(i=2;i<=9;i++){d[i]=y[i]-x[i]; t+=d[i]}; busy=t-d[5]-d[6]
    printf "cpu_busy=%.0f%% server_cpu=%.0f%% others_cpu=%.0f%% steal=%.1f%% iowait=%.1f%%",
        100*busy/t, 100*srv/t, 100*others/t, 100*d[9]/t, 100*d[6]/t}')

kill $server; wait $server 2>/dev/null || true
trap - EXIT
rows=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM reports').fetchone()[0])" "$DB")
committed=$(sed -n 's/.* committed=\([0-9]*\).*/\1/p' <<<"$result")
# The generator's warm-up (every agent's first report) is stored too.
warmup=$(sed -n 's/.*warm-up: \([0-9]*\) first reports.*/\1/p' "$DB.gen.log")
expected=$((committed + ${warmup:-0}))
busy=$(cat "$DB.busy" 2>/dev/null || echo 0)
check=$([ "$rows" = "$expected" ] && echo ok || echo MISMATCH)
echo "$(head -1 "$DB.server.log" | sed 's/^database [^ ]* //')" "workers=$WORKERS" "$result" "rows=$rows rows_check=$check compiler_samples=$busy fsync_median=${fsync_ms}ms $cpu"
grep -v '^database' "$DB.server.log" | sort | uniq -c | sort -rn | head -5
rm -rf "$(dirname "$DB")"
