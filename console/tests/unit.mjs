// Unit tests of the console's own logic (no browser): the Japanese
// holidays the business-hours editor offers, the version diff, the file
// trace's links and reading of file events, and the reading and rating of
// a device's security status. The TypeScript is
// bundled with esbuild (Vite's), then imported.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { build } from 'esbuild';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const out = fs.mkdtempSync(path.join(os.tmpdir(), 'mamori-unit-'));
await build({
  entryPoints: {
    holidays: 'src/policy/holidays.ts',
    diff: 'src/policy/diff.ts',
    fileTrace: 'src/events/fileTrace.ts',
    security: 'src/events/security.ts',
  },
  outdir: out,
  format: 'esm',
  bundle: true,
  logLevel: 'warning',
});
const { japanHolidays } = await import(path.join(out, 'holidays.js'));
const { diffLines, printDocument } = await import(path.join(out, 'diff.js'));
const { fileDetail, hexOfBase64, startOf, traceLink, traceRoute } = await import(path.join(out, 'fileTrace.js'));
const security = await import(path.join(out, 'security.js'));

// The Cabinet Office's lists (内閣府「国民の祝日について」).
assert.deepEqual(japanHolidays(2026), [
  '2026-01-01', '2026-01-12', '2026-02-11', '2026-02-23', '2026-03-20', '2026-04-29',
  '2026-05-03', '2026-05-04', '2026-05-05', '2026-05-06', '2026-07-20', '2026-08-11',
  '2026-09-21', '2026-09-22', '2026-09-23', '2026-10-12', '2026-11-03', '2026-11-23',
]);
assert.deepEqual(japanHolidays(2027), [
  '2027-01-01', '2027-01-11', '2027-02-11', '2027-02-23', '2027-03-21', '2027-03-22',
  '2027-04-29', '2027-05-03', '2027-05-04', '2027-05-05', '2027-07-19', '2027-08-11',
  '2027-09-20', '2027-09-23', '2027-10-11', '2027-11-03', '2027-11-23',
]);

const before = printDocument({ mass_print: { pages: 100, window_minutes: 60 }, banned_apps: [] });
const after = printDocument({ banned_apps: [], mass_print: { window_minutes: 60, pages: 50 } });
const d = diffLines(before, after);
assert.deepEqual(
  d.filter((l) => l.kind !== 'same').map((l) => `${l.kind} ${l.text.trim()}`),
  ['removed "pages": 100,', 'added "pages": 50,'],
  'key order does not count; the changed line does',
);
assert.deepEqual(diffLines([], printDocument({ web: { block: ['a.example'] } })).every((l) => l.kind === 'added'), true);

// The trace's hashes: proto3 JSON's base64 in hex, checked against Node's
// own decoder; anything but 32 bytes is no hash.
const digest = crypto.createHash('sha256').update('給与').digest();
assert.equal(hexOfBase64(digest.toString('base64')), digest.toString('hex'));
assert.equal(hexOfBase64(digest.toString('base64url')), digest.toString('hex'));
assert.equal(hexOfBase64(Buffer.alloc(31).toString('base64')), '');
assert.equal(hexOfBase64('not base64!'), '');

// An alarm's API path maps onto the console's page, its parameters only.
const event = '0190f0e8-7b6c-7000-8000-000000000001';
assert.equal(traceRoute(`/api/v1/files/trace?event=${event}`), `/files/trace?event=${event}`);
assert.equal(traceRoute(`/api/v1/files/trace?event=${event}&x=1`), `/files/trace?event=${event}`);
assert.equal(traceRoute('/api/v1/files/trace'), null);
assert.equal(traceRoute(`/api/v1/events?event=${event}`), null);
// A path with spaces, '&' and Japanese survives the round trip.
const place = { device: event, path: '/home/hr/給与 & 賞与.xlsx' };
const link = traceLink(place);
assert.ok(link.startsWith('/files/trace?'));
assert.deepEqual(startOf(new URLSearchParams(link.slice(link.indexOf('?')))), place);
assert.deepEqual(startOf(new URLSearchParams('sha256=&event=')), {}, 'empty parameters are absent');

// A file event's detail: present fields read, absent or odd ones empty.
const step = fileDetail({
  file: {
    path: '/srv/hr/a.xlsx',
    target_path: '/media/usb/a.xlsx',
    sha256: digest.toString('base64'),
    hash_method: 'HASH_METHOD_SIZE_HEAD_TAIL',
    process_exe_path: '/usr/bin/cp',
    pid: 4242,
    removable_media: true,
    medium_vendor_id: '0781',
    medium_product_id: '5567',
    medium_serial: '4C530001',
    size_bytes: '123',
    summarized: 'three',
  },
});
assert.deepEqual(step, {
  targetPath: '/media/usb/a.xlsx',
  sha256: digest.toString('hex'),
  partialHash: true,
  exe: '/usr/bin/cp',
  pid: 4242,
  removable: true,
  vendor: '0781',
  product: '5567',
  serial: '4C530001',
  summarized: 0,
});
assert.deepEqual(fileDetail(null), fileDetail({ process: {} }));
assert.equal(fileDetail({ file: {} }).sha256, '');
// A security status: proto3 JSON leaves defaults out, so an empty one is
// no antivirus, no firewall, no encryption, nothing pending.
const bare = security.securityStatus({ security_status: {} });
assert.deepEqual(bare, security.securityStatus(null));
assert.deepEqual(bare, security.securityStatus({ security_status: { pending_updates: '3', firewall_active: 'true' } }));
assert.deepEqual(
  [security.updatesLevel(bare), security.antivirusLevel(bare), security.firewallLevel(bare), security.diskLevel(bare)],
  ['ok', 'bad', 'bad', 'warn'],
);
const rated = (s) => {
  const st = security.securityStatus({ security_status: s });
  return [security.updatesLevel(st), security.antivirusLevel(st), security.firewallLevel(st), security.diskLevel(st)];
};
const av = { antivirus_product: 'ClamAV', antivirus_enabled: true, antivirus_up_to_date: true };
const guarded = { ...av, firewall_active: true, disk_encrypted: true };
assert.deepEqual(rated({ ...guarded, pending_updates: 3, pending_security_updates: 1 }), ['bad', 'ok', 'ok', 'ok']);
assert.deepEqual(rated({ ...guarded, pending_updates: 3 }), ['warn', 'ok', 'ok', 'ok'], 'updates, none for security');
assert.equal(rated({ ...av, antivirus_up_to_date: false })[1], 'warn', 'old signatures');
assert.equal(rated({ ...av, antivirus_enabled: false })[1], 'bad', 'switched off');
assert.equal(rated({ antivirus_enabled: true, antivirus_up_to_date: true })[1], 'bad', 'no product: no antivirus');
assert.deepEqual(
  security.securityStatus({
    security_status: {
      patch_level: 'Debian GNU/Linux 13 (trixie), Linux 6.12.48',
      pending_updates: 3,
      pending_security_updates: 1,
      antivirus_product: 'ClamAV',
      antivirus_enabled: true,
      antivirus_signature_version: 'daily 27780',
      antivirus_signature_age_days: 10,
      firewall: 'nftables',
      firewall_active: true,
      disk_encrypted: true,
      disk_encryption: 'LUKS (dm-crypt) on /',
    },
  }),
  {
    patchLevel: 'Debian GNU/Linux 13 (trixie), Linux 6.12.48',
    pendingUpdates: 3,
    pendingSecurityUpdates: 1,
    antivirusProduct: 'ClamAV',
    antivirusEnabled: true,
    antivirusSignatureVersion: 'daily 27780',
    antivirusUpToDate: false,
    antivirusSignatureAgeDays: 10,
    firewallActive: true,
    firewall: 'nftables',
    diskEncrypted: true,
    diskEncryption: 'LUKS (dm-crypt) on /',
  },
);
fs.rmSync(out, { recursive: true, force: true });
console.log('console unit tests passed');
