// Screenshots of the console's main pages in Japanese, for the README
// (scripts/screenshots.sh runs this against a real `mamori all`): a
// company with a month of history (tests/demo.mjs), then an MSP that runs
// it and two more tenants, one of which has drifted from a template.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { PASSWORD, api, base, executablePath, signupApi, verifyByMail, waitFor } from './lib.mjs';
import { seedCompany } from './demo.mjs';

const out = process.env.MAMORI_SCREENSHOT_DIR;
assert.ok(out, 'MAMORI_SCREENSHOT_DIR');
fs.mkdirSync(out, { recursive: true });

const company = await seedCompany({ events: 20000, pcs: 24, days: 30 });
console.log('waiting for the alerting service to raise the alarms');
let last = -1;
await waitFor(
  'the alarms to settle',
  async () => {
    const n = (await api('GET', '/api/v1/tenant', company.access)).body.open_alarms;
    const settled = n > 0 && n === last;
    last = n;
    if (!settled) await new Promise((r) => setTimeout(r, 1000));
    return settled;
  },
  120000,
);

const browser = await chromium.launch({ executablePath, args: ['--headless', '--no-sandbox', '--disable-gpu'] });
const context = await browser.newContext({
  locale: 'ja-JP',
  timezoneId: 'Asia/Tokyo',
  viewport: { width: 1366, height: 860 },
});
const page = await context.newPage();

async function shot(name, fullPage = false) {
  // Let lazy chunks, charts and fonts settle.
  await page.waitForLoadState('networkidle');
  await page.waitForTimeout(300);
  await page.screenshot({ path: path.join(out, `${name}.png`), fullPage });
  console.log(`wrote ${name}.png`);
}

async function login(p, email, heading) {
  await p.goto(`${base}/login`);
  await p.getByLabel('メールアドレス').fill(email);
  await p.getByLabel('パスワード').fill(PASSWORD);
  await p.getByRole('button', { name: 'ログイン' }).click();
  await p.getByRole('heading', { name: heading }).waitFor();
}

await login(page, company.email, 'ダッシュボード');
// Most of the month of history is in the previous calendar month.
await page.getByRole('button', { name: '前の月' }).click();
await page.getByTestId('month-chart').locator('canvas').waitFor();
await shot('dashboard', true);

await page.goto(`${base}/alarms`);
await page.getByTestId('alarm-row').first().waitFor();
await shot('alarms');
await page.getByTestId('alarm-row').first().getByRole('link').click();
await page.getByTestId('context-count').waitFor();
await shot('alarm-detail');

await page.goto(`${base}/events`);
await page.getByTestId('events').getByText('tokyo-pc-', { exact: false }).first().waitFor();
await shot('events');

await page.goto(`${base}/devices`);
await page.getByTestId('devices').getByText('tokyo-pc-001').waitFor();
await shot('devices');
await page.getByTestId('devices').getByRole('link', { name: 'tokyo-pc-001' }).click();
await page.getByTestId('origins').waitFor();
await shot('device');

await page.goto(`${base}/policies`);
await page.getByTestId('section-banned_apps').waitFor();
await shot('policies');

// An MSP that runs the company (handed over) and two more customers.
const msp = await signupApi('msp', '株式会社まもりサポート', `tech-${Date.now()}@mamori-support.example.jp`);
await verifyByMail(msp.email);
const handover = await api('POST', '/api/v1/tenant/handover', company.access);
assert.equal(handover.status, 201, JSON.stringify(handover.body));
assert.equal((await api('POST', '/api/v1/tenants/claim', msp.access, { code: handover.body.code })).status, 200);
const tenants = [];
for (const name of ['さくら会計事務所', '青葉建設株式会社']) {
  const r = await api('POST', '/api/v1/tenants', msp.access, { name });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  tenants.push(r.body.id);
}
const template = await api('POST', '/api/v1/org/policy-templates', msp.access, {
  name: '標準セキュリティ',
  document: { banned_apps: [{ name: 'winny', action: 'kill' }], device_control: { classes: { usb_storage: 'read_only' }, exceptions: [] } },
});
assert.equal(template.status, 201, JSON.stringify(template.body));
const applied = await api('POST', `/api/v1/org/policy-templates/${template.body.id}/apply`, msp.access, { tenant_ids: tenants });
assert.equal(applied.status, 200, JSON.stringify(applied.body));
const changed = await api('PUT', '/api/v1/policies/tenant', msp.access, { mass_print: { pages: 50, window_minutes: 60 } }, tenants[1]);
assert.equal(changed.status, 200, JSON.stringify(changed.body));

await context.clearCookies();
await page.evaluate(() => sessionStorage.clear());
await login(page, msp.email, '管理テナント');
await page.getByTestId('tenants').getByText('デモ商事株式会社').waitFor();
await shot('msp-tenants');
await page.goto(`${base}/msp/templates?id=${template.body.id}`);
await page.getByTestId('drift').locator('[data-status="modified"]').waitFor();
await page.getByTestId('drift').scrollIntoViewIfNeeded();
await shot('msp-templates');

await browser.close();
