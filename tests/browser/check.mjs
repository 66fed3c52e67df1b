// Opens a generated Kattila site in headless Chromium and checks it the way a
// reader's browser sees it. Driven by the Rust tests in tests/mesh_*.rs.
//
//   node check.mjs CONFIG.json
//
// CONFIG: {"chromium": "/usr/bin/chromium", "artefacts": "DIR",
//          "also": ["api/v1/agents.json", …],   (checked too, relative to each base)
//          "bases": [{"label": "root", "url": "http://127.0.0.1:8080/", "screenshots": true}, …]}
//
// For every base URL it crawls every page and every resource linked from the
// site (a, link, img, script, SVG links), and reports on standard output as
// one JSON document:
//   {"bases": [{"label", "pages": [...], "resources": [...], "external": [...],
//               "errors": [...], "map_nodes": {page: [node titles]},
//               "screenshots": [...]}]}
// An error is: a console error or uncaught exception on a page, a failed or
// >= 400 request, a link that does not resolve, a link that leaves the
// site's directory, a request to anything outside the site, a fragment whose
// target id does not exist, JSON that does not parse, or an SVG map node
// without a <title>. Exit status: 0 no errors, 1 errors, 2 could not run.

import { chromium } from 'playwright-core';
import { readFileSync, existsSync, statSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const SCREENSHOTS = {
  'index.html': 'overview',
  'map.html': 'map',
  'matrix.html': 'matrix',
  'alarms.html': 'alarms',
};

function strip(url) {
  const u = new URL(url);
  u.hash = '';
  u.search = '';
  return u.href;
}

function isPage(url) {
  const path = new URL(url).pathname;
  return path.endsWith('/') || path.endsWith('.html');
}

// The base URL of a site: the directory that holds index.html.
function baseDir(url) {
  const u = new URL(url);
  u.hash = '';
  u.search = '';
  if (!u.pathname.endsWith('/')) u.pathname = u.pathname.replace(/[^/]*$/, '');
  return u.href;
}

async function resourceStatus(context, url) {
  if (url.startsWith('file:')) {
    const path = fileURLToPath(url);
    if (!existsSync(path)) return { ok: false, why: 'file does not exist' };
    if (statSync(path).isDirectory()) return { ok: existsSync(join(path, 'index.html')), why: 'directory without index.html' };
    return { ok: true, body: () => readFileSync(path, 'utf8') };
  }
  const r = await context.request.get(url, { maxRedirects: 5 });
  if (r.status() >= 400) return { ok: false, why: `HTTP ${r.status()}` };
  const text = await r.text();
  return { ok: true, body: () => text, type: r.headers()['content-type'] || '' };
}

async function crawl(browser, base) {
  const root = baseDir(base.url);
  const origin = root.startsWith('file:') ? 'file:' : new URL(root).origin;
  const result = {
    label: base.label,
    url: base.url,
    pages: [],
    resources: [],
    external: [],
    errors: [],
    map_nodes: {},
    screenshots: [],
  };
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  // Nothing outside the site may be loaded: the pages must be self-contained.
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith(root) || url.startsWith('data:')) return route.continue();
    result.errors.push(`request outside the site: ${url} (from ${route.request().frame()?.url() ?? '?'})`);
    return route.abort();
  });
  let current = '';
  const newPage = async () => {
    const p = await context.newPage();
    p.on('console', (msg) => {
      if (msg.type() === 'error') result.errors.push(`console error on ${current}: ${msg.text()}`);
    });
    p.on('pageerror', (err) => result.errors.push(`uncaught exception on ${current}: ${err.message}`));
    p.on('requestfailed', (req) => {
      // The crawler leaving a page cancels what the page's script was still
      // asking for (the freshness check's summary.json): no broken link.
      const text = req.failure()?.errorText;
      if (text === 'net::ERR_ABORTED' && req.resourceType() === 'fetch') return;
      result.errors.push(`request failed on ${current}: ${req.url()} (${text})`);
    });
    p.on('response', (resp) => {
      if (resp.status() >= 400) result.errors.push(`HTTP ${resp.status()} for ${resp.url()} on ${current}`);
    });
    return p;
  };
  let page = await newPage();

  const queue = [base.url, ...(config.also ?? []).map((p) => new URL(p, root).href)];
  const seen = new Set(queue.map(strip));
  const fragments = []; // [page url, id, from]
  const ids = new Map(); // page url -> Set of ids
  let agentShot = false;
  while (queue.length > 0) {
    const url = queue.shift();
    const rel = url.slice(root.length) || 'index.html';
    if (!isPage(url)) {
      const st = await resourceStatus(context, url);
      result.resources.push(rel);
      if (!st.ok) {
        result.errors.push(`broken link target ${rel}: ${st.why}`);
      } else if (/\.(json|netjson)$/.test(url)) {
        try {
          JSON.parse(st.body());
        } catch (e) {
          result.errors.push(`${rel} is not valid JSON: ${e.message}`);
        }
      }
      continue;
    }
    current = rel;
    let response;
    try {
      response = await page.goto(url, { waitUntil: 'load' });
    } catch (e) {
      result.errors.push(`page ${rel} did not load: ${e.message.split('\n')[0]}`);
      // A failed navigation leaves the tab on an error page: start afresh.
      await page.close();
      page = await newPage();
      continue;
    }
    if (response && response.status() >= 400) continue; // already recorded
    result.pages.push(rel);
    const pageKey = strip(page.url());
    const found = await page.evaluate(() => {
      const links = [];
      for (const el of document.querySelectorAll('[href], [src], [*|href]')) {
        for (const attr of ['href', 'src', 'xlink:href']) {
          const v = el.getAttribute(attr);
          if (v !== null && !(el.tagName.toLowerCase() === 'base')) links.push(v);
        }
      }
      const nodes = [...document.querySelectorAll('svg g.node')].map((g) => {
        const t = [...g.children].find((c) => c.tagName.toLowerCase() === 'title');
        return t ? t.textContent.trim() : null;
      });
      const ids = [...document.querySelectorAll('[id]')].map((e) => e.id);
      return { links: [...new Set(links)], nodes, ids, base: document.baseURI };
    });
    ids.set(pageKey, new Set(found.ids));
    if (/(^|\/)map(\.html|\/)/.test(rel)) {
      result.map_nodes[rel] = found.nodes;
      if (found.nodes.length === 0) result.errors.push(`map page ${rel} has no SVG nodes`);
      found.nodes.forEach((t, i) => {
        if (!t) result.errors.push(`map page ${rel}: SVG node ${i} has no <title>`);
      });
    }
    const shotName = SCREENSHOTS[rel] ?? (rel === '' ? 'overview' : null);
    const isAgent = rel.startsWith('agents/') && !agentShot;
    if (base.screenshots && (shotName || isAgent)) {
      const name = `${base.label}-${isAgent ? 'agent' : shotName}.png`;
      mkdirSync(config.artefacts, { recursive: true });
      await page.screenshot({ path: join(config.artefacts, name), fullPage: true });
      result.screenshots.push(name);
      if (isAgent) agentShot = true;
    }
    for (const link of found.links) {
      let target;
      try {
        target = new URL(link, found.base);
      } catch {
        result.errors.push(`unparseable link ${JSON.stringify(link)} on ${rel}`);
        continue;
      }
      if (!['http:', 'https:', 'file:'].includes(target.protocol)) continue; // mailto:, data:
      if (!target.href.startsWith(root)) {
        const sameOrigin = origin === 'file:' ? target.protocol === 'file:' : target.origin === origin;
        if (sameOrigin) result.errors.push(`link ${link} on ${rel} leaves the site (${target.href})`);
        else if (!result.external.includes(target.href)) result.external.push(target.href);
        continue;
      }
      if (target.hash.length > 1) fragments.push([strip(target.href), decodeURIComponent(target.hash.slice(1)), rel]);
      const key = strip(target.href);
      if (!seen.has(key)) {
        seen.add(key);
        queue.push(key);
      }
    }
  }
  for (const [pageUrl, id, from] of fragments) {
    const known = ids.get(pageUrl);
    if (known && !known.has(id)) result.errors.push(`link #${id} on ${from} points to a missing id`);
  }
  await context.close();
  return result;
}

async function main() {
  const browser = await chromium.launch({
    executablePath: config.chromium,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  try {
    const bases = [];
    for (const base of config.bases) bases.push(await crawl(browser, base));
    process.stdout.write(JSON.stringify({ bases }, null, 1) + '\n');
    process.exitCode = bases.some((b) => b.errors.length > 0) ? 1 : 0;
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  process.stderr.write(`browser check could not run: ${e.stack || e}\n`);
  process.exitCode = 2;
});
