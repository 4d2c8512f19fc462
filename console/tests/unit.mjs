// Unit tests of the console's own logic (no browser): the Japanese
// holidays the business-hours editor offers and the version diff. The
// TypeScript is bundled with esbuild (Vite's), then imported.

import assert from 'node:assert/strict';
import { build } from 'esbuild';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const out = fs.mkdtempSync(path.join(os.tmpdir(), 'mamori-unit-'));
await build({
  entryPoints: ['src/policy/holidays.ts', 'src/policy/diff.ts'],
  outdir: out,
  format: 'esm',
  bundle: true,
  logLevel: 'warning',
});
const { japanHolidays } = await import(path.join(out, 'holidays.js'));
const { diffLines, printDocument } = await import(path.join(out, 'diff.js'));

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
fs.rmSync(out, { recursive: true, force: true });
console.log('console unit tests passed');
