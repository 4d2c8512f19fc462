// Helpers of the console's browser tests: the servers under test, mail,
// pages that record what should never happen on them, and the registry
// of tests the runner (e2e.mjs) goes through.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

export const base = process.env.MAMORI_CONSOLE_URL;
export const mailDir = process.env.MAMORI_MAIL_DIR;
export const executablePath = process.env.MAMORI_CHROMIUM ?? '/usr/bin/chromium';
assert.ok(base && mailDir, 'run through tests/run.sh');

export const PASSWORD = 'a long passphrase for tests';

/** The newest mail to `to`, decoded enough to read a link. */
export function mailTo(to) {
  if (!fs.existsSync(mailDir)) return null;
  const mails = fs
    .readdirSync(mailDir)
    .map((f) => path.join(mailDir, f))
    .sort((a, b) => fs.statSync(a).mtimeMs - fs.statSync(b).mtimeMs)
    .map((f) => fs.readFileSync(f, 'utf8').replace(/=\r?\n/g, '').replace(/=3D/g, '='))
    .filter((m) => m.includes(to));
  return mails.at(-1) ?? null;
}

export async function waitFor(what, f, ms = 15000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A page that records what should never happen on it. */
export async function watchedPage(context) {
  const page = await context.newPage();
  const problems = [];
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 401/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.problems = problems;
  return page;
}

export async function assertClean(page, where) {
  const missing = await page.evaluate(() => window.__mamoriMissingKeys ?? []);
  assert.deepEqual(missing, [], `${where}: untranslated keys`);
  // Text that looks like a key (`nav.devices`) was not translated.
  // (Identifiers the page shows as code, such as audit actions, are data.)
  const body = await page.evaluate(() => {
    const codes = [...document.querySelectorAll('code, pre')];
    const shown = codes.map((c) => c.style.display);
    codes.forEach((c) => (c.style.display = 'none'));
    const text = document.body.innerText;
    codes.forEach((c, i) => (c.style.display = shown[i]));
    return text;
  });
  const raw = body.match(/\b(app|nav|auth|dashboard|alarms|devices|category|role|notFound|enrollment|groups|policy|events|kind|users|webhooks|settings|audit|msp|team|templates|trace)\.[a-zA-Z_]+\b/);
  assert.equal(raw, null, `${where}: a raw key on the page: ${raw?.[0]}`);
  assert.deepEqual(page.problems, [], `${where}: browser problems`);
}

export const tests = [];
export const test = (name, f) => tests.push({ name, f });
export async function signupApi(kind = 'tenant', company = 'API KK', email = `${kind}-${Date.now()}-${Math.random().toString(36).slice(2)}@console.example.com`) {
  const r = await fetch(`${base}/api/v1/signup`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email, password: PASSWORD, company, kind }),
  });
  const text = await r.text();
  assert.equal(r.status, 201, text);
  const v = JSON.parse(text);
  return { email, access: v.access_token, tenant: v.tenant_id, enrollment: v.enrollment_token };
}

/** A call of the REST API as `access` (JSON in and out), for an MSP user
 * on `tenant`. */
export async function api(method, path, access, body, tenant) {
  const r = await fetch(`${base}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${access}`,
      ...(body ? { 'content-type': 'application/json' } : {}),
      ...(tenant ? { 'x-mamori-tenant': tenant } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

/** Confirms an address with the code in its verification mail. */
export async function verifyByMail(email) {
  const mail = await waitFor('the verification mail', () => mailTo(email));
  const token = mail.match(/mmv_[A-Za-z0-9_-]{43}/)[0];
  const r = await fetch(`${base}/api/v1/auth/verify`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ token }),
  });
  assert.equal(r.status, 200);
}

/** Logs in through the login page (English) and waits for the first page
 * (an MSP user's is the tenants overview). */
export async function login(page, email, first = 'Dashboard') {
  await page.goto(`${base}/login`);
  await page.getByLabel('E-mail address').fill(email);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('heading', { name: first }).waitFor();
}
