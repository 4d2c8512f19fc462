// A line diff of two policy documents, for the version history: both are
// printed with sorted keys, then compared by longest common subsequence.

export type DiffLine = { kind: 'same' | 'added' | 'removed'; text: string };

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object') {
    return Object.fromEntries(
      Object.keys(v as Record<string, unknown>)
        .sort()
        .map((k) => [k, sortKeys((v as Record<string, unknown>)[k])]),
    );
  }
  return v;
}

export function printDocument(doc: unknown): string[] {
  if (doc === null || doc === undefined) return [];
  return JSON.stringify(sortKeys(doc), null, 2).split('\n');
}

/** The lines of `after` against `before`. Documents are bounded (a few
 * thousand lines at most), so the quadratic table is fine. */
export function diffLines(before: string[], after: string[]): DiffLine[] {
  const n = before.length;
  const m = after.length;
  const w = m + 1;
  // lcs[i * w + j]: the longest common subsequence of before[i..], after[j..].
  const lcs = new Uint32Array((n + 1) * w);
  const at = (i: number, j: number) => lcs[i * w + j] ?? 0;
  const b = (i: number) => before[i] ?? '';
  const a = (j: number) => after[j] ?? '';
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i * w + j] = b(i) === a(j) ? at(i + 1, j + 1) + 1 : Math.max(at(i + 1, j), at(i, j + 1));
    }
  }
  const out: DiffLine[] = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (b(i) === a(j)) {
      out.push({ kind: 'same', text: b(i) });
      i++;
      j++;
    } else if (at(i + 1, j) >= at(i, j + 1)) {
      out.push({ kind: 'removed', text: b(i++) });
    } else {
      out.push({ kind: 'added', text: a(j++) });
    }
  }
  while (i < n) out.push({ kind: 'removed', text: b(i++) });
  while (j < m) out.push({ kind: 'added', text: a(j++) });
  return out;
}
