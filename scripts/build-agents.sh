#!/usr/bin/env bash
# Builds static (musl) release binaries of kattila-agent for the fleet:
#
#   scripts/build-agents.sh [x86_64] [aarch64]     (default: both)
#
# KATTILA_DIST_PROFILE=quick builds unoptimised (but still static and
# stripped) binaries into target/dist-quick/ in a fraction of the time; the
# test suite uses it to check the cross builds run. Release builds are for
# the fleet.
#
# Results: target/dist/kattila-agent-x86_64, target/dist/kattila-agent-aarch64 — single
# static files, no libc needed on the node. Copy one to /usr/local/bin on a
# node, with packaging/systemd/kattila-agent.service.
#
# Needs (Debian): rustup targets x86_64-unknown-linux-musl and
# aarch64-unknown-linux-musl (`rustup target add ...`), musl-tools (x86_64)
# and gcc-aarch64-linux-gnu (aarch64 C compiler and linker).
#
# The agent is built as a small stand-alone package that depends only on
# the agent crate (the workspace's root package also pulls in the receiver
# and sitegen), with the versions pinned by the workspace's Cargo.lock.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

arches=("$@")
[ ${#arches[@]} -eq 0 ] && arches=(x86_64 aarch64)

pkg="$root/target/agent-dist/pkg"
profile=${KATTILA_DIST_PROFILE:-release}
case "$profile" in
  release) dist="$root/target/dist" ;;
  quick) dist="$root/target/dist-quick" ;;
  *) echo "build-agents: KATTILA_DIST_PROFILE must be release or quick" >&2; exit 2 ;;
esac
mkdir -p "$pkg/src" "$dist"
# Two builds at once (the test suite builds both architectures in parallel)
# would rewrite the same package files; the second waits for the first.
exec 9>"$root/target/agent-dist/.build.lock"
flock 9
# What --version prints, as build.rs makes it for the workspace's binaries:
# the workspace version, and the git revision when built from a checkout.
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
if [ "$(git rev-parse --show-toplevel 2>/dev/null)" = "$(pwd -P)" ]; then
  rev=$(git rev-parse --short=12 HEAD 2>/dev/null || true)
  [ -z "$rev" ] || version="$version (git $rev)"
fi
cat > "$pkg/Cargo.toml.tmp" <<TOML
[package]
name = "kattila-agent-dist"
version = "0.0.0"
edition = "2021"
publish = false

[[bin]]
name = "kattila-agent"
path = "src/main.rs"

[dependencies]
kattila-agent = { path = "$root/agent" }

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true

[profile.quick]
inherits = "dev"
debug = false
strip = true

[workspace]
TOML
cat > "$pkg/src/main.rs.tmp" <<RS
fn main() -> std::process::ExitCode {
    kattila_agent::cli::main("$version")
}
RS
cp "$root/Cargo.lock" "$pkg/Cargo.lock.tmp"
# Renamed into place, so an interrupted run never leaves a half-written
# file; left alone when unchanged, so cargo has nothing to relink.
for f in Cargo.toml src/main.rs Cargo.lock; do
  if cmp -s "$pkg/$f.tmp" "$pkg/$f"; then rm "$pkg/$f.tmp"; else mv "$pkg/$f.tmp" "$pkg/$f"; fi
done

for arch in "${arches[@]}"; do
  case "$arch" in
    x86_64)
      target=x86_64-unknown-linux-musl
      export CC_x86_64_unknown_linux_musl=${CC_x86_64_unknown_linux_musl:-musl-gcc}
      ;;
    aarch64)
      target=aarch64-unknown-linux-musl
      export CC_aarch64_unknown_linux_musl=${CC_aarch64_unknown_linux_musl:-aarch64-linux-gnu-gcc}
      export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER:-aarch64-linux-gnu-gcc}
      ;;
    *) echo "build-agents: unknown architecture $arch (x86_64 or aarch64)" >&2; exit 2 ;;
  esac
  if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    echo "build-agents: Rust target $target is missing: rustup target add $target" >&2
    exit 1
  fi
  echo "build-agents: building $target" >&2
  cargo build --profile "$profile" --manifest-path "$pkg/Cargo.toml" \
    --target-dir "$root/target/agent-dist" --target "$target"
  out_dir=$profile
  [ "$profile" = quick ] || out_dir=release
  cp "$root/target/agent-dist/$target/$out_dir/kattila-agent" "$dist/kattila-agent-$arch"
  echo "build-agents: ${dist#"$root"/}/kattila-agent-$arch ($(stat -c %s "$dist/kattila-agent-$arch") bytes)" >&2
done
