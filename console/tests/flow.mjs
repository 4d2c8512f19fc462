// The administrator's day with a real agent on this machine: sign up in
// Japanese, confirm, create an enrollment token, install the agent with
// the command the console shows, see the device, ban an app in the policy
// editor (a bad field first) and make a folder confidential, start the app
// and see it killed, the alarm in the list and in today's calendar cell,
// its ±5 minutes, the log search and the CSV export; then copy and rename
// a file of the confidential folder, open the alarm and follow the file's
// trace. The agent runs in a UTS namespace of its own whose host name is
// markup, so the device list is also the XSS probe; its file collector
// watches a tmpfs of the test's own.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PASSWORD, api, assertClean, base, mailTo, test, waitFor, watchedPage } from './lib.mjs';

const agentBin = process.env.MAMORI_AGENT_BIN;
const XSS = '<img src=x onerror=window.__xss=1>';
const TZ = 'Asia/Tokyo';

/** Runs `mamori-agent` enroll then run, under a host name of markup,
 * with the file collector on `watchDir`. */
function startAgent(installCommand, stateDir, watchDir) {
  const token = installCommand.match(/MAMORI_ENROLLMENT_TOKEN='(mmt_[A-Za-z0-9_-]+)'/)?.[1];
  const server = installCommand.match(/--server '([^']+)'/)?.[1];
  assert.ok(token && server, `a token and a server in: ${installCommand}`);
  assert.ok(agentBin && fs.existsSync(agentBin), `MAMORI_AGENT_BIN (${agentBin}) is the built agent`);
  const script = [
    `printf '%s' "$XSS_NAME" > /proc/sys/kernel/hostname`,
    `"$AGENT" enroll --server "$SERVER" --state-dir "$STATE" --machine-id "console-e2e-$$"`,
    `exec "$AGENT" run --state-dir "$STATE" --collectors process,files --watch-dir "$WATCH" --reconnect-max-s 2`,
  ].join(' && ');
  const child = spawn('unshare', ['--uts', 'sh', '-c', script], {
    env: {
      ...process.env,
      XSS_NAME: XSS,
      AGENT: agentBin,
      SERVER: server,
      STATE: stateDir,
      WATCH: watchDir,
      MAMORI_ENROLLMENT_TOKEN: token,
      RUST_LOG: 'warn',
    },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  return child;
}

/** Waits (a bounded time) for a child to end. */
function exited(child, ms = 10000) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** The trace page's steps as shown: kind, action label and paths. */
async function traceSteps(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('[data-testid="trace-step"]')].map((r) => ({
      kind: r.dataset.kind,
      text: r.innerText,
      path: r.querySelector('[data-testid="trace-path"]')?.innerText ?? '',
    })),
  );
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

test('the whole path with a real agent: token, install, device, policy, kill, alarm, calendar, context, search, CSV, file trace', async (browser) => {
  const context = await browser.newContext({ locale: 'ja-JP', timezoneId: TZ, acceptDownloads: true });
  const page = await watchedPage(context);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'mamori-flow-'));
  // The file collector's own file system: nothing else writes there.
  const watch = fs.mkdtempSync(path.join(os.tmpdir(), 'mamori-flow-watch-'));
  let mounted = false;
  let agent = null;
  try {
    const mount = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', watch], { encoding: 'utf8' });
    assert.equal(mount.status, 0, `mounting a tmpfs (the tests run as root): ${mount.stderr}`);
    mounted = true;
    const hr = path.join(watch, 'hr');
    const desktop = path.join(watch, 'Desktop');
    fs.mkdirSync(hr);
    fs.mkdirSync(desktop);

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
    // The page restores the session from the refresh cookie as it loads:
    // it is left only once that is answered (see the reloads below).
    await page.waitForLoadState('networkidle');

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
    agent = startAgent(command, path.join(work, 'state'), watch);
    await page.goto(`${base}/devices`);
    // (A page is reloaded only once it has shown: a reload while it is
    // still restoring the session would present a rotated refresh token
    // again, which ends the session.)
    await page.getByRole('heading', { name: '端末' }).waitFor();
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
    // The HR folder is confidential (the editor takes it on leaving the field).
    const folders = page.getByTestId('section-confidential_folders');
    await folders.getByText('このレベルで設定').click();
    const folderField = folders.getByLabel('フォルダ (1 行に 1 つ)');
    await folderField.fill(`${hr}/**`);
    await folderField.blur();
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
    await page.getByTestId('origins').getByText('機密フォルダ', { exact: true }).waitFor();
    await page.getByTestId('origins').getByText('テナント全体').first().waitFor();
    await assertClean(page, 'device (ja)');
    const deviceUrl = page.url();

    // The alarm in the list and in today's calendar cell.
    await page.goto(`${base}/alarms`);
    await page.getByRole('heading', { name: 'アラーム' }).waitFor();
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
    // (Every process of this machine is logged: on a busy one, winny's
    // start may be hundreds of rows down the virtualised list.)
    const scroller = page.getByTestId('events-scroll');
    await waitFor(
      "winny's start in the ±5 minutes",
      async () => {
        if (await page.getByTestId('events').getByText(/winny/).count()) return true;
        await scroller.evaluate((el) => {
          el.scrollTop += el.clientHeight;
        });
        return false;
      },
      60000,
    );
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

    // A file of the HR folder is copied to the desktop and renamed there,
    // by another process than the one that wrote it.
    const original = path.join(hr, '給与.xlsx');
    const copied = path.join(desktop, '給与.xlsx');
    const renamed = path.join(desktop, 'list.xlsx');
    fs.writeFileSync(original, '氏名,支給額\n'.repeat(2000));
    const sh = spawnSync('sh', ['-c', `cp ${original} ${copied} && mv ${copied} ${renamed}`], { encoding: 'utf8' });
    assert.equal(sh.status, 0, `cp and mv: ${sh.stderr}`);

    // The confidential-folder alarm, and the copy and the rename in its
    // file's trace: waited for through the API (the test logs in on its
    // own), so the console is loaded once they are there rather than
    // reloaded until they are.
    const login = await fetch(`${base}/api/v1/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email, password: PASSWORD }),
    });
    assert.equal(login.status, 200);
    const access = (await login.json()).access_token;
    const copyLine = `${original} → ${copied}`;
    const renameLine = `${copied} → ${renamed}`;
    const alarm = await waitFor(
      'the confidential-folder alarm',
      async () => (await api('GET', '/api/v1/alarms?category=confidential_folder', access)).body.alarms?.[0],
      30000,
    );
    assert.match(alarm.file_trace ?? '', /^\/api\/v1\/files\/trace\?event=/);
    await waitFor(
      'the copy and the rename in the trace',
      async () => {
        const r = await api('GET', alarm.file_trace, access);
        const steps = r.status === 200 ? r.body.steps : [];
        const at = (kind, from, to) => steps.some((x) => x.kind === kind && x.subject === from && x.detail?.file?.target_path === to);
        return at('file_copy', original, copied) && at('file_rename', copied, renamed);
      },
      30000,
    );

    // In the console: the alarm, its link to the trace, the trace.
    await page.goto(`${base}/alarms`);
    const folderRow = page.getByTestId('alarm-row').filter({ hasText: '機密フォルダー' });
    await folderRow.first().getByRole('link').click();
    await page.getByTestId('alarm-title').waitFor();
    await assertClean(page, 'confidential-folder alarm (ja)');
    await page.getByRole('link', { name: 'ファイルを追跡', exact: true }).click();
    await page.getByRole('heading', { name: 'ファイル追跡' }).waitFor();
    assert.ok(page.url().endsWith(alarm.file_trace.slice('/api/v1'.length)), page.url());
    await page.getByTestId('trace').waitFor();
    const steps = await traceSteps(page);
    const copy = steps.findIndex((s) => s.kind === 'file_copy' && s.path === copyLine);
    const rename = steps.findIndex((s) => s.kind === 'file_rename' && s.path === renameLine);
    const show = JSON.stringify(steps, null, 1);
    assert.ok(copy >= 0 && rename >= 0, `a copy and a rename: ${show}`);
    assert.ok(copy < rename, `the copy before the rename: ${show}`);
    assert.match(steps[copy].text, /ファイルコピー/);
    assert.match(steps[rename].text, /ファイル名変更/);
    assert.match(steps[copy].text, /\/cp\b/, `the program: ${steps[copy].text}`);
    assert.ok(steps[copy].text.includes(XSS), 'the PC, as text');
    await assertClean(page, 'file trace (ja)');

    // The copy's hash opens the trace of that content: the same copy.
    await page.getByTestId('trace-step').nth(copy).getByTestId('trace-hash').click();
    await page.waitForURL(/\/files\/trace\?sha256=[0-9a-f]{64}$/);
    await waitFor('the copy in the trace by content', async () =>
      (await traceSteps(page)).some((s) => s.kind === 'file_copy' && s.path === copyLine),
    );
    await assertClean(page, 'file trace by content (ja)');

    // A file operation of the operation log opens the trace of its file.
    await page.goto(`${base}/events`);
    // (The rename's subject is the name it had.)
    await page.getByTestId('event-search').fill('給与');
    await page.getByTestId('event-row').filter({ hasText: 'ファイル名変更' }).getByTestId('event-trace').first().click();
    await page.waitForURL(/\/files\/trace\?device=[0-9a-f-]{36}&path=/);
    await waitFor('the copy and the rename from the operation log', async () => {
      const shown = await traceSteps(page);
      return shown.some((s) => s.path === copyLine) && shown.some((s) => s.path === renameLine);
    });
    await assertClean(page, 'file trace from the log (ja)');

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
    if (agent) {
      agent.kill('SIGTERM');
      await exited(agent);
    }
    await context.close();
    fs.rmSync(work, { recursive: true, force: true });
    if (mounted && spawnSync('umount', [watch]).status !== 0) spawnSync('umount', ['-l', watch]);
    fs.rmSync(watch, { recursive: true, force: true });
  }
});
