// The tenant's structure and who may change it: the group tree in the
// browser, and an auditor who is offered nothing it may not do; the file
// trace's page before there is anything to trace (where to start, a
// refused start named, nothing found).

import assert from 'node:assert/strict';
import { PASSWORD, api, assertClean, base, login, mailTo, signupApi, test, verifyByMail, waitFor, watchedPage } from './lib.mjs';

const XSS = '<img src=x onerror=window.__xss=1>';

test('groups: a tree is built, renamed and moved; a group with a sub-group is kept and says why; markup in a name is text', async (browser) => {
  const admin = await signupApi('tenant', 'Groups KK');
  const context = await browser.newContext({ locale: 'en-US' });
  const page = await watchedPage(context);
  await login(page, admin.email);
  await page.goto(`${base}/groups`);
  await page.getByRole('heading', { name: 'Groups' }).waitFor();
  const add = async (name, parent) => {
    await page.getByLabel('New group').fill(name);
    if (parent) {
      await page.getByRole('textbox', { name: 'Under' }).first().click();
      await page.getByRole('option', { name: parent, exact: true }).click();
    }
    await page.getByLabel('New group').focus();
    await page.getByRole('button', { name: 'Add the group' }).click();
    await page.getByTestId('group-row').filter({ hasText: name }).first().waitFor();
  };
  await add('Tokyo');
  await add('Sales', 'Tokyo');
  await add(XSS);
  assert.equal(await page.evaluate(() => window.__xss), undefined);
  assert.equal(await page.locator('img[src="x"]').count(), 0);
  await page.getByTestId('groups').getByText(XSS, { exact: true }).waitFor();

  // Tokyo has Sales under it: deleting it is refused with the API's reason.
  const tokyo = page.getByTestId('group-row').filter({ hasText: /^Tokyo/ }).first();
  await tokyo.getByRole('button', { name: 'Delete' }).click();
  await page.getByRole('alert').filter({ hasText: '1 subgroup(s); move them out first' }).waitFor();
  page.problems.length = 0; // the 409 is expected

  // Rename Sales and move it to the top: Tokyo can go then.
  const sales = page.getByTestId('group-row').filter({ hasText: /^Sales/ }).first();
  await sales.getByRole('button', { name: 'Rename or move' }).click();
  await page.getByLabel(/^Name/).fill('Sales & Marketing');
  const edit = page.locator('form').filter({ has: page.getByLabel(/^Name/) });
  await edit.getByRole('button', { name: 'Save' }).click();
  await page.getByTestId('groups').getByText('Sales & Marketing').waitFor();
  const groups = (await api('GET', '/api/v1/groups', admin.access)).body;
  const renamed = groups.find((g) => g.name === 'Sales & Marketing');
  const tokyoId = groups.find((g) => g.name === 'Tokyo').id;
  assert.equal(renamed.parent_id, tokyoId, 'still under Tokyo until moved');
  // Move it to the top level.
  await page.getByTestId('group-row').filter({ hasText: /^Sales & Marketing/ }).first().getByRole('button', { name: 'Rename or move' }).click();
  await edit.getByRole('textbox', { name: 'Under' }).click();
  await page.getByRole('option', { name: 'Top level', exact: true }).click();
  await edit.getByRole('button', { name: 'Save' }).click();
  await waitFor('Sales at the top', async () => {
    const g = (await api('GET', '/api/v1/groups', admin.access)).body.find((x) => x.name === 'Sales & Marketing');
    return g.parent_id == null;
  });
  await page.reload();
  await page.getByTestId('group-row').filter({ hasText: /^Tokyo/ }).first().getByRole('button', { name: 'Delete' }).click();
  await waitFor('Tokyo deleted', async () => !(await api('GET', '/api/v1/groups', admin.access)).body.some((g) => g.name === 'Tokyo'));
  await assertClean(page, 'groups (en)');
  await context.close();
});

test('an auditor reads every page and is offered no control it may not use', async (browser) => {
  const admin = await signupApi('tenant', 'Audited KK');
  await verifyByMail(admin.email);
  const email = `auditor-${Date.now()}@console.example.com`;
  const inv = await api('POST', '/api/v1/invitations', admin.access, { email, role: 'auditor' });
  assert.equal(inv.status, 201, JSON.stringify(inv.body));
  const mail = await waitFor('the invitation', () => mailTo(email));
  const link = mail.match(/https?:\/\/\S+\/accept-invitation\?token=mmi_[A-Za-z0-9_-]{43}/)?.[0];
  assert.ok(link, `an /accept-invitation link in: ${mail}`);
  const context = await browser.newContext({ locale: 'ja-JP' });
  const page = await watchedPage(context);
  await page.goto(link);
  await page.getByLabel('パスワード').fill(PASSWORD);
  await page.getByRole('button', { name: 'パスワードを決めて参加する' }).click();
  await page.getByRole('heading', { name: 'ダッシュボード' }).waitFor();

  const checks = [
    ['/alarms', 'アラーム', ['確認済みにする', '選択したアラームを確認済みにする']],
    ['/groups', '部署・拠点', ['グループを追加', '名前の変更・移動', '削除']],
    ['/enrollment', '登録トークン', ['トークンを作成', '無効化']],
    ['/policies', 'ポリシー', ['新しいバージョンとして保存', 'アプリを追加', 'この版に戻す']],
    ['/devices', '端末', []],
    ['/events', '操作ログ', []],
    ['/users', 'ユーザー', ['招待を送る', '取り消す']],
    ['/webhooks', 'Webhook', ['Webhook を追加', 'テスト送信', '削除']],
    ['/settings', '設定', ['保存', '委託コードを作成']],
    ['/audit', '監査ログ', []],
  ];
  for (const [path, heading, forbidden] of checks) {
    await page.goto(`${base}${path}`);
    await page.getByRole('heading', { name: heading, exact: true }).first().waitFor();
    await page.waitForLoadState('networkidle');
    for (const name of forbidden) {
      assert.equal(await page.getByRole('button', { name, exact: true }).count(), 0, `${path}: no "${name}" for an auditor`);
    }
    await assertClean(page, `${path} as auditor (ja)`);
  }
  // The policy editor is shown read-only.
  await page.goto(`${base}/policies`);
  await page.getByTestId('section-banned_apps').waitFor();
  const switches = page.getByRole('switch');
  for (let i = 0; i < (await switches.count()); i++) {
    assert.equal(await switches.nth(i).isDisabled(), true, 'section switches are read-only');
  }
  await context.close();
});

test('settings, users and webhooks: time zone and retention saved, an invitation sent and withdrawn, a webhook tested with a signed delivery', async (browser) => {
  const http = await import('node:http');
  const crypto = await import('node:crypto');
  const received = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      received.push({ headers: req.headers, body: Buffer.concat(chunks) });
      res.writeHead(200).end('ok');
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const hookUrl = `http://127.0.0.1:${server.address().port}/hook`;
  const admin = await signupApi('tenant', 'Settings KK');
  await verifyByMail(admin.email);
  const context = await browser.newContext({ locale: 'en-US' });
  const page = await watchedPage(context);
  try {
    await login(page, admin.email);

    await page.goto(`${base}/settings`);
    await page.getByText('0 of 100 devices').waitFor();
    await page.getByLabel('Keep operation logs for (days)').fill('30');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByText('must be 90 (three months) to 2557 (seven years)').waitFor();
    page.problems.length = 0; // the 422 is expected
    await page.getByLabel('Keep operation logs for (days)').fill('400');
    await page.getByRole('textbox', { name: 'Time zone' }).click();
    await page.getByRole('textbox', { name: 'Time zone' }).fill('Europe/Berl');
    await page.getByRole('option', { name: 'Europe/Berlin' }).click();
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByTestId('settings-saved').waitFor();
    const t = (await api('GET', '/api/v1/tenant', admin.access)).body;
    assert.equal(t.retention_days, 400);
    assert.equal(t.time_zone, 'Europe/Berlin');
    await page.goto(`${base}/`);
    assert.equal(await page.getByTestId('calendar-zone').inputValue(), 'Europe/Berlin', 'the calendar follows the setting');
    await assertClean(page, 'settings (en)');

    await page.goto(`${base}/users`);
    const invitee = `invitee-${Date.now()}@console.example.com`;
    await page.getByLabel('Invite by e-mail').fill(invitee);
    await page.getByRole('button', { name: 'Send the invitation' }).click();
    await page.getByTestId('invited').waitFor();
    await page.getByTestId('invitations').getByText(invitee).waitFor();
    await waitFor('the invitation mail', () => mailTo(invitee));
    await page.getByTestId('invitations').getByRole('button', { name: 'Withdraw' }).click();
    await page.getByText('None.').waitFor();
    await assertClean(page, 'users (en)');

    await page.goto(`${base}/webhooks`);
    await page.getByLabel('Name').fill('Ops channel');
    await page.getByLabel('URL').fill(hookUrl);
    await page.getByRole('button', { name: 'Add the webhook' }).click();
    const secret = (await page.getByTestId('webhook-secret').innerText()).trim();
    await page.getByRole('button', { name: 'Done' }).click();
    await page.getByRole('button', { name: 'Send a test' }).click();
    await page.getByTestId('webhook-test-result').filter({ hasText: 'Delivered (HTTP 200)' }).waitFor();
    assert.equal(received.length, 1);
    const { headers, body } = received[0];
    const key = Buffer.from(secret.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
    const mac = crypto.createHmac('sha256', key).update(`${headers['x-mamori-timestamp']}.`).update(body).digest('hex');
    assert.equal(headers['x-mamori-signature'], `sha256=${mac}`, 'the delivery is signed with the secret shown once');
    assert.equal(JSON.parse(body.toString()).test, true);
    await assertClean(page, 'webhooks (en)');

    await page.goto(`${base}/audit`);
    await page.getByTestId('audit').getByText('webhook.test').waitFor();
    await page.getByTestId('audit').getByText('tenant.update').first().waitFor();
    await assertClean(page, 'audit (en)');
  } finally {
    server.close();
  }
  await context.close();
});

test('every page in English as an administrator, and the policy editor with every section open in both languages, has no untranslated key', async (browser) => {
  const admin = await signupApi('tenant', 'English KK');
  const context = await browser.newContext({ locale: 'en-US' });
  const page = await watchedPage(context);
  await login(page, admin.email);
  await assertClean(page, 'dashboard (en)');
  for (const [path, heading] of [
    ['/alarms', 'Alarms'],
    ['/events', 'Operation log'],
    ['/devices', 'Devices'],
    ['/groups', 'Groups'],
    ['/enrollment', 'Enrollment tokens'],
    ['/users', 'Users'],
    ['/webhooks', 'Webhooks'],
    ['/settings', 'Settings'],
    ['/audit', 'Audit log'],
    ['/no-such-page', 'Page not found'],
  ]) {
    await page.goto(`${base}${path}`);
    await page.getByRole('heading', { name: heading, exact: true }).first().waitFor();
    await page.waitForLoadState('networkidle');
    await assertClean(page, `${path} (en)`);
  }
  // The policy editor with every section set at this level: each one's
  // fields and hints are translated.
  await page.goto(`${base}/policies`);
  await page.getByTestId('section-banned_apps').waitFor();
  const setHere = page.getByText('Set at this level', { exact: true });
  const sections = await setHere.count();
  assert.ok(sections >= 7, `every section has its switch (${sections})`);
  for (let i = 0; i < sections; i++) await setHere.nth(i).click();
  await page.getByRole('button', { name: 'Add an app' }).click();
  await assertClean(page, 'policies, every section (en)');
  await page.getByText('日本語', { exact: true }).click();
  await page.getByRole('heading', { name: 'ポリシー' }).waitFor();
  await assertClean(page, 'policies, every section (ja)');
  await context.close();
});

test('file trace: where to start, a refused start names its field, content nobody has finds nothing', async (browser) => {
  const admin = await signupApi('tenant', 'Trace KK');
  const context = await browser.newContext({ locale: 'en-US' });
  const page = await watchedPage(context);
  await login(page, admin.email);
  await page.getByRole('link', { name: 'File trace' }).click();
  await page.getByRole('heading', { name: 'File trace' }).waitFor();
  await page.getByText('Open a trace from a confidential-folder alarm').waitFor();
  await assertClean(page, 'file trace, no start (en)');

  // Not a hash: the API's refusal, naming the field.
  const hash = page.getByLabel('SHA-256 (64 hex digits)');
  await hash.fill('xyz');
  await page.getByRole('button', { name: 'Trace', exact: true }).click();
  await page.getByRole('alert').filter({ hasText: 'sha256: must be 64 hex digits' }).waitFor();
  // A device without its path.
  await page.goto(`${base}/files/trace?device=0190f0e8-7b6c-7000-8000-000000000001`);
  await page.getByRole('alert').filter({ hasText: 'path: is required with device' }).waitFor();
  page.problems.length = 0; // the 422s are expected

  // Content no PC of the tenant has.
  await hash.fill('ab'.repeat(32));
  await page.getByRole('button', { name: 'Trace', exact: true }).click();
  await page.getByTestId('trace-none').waitFor();
  assert.ok(page.url().endsWith(`/files/trace?sha256=${'ab'.repeat(32)}`), page.url());
  await page.getByText(`From the content with SHA-256 ${'ab'.repeat(6)}…`).waitFor();
  await assertClean(page, 'file trace, nothing found (en)');
});
