// An MSP's day in the console: create customers' tenants, switch between
// them, write a policy template, apply it to both and watch one drift;
// give a technician one tenant; take a tenant over with its
// administrator's handover code and release it again.

import assert from 'node:assert/strict';
import { PASSWORD, api, assertClean, base, login, mailTo, signupApi, test, verifyByMail, waitFor, watchedPage } from './lib.mjs';

/** The tenants table's row of `name`. */
const row = (page, name) => page.getByTestId('tenants').locator(`tr[data-tenant="${name}"]`);

async function createTenant(page, name) {
  await page.getByLabel('Customer’s company name').fill(name);
  await page.getByRole('button', { name: 'Create a tenant' }).click();
  const token = await page.getByTestId('tenant-token').innerText();
  assert.match(token, /^mmt_/, 'the first enrollment token is shown once');
  await page.getByRole('button', { name: 'Done' }).click();
  await row(page, name).waitFor();
}

/** Chooses a tenant in the header's switcher. */
async function switchTo(page, name) {
  await page.getByRole('textbox', { name: 'Tenant' }).first().click();
  await page.getByRole('option', { name, exact: true }).click();
}

test('MSP: signed up in the browser, two tenants created and switched between, a template applied to both, drift seen, a technician limited to one, a tenant handed over and released', async (browser) => {
  // Signed up in the browser as an MSP: it lands on its (empty) tenants
  // overview, told to confirm its address.
  const context = await browser.newContext({ locale: 'en-US' });
  const page = await watchedPage(context);
  const email = `msp-${Date.now()}@console.example.com`;
  await page.goto(`${base}/signup`);
  await page.getByLabel('Company name').fill('Mamori MSP KK');
  await page.getByLabel('E-mail address').fill(email);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByText('IT service provider (MSP)').click();
  await page.getByRole('button', { name: 'Sign up' }).click();
  await page.getByRole('heading', { name: 'Your tenants' }).waitFor();
  await page.getByText(`We sent a confirmation link to ${email}`).waitFor();
  await page.getByText('No tenants yet').waitFor();
  await verifyByMail(email);
  // A reload refreshes the session: the new access token knows the address
  // is confirmed. The API calls of the test log in on their own.
  await page.reload();
  await page.getByRole('heading', { name: 'Your tenants' }).waitFor();
  const r = await fetch(`${base}/api/v1/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email, password: PASSWORD }),
  });
  assert.equal(r.status, 200);
  const msp = { email, access: (await r.json()).access_token };
  await createTenant(page, 'Alpha KK');
  await createTenant(page, 'Beta KK');
  assert.equal(await row(page, 'Alpha KK').getByTestId('last-violation').innerText(), 'None yet');
  await assertClean(page, 'tenants overview');

  // Open one from the overview, then switch with the header's switcher:
  // each page shows the chosen tenant's data only.
  await row(page, 'Alpha KK').getByRole('button', { name: 'Open' }).click();
  await page.getByRole('heading', { name: 'Dashboard' }).waitFor();
  await page.getByRole('link', { name: 'Settings' }).click();
  await waitFor('Alpha’s settings', async () => (await page.getByLabel('Company name').inputValue()) === 'Alpha KK');
  await switchTo(page, 'Beta KK');
  await waitFor('Beta’s settings', async () => (await page.getByLabel('Company name').inputValue()) === 'Beta KK');
  const tenants = (await api('GET', '/api/v1/tenants', msp.access)).body;
  const alpha = tenants.find((x) => x.name === 'Alpha KK').id;
  const beta = tenants.find((x) => x.name === 'Beta KK').id;

  // A template with a banned app, applied to both tenants.
  await page.getByRole('link', { name: 'Policy templates' }).click();
  await page.getByRole('heading', { name: 'Policy templates' }).waitFor();
  await page.getByRole('button', { name: 'New template' }).click();
  await page.getByLabel('Template name').fill('Baseline');
  const banned = page.getByTestId('section-banned_apps');
  await banned.getByText('Set at this level').click();
  await banned.getByRole('button', { name: 'Add an app' }).click();
  await banned.getByLabel('File name').fill('winny');
  await page.getByRole('button', { name: 'Save as a new version' }).click();
  await page.getByTestId('template-saved').waitFor();
  await page.getByRole('button', { name: 'Choose all' }).click();
  await page.getByTestId('apply').click();
  await page.getByTestId('applied').waitFor();
  const drift = page.getByTestId('drift');
  const state = (name) => drift.locator(`tr[data-tenant="${name}"] [data-status]`).getAttribute('data-status');
  await waitFor('both in sync', async () => (await state('Alpha KK')) === 'in_sync' && (await state('Beta KK')) === 'in_sync');
  const policy = (await api('GET', '/api/v1/policies/tenant', msp.access, undefined, alpha)).body;
  assert.equal(policy.document.banned_apps[0].name, 'winny', 'the template became Alpha’s tenant policy');
  await assertClean(page, 'templates');

  // Alpha's policy is changed in the tenant; the template gets a version 2:
  // Alpha shows as changed, Beta as on the older version.
  const changed = await api('PUT', '/api/v1/policies/tenant', msp.access, { ...policy.document, mass_print: { pages: 50, window_minutes: 60 } }, alpha);
  assert.equal(changed.status, 200, JSON.stringify(changed.body));
  await banned.getByLabel('File name').fill('winny2');
  await page.getByRole('button', { name: 'Save as a new version' }).click();
  await page.getByTestId('template-saved').waitFor();
  await page.getByTestId('template-version').getByText('Version 2', { exact: false }).waitFor();
  await waitFor('drift shown', async () => (await state('Alpha KK')) === 'modified' && (await state('Beta KK')) === 'outdated');

  // A technician who may act on Alpha only.
  const techEmail = `tech-${Date.now()}@console.example.com`;
  await page.getByRole('link', { name: 'Team' }).click();
  await page.getByLabel('Invite by e-mail').fill(techEmail);
  await page.getByRole('button', { name: 'Send the invitation' }).click();
  await page.getByTestId('invited').waitFor();
  const mail = await waitFor('the invitation', () => mailTo(techEmail));
  const link = mail.match(/https?:\/\/\S+\/accept-invitation\?token=mmi_[A-Za-z0-9_-]{43}/)?.[0];
  assert.ok(link, `an /accept-invitation link in: ${mail}`);
  const techContext = await browser.newContext({ locale: 'en-US' });
  const tech = await watchedPage(techContext);
  await tech.goto(link);
  await tech.getByLabel('Password').fill(PASSWORD);
  await tech.getByRole('button', { name: 'Choose a password and join' }).click();
  await tech.getByRole('heading', { name: 'Your tenants' }).waitFor();
  await tech.getByText('No tenants yet').waitFor();
  await page.reload();
  const techRow = page.getByTestId('users').locator(`tr[data-user="${techEmail}"]`);
  await techRow.getByRole('textbox', { name: 'Tenants they may act on' }).click();
  await page.getByRole('option', { name: 'Alpha KK', exact: true }).click();
  await page.keyboard.press('Escape');
  await techRow.getByRole('button', { name: 'Save' }).click();
  await waitFor('the access list saved', async () => {
    const team = (await api('GET', '/api/v1/org/users', msp.access)).body;
    return team.find((u) => u.email === techEmail)?.tenant_access?.includes(alpha);
  });
  await assertClean(page, 'team');
  await tech.reload();
  await row(tech, 'Alpha KK').waitFor();
  assert.equal(await row(tech, 'Beta KK').count(), 0, 'a technician sees only the tenants on its list');
  assert.equal(await tech.getByRole('button', { name: 'Release' }).count(), 0, 'a technician releases nothing');
  assert.equal(await tech.getByRole('link', { name: 'Team' }).count(), 0);
  assert.equal(await tech.getByRole('link', { name: 'Policy templates' }).count(), 0);
  assert.equal(await tech.getByRole('button', { name: 'Create a tenant' }).count(), 0);
  await assertClean(tech, 'technician’s overview');
  await techContext.close();

  // A company that signed up alone hands itself over to the MSP.
  const solo = await signupApi('tenant', 'Solo KK');
  const soloContext = await browser.newContext({ locale: 'en-US' });
  const soloPage = await watchedPage(soloContext);
  await login(soloPage, solo.email);
  await soloPage.getByRole('link', { name: 'Settings' }).click();
  await soloPage.getByRole('button', { name: 'Create a handover code' }).click();
  const code = await soloPage.getByTestId('handover-code').innerText();
  await assertClean(soloPage, 'settings with a handover code');
  await page.getByRole('link', { name: 'Tenants' }).click();
  await page.getByLabel('Handover code').fill(code);
  await page.getByRole('button', { name: 'Take over a tenant' }).click();
  await page.getByTestId('claimed').getByText('You now run Solo KK.').waitFor();
  await row(page, 'Solo KK').waitFor();
  await soloPage.reload();
  await soloPage.getByText('This tenant is run by an MSP.').waitFor();
  await soloContext.close();
  // Released again after a confirmation: it keeps its own administrator.
  await row(page, 'Solo KK').getByRole('button', { name: 'Release' }).click();
  await page.getByTestId('confirm').click();
  await waitFor('Solo KK released', async () => (await row(page, 'Solo KK').count()) === 0);
  const after = (await api('GET', '/api/v1/tenants', msp.access)).body.map((x) => x.name);
  assert.deepEqual(after.sort(), ['Alpha KK', 'Beta KK']);
  assert.ok(beta);
  await assertClean(page, 'after the release');

  // Every MSP page in Japanese has no untranslated key.
  const ja = await browser.newContext({ locale: 'ja-JP' });
  const jaPage = await watchedPage(ja);
  await jaPage.goto(`${base}/login`);
  await jaPage.getByLabel('メールアドレス').fill(msp.email);
  await jaPage.getByLabel('パスワード').fill(PASSWORD);
  await jaPage.getByRole('button', { name: 'ログイン' }).click();
  await jaPage.getByRole('heading', { name: '管理テナント' }).waitFor();
  await assertClean(jaPage, 'tenants (ja)');
  for (const [path, heading] of [
    ['/msp/team', 'チーム'],
    ['/msp/templates', 'ポリシーテンプレート'],
  ]) {
    await jaPage.goto(`${base}${path}`);
    await jaPage.getByRole('heading', { name: heading }).waitFor();
    await assertClean(jaPage, `${path} (ja)`);
  }
  await ja.close();
  await context.close();
});
