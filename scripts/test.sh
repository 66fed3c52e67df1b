#!/usr/bin/env bash
# The README's test command: every test of the workspace (all of them, even
# after a failure), then a closing summary of the tests that could not run
# on this machine and why.
#
#   scripts/test.sh [cargo test options…]     e.g. scripts/test.sh --locked
#
# A test that needs something this machine lacks (root, a Debian package, a
# Rust target) passes without doing anything and prints
# "SKIPPED: <test>: <reason>"; this script repeats those lines at the end so
# they cannot scroll by unseen. With KATTILA_REQUIRE_ALL_TESTS=1 (as .ci/run
# sets it) a skip fails its test instead.
set -euo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp "${TMPDIR:-/tmp}/kattila-test.XXXXXX")
trap 'rm -f "$log"' EXIT

status=0
cargo test --workspace --all-features --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?

skipped=$(grep -a '^SKIPPED: ' "$log" | sort -u || true)
echo
if [ -n "$skipped" ]; then
  echo "$skipped"
  echo "tests skipped: $(printf '%s\n' "$skipped" | wc -l) (they passed without running; see the reasons above)"
else
  echo "tests skipped: 0"
fi
exit "$status"
