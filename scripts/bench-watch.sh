#!/usr/bin/env bash
# sitegen --watch at rest: how much CPU it uses while a fleet keeps
# reporting and nothing visible changes (counters and handshake times move,
# no status, health or alarm does). Runs the release receiver, a simulated
# fleet and sitegen --watch on 127.0.0.1, waits until every agent reported
# and the first builds are done, then reads sitegen's CPU time from
# /proc/PID/stat over the measuring window and counts its builds.
#
#   scripts/bench-watch.sh [--agents N] [--interval S] [--seconds S] [--faults none|demo]
#
# Defaults: 1,000 agents reporting every 30 s, a 300 s window, no faults
# (with --faults demo the fleet changes and sitegen builds for it).
set -euo pipefail
agents=1000 interval=30 seconds=300 faults=none
while [ $# -gt 0 ]; do
  case "$1" in
    --agents) agents="$2"; shift 2 ;;
    --interval) interval="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --faults) faults="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "bench-watch: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
cargo build --locked --release --bins -q
bin="${CARGO_TARGET_DIR:-$(pwd)/target}/release"
run=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$run"
}
trap cleanup EXIT
(umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$run/psk")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

"$bin/kattila-receiver" --listen "127.0.0.1:$port" --db "$run/kattila.db" --psk-file "$run/psk" \
  --interval-secs "$interval" > "$run/receiver.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$port/status/healthcheck" >/dev/null 2>&1 && break
  sleep 0.1
done
"$bin/kattila-agent" simulate --agents "$agents" --interval "$interval" --faults "$faults" \
  --url "http://127.0.0.1:$port" --state-dir "$run/sim" --psk-file "$run/psk" \
  > "$run/simulator.log" 2>&1 &
pids+=($!)
"$bin/sitegen" --watch --db "$run/kattila.db" --out "$run/site" > "$run/sitegen.log" 2>&1 &
sitegen=$!
pids+=("$sitegen")

# Every agent's first report (a new agent is a visible change) and then
# two more intervals, so that the window sees a fleet at rest.
settle=$(( interval * 3 ))
echo "bench-watch: $agents agents every ${interval}s, faults $faults; settling ${settle}s…"
sleep "$settle"
ticks() { awk '{ print $14 + $15 }' "/proc/$sitegen/stat"; }
hz=$(getconf CLK_TCK)
builds_before=$(grep -c '^built' "$run/sitegen.log" || true)
t0=$(ticks) s0=$(date +%s.%N)
sleep "$seconds"
t1=$(ticks) s1=$(date +%s.%N)
builds_after=$(grep -c '^built' "$run/sitegen.log" || true)
reports=$(curl -fsS "http://127.0.0.1:$port/metrics" 2>/dev/null \
  | awk '/^kattila_reports_accepted_total/ { s += $2 } END { print s + 0 }')
rss=$(awk '/VmHWM/ { print $2 }' "/proc/$sitegen/status")
awk -v t="$((t1 - t0))" -v hz="$hz" -v a="$s0" -v b="$s1" -v n="$((builds_after - builds_before))" \
    -v rss="$rss" -v reports="$reports" 'BEGIN {
  cpu = t / hz; wall = b - a
  printf "sitegen --watch: %.2f s CPU in %.0f s = %.2f %% of one core; %d builds in the window; VmHWM %.0f MB; receiver accepted %d reports so far\n",
    cpu, wall, 100 * cpu / wall, n, rss / 1024, reports
}'
echo "builds in the window:"
tail -n "$((builds_after - builds_before))" <(grep '^built' "$run/sitegen.log") | sed 's/^/  /'
