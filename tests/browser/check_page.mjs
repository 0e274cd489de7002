// Opens the Mini App page in the system's headless Chromium (playwright-core,
// no browser download), waits until it settles, and prints what a person
// would see as one JSON object on stdout.
//
//   node tests/browser/check_page.mjs <url> <outdir> <label> [light|dark] [retry]
//
// <url>     the page, launch data in the fragment as Telegram passes it
// <outdir>  where <outdir>/miniapp-<label>.png goes (created if missing)
// <label>   screenshot name, e.g. `ready`, `error`, `ready-dark`
// light|dark  prefers-color-scheme of the browser (default light)
// retry     once settled, press "Try again" (if shown) and let it settle again;
//           `after_retry` reports the page right after the press (the loading
//           state), everything else the page after the second settle
//
// Environment: CHROMIUM (default /usr/bin/chromium), CHECK_PAGE_TIMEOUT_MS
// (default 30000: how long the page may take to reach a final state).
//
// Only the page's own origin is reachable: every other request (Telegram's
// SDK script) is aborted and listed under `blocked`, so the run is the same
// with or without a network. Exit code 0 whenever a report was printed, even
// if the page ended in its error state or did not settle (`state` tells);
// exit code 2 when the browser could not be driven at all (message on
// stderr).

import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium } from 'playwright-core';

const [url, outdir, label, scheme = 'light', action = ''] = process.argv.slice(2);
if (!url || !outdir || !label || !['light', 'dark'].includes(scheme) || !['', 'retry'].includes(action)) {
  console.error('usage: node check_page.mjs <url> <outdir> <label> [light|dark] [retry]');
  process.exit(64);
}
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const timeout = Number(process.env.CHECK_PAGE_TIMEOUT_MS || 30000);
const origin = new URL(url).origin;

// The machine's network is closed: no GPU, no QUIC, nothing in the
// background that phones home, no first-run UI.
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const TEXT_IDS = [
  'name', 'status', 'error-title', 'error', 'error-detail', 'first-seen', 'messages', 'users-total',
  'users-new', 'users-active', 'updates-handled', 'queue-depth',
];

const profile = mkdtempSync(join(tmpdir(), 'miniapp-chromium-'));
let context;
// A hard stop, in case Chromium hangs somewhere Playwright does not time out.
const watchdog = setTimeout(() => {
  console.error(`check_page: no result within ${timeout + 30000} ms; giving up`);
  cleanup().finally(() => process.exit(2));
}, timeout + 30000);

async function cleanup() {
  try { if (context) await context.close(); } catch { /* already gone */ }
  try { rmSync(profile, { recursive: true, force: true }); } catch { /* best effort */ }
}

try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: ARGS,
    viewport: { width: 390, height: 700 },
    deviceScaleFactor: 1,
    colorScheme: scheme,
    locale: 'en-US',
    timezoneId: 'UTC',
    timeout,
  });
  const page = context.pages()[0] || (await context.newPage());

  const blocked = [];
  await context.route('**/*', (route) => {
    const u = route.request().url();
    if (u.startsWith(origin + '/')) return route.continue();
    blocked.push(u);
    return route.abort('blockedbyclient');
  });

  const api = [];
  const console_ = [];
  const pageErrors = [];
  page.on('response', (r) => {
    if (new URL(r.url()).pathname.startsWith('/api/')) {
      api.push({ url: new URL(r.url()).pathname, status: r.status() });
    }
  });
  page.on('console', (m) => console_.push({ type: m.type(), text: m.text() }));
  page.on('pageerror', (e) => pageErrors.push(String(e && e.message ? e.message : e)));

  const nav = await page.goto(url, { waitUntil: 'domcontentloaded', timeout });
  const settle = async () => {
    try {
      await page.waitForSelector('body[data-state="ready"], body[data-state="error"]', {
        state: 'attached',
        timeout,
      });
      return true;
    } catch {
      return false;
    }
  };
  let settled = await settle();
  // Pressed from inside the page so that what it shows right after the
  // press is read before any answer can arrive.
  let afterRetry = null;
  if (settled && action === 'retry') {
    afterRetry = await page.evaluate(() => {
      const button = document.getElementById('retry');
      const shown = (el) => !!el && getComputedStyle(el).display !== 'none' && el.getClientRects().length > 0;
      if (!shown(button)) return { pressed: false };
      button.click();
      return {
        pressed: true,
        state: document.body.getAttribute('data-state'),
        status: document.getElementById('status').textContent,
        data: shown(document.querySelector('.data')),
        fail: shown(document.getElementById('fail')),
      };
    });
    if (afterRetry.pressed) settled = await settle();
  }

  const seen = await page.evaluate((ids) => {
    const text = {};
    for (const id of ids) {
      const el = document.getElementById(id);
      text[id] = el ? el.textContent : null;
    }
    const visible = (sel) => {
      const el = document.querySelector(sel);
      if (!el) return null;
      const r = el.getBoundingClientRect();
      return getComputedStyle(el).display !== 'none' && r.width > 0 && r.height > 0;
    };
    const css = (sel, prop) => {
      const el = document.querySelector(sel);
      return el ? getComputedStyle(el)[prop] : null;
    };
    return {
      state: document.body.getAttribute('data-state'),
      lang: document.documentElement.lang,
      text,
      visible: {
        name: visible('#name'),
        data: visible('.data'),
        fail: visible('#fail'),
        retry: visible('#retry'),
      },
      style: {
        body_background: css('body', 'backgroundColor'),
        body_color: css('body', 'color'),
        card_background: css('dl', 'backgroundColor'),
        error_color: css('#error', 'color'),
        error_detail_color: css('#error-detail', 'color'),
        button_background: css('#retry', 'backgroundColor'),
      },
      scroll_width: document.documentElement.scrollWidth,
      client_width: document.documentElement.clientWidth,
    };
  }, TEXT_IDS);

  mkdirSync(outdir, { recursive: true });
  const screenshot = resolve(outdir, `miniapp-${label}.png`);
  await page.screenshot({ path: screenshot, fullPage: true });

  const report = {
    settled,
    http_status: nav ? nav.status() : null,
    ...seen,
    after_retry: afterRetry,
    api,
    blocked,
    console: console_,
    page_errors: pageErrors,
    screenshot,
    browser: context.browser() ? context.browser().version() : null,
  };
  process.stdout.write(JSON.stringify(report) + '\n');
  await cleanup();
  clearTimeout(watchdog);
  process.exit(0);
} catch (e) {
  console.error(`check_page: ${e && e.stack ? e.stack : e}`);
  await cleanup();
  clearTimeout(watchdog);
  process.exit(2);
}
