// A device's page: its security status as the agent last reported it
// (sent through ingest like an agent's, with exact values), rated by
// colour, in English and Japanese; an older report gives way to a newer
// one; a report older than a day still shows; a device with none says so.

import assert from 'node:assert/strict';
import { PASSWORD, api, assertClean, base, login, signupApi, test, waitFor, watchedPage } from './lib.mjs';
import { enrollDevice, securityStatusEvent, sendEvents } from './ingest.mjs';

const HOUR = 3600_000;

/** A security item's badge: its text (as written, before the badge's
 * upper-casing) and its level. */
async function item(page, name) {
  const badge = page.getByTestId(`security-${name}`);
  return { text: (await badge.textContent()).trim(), level: await badge.getAttribute('data-level') };
}

/** The time as the page writes it (English, UTC), spaces normalised. */
function shown(date) {
  const s = new Intl.DateTimeFormat('en', { dateStyle: 'medium', timeStyle: 'short', timeZone: 'UTC' }).format(date);
  return s.replace(/\s/g, ' ');
}

test('device security: the latest status with pending and security updates, old signatures and no firewall; an older one; none', async (browser) => {
  const admin = await signupApi('tenant', 'Security Status KK');
  const atRisk = await enrollDevice(admin.enrollment, 'sec-at-risk');
  const quiet = await enrollDevice(admin.enrollment, 'sec-quiet');
  const silent = await enrollDevice(admin.enrollment, 'sec-silent');
  const now = Date.now();
  const fine = {
    patch_level: 'Debian GNU/Linux 13 (trixie), Linux 6.12.48',
    antivirus_product: 'ClamAV',
    antivirus_enabled: true,
    antivirus_signature_version: 'daily 27790',
    antivirus_up_to_date: true,
    firewall_active: true,
    firewall: 'ufw',
    disk_encrypted: true,
    disk_encryption: 'LUKS (dm-crypt) on /',
  };
  const latest = new Date(now - HOUR);
  // The at-risk PC was fine three days ago; an hour ago it was not.
  await sendEvents(atRisk, [
    securityStatusEvent(new Date(now - 72 * HOUR), fine),
    securityStatusEvent(latest, {
      ...fine,
      pending_updates: 3,
      pending_security_updates: 1,
      antivirus_signature_version: 'daily 27780',
      antivirus_signature_age_days: 10,
      antivirus_up_to_date: false,
      firewall_active: false,
      firewall: '',
    }),
  ]);
  // The quiet PC last reported (all fine) three days ago: beyond the
  // operation log's default day, within the card's month.
  const threeDays = new Date(now - 72 * HOUR);
  await sendEvents(quiet, [securityStatusEvent(threeDays, { ...fine, antivirus_signature_age_days: 1 })]);
  // Stored (the writer is asynchronous): both of the at-risk PC's, the quiet one's.
  const from = new Date(now - 7 * 24 * HOUR).toISOString();
  const stored = async (device, n) => {
    const r = await api('GET', `/api/v1/events?device=${device.id}&kind=security_status&from=${from}`, admin.access);
    return r.body.events?.length === n;
  };
  await waitFor('the statuses stored', async () => (await stored(atRisk, 2)) && (await stored(quiet, 1)));

  const context = await browser.newContext({ locale: 'en-US', timezoneId: 'UTC' });
  const page = await watchedPage(context);
  await login(page, admin.email);

  await page.goto(`${base}/devices/${atRisk.id}`);
  await page.getByTestId('device-title').filter({ hasText: 'sec-at-risk' }).waitFor();
  await page.getByTestId('security-updates').waitFor();
  assert.equal((await page.getByTestId('security-reported').textContent()).replace(/\s/g, ' '), `Reported ${shown(latest)}`);
  assert.deepEqual(await item(page, 'updates'), { text: '3 pending (1 security)', level: 'bad' });
  assert.deepEqual(await item(page, 'antivirus'), { text: 'Out of date', level: 'warn' });
  assert.equal(await page.getByTestId('security-antivirus-product').textContent(), 'ClamAV');
  assert.equal(await page.getByTestId('security-signatures').textContent(), 'Signatures 10 days old (daily 27780)');
  assert.deepEqual(await item(page, 'firewall'), { text: 'Inactive', level: 'bad' });
  assert.equal(await page.getByTestId('security-firewall-name').count(), 0, 'no firewall named');
  assert.deepEqual(await item(page, 'disk'), { text: 'Encrypted', level: 'ok' });
  assert.equal(await page.getByTestId('security-disk-how').textContent(), 'LUKS (dm-crypt) on /');
  assert.equal(await page.getByTestId('security-patch-level').textContent(), fine.patch_level);
  await assertClean(page, 'device security (en)');

  // All fine three days ago: proto3 JSON leaves the zero counts out.
  await page.goto(`${base}/devices/${quiet.id}`);
  await page.getByTestId('device-title').filter({ hasText: 'sec-quiet' }).waitFor();
  await page.getByTestId('security-updates').waitFor();
  assert.equal((await page.getByTestId('security-reported').textContent()).replace(/\s/g, ' '), `Reported ${shown(threeDays)}`);
  assert.deepEqual(await item(page, 'updates'), { text: 'None pending', level: 'ok' });
  assert.deepEqual(await item(page, 'antivirus'), { text: 'Up to date', level: 'ok' });
  assert.equal(await page.getByTestId('security-signatures').textContent(), 'Signatures 1 day old (daily 27790)');
  assert.deepEqual(await item(page, 'firewall'), { text: 'Active', level: 'ok' });
  assert.equal(await page.getByTestId('security-firewall-name').textContent(), 'ufw');
  await assertClean(page, 'device security, all fine (en)');

  // Nothing reported: a dimmed line, no ratings.
  await page.goto(`${base}/devices/${silent.id}`);
  await page.getByTestId('device-title').filter({ hasText: 'sec-silent' }).waitFor();
  await page.getByTestId('security-none').filter({ hasText: 'No security status reported in the last 30 days.' }).waitFor();
  assert.equal(await page.getByTestId('security-updates').count(), 0);
  assert.equal(await page.getByTestId('security-reported').count(), 0);
  await assertClean(page, 'device without a security status (en)');
  await context.close();

  // In Japanese.
  const ja = await browser.newContext({ locale: 'ja-JP', timezoneId: 'Asia/Tokyo' });
  const jaPage = await watchedPage(ja);
  await jaPage.goto(`${base}/login`);
  await jaPage.getByLabel('メールアドレス').fill(admin.email);
  await jaPage.getByLabel('パスワード').fill(PASSWORD);
  await jaPage.getByRole('button', { name: 'ログイン' }).click();
  await jaPage.getByRole('heading', { name: 'ダッシュボード' }).waitFor();
  await jaPage.goto(`${base}/devices/${atRisk.id}`);
  await jaPage.getByTestId('security-updates').waitFor();
  assert.deepEqual(await item(jaPage, 'updates'), { text: '未適用 3 件 (うちセキュリティ更新 1 件)', level: 'bad' });
  assert.deepEqual(await item(jaPage, 'antivirus'), { text: '定義ファイルが古い', level: 'warn' });
  assert.equal(await jaPage.getByTestId('security-signatures').textContent(), '定義ファイルは 10 日前に更新 (daily 27780)');
  assert.deepEqual(await item(jaPage, 'firewall'), { text: '無効', level: 'bad' });
  assert.deepEqual(await item(jaPage, 'disk'), { text: '暗号化済み', level: 'ok' });
  await assertClean(jaPage, 'device security (ja)');
  await jaPage.goto(`${base}/devices/${silent.id}`);
  await jaPage.getByTestId('security-none').filter({ hasText: '直近 30 日間にセキュリティ状態の報告はありません。' }).waitFor();
  await assertClean(jaPage, 'device without a security status (ja)');
  await ja.close();
});
