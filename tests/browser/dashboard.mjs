// Measures pages of a generated Kattila site in headless Chromium at given
// viewport sizes and colour schemes, and optionally takes screenshots.
// Driven by tests/dashboard_browser.rs and scripts/screenshots.sh.
//
//   node dashboard.mjs CONFIG.json
//
// CONFIG: {"chromium": "/usr/bin/chromium",
//          "clock": 1767225660,              (optional: the browser's time, unix seconds,
//                                             so ages and the staleness warning read as
//                                             they did when the site was built)
//          "viewports": [{"name": "desktop", "width": 1440, "height": 900}, …],
//          "schemes": ["light", "dark"],
//          "sites": [{"label": "10", "url": "http://127.0.0.1:8080/",
//                     "pages": ["index.html", …], "problem_pages": ["map.html", …]}],
//          "screenshots": [{"site", "page", "viewport", "scheme", "file", "full_page"}]}
//
// Prints one JSON document on standard output:
//   {"measures": [{"site", "viewport", "scheme", "page", "width", "scroll_width",
//                  "too_wide": [elements reaching past the viewport outside a scroll area],
//                  "problem": {"count", "visible", "top"} (problem pages only)}],
//    "screenshots": [file, …], "errors": [console errors, failed requests, …]}
// Exit status: 0 when it ran (the Rust test judges the numbers), 2 could not run.

import { chromium } from 'playwright-core';
import { readFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));

// What marks a problem: a cluster or agent node drawn critical or silent on
// a map, a down link or a critical or silent row or heading in a matrix or
// in the list of clusters with problems.
const PROBLEM = [
  'svg.topology .node.critical',
  'svg.topology .node.silent',
  'table.matrix .health-down',
  'table.matrix th.critical',
  'table.matrix tr.critical th',
  'table.matrix tr.silent th',
  'table.problems tr.critical th',
].join(', ');

async function measure(page) {
  return page.evaluate((problemSelector) => {
    const width = window.innerWidth;
    // Elements whose box reaches past the viewport and that are not inside
    // an element that scrolls or clips horizontally: the cause of a page
    // that scrolls sideways, named so a failure says what to fix.
    const clipped = (el) => {
      for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
        const o = getComputedStyle(p).overflowX;
        if (o === 'auto' || o === 'scroll' || o === 'hidden' || o === 'clip') return true;
      }
      return false;
    };
    const tooWide = [];
    for (const el of document.body.querySelectorAll('*')) {
      const r = el.getBoundingClientRect();
      if (r.right > width + 0.5 && r.width > 0 && !clipped(el)) {
        const cls = typeof el.className === 'string' ? el.className : el.getAttribute('class') || '';
        tooWide.push(`${el.tagName.toLowerCase()}${cls ? '.' + cls.trim().split(/\s+/).join('.') : ''} right=${Math.round(r.right)}`);
        if (tooWide.length >= 8) break;
      }
    }
    let problem = null;
    const marks = [...document.querySelectorAll(problemSelector)];
    const shown = marks
      .map((el) => el.getBoundingClientRect())
      .filter((r) => r.width > 0 && r.height > 0);
    problem = {
      count: marks.length,
      visible: shown.length,
      top: shown.length ? Math.round(Math.min(...shown.map((r) => r.top + window.scrollY))) : null,
    };
    return {
      width,
      scroll_width: document.documentElement.scrollWidth,
      too_wide: tooWide,
      problem,
    };
  }, PROBLEM);
}

async function main() {
  const browser = await chromium.launch({
    executablePath: config.chromium,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const out = { measures: [], screenshots: [], errors: [] };
  try {
    for (const vp of config.viewports) {
      for (const scheme of config.schemes) {
        const context = await browser.newContext({
          viewport: { width: vp.width, height: vp.height },
          colorScheme: scheme,
          // A phone is a touch screen with a device scale of one, so the
          // screenshots stay small; layout depends on the CSS width only.
          hasTouch: vp.width < 600,
          isMobile: vp.width < 600,
        });
        if (config.clock) await context.clock.setFixedTime(new Date(config.clock * 1000));
        const page = await context.newPage();
        let current = '';
        page.on('console', (m) => {
          // A failed load is reported below with its address; Chromium's
          // own request for /favicon.ico (the pages name no icon) is none
          // of the site's.
          if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) {
            out.errors.push(`console error on ${current}: ${m.text()}`);
          }
        });
        page.on('pageerror', (e) => out.errors.push(`uncaught exception on ${current}: ${e.message}`));
        page.on('requestfailed', (r) => out.errors.push(`request failed on ${current}: ${r.url()}`));
        page.on('response', (r) => {
          if (r.status() >= 400 && !r.url().endsWith('/favicon.ico')) {
            out.errors.push(`HTTP ${r.status()} for ${r.url()} on ${current}`);
          }
        });
        for (const site of config.sites) {
          const shots = (config.screenshots ?? []).filter(
            (s) => s.site === site.label && s.viewport === vp.name && s.scheme === scheme,
          );
          const pages = [...new Set([...(site.pages ?? []), ...shots.map((s) => s.page)])];
          for (const rel of pages) {
            current = `${site.label}/${rel} (${vp.name}, ${scheme})`;
            // Until the network is quiet: the page's script has asked the
            // site for its newest build and shown what it found.
            await page.goto(new URL(rel, site.url).href, { waitUntil: 'networkidle' });
            if ((site.pages ?? []).includes(rel)) {
              const m = await measure(page);
              if (!(site.problem_pages ?? []).includes(rel)) delete m.problem;
              out.measures.push({ site: site.label, viewport: vp.name, scheme, page: rel, ...m });
            }
            for (const s of shots.filter((s) => s.page === rel)) {
              mkdirSync(dirname(s.file), { recursive: true });
              await page.screenshot({ path: s.file, fullPage: !!s.full_page });
              out.screenshots.push(s.file);
            }
          }
        }
        await context.close();
      }
    }
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(out, null, 1) + '\n');
}

main().catch((e) => {
  process.stderr.write(`dashboard check could not run: ${e.stack || e}\n`);
  process.exitCode = 2;
});
