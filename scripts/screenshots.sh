#!/usr/bin/env bash
# Screenshots of the dashboard, taken by the browser the tests use: builds
# the test fixture's fleets of 10 and 1,000 agents (with faults: silent
# agents, a silent site at 1,000, relays, stale, down and one-sided links,
# external peers, alarms) with `cargo run --example fixture_site`, and
# photographs the overview, problems, fleet map, the map of a cluster with
# a problem, the matrix and an agent page in headless Chromium
# (tests/browser/dashboard.mjs) at 1,440 × 900 and 390 × 844, light and dark.
#
#   scripts/screenshots.sh [OUT_DIR] [--docs]
#
# Every screenshot goes to OUT_DIR (default target/screenshots); --docs
# also copies the selection shown in README.md and docs/sitegen.md into
# docs/screenshots/. Needs chromium (/usr/bin/chromium) and node/npm.
set -euo pipefail

out="" docs=no
for arg in "$@"; do
  case "$arg" in
    --docs) docs=yes ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    -*) echo "screenshots: unknown option $arg (try --help)" >&2; exit 2 ;;
    *) out="$arg" ;;
  esac
done
cd "$(dirname "$0")/.."
root=$(pwd)
out=$(realpath -m "${out:-${CARGO_TARGET_DIR:-target}/screenshots}")
mkdir -p "$out"
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

for n in 10 1000; do
  cargo run --quiet --locked -p kattila-sitegen --example fixture_site -- "$n" "$out/fleet-$n" >/dev/null
done

# The pages per fleet: the cluster map and agent page are those of the
# first agent that is not up (or has an active alarm).
node --input-type=module - "$out" <<'EOF' > "$out/config.json"
import { readFileSync } from 'node:fs';
const out = process.argv[2];
const viewports = [
  { name: 'desktop', width: 1440, height: 900 },
  { name: 'phone', width: 390, height: 844 },
];
const sites = [];
const screenshots = [];
let clock = 0;
for (const n of ['10', '1000']) {
  const current = `${out}/fleet-${n}/site/current`;
  const doc = JSON.parse(readFileSync(`${current}/api/v1/agents.json`, 'utf8'));
  const agents = doc.agents;
  // The browser's clock: a minute after the build, so pages read as they
  // did then, without the warning that what they show is old.
  clock = doc.generated_at + 60;
  const bad = agents.find((a) => a.status !== 'up') ?? agents.find((a) => a.alarms_active > 0) ?? agents[0];
  const pages = {
    overview: 'index.html', problems: 'problems.html', map: 'map.html',
    cluster: `map/${bad.cluster}.html`, matrix: 'matrix.html', agent: bad.page,
  };
  sites.push({ label: n, url: `file://${current}/`, pages: [] });
  for (const [name, page] of Object.entries(pages))
    for (const vp of viewports)
      for (const scheme of ['light', 'dark'])
        screenshots.push({ site: n, page, viewport: vp.name, scheme,
          file: `${out}/${name}-${n}-${vp.name}-${scheme}.png` });
}
process.stdout.write(JSON.stringify({ chromium: '/usr/bin/chromium', clock, viewports,
  schemes: ['light', 'dark'], sites, screenshots }));
EOF
node tests/browser/dashboard.mjs "$out/config.json" > "$out/report.json"
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  if (r.errors.length) { console.error(r.errors.join("\n")); process.exit(1); }
  console.log(`${r.screenshots.length} screenshots`);
' "$out/report.json"
echo "screenshots: $out"

if [ "$docs" = yes ]; then
  # The selection in the docs: small (under 2 MB together).
  mkdir -p docs/screenshots
  for shot in overview-10-desktop-light overview-10-desktop-dark overview-1000-desktop-light \
              map-1000-desktop-light cluster-1000-desktop-dark matrix-1000-desktop-light \
              overview-1000-phone-light map-1000-phone-dark; do
    cp "$out/$shot.png" "docs/screenshots/$shot.png"
    if command -v optipng >/dev/null; then optipng -quiet -o2 "docs/screenshots/$shot.png"; fi
  done
  du -ch docs/screenshots/*.png | tail -1
fi
