// Dates and times as the user reads them, in the console's language and
// the browser's time zone (or the tenant's, where a page names it).

import i18n from './i18n';

export function dateTime(iso: string | null | undefined): string {
  if (!iso) return '';
  return new Intl.DateTimeFormat(i18n.language, { dateStyle: 'medium', timeStyle: 'short' }).format(new Date(iso));
}

/** A moment to the second, in time zone `tz` (the tenant's) when given:
 * for steps whose order within a minute matters. An unknown zone falls
 * back to the browser's. */
export function preciseTime(iso: string, tz?: string): string {
  const style = { dateStyle: 'medium', timeStyle: 'medium' } as const;
  try {
    return new Intl.DateTimeFormat(i18n.language, { ...style, timeZone: tz }).format(new Date(iso));
  } catch {
    return new Intl.DateTimeFormat(i18n.language, style).format(new Date(iso));
  }
}

export function browserTimeZone(): string {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
}

/** The offset of `tz` from UTC at `at`, in milliseconds. */
function offsetAt(at: number, tz: string): number {
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat('en-US', {
      timeZone: tz,
      hourCycle: 'h23',
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
    })
      .formatToParts(new Date(at))
      .map((p) => [p.type, p.value]),
  );
  const asUtc = Date.UTC(+parts.year!, +parts.month! - 1, +parts.day!, +parts.hour!, +parts.minute!, +parts.second!);
  return asUtc - at;
}

/** The instant a day (`YYYY-MM-DD`) starts in time zone `tz`. */
export function startOfDay(day: string, tz: string): Date {
  const [y, m, d] = day.split('-').map(Number);
  const guess = Date.UTC(y ?? 1970, (m ?? 1) - 1, d ?? 1);
  // Twice, for a day on which the offset changes.
  let at = guess - offsetAt(guess, tz);
  at = guess - offsetAt(at, tz);
  return new Date(at);
}

/** The IANA time zones the browser knows (a short list where it cannot
 * say). */
export function timeZones(): string[] {
  const intl = Intl as unknown as { supportedValuesOf?: (k: string) => string[] };
  return intl.supportedValuesOf?.('timeZone') ?? ['Asia/Tokyo', 'UTC'];
}
