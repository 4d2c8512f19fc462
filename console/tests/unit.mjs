// Unit tests of the console's own logic (no browser): the Japanese
// holidays the business-hours editor offers, the version diff, and the
// file trace's links and reading of file events. The TypeScript is
// bundled with esbuild (Vite's), then imported.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { build } from 'esbuild';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const out = fs.mkdtempSync(path.join(os.tmpdir(), 'mamori-unit-'));
await build({
  entryPoints: { holidays: 'src/policy/holidays.ts', diff: 'src/policy/diff.ts', fileTrace: 'src/events/fileTrace.ts' },
  outdir: out,
  format: 'esm',
  bundle: true,
  logLevel: 'warning',
});
const { japanHolidays } = await import(path.join(out, 'holidays.js'));
const { diffLines, printDocument } = await import(path.join(out, 'diff.js'));
const { fileDetail, hexOfBase64, startOf, traceLink, traceRoute } = await import(path.join(out, 'fileTrace.js'));

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
fs.rmSync(out, { recursive: true, force: true });
console.log('console unit tests passed');
