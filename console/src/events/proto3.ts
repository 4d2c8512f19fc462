// Reading an event's `detail` (proto3 JSON) field by field: a field at its
// default value (false, 0, "") is left out of the JSON, so an absent field
// reads as that default, and so does one of an unexpected type — the page
// shows nothing for it rather than failing.

/** `v` when it is a JSON object, else an empty one. */
export function object(v: unknown): Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}

/** The object's own field `k` (never one inherited from its prototype). */
export function field(o: Record<string, unknown>, k: string): unknown {
  return Object.prototype.hasOwnProperty.call(o, k) ? o[k] : undefined;
}

export const text = (v: unknown): string => (typeof v === 'string' ? v : '');
export const count = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
export const flag = (v: unknown): boolean => v === true;
