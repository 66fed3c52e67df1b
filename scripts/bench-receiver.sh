#!/usr/bin/env bash
# One measured ingest run: the release receiver as its own process on a
# fresh database, driven by the ingest load generator on the same machine.
#
#   scripts/bench-receiver.sh [generator options]
#   scripts/bench-receiver.sh --agents 1000 --seconds 20 --connections 128
#   scripts/bench-receiver.sh --agents 1000 --seconds 20 --rate 5000 --connections 256
#   scripts/bench-receiver.sh --realistic --agents 10000 --seconds 20 --restart
#   scripts/bench-receiver.sh --notify-hang --realistic --agents 1000 --seconds 10
#
# --restart (this script's own option): after the warm-up the receiver is
# stopped and started again on the same database, and the measured phase
# begins as soon as it answers its health check: ingest while per-agent
# state reloads.
#
# --notify-hang (this script's own option): the receiver runs with
# notifications on (--notify-config), every alarm routed to one webhook
# channel whose server accepts connections and never answers; prints the
# outbox by state at the end. Compare with the same run without it.
#
# Generator options are those of `cargo bench -p kattila --bench ingest`
# (see benches/ingest.rs). Prints the generator's result
# line, the receiver's CPU per thread over the measured phase (from
# /proc/PID/task/*/stat), its peak memory (VmHWM), its batch and commit
# metrics, the load average, and checks that the reports table holds
# exactly the committed reports plus the warm-up.
set -euo pipefail
cd "$(dirname "$0")/.."

# KATTILA_BENCH_RECEIVER / KATTILA_BENCH_GENERATOR: measure given binaries
# instead (e.g. an older build beside this one, with the same generator, to
# compare before and after in one sitting).
receiver_bin=${KATTILA_BENCH_RECEIVER:-}
if [ -z "$receiver_bin" ]; then
  cargo build --quiet --release --bin kattila-receiver
  receiver_bin=target/release/kattila-receiver
fi
generator=${KATTILA_BENCH_GENERATOR:-}
if [ -z "$generator" ]; then
  cargo bench --quiet -p kattila --bench ingest --no-run
  generator=$(ls -t target/release/deps/ingest-* | grep -v '\.d$' | head -1)
fi

restart=0
notify_hang=0
args=()
for a in "$@"; do
  if [ "$a" = --restart ]; then
    restart=1
    args+=(--pause-after-warmup)
  elif [ "$a" = --notify-hang ]; then
    notify_hang=1
  else
    args+=("$a")
  fi
done

dir=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
notify_args=()
hang=
if [ $notify_hang = 1 ]; then
  hang_port=$((20000 + RANDOM % 20000))
  # Accepts every connection, reads nothing, answers nothing.
  python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1024)
held = []
while True:
    held.append(s.accept()[0])
' "$hang_port" &
  hang=$!
  cat >"$dir/notify.toml" <<EOF
[channels.hang]
type = "webhook"
url = "http://127.0.0.1:$hang_port/hook"

[default_route]
channels = ["hang"]
EOF
  notify_args=(--notify-config "$dir/notify.toml")
fi
start_receiver() {
  KATTILA_PSK=bench-key "$receiver_bin" --listen "127.0.0.1:$port" \
    --db "$dir/bench.db" "${notify_args[@]}" 2>>"$dir/receiver.log" &
  receiver=$!
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$port/status/healthcheck" >/dev/null && break
    sleep 0.05
  done
}
start_receiver
trap 'kill $receiver ${hang:-} 2>/dev/null || true; rm -rf "$dir"' EXIT

# CPU ticks per thread name (tokio workers summed).
threads() {
  for t in /proc/$receiver/task/*; do
    echo "$(cat "$t/comm") $(awk '{print $14 + $15}' "$t/stat")"
  done | awk '{ticks[$1] += $2} END {for (n in ticks) print n, ticks[n]}' | sort
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
mkfifo "$dir/go"
"$generator" --url "http://127.0.0.1:$port" "${args[@]}" <"$dir/go" >"$dir/generator.out" 2>"$dir/generator.log" &
gen=$!
exec 3>"$dir/go"
if [ $restart = 1 ]; then
  until grep -q '^paused' "$dir/generator.log" 2>/dev/null || ! kill -0 $gen 2>/dev/null; do
    sleep 0.05
  done
  grep VmHWM "/proc/$receiver/status" | sed 's/^/before the restart: /'
  kill $receiver
  wait $receiver 2>/dev/null || true
  restarted=$(date +%s.%N)
  start_receiver
  echo "receiver restarted, answering after $(echo "$(date +%s.%N) - $restarted" | bc) s"
  echo go >&3
fi
# The measured phase starts when the generator says it has warmed up.
until grep -q '^generated' "$dir/generator.log" 2>/dev/null || ! kill -0 $gen 2>/dev/null; do
  sleep 0.05
done
threads >"$dir/cpu0"
started=$(date +%s.%N)
wait $gen
threads >"$dir/cpu1"
elapsed=$(echo "$(date +%s.%N) - $started" | bc)

grep '^generated' "$dir/generator.log" || true
cat "$dir/generator.out"
echo "receiver CPU over the measured phase (100% = one core):"
join "$dir/cpu0" "$dir/cpu1" | awk -v s="$elapsed" '$3 > $2 {printf "  %-20s %5.1f%%\n", $1, ($3 - $2) / s}'
grep VmHWM "/proc/$receiver/status"
curl -s "http://127.0.0.1:$port/metrics" \
  | grep -E '^kattila_(batch_size|commit_milliseconds)_(sum|count)' || true
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
kill $receiver
wait $receiver 2>/dev/null || true

if [ $notify_hang = 1 ]; then
  python3 -c 'import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
print("alarms raised:", c.execute("SELECT count(*) FROM alarms").fetchone()[0],
      "; outbox:", ", ".join(f"{s} {n}" for s, n in c.execute("SELECT state, count(*) FROM notify_outbox GROUP BY state")) or "empty")' "$dir/bench.db"
fi
committed=$(sed -n 's/^mode=.* committed=\([0-9]*\).*/\1/p' "$dir/generator.out")
warmup=$(sed -n 's/.*warm-up: \([0-9]*\) first reports.*/\1/p' "$dir/generator.log")
rows=$(python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM reports").fetchone()[0])' "$dir/bench.db")
expected=$((committed + ${warmup:-0}))
if [ "$rows" = "$expected" ]; then
  echo "reports table: $rows rows = committed + warm-up: ok"
else
  echo "reports table: $rows rows, expected $expected: MISMATCH"
  exit 1
fi
