// Accounts in the browser: signup, confirmation, login, language, logout,
// password reset, and how the console is served.

import assert from 'node:assert/strict';
import { PASSWORD, assertClean, base, mailTo, signupApi, test, waitFor, watchedPage } from './lib.mjs';

test('sign up in Japanese, confirm the address, stay logged in across a reload, switch to English, log out', async (browser) => {
  const context = await browser.newContext({ locale: 'ja-JP' });
  const page = await watchedPage(context);
  await page.goto(`${base}/signup`);
  await page.getByRole('heading', { name: '会社を登録する' }).waitFor();
  await assertClean(page, 'signup (ja)');
  const email = `owner-${Date.now()}@console.example.com`;
  await page.getByLabel('会社名').fill('テスト株式会社');
  await page.getByLabel('メールアドレス').fill(email);
  await page.getByLabel('パスワード').fill(PASSWORD);
  await page.getByRole('button', { name: '新規登録' }).click();
  await page.getByRole('heading', { name: 'ダッシュボード' }).waitFor();
  await page.getByText(`${email} に確認用のリンクを送りました`, { exact: false }).waitFor();
  await page.getByTestId('licence').filter({ hasText: '0 / 100' }).waitFor();
  await page.getByTestId('calendar-month').waitFor();
  await assertClean(page, 'dashboard (ja)');

  // The refresh token is a cookie the page cannot read.
  const cookies = await context.cookies();
  const refresh = cookies.find((c) => c.name === 'mamori_refresh');
  assert.ok(refresh, 'the refresh cookie is set');
  assert.equal(refresh.httpOnly, true);
  assert.equal(refresh.sameSite, 'Strict');
  assert.equal(refresh.path, '/api/v1/auth');
  assert.equal(await page.evaluate(() => document.cookie), '', 'JavaScript sees no cookie');

  // The verification mail links to the console's page.
  const mail = await waitFor('the verification mail', () => mailTo(email));
  const link = mail.match(/https?:\/\/\S+\/verify\?token=mmv_[A-Za-z0-9_-]{43}/)?.[0];
  assert.ok(link, `a /verify link in: ${mail}`);
  await page.goto(link);
  await page.getByTestId('verified').waitFor();
  await assertClean(page, 'verify (ja)');

  // A reload keeps the session (the cookie is traded for an access token).
  await page.goto(`${base}/devices`);
  await page.getByRole('heading', { name: '端末' }).waitFor();
  await page.reload();
  await page.getByRole('heading', { name: '端末' }).waitFor();
  await page.getByTestId('me').filter({ hasText: email }).waitFor();
  await assertClean(page, 'devices (ja)');

  // English, remembered.
  await page.getByText('English', { exact: true }).click();
  await page.getByRole('heading', { name: 'Devices' }).waitFor();
  await page.getByRole('link', { name: 'Alarms' }).click();
  await page.getByRole('heading', { name: 'Alarms' }).waitFor();
  await page.getByText('No alarms.').waitFor();
  await assertClean(page, 'alarms (en)');
  await page.reload();
  await page.getByRole('heading', { name: 'Alarms' }).waitFor();

  // Logging out ends the session: a deep link asks to log in again, and
  // leads back there after.
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.getByRole('heading', { name: 'Log in to Mamori' }).waitFor();
  await page.goto(`${base}/devices`);
  await page.waitForURL(/\/login\?next=%2Fdevices/);
  await page.getByLabel('E-mail address').fill(email);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('heading', { name: 'Devices' }).waitFor();
  assert.ok(page.url().endsWith('/devices'), page.url());
  await assertClean(page, 'after login (en)');
  await context.close();
});

test('a wrong password is refused with the API message, and the browser prefers English elsewhere', async (browser) => {
  const context = await browser.newContext({ locale: 'en-US' });
  const page = await watchedPage(context);
  await page.goto(`${base}/login`);
  await page.getByRole('heading', { name: 'Log in to Mamori' }).waitFor();
  await page.getByLabel('E-mail address').fill('nobody@console.example.com');
  await page.getByLabel('Password').fill('not the password at all');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('alert').filter({ hasText: 'e-mail address or password is wrong' }).waitFor();
  page.problems.length = 0; // the 401 of the refused login is expected
  await assertClean(page, 'login (en)');
  await context.close();
});

test('the console is served with its security headers, and deep links get the app', async () => {
  const index = await fetch(`${base}/devices/some/deep/link`);
  assert.equal(index.status, 200);
  assert.match(await index.text(), /<div id="root">/);
  assert.equal(index.headers.get('cache-control'), 'no-cache');
  const csp = index.headers.get('content-security-policy') ?? '';
  assert.match(csp, /script-src 'self'/);
  assert.doesNotMatch(csp, /script-src[^;]*unsafe-inline/);
  assert.match(csp, /frame-ancestors 'none'/);
  assert.equal(index.headers.get('x-content-type-options'), 'nosniff');
  const html = await (await fetch(`${base}/`)).text();
  const asset = html.match(/\/assets\/[^"]+\.js/)?.[0];
  assert.ok(asset, html);
  const js = await fetch(`${base}${asset}`);
  assert.equal(js.status, 200);
  assert.match(js.headers.get('cache-control') ?? '', /immutable/);
  assert.doesNotMatch(html, /<script>(?!<\/script>)/, 'no inline script');
  // The API keeps answering JSON, a missing endpoint too.
  const missing = await fetch(`${base}/api/v1/no-such-thing`);
  assert.equal(missing.status, 404);
  assert.equal((await missing.json()).error.code, 'not_found');
});

/** A new account signed up through the API: { email, access }. */
test('a forgotten password is reset from the mailed link; a refused one is shown at its field', async (browser) => {
  const { email } = await signupApi();
  const context = await browser.newContext({ locale: 'en-US' });
  const page = await watchedPage(context);
  await page.goto(`${base}/login`);
  await page.getByRole('link', { name: 'Forgot your password?' }).click();
  await page.getByRole('heading', { name: 'Reset your password' }).waitFor();
  await page.getByLabel('E-mail address').fill(email);
  await page.getByRole('button', { name: 'Send a reset link' }).click();
  await page.getByTestId('reset-sent').waitFor();
  await assertClean(page, 'forgot password (en)');
  const mail = await waitFor('the reset mail', () => {
    const m = mailTo(email);
    return m && m.includes('mmp_') ? m : null;
  });
  const link = mail.match(/https?:\/\/\S+\/reset-password\?token=mmp_[A-Za-z0-9_-]{43}/)?.[0];
  assert.ok(link, `a /reset-password link in: ${mail}`);
  await page.goto(link);
  await page.getByRole('heading', { name: 'Choose a new password' }).waitFor();
  await page.getByLabel('New password').fill('short');
  await page.getByRole('button', { name: 'Set the new password' }).click();
  // The API's message, next to the field it names.
  const field = page.getByLabel('New password');
  await page.getByText('must be at least 12 characters (got 5)').waitFor();
  const described = (await field.getAttribute('aria-describedby')) ?? '';
  const notes = await Promise.all(
    described.split(/\s+/).filter(Boolean).map((id) => page.locator(`[id="${id}"]`).innerText()),
  );
  assert.ok(notes.some((n) => n.includes('must be at least 12 characters')), `the field describes its error: ${notes}`);
  page.problems.length = 0; // the 422 is expected
  await field.fill('a fresh and long passphrase');
  await page.getByRole('button', { name: 'Set the new password' }).click();
  await page.getByTestId('reset-done').waitFor();
  await assertClean(page, 'reset password (en)');
  await page.getByRole('link', { name: 'Log in' }).click();
  await page.getByLabel('E-mail address').fill(email);
  await page.getByLabel('Password').fill('a fresh and long passphrase');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('heading', { name: 'Dashboard' }).waitFor();
  await context.close();
});

