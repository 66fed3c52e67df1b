#!/bin/bash
# One measured run of the independent load generator (main.go, written from
# docs/protocol.md alone) against Kattila's receiver or the reference
# Python/Flask design, on a fresh database.
#
#   bench/independent-go/run.sh kattila [RECEIVER] [generator options]
#   bench/independent-go/run.sh reference WORKERS [generator options]
#
# RECEIVER defaults to target/release/kattila-receiver. Generator options:
# -agents N -concurrency C -duration S -keepalive=false -warmup=false
# -peers P -routes R -ifaces I (see main.go). Needs Go (Debian golang-go);
# the generator is built next to this file on first use.
#
# Prints the generator's result line, then for Kattila the receiver's CPU
# per committed report by thread over the measured phase, its VmHWM, and a
# check that the reports table holds exactly the committed reports plus
# the warm-up; for the reference the server's CPU per report.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
target=${1:?kattila or reference}; shift
gen=$HERE/independent-gen
if [ ! -x "$gen" ] || [ "$HERE/main.go" -nt "$gen" ]; then
    (cd "$HERE" && GOFLAGS=-mod=mod GOPROXY=off go build -o "$gen" .)
fi
dir=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$dir"' EXIT
port=$((30000 + RANDOM % 20000))
case $target in
kattila)
    receiver=$ROOT/target/release/kattila-receiver
    if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then receiver=$1; shift; fi
    psk=independent-bench-key
    KATTILA_PSK=$psk "$receiver" --db "$dir/k.db" --listen "127.0.0.1:$port" >"$dir/server.log" 2>&1 &
    server=$! ;;
reference)
    workers=${1:?WORKERS}; shift
    psk=bench-key
    KATTILA_SYNCHRONOUS=FULL "$ROOT/bench/reference-flask/run.sh" "$port" "$dir/k.db" "$workers" >"$dir/server.log" 2>&1 &
    server=$! ;;
*) echo "usage: $0 kattila|reference ..." >&2; exit 2 ;;
esac
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/status/healthcheck" >/dev/null && break
    sleep 0.2
done
# CPU ticks per thread name, over the server's process tree (threads and
# processes may end while they are read).
snap() {
    local p t
    local child; child=$(pgrep -P $server | head -1 || true)
    for p in $server $(pgrep -P $server || true) ${child:+$(pgrep -P "$child" || true)}; do
        for t in /proc/$p/task/*; do
            echo "$(tr ' ' _ <"$t/comm") $(sed 's/.*) //' "$t/stat" | awk '{print $12 + $13}')" || true
        done 2>/dev/null
    done | awk 'NF == 2 {a[$1] += $2} END {for (k in a) print k, a[k]}' | sort
}
"$gen" -url "http://127.0.0.1:$port" -psk "$psk" "$@" >"$dir/gen.log" 2>&1 &
genpid=$!
until grep -q '^warmup\|^result' "$dir/gen.log" 2>/dev/null || ! kill -0 $genpid 2>/dev/null; do sleep 0.02; done
snap >"$dir/cpu0"
wait $genpid
snap >"$dir/cpu1"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
grep -E '^(warmup|result)|non-200' "$dir/gen.log"
committed=$(sed -n 's/^result:.* committed=\([0-9]*\) .*/\1/p' "$dir/gen.log")
warm=$(sed -n 's/^warmup:.*committed=\([0-9]*\) .*/\1/p' "$dir/gen.log")
hz=$(getconf CLK_TCK)
join "$dir/cpu0" "$dir/cpu1" | awk -v n="$committed" -v hz="$hz" \
    '$3 > $2 {printf "  %-16s %6.1f us of CPU per committed report\n", $1, ($3 - $2) * 1e6 / hz / n}'
[ "$target" = kattila ] && grep VmHWM "/proc/$server/status"
kill $server; wait $server 2>/dev/null || true
rows=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM reports').fetchone()[0])" "$dir/k.db")
expected=$((committed + ${warm:-0}))
echo "reports table: $rows rows, committed + warm-up = $expected: $([ "$rows" = "$expected" ] && echo ok || echo MISMATCH)"
