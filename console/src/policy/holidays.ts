// Japan's national holidays of a year (国民の祝日に関する法律, as amended to
// 2020): fixed days, the Happy Monday days, the equinoxes (by the usual
// astronomical approximation, good for 1980–2099), substitute holidays
// (振替休日) and the days between two holidays (国民の休日). Right from 2020
// on (earlier years had other days); the business-hours editor offers this
// year and the next two, and the administrator can still edit the list.

function iso(y: number, m: number, d: number): string {
  return `${y}-${String(m).padStart(2, '0')}-${String(d).padStart(2, '0')}`;
}

/** The day of the month of the n-th Monday of month m (1-based). */
function nthMonday(y: number, m: number, n: number): number {
  const first = new Date(Date.UTC(y, m - 1, 1)).getUTCDay();
  const firstMonday = 1 + ((8 - first) % 7);
  return firstMonday + (n - 1) * 7;
}

function vernalEquinox(y: number): number {
  return Math.floor(20.8431 + 0.242194 * (y - 1980) - Math.floor((y - 1980) / 4));
}

function autumnalEquinox(y: number): number {
  return Math.floor(23.2488 + 0.242194 * (y - 1980) - Math.floor((y - 1980) / 4));
}

/** The national holidays of `year` (1980–2099) as YYYY-MM-DD, in order. */
export function japanHolidays(year: number): string[] {
  const y = year;
  const days = new Set<string>([
    iso(y, 1, 1),
    iso(y, 1, nthMonday(y, 1, 2)),
    iso(y, 2, 11),
    iso(y, 3, vernalEquinox(y)),
    iso(y, 4, 29),
    iso(y, 5, 3),
    iso(y, 5, 4),
    iso(y, 5, 5),
    iso(y, 9, nthMonday(y, 9, 3)),
    iso(y, 9, autumnalEquinox(y)),
    iso(y, 11, 3),
    iso(y, 11, 23),
  ]);
  if (y >= 2020) days.add(iso(y, 2, 23));
  // The Olympic years moved Marine, Mountain and Sports Day.
  if (y === 2020) {
    days.add(iso(y, 7, 23)).add(iso(y, 7, 24)).add(iso(y, 8, 10));
  } else if (y === 2021) {
    days.add(iso(y, 7, 22)).add(iso(y, 7, 23)).add(iso(y, 8, 8));
  } else {
    days.add(iso(y, 7, nthMonday(y, 7, 3)));
    days.add(iso(y, 8, 11));
    days.add(iso(y, 10, nthMonday(y, 10, 2)));
  }
  const sorted = () => [...days].sort();
  // A day between two holidays is a holiday (国民の休日).
  for (const d of sorted()) {
    const next = new Date(`${d}T00:00:00Z`);
    next.setUTCDate(next.getUTCDate() + 2);
    const between = new Date(`${d}T00:00:00Z`);
    between.setUTCDate(between.getUTCDate() + 1);
    const b = between.toISOString().slice(0, 10);
    if (days.has(next.toISOString().slice(0, 10)) && !days.has(b) && between.getUTCDay() !== 0) days.add(b);
  }
  // A holiday on a Sunday moves to the next day that is not a holiday.
  for (const d of sorted()) {
    if (new Date(`${d}T00:00:00Z`).getUTCDay() !== 0) continue;
    const sub = new Date(`${d}T00:00:00Z`);
    do sub.setUTCDate(sub.getUTCDate() + 1);
    while (days.has(sub.toISOString().slice(0, 10)));
    if (sub.getUTCFullYear() === y) days.add(sub.toISOString().slice(0, 10));
  }
  return sorted();
}
