#!/usr/bin/env bash
# Slow clients: the release receiver as its own process on a fresh database,
# thousands of connections stalled mid-request against it, and a fleet's
# real signed reports at the same time.
#
#   scripts/bench-slow-clients.sh [generator options]
#   scripts/bench-slow-clients.sh --agents 1000 --seconds 30 --rate 1000 --connections 64 --stalled 4096
#   scripts/bench-slow-clients.sh --agents 1000 --seconds 30 --rate 1000 --connections 64 \
#       --stalled 1024 --stalled-body 1048575
#
# Generator options are those of benches/ingest.rs (--stalled N
# keeps N stalled connections open, reopening each one the receiver closes;
# --stalled-body B makes each send B bytes of a body one byte longer).
# Receiver flags can be added with RECEIVER_ARGS="--max-in-flight 16 …";
# RECEIVER=path runs another receiver binary (e.g. an older build) instead
# of building this one.
#
# Prints the generator's result lines (committed reports/s, p50/p99
# latency, failures; stalled connections open at the end and how many the
# receiver closed), the receiver's peak RSS sampled every 0.2 s during the
# measured phase and its VmHWM, its connection and body metrics, and checks
# that the reports table holds exactly the committed reports plus the
# warm-up.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${RECEIVER:-}" ]; then
  cargo build --quiet --release --locked --bin kattila-receiver
  RECEIVER=target/release/kattila-receiver
fi
cargo bench --quiet --locked -p kattila --bench ingest --no-run
generator=$(ls -t target/release/deps/ingest-* | grep -v '\.d$' | head -1)

# Both sides hold thousands of sockets.
ulimit -n "$(ulimit -Hn)"

dir=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
# shellcheck disable=SC2086
KATTILA_PSK=bench-key "$RECEIVER" --listen "127.0.0.1:$port" --db "$dir/bench.db" \
  ${RECEIVER_ARGS:-} 2>"$dir/receiver.log" &
receiver=$!
trap 'kill $receiver 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/status/healthcheck" >/dev/null && break
  sleep 0.1
done

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$receiver/status"; }

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$generator" --url "http://127.0.0.1:$port" "$@" >"$dir/generator.out" 2>"$dir/generator.log" &
gen=$!
# The measured phase starts when the generator says it has warmed up.
until grep -q '^generated' "$dir/generator.log" 2>/dev/null || ! kill -0 $gen 2>/dev/null; do
  sleep 0.05
done
peak=0
while kill -0 $gen 2>/dev/null; do
  now=$(rss_kb)
  [ "${now:-0}" -gt "$peak" ] && peak=$now
  sleep 0.2
done
wait $gen

grep -E '^(stalled|generated)' "$dir/generator.log" || true
cat "$dir/generator.out"
echo "receiver RSS: peak $((peak / 1024)) MiB during the measured phase (sampled every 0.2 s)"
grep VmHWM "/proc/$receiver/status"
curl -s "http://127.0.0.1:$port/metrics" \
  | grep -E '^kattila_(http_|body_budget|reports_rejected)' || true
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
kill $receiver
wait $receiver 2>/dev/null || true

committed=$(sed -n 's/.* committed=\([0-9]*\).*/\1/p' "$dir/generator.out")
warmup=$(sed -n 's/.*warm-up: \([0-9]*\) first reports.*/\1/p' "$dir/generator.log")
rows=$(python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM reports").fetchone()[0])' "$dir/bench.db")
expected=$((committed + ${warmup:-0}))
if [ "$rows" = "$expected" ]; then
  echo "reports table: $rows rows = committed + warm-up: ok"
else
  echo "reports table: $rows rows, expected $expected: MISMATCH"
  exit 1
fi
