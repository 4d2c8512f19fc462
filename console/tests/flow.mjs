// The administrator's day with a real agent on this machine: sign up in
// Japanese, confirm, create an enrollment token, install the agent with
// the command the console shows, see the device, ban an app in the policy
// editor (a bad field first), start the app and see it killed, the alarm
// in the list and in today's calendar cell, its ±5 minutes, the log
// search and the CSV export. The agent runs in a UTS namespace of its own
// whose host name is markup, so the device list is also the XSS probe.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PASSWORD, assertClean, base, mailTo, test, waitFor, watchedPage } from './lib.mjs';

const agentBin = process.env.MAMORI_AGENT_BIN;
const XSS = '<img src=x onerror=window.__xss=1>';
const TZ = 'Asia/Tokyo';

/** Runs `mamori-agent` enroll then run, under a host name of markup. */
function startAgent(installCommand, stateDir) {
  const token = installCommand.match(/MAMORI_ENROLLMENT_TOKEN='(mmt_[A-Za-z0-9_-]+)'/)?.[1];
  const server = installCommand.match(/--server '([^']+)'/)?.[1];
  assert.ok(token && server, `a token and a server in: ${installCommand}`);
  assert.ok(agentBin && fs.existsSync(agentBin), `MAMORI_AGENT_BIN (${agentBin}) is the built agent`);
  const script = [
    `printf '%s' "$XSS_NAME" > /proc/sys/kernel/hostname`,
    `"$AGENT" enroll --server "$SERVER" --state-dir "$STATE" --machine-id "console-e2e-$$"`,
    `exec "$AGENT" run --state-dir "$STATE" --collectors process --reconnect-max-s 2`,
  ].join(' && ');
  const child = spawn('unshare', ['--uts', 'sh', '-c', script], {
    env: {
      ...process.env,
      XSS_NAME: XSS,
      AGENT: agentBin,
      SERVER: server,
      STATE: stateDir,
      MAMORI_ENROLLMENT_TOKEN: token,
      RUST_LOG: 'warn',
    },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  return child;
}

/** Starts `winny` (a copy of sleep) until the agent kills it. */
async function winnyIsKilled(dir) {
  const winny = path.join(dir, 'winny');
  fs.copyFileSync('/bin/sleep', winny);
  fs.chmodSync(winny, 0o755);
  const end = Date.now() + 40000;
  while (Date.now() < end) {
    const started = Date.now();
    const r = spawnSync(winny, ['4'], { timeout: 10000 });
    if (r.signal === 'SIGKILL') return Date.now() - started;
  }
  throw new Error('winny was never killed');
}

test('the whole path with a real agent: token, install, device, policy, kill, alarm, calendar, context, search, CSV', async (browser) => {
  const context = await browser.newContext({ locale: 'ja-JP', timezoneId: TZ, acceptDownloads: true });
  const page = await watchedPage(context);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'mamori-flow-'));
  let agent = null;
  try {
    // Sign up in Japanese and confirm the address.
    await page.goto(`${base}/signup`);
    const email = `flow-${Date.now()}@console.example.com`;
    await page.getByLabel('会社名').fill('フロー株式会社');
    await page.getByLabel('メールアドレス').fill(email);
    await page.getByLabel('パスワード').fill(PASSWORD);
    await page.getByRole('button', { name: '新規登録' }).click();
    await page.getByRole('heading', { name: 'ダッシュボード' }).waitFor();
    const mail = await waitFor('the verification mail', () => mailTo(email));
    await page.goto(mail.match(/https?:\/\/\S+\/verify\?token=mmv_[A-Za-z0-9_-]{43}/)[0]);
    await page.getByTestId('verified').waitFor();

    // An enrollment token; the install command is shown once.
    await page.goto(`${base}/enrollment`);
    await page.getByRole('heading', { name: '登録トークン' }).waitFor();
    await page.getByRole('button', { name: 'トークンを作成' }).click();
    const command = await page.getByTestId('install-command').innerText();
    await assertClean(page, 'enrollment (ja)');
    await page.getByRole('button', { name: '完了' }).click();
    // The signup's token and this one, both active.
    await waitFor('two active tokens', async () => (await page.getByTestId('tokens').getByText('有効', { exact: true }).count()) === 2);

    // The agent enrolls with that command's token and server.
    agent = startAgent(command, path.join(work, 'state'));
    await page.goto(`${base}/devices`);
    const row = page.getByTestId('devices').getByText(XSS, { exact: true });
    await waitFor(
      'the device in the list',
      async () => {
        if (await row.count()) return true;
        await page.reload();
        await page.getByRole('heading', { name: '端末' }).waitFor();
        return false;
      },
      30000,
    );
    // Markup in a host name is text.
    assert.equal(await page.evaluate(() => window.__xss), undefined, 'no script ran');
    assert.equal(await page.locator('img[src="x"]').count(), 0, 'no element was made from the name');
    await assertClean(page, 'devices (ja)');

    // Ban winny in the policy editor: a bad glob first, shown at its field.
    await page.goto(`${base}/policies`);
    await page.getByRole('heading', { name: 'ポリシー' }).waitFor();
    const banned = page.getByTestId('section-banned_apps');
    await banned.getByText('このレベルで設定').click();
    await banned.getByRole('button', { name: 'アプリを追加' }).click();
    await banned.getByLabel('照合方法').click();
    await page.getByRole('option', { name: 'パス (glob)' }).click();
    await banned.getByLabel('パス (glob)').fill('/opt/[p2p');
    await page.getByRole('button', { name: '新しいバージョンとして保存' }).click();
    await page.getByTestId('policy-error').waitFor();
    const field = banned.getByLabel('パス (glob)');
    assert.equal(await field.getAttribute('aria-invalid'), 'true', 'the refused field is marked');
    page.problems.length = 0; // the 422 is expected
    await banned.getByLabel('照合方法').click();
    await page.getByRole('option', { name: 'ファイル名' }).click();
    await banned.getByLabel('ファイル名').fill('winny');
    await page.getByRole('button', { name: '新しいバージョンとして保存' }).click();
    await page.getByTestId('policy-saved').waitFor();
    await page.getByTestId('versions').waitFor();
    await assertClean(page, 'policies (ja)');

    // winny starts on this machine and is killed.
    const ms = await winnyIsKilled(work);
    console.log(`    winny killed after ${ms} ms`);

    // The device applies the revision; its page says which level set what.
    await page.goto(`${base}/devices`);
    await page.getByTestId('devices').getByRole('link', { name: XSS }).click();
    await page.getByTestId('device-title').filter({ hasText: XSS }).waitFor();
    await waitFor('the revision applied', async () => {
      const badge = await page.getByTestId('policy-applied').innerText().catch(() => '');
      const m = badge.match(/リビジョン (\d+) のうち (\d+) を適用済み/);
      if (m && m[1] === m[2]) return true;
      await page.reload();
      return false;
    });
    await page.getByTestId('origins').getByText('禁止アプリ').waitFor();
    await page.getByTestId('origins').getByText('テナント全体').waitFor();
    await assertClean(page, 'device (ja)');
    const deviceUrl = page.url();

    // The alarm in the list and in today's calendar cell.
    await page.goto(`${base}/alarms`);
    const alarmRow = page.getByTestId('alarm-row').filter({ hasText: '禁止アプリ' });
    await waitFor(
      'the banned-app alarm',
      async () => {
        if (await alarmRow.count()) return true;
        await page.reload();
        await page.getByRole('heading', { name: 'アラーム' }).waitFor();
        return false;
      },
      30000,
    );
    await assertClean(page, 'alarms (ja)');
    const today = new Intl.DateTimeFormat('en-CA', { timeZone: TZ }).format(new Date());
    await page.goto(`${base}/`);
    await page.getByTestId(`day-${today}`).locator('[data-category="banned_app"]').waitFor();
    await page.getByTestId(`day-${today}`).click();
    await page.getByTestId('day-alarms').waitFor();
    // The month's chart (ECharts, loaded after the page) counts it too.
    const chart = page.getByTestId('month-chart');
    await chart.locator('canvas').waitFor();
    assert.match(await chart.getAttribute('aria-label'), /: [1-9]\d* 件$/);

    // Its ±5 minutes, with winny's start in it.
    await page.goto(`${base}/alarms`);
    await alarmRow.first().getByRole('link').click();
    await page.getByTestId('alarm-title').waitFor();
    await page.getByTestId('context-count').waitFor();
    await page.getByTestId('events').getByText(/winny/).first().waitFor();
    await assertClean(page, 'alarm detail (ja)');

    // The log search, an event's detail, and the CSV export.
    await page.goto(`${base}/events`);
    await page.getByTestId('event-search').fill('winny');
    const hit = page.getByTestId('event-row').filter({ hasText: 'winny' }).first();
    await hit.waitFor();
    await hit.click();
    await page.getByTestId('event-detail').getByText(/winny/).first().waitFor();
    await page.keyboard.press('Escape');
    await assertClean(page, 'events (ja)');
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByTestId('export').click()]);
    const file = path.join(work, 'export.csv');
    await download.saveAs(file);
    const csv = fs.readFileSync(file, 'utf8').trim().split('\n');
    assert.equal(csv[0], 'time,received_at,device_id,hostname,kind,os_user,subject,detail');
    assert.ok(csv.length >= 2, `rows in the export: ${csv.length}`);
    assert.ok(
      csv.slice(1).every((l) => l.includes('winny')),
      'the export has the search filter',
    );
    assert.ok(csv[1].includes(`"${XSS}"`), `the host name, quoted: ${csv[1]}`);
    await page.getByTestId('export-progress').waitFor();

    // Revoked after a confirmation: the device says so.
    await page.goto(deviceUrl);
    await page.getByRole('button', { name: '無効化' }).click();
    await page.getByTestId('confirm').click();
    await page.getByTestId('device-title').waitFor();
    await page.getByText('無効化済み', { exact: true }).first().waitFor();
  } catch (e) {
    // What the page said when it failed, for a run with no screen.
    console.log(`--- the page at ${page.url()}:\n${await page.locator('body').innerText().catch(() => '?')}`);
    if (process.env.MAMORI_SCREENSHOT_DIR) {
      await page.screenshot({ path: path.join(process.env.MAMORI_SCREENSHOT_DIR, 'flow-failure.png'), fullPage: true });
    }
    throw e;
  } finally {
    if (agent) agent.kill('SIGTERM');
    await context.close();
    fs.rmSync(work, { recursive: true, force: true });
  }
});
