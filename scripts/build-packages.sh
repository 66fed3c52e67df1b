#!/usr/bin/env bash
# Builds Kattila's Debian packages, versioned from the workspace version:
#
#   scripts/build-packages.sh [--out DIR] [--agents "x86_64 aarch64"] [--bin-dir DIR] [--agent-dir DIR]
#
#   target/debian/kattila-agent_VERSION_amd64.deb   static agent (scripts/build-agents.sh)
#   target/debian/kattila-agent_VERSION_arm64.deb
#   target/debian/kattila-server_VERSION_ARCH.deb   kattila-receiver and sitegen, for this machine
#
# By default everything is built here, fully optimised: the receiver,
# sitegen and kattila-gen-docs (man pages and shell completions from the
# programs' clap definitions) with `cargo build --release`, the agents with
# scripts/build-agents.sh. That takes a while (docs/benchmarks.md).
#
#   --agents LIST    agent architectures to package (default: x86_64 aarch64)
#   --bin-dir DIR    take kattila-receiver, sitegen and kattila-gen-docs from
#                    DIR instead of building them (they are stripped when
#                    packaged); the test suite passes its own build
#   --agent-dir DIR  take kattila-agent-ARCH from DIR instead of building
#                    them (the test suite passes target/dist-quick)
#   --out DIR        where the .deb files go (default: target/debian)
#
# Needs dpkg-dev (dpkg-shlibdeps computes the server's library
# dependencies) and binutils (strip); no root, no fakeroot: files are owned
# by root in the packages (dpkg-deb --root-owner-group). The packaging files
# are in packaging/ (systemd units, nginx example) and packaging/debian/
# (maintainer scripts, settings files, copyright, lintian overrides).
# tests/packages.rs checks the result and installs it into a scratch root.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

out="$root/target/debian" bin_dir="" agent_dir="" arches="x86_64 aarch64"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$(realpath -m "$2"); shift 2 ;;
    --bin-dir) bin_dir=$(realpath "$2"); shift 2 ;;
    --agent-dir) agent_dir=$(realpath "$2"); shift 2 ;;
    --agents) arches="$2"; shift 2 ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "build-packages: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done

fail() { echo "build-packages: $*" >&2; exit 1; }
for tool in dpkg-deb:dpkg dpkg-shlibdeps:dpkg-dev strip:binutils gzip:gzip; do
  command -v "${tool%%:*}" >/dev/null || fail "${tool%%:*} is missing (apt-get install ${tool##*:})"
done

# The workspace version, as Debian spells it: a pre-release's "-" becomes
# "~" (0.2.0-rc.1 → 0.2.0~rc.1), which sorts before the release.
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
[ -n "$version" ] || fail "no version in [workspace.package] of Cargo.toml"
deb_version=${version/-/\~}
maintainer=${DEBEMAIL:+${DEBFULLNAME:-Kattila maintainers} <$DEBEMAIL>}
if [ -z "$maintainer" ]; then
  maintainer=$(sed -n '/^\[workspace.metadata.deb\]/,/^\[/s/^maintainer = "\(.*\)"/\1/p' Cargo.toml)
fi
[ -n "$maintainer" ] || fail "no maintainer in [workspace.metadata.deb] of Cargo.toml"
# Reproducible packages: file times and the changelog date are the last
# commit's, unless SOURCE_DATE_EPOCH says otherwise.
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH
server_arch=$(dpkg --print-architecture)

if [ -z "$bin_dir" ]; then
  echo "build-packages: building kattila-receiver, sitegen and kattila-gen-docs (release)" >&2
  cargo build --locked --release --features gen-docs \
    --bin kattila-receiver --bin sitegen --bin kattila-gen-docs
  bin_dir="$root/target/release"
fi
for b in kattila-receiver sitegen kattila-gen-docs; do
  [ -x "$bin_dir/$b" ] || fail "$bin_dir/$b is missing"
done
if [ -z "$agent_dir" ]; then
  # shellcheck disable=SC2086 # one word per architecture
  scripts/build-agents.sh $arches
  agent_dir="$root/target/dist"
fi
for arch in $arches; do
  [ -x "$agent_dir/kattila-agent-$arch" ] || fail "$agent_dir/kattila-agent-$arch is missing"
done

umask 022
work=$(mktemp -d "${TMPDIR:-/tmp}/kattila-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$out" "$work/debian"
# dpkg-shlibdeps wants to run in a source tree: an empty debian/control will do.
: > "$work/debian/control"

# The Debian changelog (/usr/share/doc/PKG/changelog.gz): one entry for this
# version, its items taken from CHANGELOG.md (the version's section, or
# Unreleased before the release).
debian_changelog() {
  local pkg=$1 section
  section=$(awk -v v="$version" '
    /^## \[/ { if (found) exit; if (index($0, "## [" v "]") == 1 || $0 ~ /^## \[Unreleased\]/) found = 1; next }
    found' CHANGELOG.md)
  [ -n "$section" ] || fail "CHANGELOG.md has no section for $version (nor Unreleased)"
  {
    echo "$pkg ($deb_version) unstable; urgency=medium"
    echo
    # "### Added" → "  [ Added ]", "- item" → "  * item", continuation
    # lines indented under their item, blank lines only between groups.
    printf '%s\n' "$section" | awk '
      /^### / { sub(/^### /, ""); if (n) out[++n] = ""; out[++n] = "  [ " $0 " ]"; next }
      /^- / { sub(/^- /, ""); out[++n] = "  * " $0; next }
      /^[ \t]+[^ \t]/ { sub(/^[ \t]+/, ""); out[++n] = "    " $0; next }
      /^$/ { next }
      { out[++n] = "  " $0 }
      END { for (i = 1; i <= n; i++) print out[i] }'
    echo
    echo " -- $maintainer  $(date -u -R -d "@$SOURCE_DATE_EPOCH")"
  } | gzip -9n > "$2"
}

# A unit as shipped: the binaries are in /usr/bin, not in /usr/local/bin
# where a manual installation puts them.
install_unit() {
  local dest
  dest="$2/lib/systemd/system/$(basename "$1")"
  install -D -m 644 "$1" "$dest"
  sed -i 's#/usr/local/bin/#/usr/bin/#g' "$dest"
  ! grep -q '^Exec.*/usr/local' "$dest" || fail "$dest still runs a program from /usr/local"
}

# Man pages (compressed) and completions for PROGRAMS into the tree at $1.
install_docs() {
  local tree=$1
  shift
  "$bin_dir/kattila-gen-docs" "$tree/usr" "$@"
  gzip -9n "$tree"/usr/share/man/man*/*
}

install_common() {
  local pkg=$1 tree=$2
  install -D -m 644 packaging/debian/copyright "$tree/usr/share/doc/$pkg/copyright"
  debian_changelog "$pkg" "$tree/usr/share/doc/$pkg/changelog.gz"
  if [ -f "packaging/debian/$pkg.lintian-overrides" ]; then
    install -D -m 644 "packaging/debian/$pkg.lintian-overrides" "$tree/usr/share/lintian/overrides/$pkg"
  fi
  mkdir -p "$tree/DEBIAN"
  for script in postinst prerm postrm; do
    install -m 755 "packaging/debian/$pkg.$script" "$tree/DEBIAN/$script"
  done
}

# DEBIAN/control, conffiles and md5sums, then the .deb.
finish() {
  local pkg=$1 arch=$2 tree=$3 depends=$4 description=$5
  (cd "$tree" && find etc -type f -printf '/%p\n' 2>/dev/null | sort) > "$tree/DEBIAN/conffiles"
  [ -s "$tree/DEBIAN/conffiles" ] || rm "$tree/DEBIAN/conffiles"
  # dpkg checks conffiles itself; md5sums covers everything else.
  (cd "$tree" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' \
    | sort -z | xargs -0 md5sum) > "$tree/DEBIAN/md5sums"
  {
    echo "Package: $pkg"
    echo "Version: $deb_version"
    echo "Architecture: $arch"
    echo "Maintainer: $maintainer"
    echo "Installed-Size: $(du -s -k --exclude=DEBIAN "$tree" | cut -f1)"
    [ -z "$depends" ] || echo "Depends: $depends"
    [ "$pkg" != kattila-server ] || echo "Suggests: nginx | httpd"
    echo "Section: net"
    echo "Priority: optional"
    printf '%s\n' "$description"
  } > "$tree/DEBIAN/control"
  local deb="$out/${pkg}_${deb_version}_$arch.deb"
  dpkg-deb --root-owner-group -Zxz --build "$tree" "$deb" >/dev/null
  echo "build-packages: ${deb#"$root"/} ($(stat -c %s "$deb") bytes)" >&2
}

intro="Description: WireGuard mesh fleet monitor"
about=" Kattila monitors fleets of Linux nodes joined by WireGuard meshes, VPN
 overlays and physical networks: an agent on every node reports its
 interfaces, routes and WireGuard peers, signed with a fleet key, to a
 receiver that stores them in SQLite, and sitegen publishes the fleet as a
 static HTML dashboard."

for arch in $arches; do
  case "$arch" in
    x86_64) deb_arch=amd64 ;;
    aarch64) deb_arch=arm64 ;;
    *) fail "unknown agent architecture $arch (x86_64 or aarch64)" ;;
  esac
  pkg=kattila-agent tree="$work/debian/kattila-agent-$deb_arch"
  install -D -m 755 "$agent_dir/kattila-agent-$arch" "$tree/usr/bin/kattila-agent"
  install_unit packaging/systemd/kattila-agent.service "$tree"
  install -D -m 600 packaging/debian/agent.env "$tree/etc/kattila/agent.env"
  install_docs "$tree" kattila-agent
  install_common "$pkg" "$tree"
  # The agent is static: no dependencies.
  finish "$pkg" "$deb_arch" "$tree" "" "$intro - node agent
$about
 .
 This package holds the agent, one static binary that also relays the
 reports of other agents of its mesh that cannot reach the receiver. Its
 service runs as an unprivileged user with the CAP_NET_ADMIN capability only."
done

pkg=kattila-server tree="$work/debian/kattila-server"
for b in kattila-receiver sitegen; do
  install -D -m 755 "$bin_dir/$b" "$tree/usr/bin/$b"
  strip --strip-unneeded --remove-section=.comment --remove-section=.note "$tree/usr/bin/$b"
done
for unit in kattila-receiver.service sitegen.service sitegen-once.service sitegen.timer; do
  install_unit "packaging/systemd/$unit" "$tree"
done
install -D -m 600 packaging/debian/receiver.env "$tree/etc/kattila/receiver.env"
install -D -m 600 packaging/debian/sitegen.env "$tree/etc/kattila/sitegen.env"
install -D -m 644 packaging/nginx/kattila.conf \
  "$tree/usr/share/doc/kattila-server/examples/nginx-kattila.conf"
install_docs "$tree" kattila-receiver sitegen
install_common "$pkg" "$tree"
shlibs=$(cd "$work" && dpkg-shlibdeps -O -edebian/kattila-server/usr/bin/kattila-receiver \
  -edebian/kattila-server/usr/bin/sitegen) || fail "dpkg-shlibdeps failed"
depends=$(printf '%s\n' "$shlibs" | sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || fail "dpkg-shlibdeps found no library dependencies"
finish "$pkg" "$server_arch" "$tree" "$depends" "$intro - receiver and dashboard
$about
 .
 This package holds kattila-receiver, which verifies the agents' reports and
 commits them to its database, and sitegen, which turns the database into
 the dashboard (HTML and JSON) for any web server; with their systemd units
 and an example nginx server block."
