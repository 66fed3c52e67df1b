#!/usr/bin/env bash
# Kattila demo: builds the three programs, then runs a local receiver,
# sitegen in watch mode and a simulated fleet on 127.0.0.1, and prints where
# the live dashboard is. The fleet has faults (`simulate --faults demo`): a
# silent site, a gateway down with its site relayed, stale and one-sided
# links, a moved endpoint, flapping interfaces, and their recoveries, in a
# repeating cycle of 48 intervals. Ctrl-C stops everything.
#
#   scripts/demo.sh [--agents N] [--interval SECONDS] [--seconds N] [--port PORT] [--faults none|demo]
#
# --seconds N stops the demo after N seconds (default: run until Ctrl-C).
# Everything the demo writes goes to ./demo-run/ (database, site, logs, key).
set -euo pipefail

agents=20 interval=5 seconds="" port=5086 faults=demo
while [ $# -gt 0 ]; do
  case "$1" in
    --agents) agents="$2"; shift 2 ;;
    --interval) interval="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --faults) faults="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "demo: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done
# Checked here: the simulator would refuse it only after the receiver started.
case "$faults" in
  none|demo) ;;
  *) echo "demo: --faults must be none or demo, not \"$faults\"" >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.."
root=$(pwd)
# Release binaries, as an operator runs them. The cost: a build of its own
# (the tests' dev build does not serve), about 5 minutes cold on 2 busy
# cores with LTO, and 0.6 GB more in the target directory
# (docs/benchmarks.md); later runs build nothing. Cargo shows its progress.
echo "demo: building kattila-receiver, sitegen and kattila-agent in release mode (the first build takes about 5 minutes)…"
cargo build --locked --release --bins
bin="${CARGO_TARGET_DIR:-$root/target}/release"

run="$root/demo-run"
rm -rf "$run"
mkdir -p "$run"
# A fresh random fleet key, readable only by us.
(umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$run/psk")

pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "demo: stopped. Database, site and logs are in $run"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

# The receiver is told the fleet's interval (whole seconds, at least 1), so
# a silent agent shows after three missed reports, not after 90 s.
receiver_interval=$(awk -v i="$interval" 'BEGIN { r = int(i); if (r < i) r++; if (r < 1) r = 1; print r }')
"$bin/kattila-receiver" --listen "127.0.0.1:$port" --db "$run/kattila.db" --psk-file "$run/psk" \
  --interval-secs "$receiver_interval" > "$run/receiver.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  if curl -fsS "http://127.0.0.1:$port/status/healthcheck" >/dev/null 2>&1; then break; fi
  if ! kill -0 "${pids[0]}" 2>/dev/null; then
    echo "demo: the receiver did not start:" >&2; cat "$run/receiver.log" >&2; exit 1
  fi
  sleep 0.1
done

"$bin/kattila-agent" simulate --agents "$agents" --interval "$interval" --faults "$faults" \
  --url "http://127.0.0.1:$port" --state-dir "$run/sim-state" --psk-file "$run/psk" \
  > "$run/simulator.log" 2>&1 &
pids+=($!)

# sitegen needs the database, which the receiver has created by now.
"$bin/sitegen" --watch --db "$run/kattila.db" --out "$run/site" > "$run/sitegen.log" 2>&1 &
pids+=($!)

for _ in $(seq 100); do [ -e "$run/site/current/index.html" ] && break; sleep 0.1; done
if [ ! -e "$run/site/current/index.html" ]; then
  echo "demo: no dashboard after 10 s; sitegen says:" >&2
  tail -5 "$run/sitegen.log" >&2
fi

cat <<MSG

  Kattila demo is running: $agents simulated agents reporting every ${interval}s,
  with faults "$faults" (the schedule is at the top of simulator.log).

  Dashboard:  file://$run/site/current/index.html
  Receiver:   http://127.0.0.1:$port/status/healthcheck
  Logs:       $run/{receiver,sitegen,simulator}.log

MSG
if [ -n "$seconds" ]; then
  echo "  Stopping after $seconds seconds."
  sleep "$seconds"
else
  echo "  Press Ctrl-C to stop."
  wait "${pids[0]}"
fi
