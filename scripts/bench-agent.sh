#!/usr/bin/env bash
# Agent footprint benchmark: binary size, CPU per collect+sign cycle and
# idle memory, on a network namespace built to look like a busy node:
# 20 interfaces (lo, 9 veth pairs with IPv4+IPv6 addresses, a userspace
# WireGuard device) and 50 WireGuard peers, plus routes.
#
#   sudo scripts/bench-agent.sh [AGENT] [RECEIVER]
#
# AGENT defaults to target/dist/kattila-agent-x86_64 (scripts/build-agents.sh),
# RECEIVER to target/release/kattila-receiver, else target/debug/kattila-receiver.
# Needs root, ip (iproute2), wg (wireguard-tools), wireguard-go, /usr/bin/time.
set -euo pipefail
cd "$(dirname "$0")/.."
agent=$(realpath "${1:-target/dist/kattila-agent-x86_64}")
receiver=${2:-}
if [ -z "$receiver" ]; then
  receiver=target/release/kattila-receiver
  [ -x "$receiver" ] || receiver=target/debug/kattila-receiver
fi
receiver=$(realpath "$receiver")
[ "$(id -u)" = 0 ] || { echo "bench-agent: needs root (network namespaces)" >&2; exit 1; }
for t in ip wg wireguard-go /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "bench-agent: $t is missing" >&2; exit 1; }
done

ns=ktbench$$ wgdev=kwbench$$ tmp=$(mktemp -d) pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -f "/var/run/wireguard/$wgdev.sock"
  rm -rf "$tmp"
}
trap cleanup EXIT
in_ns() { ip netns exec "$ns" "$@"; }

ip netns add "$ns"
ip -n "$ns" link set lo up
for i in $(seq 1 9); do
  ip -n "$ns" link add "v${i}a" type veth peer name "v${i}b"
  ip -n "$ns" addr add "10.200.$i.1/24" dev "v${i}a"
  ip -n "$ns" addr add "fd00:$i::1/64" dev "v${i}a" nodad
  ip -n "$ns" addr add "10.200.$i.2/24" dev "v${i}b"
  ip -n "$ns" link set "v${i}a" up
  ip -n "$ns" link set "v${i}b" up
  ip -n "$ns" route add "172.16.$i.0/24" via "10.200.$i.2"
done
WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 in_ns wireguard-go -f "$wgdev" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -S "/var/run/wireguard/$wgdev.sock" ] && break; sleep 0.1; done
(umask 077; wg genkey > "$tmp/key")
peers=()
for i in $(seq 1 50); do
  peers+=(peer "$(wg genkey | wg pubkey)" allowed-ips "10.201.0.$i/32" endpoint "192.0.2.$i:51820" persistent-keepalive 25)
done
in_ns wg set "$wgdev" private-key "$tmp/key" listen-port 51820 "${peers[@]}"
ip -n "$ns" addr add 10.201.0.254/24 dev "$wgdev"
ip -n "$ns" link set "$wgdev" up

echo "== binary: $agent"
echo "size: $(stat -c %s "$agent") bytes"
echo
echo "== CPU per collect+sign cycle (--bench-cycles 2000)"
/usr/bin/time -f "%U s user, %S s system, %M kB max RSS" ip netns exec "$ns" "$agent" --bench-cycles 2000
if [ -n "${BENCH_STRACE:-}" ]; then strace -f -c -o "$tmp/strace" ip netns exec "$ns" "$agent" --bench-cycles 200; sort -k4 -n -r "$tmp/strace" | head -15; fi
echo
echo "== one-shot --sysinfo (/usr/bin/time -v)"
/usr/bin/time -v ip netns exec "$ns" "$agent" --sysinfo 2> "$tmp/time" > "$tmp/sysinfo.json"
grep -E "Maximum resident|Elapsed|User time|System time" "$tmp/time"
echo "sysinfo: $(wc -c < "$tmp/sysinfo.json") bytes of JSON"
echo
echo "== daemon, 30 cycles at 1 s against a local receiver"
KATTILA_PSK=bench-key ip netns exec "$ns" "$receiver" --listen 127.0.0.1:5086 --db "$tmp/kattila.db" > "$tmp/receiver.log" 2>&1 &
pids+=($!)
sleep 1
KATTILA_PSK=bench-key KATTILA_ENV_FILE=/dev/null ip netns exec "$ns" "$agent" --manager-url http://127.0.0.1:5086 \
  --listen 127.0.0.1:5087 --interval 1 --state-dir "$tmp/state" > "$tmp/agent.log" 2>&1 &
apid=$!
pids+=($apid)
sleep 3
read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$apid/stat")
sleep 30
read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$apid/stat")
grep -E "VmRSS|VmHWM" "/proc/$apid/status"
echo "daemon CPU over 30 s: $(( (u1 + s1 - u0 - s0) * 10 )) ms (user+system, 10 ms ticks)"
reports=$(in_ns curl -s http://127.0.0.1:5087/status/healthcheck || true)
echo "health: $reports"
