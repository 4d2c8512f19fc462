// The console in a real browser (Debian's Chromium through Playwright)
// against a real `mamori all` (tests/run.sh starts it). Each test is a
// person's path through the console; every page is checked for keys left
// untranslated, for errors in the browser's console and for refused
// Content-Security-Policy. The tests live in the files imported below;
// MAMORI_TEST_FILTER runs those whose name contains it.

import { chromium } from 'playwright-core';
import { executablePath, tests } from './lib.mjs';
import './auth.mjs';
import './admin.mjs';
import './device.mjs';
import './flow.mjs';
import './msp.mjs';

const filter = process.env.MAMORI_TEST_FILTER ?? '';
const browser = await chromium.launch({
  executablePath,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
let failed = 0;
const chosen = tests.filter((x) => x.name.includes(filter));
for (const t of chosen) {
  const started = Date.now();
  try {
    await t.f(browser);
    console.log(`PASS ${t.name} (${Date.now() - started} ms)`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${t.name}\n  ${e.stack ?? e}`);
    // What the pages said when it failed, for a run with no screen.
    for (const context of browser.contexts()) {
      for (const page of context.pages()) {
        const text = await page.locator('body').innerText().catch(() => '?');
        console.log(`--- ${page.url()}:\n${text.slice(0, 3000)}`);
      }
    }
  }
  for (const context of browser.contexts()) await context.close();
}
await browser.close();
console.log(`${chosen.length - failed}/${chosen.length} console tests passed`);
process.exit(failed ? 1 : 0);
