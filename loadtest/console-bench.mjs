// The console's figures (loadtest/console.sh runs this against a real
// `mamori all`): the JavaScript of the first route, gzipped, from the
// built index.html; the first paint and the time to a usable dashboard
// on loopback in a cold browser; and scrolling the operation log through
// 10,000 events (frame times while the virtualised list scrolls and loads
// pages on the keyset cursor, and how many rows the DOM holds).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import zlib from 'node:zlib';
import { PASSWORD, base, executablePath } from '../console/tests/lib.mjs';
import { seedCompany } from '../console/tests/demo.mjs';

const consoleDir = new URL('../console/', import.meta.url).pathname;
const { chromium } = createRequire(path.join(consoleDir, 'package.json'))('playwright-core');
const EVENTS = Number(process.env.MAMORI_BENCH_EVENTS ?? 10000);
const COLD_RUNS = Number(process.env.MAMORI_BENCH_RUNS ?? 10);

const kb = (n) => `${(n / 1024).toFixed(1)} KB`;
const ms = (n) => `${n.toFixed(0)} ms`;
function quantile(xs, q) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

// 1. What the first route loads before it can draw: index.html's entry
// script and the chunks it preloads (lazy pages and the chart are not).
const dist = path.join(consoleDir, 'dist');
const html = fs.readFileSync(path.join(dist, 'index.html'), 'utf8');
const initial = [...html.matchAll(/<(?:script[^>]*\bsrc|link[^>]*rel="modulepreload"[^>]*\bhref)="\/?([^"]+\.js)"/g)].map((m) => m[1]);
const css = [...html.matchAll(/<link[^>]*rel="stylesheet"[^>]*\bhref="\/?([^"]+\.css)"/g)].map((m) => m[1]);
const gz = (f) => zlib.gzipSync(fs.readFileSync(path.join(dist, f)), { level: 9 }).length;
assert.ok(initial.length > 0, 'no scripts found in dist/index.html');
const all = fs.readdirSync(path.join(dist, 'assets')).filter((f) => f.endsWith('.js'));
const chart = all.filter((f) => f.startsWith('MonthChart'));
console.log('== console bundle (gzip -9) ==');
for (const f of initial) console.log(`  ${f.padEnd(40)} ${kb(gz(f))}`);
const initialJs = initial.reduce((n, f) => n + gz(f), 0);
console.log(`initial JavaScript of the first route   ${kb(initialJs)} (${initial.length} files)`);
console.log(`initial CSS                              ${kb(css.reduce((n, f) => n + gz(f), 0))}`);
console.log(`the chart (ECharts), loaded after paint  ${kb(chart.reduce((n, f) => n + gz(path.join('assets', f)), 0))}`);
console.log(`every other lazy chunk                   ${kb(all.filter((f) => !initial.includes(`assets/${f}`) && !chart.includes(f)).reduce((n, f) => n + gz(path.join('assets', f)), 0))}`);

// 2. A company with EVENTS events in the last day (all in the log's
// default range).
const company = await seedCompany({ events: EVENTS, pcs: 50, days: 1, log: (m) => console.error(m) });
const browser = await chromium.launch({ executablePath, args: ['--headless', '--no-sandbox', '--disable-gpu'] });

console.log(`== cold loads on loopback (${COLD_RUNS} runs, a fresh browser context each) ==`);
const fcp = [];
const loginReady = [];
const dashboardReady = [];
for (let i = 0; i < COLD_RUNS; i++) {
  const context = await browser.newContext({ locale: 'ja-JP', viewport: { width: 1366, height: 860 } });
  const page = await context.newPage();
  const started = Date.now();
  await page.goto(`${base}/login`);
  await page.getByRole('button', { name: 'ログイン' }).waitFor();
  loginReady.push(Date.now() - started);
  fcp.push(await page.evaluate(() => performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? NaN));
  await page.getByLabel('メールアドレス').fill(company.email);
  await page.getByLabel('パスワード').fill(PASSWORD);
  const clicked = Date.now();
  await page.getByRole('button', { name: 'ログイン' }).click();
  // Usable: the figures and the month's calendar are drawn.
  await page.getByTestId('calendar-month').waitFor();
  await page.locator('[data-testid="open-alarms"]').filter({ hasNotText: '…' }).waitFor();
  dashboardReady.push(Date.now() - clicked);
  await context.close();
}
console.log(`first contentful paint (login page)      p50 ${ms(quantile(fcp, 0.5))}  max ${ms(Math.max(...fcp))}`);
console.log(`login form usable after navigation       p50 ${ms(quantile(loginReady, 0.5))}  max ${ms(Math.max(...loginReady))}`);
console.log(`dashboard drawn after "log in"           p50 ${ms(quantile(dashboardReady, 0.5))}  max ${ms(Math.max(...dashboardReady))}`);

// 3. The operation log scrolled to its 10,000th event.
const context = await browser.newContext({ locale: 'ja-JP', viewport: { width: 1366, height: 860 } });
const page = await context.newPage();
await page.goto(`${base}/login`);
await page.getByLabel('メールアドレス').fill(company.email);
await page.getByLabel('パスワード').fill(PASSWORD);
await page.getByRole('button', { name: 'ログイン' }).click();
await page.getByTestId('calendar-month').waitFor();
await page.goto(`${base}/events`);
await page.getByTestId('events-scroll').waitFor();
const result = await page.evaluate(async (target) => {
  const box = document.querySelector('[data-testid="events-scroll"]');
  const count = () => Number(document.querySelector('[data-testid="event-count"]')?.textContent?.match(/[\d,]+/)?.[0]?.replace(/,/g, '') ?? 0);
  const frames = [];
  let last = performance.now();
  let running = true;
  const tick = (t) => {
    frames.push(t - last);
    last = t;
    if (running) requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
  const started = performance.now();
  let maxRows = 0;
  // Scroll as a user flinging the wheel: 600 px per frame until the list
  // holds `target` events and the end is reached.
  while (performance.now() - started < 120000) {
    box.scrollTop += 600;
    await new Promise((r) => requestAnimationFrame(r));
    maxRows = Math.max(maxRows, box.querySelectorAll('[data-index]').length);
    if (count() >= target && box.scrollTop + box.clientHeight >= box.scrollHeight - 2) break;
  }
  running = false;
  return { frames: frames.slice(1), seconds: (performance.now() - started) / 1000, loaded: count(), maxRows };
}, EVENTS);
const f = result.frames;
console.log(`== scrolling the operation log (${result.loaded} events loaded, 200 per page) ==`);
console.log(`scrolled to the end in                   ${result.seconds.toFixed(1)} s (${f.length} frames)`);
console.log(
  `frame time                               p50 ${f.length ? quantile(f, 0.5).toFixed(1) : '-'} ms  p95 ${quantile(f, 0.95).toFixed(1)} ms  p99 ${quantile(f, 0.99).toFixed(1)} ms  max ${Math.max(...f).toFixed(1)} ms`,
);
console.log(`frames over 50 ms                        ${f.filter((x) => x > 50).length}`);
console.log(`rows in the DOM at most                  ${result.maxRows}`);
await browser.close();
