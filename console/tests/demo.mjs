// A company with a month of history, for the screenshots and the console
// benchmark: signed up in Japanese through the API, offices and
// departments, a tenant policy, and simulated PCs (the load generator,
// `mamori-loadtest`, enrolling with the company's token over real gRPC)
// that send a month of operation logs, some of which the policy turns
// into alarms.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { PASSWORD, api, base, signupApi, verifyByMail } from './lib.mjs';

const GROUPS = [
  ['本社', null],
  ['営業部', '本社'],
  ['開発部', '本社'],
  ['大阪支店', null],
];

// What the demo's simulated PCs do that this policy cares about: winny
// (started now and then), the accounting share, webmail, USB sticks.
const POLICY = {
  banned_apps: [{ name: 'winny', action: 'kill', label: 'P2P ファイル共有' }],
  device_control: { classes: { usb_storage: 'read_only', cd_dvd: 'deny' }, exceptions: [] },
  confidential_folders: ['\\\\fileserver\\share\\経理\\**'],
  mass_print: { pages: 100, window_minutes: 60 },
  web: { block: ['*.torrent.example'], alarm: ['mail.google.com'] },
};

/** Signs the company up and fills it: `events` operation-log entries from
 * `pcs` simulated PCs over the last `days` days (one in 200 a start of the
 * banned `winny`). Returns the administrator's login and token. */
export async function seedCompany({ events = 20000, pcs = 24, days = 30, log = console.log } = {}) {
  const loadtest = process.env.MAMORI_LOADTEST_BIN;
  const ingest = process.env.MAMORI_INGEST_ADDR;
  assert.ok(loadtest && ingest, 'MAMORI_LOADTEST_BIN and MAMORI_INGEST_ADDR');
  const admin = await signupApi('tenant', 'デモ商事株式会社', `admin-${Date.now()}@demo-shoji.example.jp`);
  await verifyByMail(admin.email);
  const ids = new Map();
  for (const [name, parent] of GROUPS) {
    const r = await api('POST', '/api/v1/groups', admin.access, { name, parent_id: parent ? ids.get(parent) : null });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    ids.set(name, r.body.id);
  }
  const policy = await api('PUT', '/api/v1/policies/tenant', admin.access, POLICY);
  assert.equal(policy.status, 200, JSON.stringify(policy.body));

  log(`enrolling ${pcs} simulated PCs and sending ${events} events dated over ${days} days`);
  const run = spawnSync(
    loadtest,
    [
      '--ingest',
      `http://${ingest}`,
      '--enroll-token',
      admin.enrollment,
      '--agents',
      String(pcs),
      '--events',
      String(events),
      '--spread-days',
      String(days),
      '--rate',
      '5000',
      '--duration',
      '300',
      '--alarm-every',
      '200',
      '--hostname-prefix',
      'tokyo-pc-',
      '--no-raw',
    ],
    { encoding: 'utf8', env: process.env },
  );
  assert.equal(run.status, 0, `mamori-loadtest failed:\n${run.stdout}\n${run.stderr}`);

  // The PCs into departments, round robin.
  const devices = (await api('GET', '/api/v1/devices?limit=1000', admin.access)).body.devices;
  const departments = ['営業部', '開発部', '大阪支店'];
  for (const [i, d] of devices.entries()) {
    const r = await api('PATCH', `/api/v1/devices/${d.id}`, admin.access, { group_id: ids.get(departments[i % 3]) });
    assert.equal(r.status, 204, JSON.stringify(r.body));
  }
  return { email: admin.email, password: PASSWORD, access: admin.access, tenant: admin.tenant, base };
}
